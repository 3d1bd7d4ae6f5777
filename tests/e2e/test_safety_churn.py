"""Edits and deletes during an in-flight rebuild or poll leave nothing behind.

A rebuild awaits Secret reads; an edit or delete that lands meanwhile replaces (or removes) the
object's runtime. The stale rebuild must close what it built and register nothing; a late sample
must not bring a deleted object's store entry or metric series back.

Secret reads are slowed down inside the daemon (a wrapper that sleeps before the real read): the
real kube-apiserver answers a Secret GET in a millisecond and cannot be made slow on demand, and
the race needs the edit to land while the read is in flight.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

import scaler.builder
from localenv.redis import RedisServer
from scaler.daemon import Daemon
from scaler.kube.paths import scaled_objects
from scaler.settings import WatchSettings
from tests.e2e.harness import Cluster, deployment, eventually, running_daemon, scaled_object

CYCLES = 1000
WORKERS = 10


def _series(daemon: Daemon, ns: str) -> int:
    """Metric series (label sets) of this namespace's objects in Tidal's registry."""
    count = 0
    for family in daemon.telemetry.registry.collect():
        for sample in family.samples:
            if sample.labels.get("namespace") == ns and not sample.name.endswith("_created"):
                count += 1
    return count


async def _footprint(daemon: Daemon, ns: str, r: aioredis.Redis) -> dict[str, int]:
    channels = await r.pubsub_channels("__keyspace@0__:*")
    clients = await r.client_list()
    return {
        "objects": len(daemon.objects),
        "store entries": len(daemon.store),
        "reference index": daemon.inputs.referenced(),
        "asyncio tasks": len(asyncio.all_tasks()),
        "client pool entries": len(daemon.clients),
        "redis subscriptions": len(channels),
        "redis connections": len(clients),
        "metric series": _series(daemon, ns),
    }


async def test_create_edit_delete_churn_with_slow_secret_reads_leaks_nothing(
    cluster: Cluster,
    kubeconfig: Path,
    redis_factory: Callable[..., RedisServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = redis_factory(notify_keyspace_events="KEA")
    r = aioredis.from_url(server.url)
    real_fetch = scaler.builder.fetch_data
    rng = random.Random(7)

    async def slow_fetch(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(rng.uniform(0.0, 0.15))
        return await real_fetch(*args, **kwargs)

    monkeypatch.setattr(scaler.builder, "fetch_data", slow_fetch)
    await cluster.create_address_auth("redis-ta", server.address)
    names = [f"churn-{i}" for i in range(WORKERS)]
    for name in names:
        await cluster.create_deployment(deployment(name, replicas=0))

    def body(name: str, list_name: str) -> dict[str, Any]:
        return scaled_object(
            name,
            name,
            [
                {
                    "type": "redis",
                    "metadata": {"listName": list_name},
                    "authenticationRef": {"name": "redis-ta"},
                }
            ],
            pollingInterval=1,
        )

    async def gone(name: str) -> bool:
        return await cluster.kube.get_or_none(scaled_objects(cluster.ns, name)) is None

    # Only this namespace: objects other tests leave behind must not move the baseline.
    watch = WatchSettings(namespace=cluster.ns, cluster_object_namespace="tidal-system")
    async with running_daemon(kubeconfig, watch=watch) as daemon:
        # The baseline once everything the daemon starts has started (the ScaledJob
        # controller's watches too: on a loaded machine 1 s was not always enough).
        await asyncio.wait_for(daemon.jobs.started.wait(), timeout=60)
        await asyncio.sleep(1)
        before = await _footprint(daemon, cluster.ns, r)

        async def churn(name: str) -> None:
            for i in range(CYCLES // WORKERS):
                await cluster.create_so(body(name, f"{name}-a"))
                await asyncio.sleep(rng.uniform(0.0, 0.2))
                await cluster.patch_so(
                    name, {"spec": {"triggers": body(name, f"{name}-b-{i}")["spec"]["triggers"]}}
                )
                await asyncio.sleep(rng.uniform(0.0, 0.2))
                await cluster.delete_so(name)
                await eventually(lambda: gone(name), bool, timeout=60, what=f"{name} deleted")

        await asyncio.gather(*(churn(name) for name in names))
        await eventually(
            lambda: _footprint(daemon, cluster.ns, r),
            lambda now: now == before,
            timeout=30,
            what=f"the footprint back at its baseline {before}",
        )
        after = await _footprint(daemon, cluster.ns, r)
        print(f"\n{CYCLES} create/edit/delete cycles with slow Secret reads")
        for key, value in before.items():
            print(f"  {key:22s} before {value:5d}  after {after[key]:5d}")
        assert after == before
    await r.aclose()
