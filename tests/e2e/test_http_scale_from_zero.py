"""HTTP scale-from-zero end to end (issue 20): hold, wake, forward, lose nothing.

Real kube-apiserver + kube-controller-manager, kwok for Ready pods with loopback IPs, real HTTP
servers on those IPs, `tidal intercept` processes, the daemon and the HTTPScaledObject reconciler.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiohttp

from localenv.pytest_http import InterceptorFactory, PodBackends
from tests.e2e.harness import Cluster, eventually
from tests.e2e.http_helpers import (
    create,
    http_scaled_object,
    ready_pods,
    scaling_stack,
    service,
    wait_push_up,
    wait_scaled_object_ready,
    workload,
)

HOST = "web.example"


async def _setup(cluster: Cluster, backends: PodBackends, **hso: object) -> None:
    await create(cluster.kube, cluster.ns, workload("web", replicas=0))
    await create(cluster.kube, cluster.ns, service("web", backends.port))
    await create(cluster.kube, cluster.ns, http_scaled_object("web", HOST, **hso))


async def test_first_request_at_zero_replicas_gets_the_backends_answer(
    cluster: Cluster,
    kubeconfig: Path,
    pod_backends: PodBackends,
    interceptors: InterceptorFactory,
) -> None:
    await _setup(cluster, pod_backends)
    proxy = await interceptors.start()
    async with scaling_stack(kubeconfig, cluster.kube, cluster.ns, [proxy.admin]) as daemon:
        await wait_scaled_object_ready(cluster, "web")
        await wait_push_up(daemon, cluster.ns, "web")
        assert await cluster.replicas("web") == 0
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                proxy.url + "/hello?x=1", headers={"Host": HOST, "X-Request-Id": "first"}
            ) as resp,
        ):
            body = await resp.json()
            status, cold = resp.status, resp.headers.get("X-Tidal-Cold-Start-Ms")
        assert status == 200
        assert body["id"] == "first"
        assert body["backend"] == "backend"
        assert body["address"] in await ready_pods(cluster.kube, cluster.ns, "web")
        assert cold is not None
        assert int(cold) >= 0
        assert await cluster.replicas("web") >= 1
        assert pod_backends.seen == {"first": 1}


async def test_warm_requests_carry_no_cold_start_header_and_unknown_hosts_get_404(
    cluster: Cluster,
    kubeconfig: Path,
    pod_backends: PodBackends,
    interceptors: InterceptorFactory,
) -> None:
    await _setup(cluster, pod_backends, replicas={"min": 1, "max": 3})
    proxy = await interceptors.start()
    async with scaling_stack(kubeconfig, cluster.kube, cluster.ns, [proxy.admin]):
        await wait_scaled_object_ready(cluster, "web")
        await eventually(
            lambda: ready_pods(cluster.kube, cluster.ns, "web"), bool, what="a Ready pod"
        )
        async with aiohttp.ClientSession() as http:

            async def warm_get() -> tuple[int, str | None]:
                async with http.get(proxy.url + "/", headers={"Host": HOST}) as resp:
                    await resp.read()
                    return resp.status, resp.headers.get("X-Tidal-Cold-Start-Ms")

            # The interceptor sees the pod through its own watch: wait until it forwards.
            await eventually(warm_get, lambda r: r == (200, None), what="a warm answer")
            async with http.get(proxy.url + "/", headers={"Host": "other.example"}) as resp:
                assert resp.status == 404
            payload = uuid.uuid4().bytes * 200_000  # 3.2 MB, streamed through
            async with http.post(proxy.url + "/upload", data=payload, headers={"Host": HOST}) as r:
                assert r.status == 200
                assert (await r.json())["bytes"] == len(payload)
            size = 5_000_000  # streamed back chunk by chunk, no Content-Length
            async with http.get(proxy.url + f"/big/{size}", headers={"Host": HOST}) as r:
                assert r.status == 200
                assert "Content-Length" not in r.headers
                assert len(await r.read()) == size
            async with http.ws_connect(proxy.url + "/ws", headers={"Host": HOST}) as ws:
                await ws.send_str("ping")
                msg = await ws.receive(timeout=10)
                assert msg.data == "backend:ping"


async def test_burst_of_10000_at_a_sleeping_workload_is_answered_once_each(
    cluster: Cluster,
    kubeconfig: Path,
    pod_backends: PodBackends,
    interceptors: InterceptorFactory,
) -> None:
    await _setup(cluster, pod_backends, timeouts={"conditionWait": "120s"})
    proxy = await interceptors.start()
    ids = [f"r{i}" for i in range(10_000)]
    async with scaling_stack(kubeconfig, cluster.kube, cluster.ns, [proxy.admin]) as daemon:
        await wait_scaled_object_ready(cluster, "web")
        await wait_push_up(daemon, cluster.ns, "web")
        assert await cluster.replicas("web") == 0
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        timeout = aiohttp.ClientTimeout(total=300)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

            async def one(rid: str) -> tuple[str, int, str]:
                headers = {"Host": HOST, "X-Request-Id": rid}
                async with http.get(proxy.url + "/burst", headers=headers) as resp:
                    body = await resp.json()
                    return rid, resp.status, str(body["id"])

            answers = await asyncio.gather(*(one(rid) for rid in ids))
    assert [status for _, status, _ in answers] == [200] * len(ids)
    assert [echo for _, _, echo in answers] == ids
    assert set(pod_backends.seen) == set(ids)
    assert max(pod_backends.seen.values()) == 1  # nothing forwarded twice
