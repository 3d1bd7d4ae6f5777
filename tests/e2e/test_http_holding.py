"""HTTP scale-from-zero end to end: what a held request gets, and what keeps a workload awake.

* a workload that never turns Ready: 503 with Retry-After after the hold timeout, or the
  failover Service's answer when the HTTPScaledObject names one;
* the scale-down period counts from the last request: requests spaced by less than it keep the
  workload up far longer than it, and the ScaledObject's lastActiveTime follows the requests;
* an interceptor restart (a second process on the same port, then SIGTERM to the first) loses
  no request the first had accepted, held ones included.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path

import aiohttp

from localenv.kwok import Kwok, pod_addresses
from localenv.process import free_port
from localenv.pytest_http import InterceptorFactory, PodBackends
from tests.e2e.harness import Cluster, eventually
from tests.e2e.http_helpers import (
    create,
    http_scaled_object,
    scaling_stack,
    service,
    wait_push_up,
    wait_scaled_object_ready,
    workload,
)


async def _get(
    http: aiohttp.ClientSession, url: str, host: str, rid: str = ""
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Host": host, "X-Request-Id": rid}
    async with http.get(url, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def test_a_workload_that_never_turns_ready_gets_503_or_the_failover(
    cluster: Cluster,
    kubeconfig: Path,
    kwok: Kwok,
    pod_backends: PodBackends,
    interceptors: InterceptorFactory,
) -> None:
    fallback = await PodBackends(pod_addresses(kwok.cidr), free_port(), "fallback").start()
    try:
        ns, kube = cluster.ns, cluster.kube
        for name in ("stuck", "stuck-failover"):
            # Bound to a node no kubelet (nor kwok) serves: its pods never turn Ready.
            await create(kube, ns, workload(name, node="nowhere"))
            await create(kube, ns, service(name, pod_backends.port))
        await create(kube, ns, workload("fallback", replicas=1))
        await create(kube, ns, service("fallback", fallback.port))
        await create(
            kube, ns, http_scaled_object("stuck", "stuck.example", timeouts={"conditionWait": "2s"})
        )
        await create(
            kube,
            ns,
            http_scaled_object(
                "stuck-failover",
                "failover.example",
                coldStartTimeoutFailoverRef={
                    "service": "fallback",
                    "port": 80,
                    "timeoutSeconds": 2,
                },
            ),
        )
        proxy = await interceptors.start()
        async with scaling_stack(kubeconfig, kube, ns, [proxy.admin]):
            await wait_scaled_object_ready(cluster, "stuck")
            async with aiohttp.ClientSession() as http:
                status, headers, _ = await _get(http, proxy.url + "/", "stuck.example")
                assert status == 503
                assert headers["Retry-After"] == "5"
                # The failover Service's pods are Ready; wait for the interceptor to see them.
                await eventually(
                    lambda: _get(http, proxy.url + "/", "failover.example", "f1"),
                    lambda r: r[0] == 200,
                    what="the failover's answer",
                )
            assert fallback.seen["f1"] == 1
            assert await cluster.replicas("stuck") >= 1  # it was woken, it just never came up
        assert pod_backends.seen == {}
        metrics = proxy.metrics()
        assert 'outcome="timeout"' in metrics
        assert 'outcome="failover"' in metrics
    finally:
        await fallback.stop()


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


async def test_the_scale_down_period_counts_from_the_last_request(
    cluster: Cluster,
    kubeconfig: Path,
    pod_backends: PodBackends,
    interceptors: InterceptorFactory,
) -> None:
    """scaledownPeriod 6 s; a request every 2 s for 20 s must keep the workload up throughout
    (counting from the activation it would go to zero after 6 s), then it goes to zero."""
    ns, kube = cluster.ns, cluster.kube
    await create(kube, ns, workload("web"))
    await create(kube, ns, service("web", pod_backends.port))
    await create(kube, ns, http_scaled_object("web", "web.example", scaledownPeriod=6))
    proxy = await interceptors.start()
    async with scaling_stack(kubeconfig, kube, ns, [proxy.admin]) as daemon:
        await wait_scaled_object_ready(cluster, "web")
        await wait_push_up(daemon, ns, "web")
        async with aiohttp.ClientSession() as http:
            status, headers, _ = await _get(http, proxy.url + "/", "web.example", "wake")
            assert status == 200
            assert "X-Tidal-Cold-Start-Ms" in headers
            cold = []
            replicas_seen = []
            deadline = time.monotonic() + 20
            last = 0.0
            while time.monotonic() < deadline:
                await asyncio.sleep(2)
                status, headers, _ = await _get(http, proxy.url + "/", "web.example")
                last = time.time()
                assert status == 200
                cold.append("X-Tidal-Cold-Start-Ms" in headers)
                replicas_seen.append(await cluster.replicas("web"))
        assert cold == [False] * len(cold)  # every request found the workload up
        assert min(replicas_seen) >= 1
        so = await cluster.get_so("web")
        assert _epoch(so["status"]["lastActiveTime"]) >= int(last) - 1
        await eventually(
            lambda: cluster.replicas("web"), lambda n: n == 0, timeout=60, what="scaled to zero"
        )


async def test_an_interceptor_restart_loses_no_accepted_request(
    cluster: Cluster,
    kubeconfig: Path,
    pod_backends: PodBackends,
    interceptors: InterceptorFactory,
) -> None:
    """Requests are held (the Service selects no pod yet) when a second interceptor binds the
    same proxy port and the first gets SIGTERM; then the Service is pointed at the pods. Every
    request, accepted by either process, is answered exactly once."""
    ns, kube = cluster.ns, cluster.kube
    await create(kube, ns, workload("web"))
    gate = service("web", pod_backends.port)
    gate["spec"]["selector"] = {"app": "not-yet"}
    await create(kube, ns, gate)
    await create(
        kube, ns, http_scaled_object("web", "web.example", timeouts={"conditionWait": "120s"})
    )
    first = await interceptors.start()
    second_admin = free_port()
    admins = [first.admin, f"127.0.0.1:{second_admin}"]
    async with scaling_stack(kubeconfig, kube, ns, admins) as daemon:
        await wait_scaled_object_ready(cluster, "web")
        await wait_push_up(daemon, ns, "web")
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=180)
        ) as http:
            before = [f"a{i}" for i in range(300)]
            held = [
                asyncio.create_task(_get(http, first.url + "/", "web.example", r)) for r in before
            ]
            await eventually(
                lambda: asyncio.to_thread(first.metrics),
                lambda m: "tidal_interceptor_in_flight 300.0" in m,
                what="300 requests held by the first interceptor",
            )
            second = await interceptors.start(ports=(first.proxy_port, second_admin))
            first.terminate()
            await eventually(
                lambda: asyncio.to_thread(first.readyz), lambda s: s == 503, what="draining"
            )
            after = [f"b{i}" for i in range(300)]
            held += [
                asyncio.create_task(_get(http, second.url + "/", "web.example", r)) for r in after
            ]
            await eventually(
                lambda: cluster.replicas("web"), lambda n: n >= 1, what="woken by the requests"
            )
            await kube.merge_patch(
                f"/api/v1/namespaces/{ns}/services/web", {"spec": {"selector": {"app": "web"}}}
            )
            answers = await asyncio.gather(*held)
        assert [status for status, _, _ in answers] == [200] * 600
        assert set(pod_backends.seen) == set(before + after)
        assert max(pod_backends.seen.values()) == 1
        assert await asyncio.to_thread(first.wait_exit) == 0
