"""Who decides what on the way down (docs/tuning.md): the HPA's scale-down stabilization window
decides N -> 1, `cooldownPeriod` only 1 -> 0, and Tidal never writes N -> 0.

The real HPA controller (1 s sync) reads Tidal's metric through kube-apiserver's aggregator; the
ScaledObject's `advanced.horizontalPodAutoscalerConfig.behavior` gives its HPA a scale-down
window. A watch on the Deployment records every replica count written, by either controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from pathlib import Path

import redis.asyncio as aioredis

from localenv.pytest_kube import ApiServiceRegistrar
from localenv.redis import RedisServer
from scaler.kube.client import KubeClient
from scaler.kube.paths import namespaced
from tests.e2e.harness import (
    Cluster,
    deployment,
    eventually,
    redis_trigger,
    running_service,
    scaled_object,
)
from tests.e2e.test_metrics_api_e2e import _serve, _serving_files

WINDOW = 8  # seconds: the HPA's scaleDown.stabilizationWindowSeconds
COOLDOWN = 1  # seconds: the ScaledObject's cooldownPeriod


async def _record(kube: KubeClient, ns: str, history: list[tuple[float, int]]) -> None:
    """Append (loop time, spec.replicas) for every change of Deployment `worker`."""
    loop = asyncio.get_running_loop()
    path = namespaced("apps", "v1", "deployments", ns)
    listed = await kube.get(path, fieldSelector="metadata.name=worker")
    for item in listed["items"]:
        history.append((loop.time(), int(item["spec"].get("replicas", 0))))
    query = {
        "watch": "1",
        "fieldSelector": "metadata.name=worker",
        "resourceVersion": listed["metadata"]["resourceVersion"],
    }
    async for event in kube.watch_lines(path, query, timeout=300):
        replicas = int(event["object"]["spec"].get("replicas", 0))
        if not history or history[-1][1] != replicas:
            history.append((loop.time(), replicas))


async def test_hpa_window_decides_n_to_1_and_cooldown_1_to_0(
    cluster: Cluster,
    kubeconfig: Path,
    redis_factory: Callable[..., RedisServer],
    apiservice: ApiServiceRegistrar,
    tmp_path: Path,
) -> None:
    """4 replicas, then the list empties at T: the HPA holds 4 for its window although the
    trigger is inactive (Active=False, Tidal writes nothing), goes 4 -> 1 about WINDOW s after T,
    and Tidal goes 1 -> 0 at once (its cooldown ran out long before); no N -> 0 write ever."""
    server = redis_factory()
    r = aioredis.from_url(server.url)
    cert, key, ca_pem = _serving_files(tmp_path)
    await cluster.create_deployment(deployment("worker", replicas=0))
    behavior = {
        "scaleDown": {
            "stabilizationWindowSeconds": WINDOW,
            "policies": [{"type": "Percent", "value": 100, "periodSeconds": 1}],
        }
    }
    await cluster.create_so(
        scaled_object(
            "worker",
            "worker",
            [redis_trigger(server.address, "jobs", listLength="2")],
            pollingInterval=1,
            cooldownPeriod=COOLDOWN,
            maxReplicaCount=4,
            advanced={"horizontalPodAutoscalerConfig": {"behavior": behavior}},
        )
    )
    history: list[tuple[float, int]] = []
    recorder = asyncio.create_task(_record(cluster.kube, cluster.ns, history))
    loop = asyncio.get_running_loop()
    async with running_service(kubeconfig, serve=_serve(cert, key)) as svc:
        name = await apiservice.register(port=svc.api_port, ca_pem=ca_pem)
        try:
            hpa = await eventually(lambda: cluster.hpa("keda-hpa-worker"), lambda h: h is not None)
            assert hpa is not None
            assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == WINDOW
            await r.rpush("jobs", *[str(i) for i in range(8)])  # 8 / listLength 2 -> 4
            await eventually(lambda: cluster.replicas("worker"), lambda n: n == 4, what="0->4")

            await r.delete("jobs")
            emptied = loop.time()
            # Inactive, but above 1: the HPA's range; Tidal only reports.
            await eventually(
                lambda: cluster.condition("worker", "Active"),
                lambda c: c is not None and c["status"] == "False",
                what="Active=False while the HPA holds its replicas",
            )
            assert await cluster.replicas("worker") == 4
            await eventually(
                lambda: cluster.replicas("worker"), lambda n: n == 0, timeout=60, what="-> 0"
            )
        finally:
            await apiservice.unregister(name)
            await r.aclose()
            recorder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await recorder

    steps = list(itertools.pairwise(n for _, n in history))
    assert all(a == 1 for a, b in steps if b == 0), f"an N -> 0 write: {history}"
    after = [(t - emptied, n) for t, n in history if t >= emptied]
    reached_one = next(t for t, n in after if n == 1)
    reached_zero = next(t for t, n in after if n == 0)
    # The HPA's window held the replicas (its last high recommendation is at most ~1 s after T).
    assert reached_one >= WINDOW - 1.5, after
    # cooldownPeriod (1 s) had long run out: Tidal's next polls make 1 -> 0.
    assert 0 < reached_zero - reached_one <= 5, after
