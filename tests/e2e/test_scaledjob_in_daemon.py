"""`tidal run` runs ScaledJobs beside ScaledObjects (the daemon wires scaler.jobs), and a sharded
daemon runs only the ScaledJobs its ring gives it — no Job is created twice."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import redis.asyncio as aioredis

from localenv.redis import RedisServer
from scaler.jobs.writer import jobs_path, scaled_jobs_path
from scaler.settings import WatchSettings
from tests.e2e.harness import Cluster, eventually, running_daemon, running_service
from tests.e2e.test_scaledjob_e2e import redis_list, scaled_job
from tests.e2e.test_shards import shard_settings


async def test_the_daemon_creates_jobs_for_a_scaled_job(
    cluster: Cluster, kubeconfig: Path, redis_server: RedisServer
) -> None:
    ns = cluster.ns
    key = f"{ns}-jobs"
    r = aioredis.from_url(redis_server.url)
    await r.delete(key)
    await r.rpush(key, "a", "b")
    body = scaled_job("batch", [redis_list(redis_server.address, key)], maxReplicaCount=5)
    await cluster.kube.create(scaled_jobs_path(ns), body)
    async with running_daemon(kubeconfig, watch=_watch(ns)):

        async def jobs() -> int:
            return len((await cluster.kube.get(jobs_path(ns)))["items"])

        assert await eventually(jobs, lambda n: n == 2, what="two Jobs for two items") == 2
    await r.aclose()


async def test_sharded_replicas_create_each_job_once(
    cluster: Cluster, kubeconfig: Path, redis_server: RedisServer
) -> None:
    ns = cluster.ns
    r = aioredis.from_url(redis_server.url)
    names = [f"sj-{i}" for i in range(6)]
    for name in names:
        await r.delete(f"{ns}-{name}")
        await r.rpush(f"{ns}-{name}", "x")
        body = scaled_job(name, [redis_list(redis_server.address, f"{ns}-{name}")])
        await cluster.kube.create(scaled_jobs_path(ns), body)
    async with contextlib.AsyncExitStack() as stack:
        for identity in ("a", "b"):
            await stack.enter_async_context(
                running_service(kubeconfig, **shard_settings(ns, identity))
            )

        async def per_scaled_job() -> dict[str, int]:
            items = (await cluster.kube.get(jobs_path(ns)))["items"]
            out: dict[str, int] = {}
            for job in items:
                owner = job["metadata"]["labels"]["scaledjob.keda.sh/name"]
                out[owner] = out.get(owner, 0) + 1
            return out

        counts = await eventually(
            per_scaled_job, lambda c: len(c) == len(names), timeout=60, what="a Job each"
        )
        # Several polls (1 s) later, still one Job per item: no replica created one twice.
        await asyncio.sleep(3)
        assert await per_scaled_job() == counts == dict.fromkeys(names, 1)
    await r.aclose()


def _watch(ns: str) -> WatchSettings:
    return WatchSettings(namespace=ns, cluster_object_namespace=ns)
