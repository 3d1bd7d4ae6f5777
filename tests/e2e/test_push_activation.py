"""Push activation: a source's event wakes the object's poll at once (issue 10).

pollingInterval is 300 s in these tests, so only a push wake-up can explain a fast reaction.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import redis.asyncio as aioredis

from localenv.redis import RedisServer
from tests.e2e.harness import (
    Cluster,
    deployment,
    eventually,
    redis_trigger,
    running_daemon,
    scaled_object,
)


async def _setup(cluster: Cluster, server: RedisServer, key: str, poll: int = 300) -> None:
    await cluster.create_deployment(deployment("worker", replicas=0))
    await cluster.create_so(
        scaled_object(
            "worker",
            "worker",
            [redis_trigger(server.address, key)],
            pollingInterval=poll,
            cooldownPeriod=300,
        )
    )


async def _ready(cluster: Cluster) -> None:
    await eventually(
        lambda: cluster.condition("worker", "Ready"),
        lambda c: c is not None and c["status"] == "True",
        what="Ready=True",
    )


def _polls(daemon: object, ns: str) -> int:
    rt = daemon.objects.get((ns, "worker"))  # type: ignore[attr-defined]
    return int(rt.polls)


async def test_push_wakes_the_decision_and_coalesces_bursts(
    cluster: Cluster, kubeconfig: Path, redis_server: RedisServer
) -> None:
    key = f"jobs-{cluster.ns}"
    r = aioredis.from_url(redis_server.url)
    await _setup(cluster, redis_server, key)
    async with running_daemon(kubeconfig) as daemon:
        await _ready(cluster)
        gauge = daemon.telemetry.push_connected.labels(cluster.ns, "worker", "0")
        await eventually(_value(gauge), lambda v: v == 1, what="subscription up")
        before = _polls(daemon, cluster.ns)
        await r.rpush(key, "first")
        await eventually(lambda: cluster.replicas("worker"), lambda n: n == 1, what="0 -> 1")

        # 10,000 pushes in one go wake the object a handful of times, not 10,000.
        mid = _polls(daemon, cluster.ns)
        async with r.pipeline(transaction=False) as pipe:
            for i in range(10_000):
                pipe.rpush(key, str(i))
            await pipe.execute()
        await eventually(_async_len(r, key), lambda n: n == 10_001)
        await eventually(lambda: _afterwards(daemon, cluster.ns), lambda p: p > mid)
        burst_polls = _polls(daemon, cluster.ns) - mid
        assert 1 <= burst_polls <= 20
        assert mid - before >= 1
    await r.aclose()


async def test_an_event_the_sample_does_not_confirm_does_not_scale(
    cluster: Cluster, kubeconfig: Path, redis_server: RedisServer
) -> None:
    """The work was consumed before the sample: the wake-up happens, the scale-up does not."""
    key = f"jobs-{cluster.ns}"
    r = aioredis.from_url(redis_server.url)
    await _setup(cluster, redis_server, key)
    async with running_daemon(kubeconfig) as daemon:
        await _ready(cluster)
        gauge = daemon.telemetry.push_connected.labels(cluster.ns, "worker", "0")
        await eventually(_value(gauge), lambda v: v == 1, what="subscription up")
        before = _polls(daemon, cluster.ns)
        async with r.pipeline(transaction=True) as tx:
            tx.rpush(key, "x")
            tx.lpop(key)
            await tx.execute()
        await eventually(
            lambda: _afterwards(daemon, cluster.ns), lambda p: p > before, what="the wake-up poll"
        )
        assert await cluster.replicas("worker") == 0
    await r.aclose()


async def test_without_keyspace_notifications_the_object_is_polled(
    cluster: Cluster, kubeconfig: Path, redis_factory: Callable[..., RedisServer]
) -> None:
    """A server with notify-keyspace-events off: the subscription is reported down and the
    object still scales, by polling."""
    server = redis_factory()  # notifications off (the server's default)
    await _setup(cluster, server, "jobs", poll=1)
    async with running_daemon(kubeconfig) as daemon:
        await _ready(cluster)
        gauge = daemon.telemetry.push_connected.labels(cluster.ns, "worker", "0")
        await eventually(_value(gauge), lambda v: v == 0, what="subscription reported down")
        r = aioredis.from_url(server.url)
        await r.rpush("jobs", "x")
        await r.aclose()
        await eventually(lambda: cluster.replicas("worker"), lambda n: n == 1, what="polled 0 -> 1")


def _value(gauge: object) -> Callable[[], object]:
    async def probe() -> float:
        return float(gauge.get())  # type: ignore[attr-defined]

    return probe


def _async_len(r: aioredis.Redis, key: str) -> Callable[[], object]:
    async def probe() -> int:
        return int(await r.llen(key))

    return probe


async def _afterwards(daemon: object, ns: str) -> int:
    return _polls(daemon, ns)
