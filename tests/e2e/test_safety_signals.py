"""What users see and rely on while something is wrong: Warning Events, push coming back, and
KEDA's fallback for `metricType: Value` served end to end."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import redis.asyncio as aioredis

from localenv.pytest_kube import ApiServiceRegistrar
from localenv.redis import RedisServer
from scaler.kube.paths import namespaced
from scaler.settings import PollSettings
from tests.e2e.harness import (
    Cluster,
    deployment,
    eventually,
    redis_trigger,
    running_daemon,
    running_service,
    scaled_object,
)
from tests.e2e.test_safety_stale import _failed_get, _serve


async def test_failing_trigger_emits_a_warning_event(
    cluster: Cluster, kubeconfig: Path, redis_factory: Callable[..., RedisServer]
) -> None:
    """KEDA users alert on `KEDAScalerFailed` Warning Events: one when a trigger starts
    failing (then counted every few failed polls), naming the metric and never a secret."""
    server = redis_factory(password="s3cret-pw")
    await cluster.create_deployment(deployment("worker", replicas=0))
    await cluster.create_so(
        scaled_object(
            "worker",
            "worker",
            [redis_trigger(server.address, "jobs")],  # no password: NOAUTH, a failing trigger
            pollingInterval=1,
        )
    )
    async with running_daemon(kubeconfig):
        events = await eventually(
            lambda: cluster.events("worker"),
            lambda evs: any(e["reason"] == "KEDAScalerFailed" for e in evs),
            what="a KEDAScalerFailed Event",
        )
    failed = [e for e in events if e["reason"] == "KEDAScalerFailed"]
    assert failed[0]["type"] == "Warning"
    assert failed[0]["message"].startswith("s0-redis-jobs: ")
    assert "s3cret-pw" not in failed[0]["message"]


async def test_push_comes_back_when_keyspace_notifications_are_turned_on(
    cluster: Cluster, kubeconfig: Path, redis_factory: Callable[..., RedisServer]
) -> None:
    """Notifications off: the object polls (every 300 s here). Turned on later, push is
    re-checked and comes back with no edit of the object, so an event wakes it at once."""
    server = redis_factory(notify_keyspace_events="")
    r = aioredis.from_url(server.url)
    await cluster.create_deployment(deployment("worker", replicas=0))
    await cluster.create_so(
        scaled_object(
            "worker",
            "worker",
            [redis_trigger(server.address, "jobs")],
            pollingInterval=300,
        )
    )
    poll = PollSettings(http_timeout=2.0, push_recheck=1.0)
    async with running_daemon(kubeconfig, poll=poll) as daemon:
        up = daemon.telemetry.push_connected.labels(cluster.ns, "worker", "0")
        await eventually(
            lambda: cluster.condition("worker", "Ready"),
            lambda c: c is not None and c["status"] == "True",
            what="Ready",
        )
        assert up.get() == 0
        await r.config_set("notify-keyspace-events", "KEA")

        async def push_up() -> float:
            return float(up.get())

        await eventually(push_up, lambda v: v == 1, timeout=30, what="push subscription up")
        await r.rpush("jobs", "x")
        await eventually(
            lambda: cluster.replicas("worker"), lambda n: n == 1, timeout=20, what="0 -> 1"
        )
    await r.aclose()


@contextlib.asynccontextmanager
async def _pods_ready(cluster: Cluster) -> AsyncIterator[None]:
    """Marks the namespace's pods Running and Ready, as a kubelet would: the test control plane
    has no kubelet, and the HPA (and KEDA's fallback) for `Value` targets count Ready pods."""
    pods = namespaced("", "v1", "pods", cluster.ns)
    ready = {
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
        }
    }

    async def loop() -> None:
        while True:
            body = await cluster.kube.get(pods)
            for pod in body.get("items", []):
                if pod.get("status", {}).get("phase") != "Running":
                    name = pod["metadata"]["name"]
                    with contextlib.suppress(Exception):
                        await cluster.kube.merge_patch(f"{pods}/{name}/status", ready)
            await asyncio.sleep(0.3)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_fallback_for_a_value_target_is_served_to_the_hpa(
    cluster: Cluster,
    kubeconfig: Path,
    redis_factory: Callable[..., RedisServer],
    apiservice: ApiServiceRegistrar,
    tmp_path: Path,
) -> None:
    """KEDA's fallback for `metricType: Value`: the HPA is served target x fallback.replicas
    / ready replicas, so it settles at fallback.replicas. Before the fix the daemon never gave
    the store the ready count: the HPA got an error while status said Fallback=True."""
    server = redis_factory()
    serve, ca_pem = _serve(tmp_path)
    await cluster.create_deployment(deployment("worker", replicas=2))
    trigger = redis_trigger(server.address, "jobs", listLength="2")
    trigger["metricType"] = "Value"
    await cluster.create_so(
        scaled_object(
            "worker",
            "worker",
            [trigger],
            pollingInterval=1,
            minReplicaCount=1,
            maxReplicaCount=10,
            fallback={"failureThreshold": 1, "replicas": 4},
        )
    )
    async with _pods_ready(cluster), running_service(kubeconfig, serve=serve) as svc:
        name = await apiservice.register(port=svc.api_port, ca_pem=ca_pem)
        try:
            await eventually(
                lambda: cluster.hpa("keda-hpa-worker"), lambda h: h is not None, what="HPA"
            )
            server.kill()
            await eventually(
                lambda: cluster.condition("worker", "Fallback"),
                lambda c: c is not None and c["status"] == "True",
                what="Fallback=True",
            )
            await eventually(
                lambda: cluster.replicas("worker"), lambda n: n == 4, timeout=45, what="2 -> 4"
            )
            hpa = await cluster.hpa("keda-hpa-worker")
            assert not _failed_get(hpa)
        finally:
            await apiservice.unregister(name)
