"""`--shards auto` in-process on the real control plane: three replicas split the objects by
their member Leases, each polls and writes only its own, every replica answers the metrics API
for every object (forwarding to the owner over mutual TLS with Tidal's CA), and a membership
change moves only the objects it must, keeping lastActiveTime.

The replicas run in this test's event loop (scaler.service.Service, as `tidal run` composes it)
so the test can read each one's table; tests/e2e/test_shards_processes.py kills and freezes real
processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from localenv.controlplane import ControlPlane
from localenv.process import free_port
from localenv.redis import RedisServer
from scaler.kube.members import GROUP_LABEL
from scaler.service import Service
from scaler.settings import LeaderSettings, ServeSettings, ShardSettings, WatchSettings
from scaler.shards import Member, Ring
from tests.e2e.harness import (
    Cluster,
    deployment,
    eventually,
    redis_trigger,
    running_service,
    scaled_object,
)

OBJECTS = 30
GROUP = "tidal-shards"
SO_LABEL = "scaledobject.keda.sh/name"


def shard_settings(namespace: str, identity: str) -> dict[str, Any]:
    port = free_port()
    return {
        "watch": WatchSettings(namespace=namespace, cluster_object_namespace=namespace),
        "leader": LeaderSettings(
            enabled=False,
            namespace=namespace,
            name=GROUP,
            identity=identity,
            lease_duration=3.0,
            renew_deadline=2.0,
            retry_period=0.5,
        ),
        "shards": ShardSettings("auto", f"127.0.0.1:{port}", f"127.0.0.1:{port}"),
        "serve": ServeSettings(
            metrics_address="127.0.0.1:0",
            api_address="127.0.0.1:0",
            cert_secret=f"{namespace}/tidal-serving",
            cert_apiservice="",
            metrics_authorization="none",
            webhook=False,
        ),
    }


@contextlib.asynccontextmanager
async def replica(kubeconfig: Path, namespace: str, identity: str) -> AsyncIterator[Service]:
    async with running_service(kubeconfig, **shard_settings(namespace, identity)) as svc:
        yield svc


def owned(svc: Service) -> set[tuple[str, str]]:
    assert svc.daemon is not None
    return set(svc.daemon.objects)


def metric_client(plane: ControlPlane) -> aiohttp.ClientSession:
    """The aggregator's own credentials: its front-proxy client certificate and the user it
    asserts (authorization is off in these replicas: tested elsewhere)."""
    certs = plane._certs()
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(certs.front_proxy_client_crt, certs.front_proxy_client_key)
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ctx), headers={"X-Remote-User": "hpa-test"}
    )


async def read_metric(
    http: aiohttp.ClientSession, port: int, namespace: str, name: str, list_name: str = ""
) -> tuple[int, Any]:
    """The metric of object `name`'s redis trigger on list `list_name` (default: `name`)."""
    url = (
        f"https://127.0.0.1:{port}/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/"
        f"s0-redis-{list_name or name}?labelSelector={SO_LABEL}%3D{name}"
    )
    async with http.get(url) as resp:
        return resp.status, json.loads(await resp.text())


async def make_objects(cluster: Cluster, redis: RedisServer, names: list[str]) -> None:
    r = aioredis.Redis(host="127.0.0.1", port=redis.port)
    try:
        for i, name in enumerate(names):
            await r.delete(name)
            await r.rpush(name, *(["job"] * (i + 1)))  # list length = index + 1: the metric
    finally:
        await r.aclose()
    for name in names:
        await cluster.create_deployment(deployment(name, replicas=1))
        await cluster.create_so(
            scaled_object(
                name,
                name,
                [redis_trigger(f"127.0.0.1:{redis.port}", name, listLength="1000")],
                pollingInterval=1,
                minReplicaCount=0,
            )
        )


async def test_three_replicas_split_the_objects_and_each_answers_for_all(
    control_plane: ControlPlane,
    cluster: Cluster,
    kubeconfig: Path,
    namespace: str,
    redis_server: RedisServer,
) -> None:
    names = [f"shop-{i:02d}" for i in range(OBJECTS)]
    await make_objects(cluster, redis_server, names)
    identities = ["Tidal-A.replica", "tidal_b", "tidal-c"]
    async with contextlib.AsyncExitStack() as stack:
        svcs = [
            await stack.enter_async_context(replica(kubeconfig, namespace, i)) for i in identities
        ]

        async def split() -> list[set[tuple[str, str]]]:
            return [owned(s) for s in svcs]

        def complete(parts: list[set[tuple[str, str]]]) -> bool:
            union = set().union(*parts)
            return len(union) == OBJECTS and sum(map(len, parts)) == OBJECTS

        parts = await eventually(split, complete, timeout=30)
        # The namespace is random, so the split is too (a third each on average, 4 of 30 is
        # not rare): each replica must own exactly what rendezvous hashing gives it.
        ring = Ring.of(Member(i, "") for i in identities)
        expected = [
            {(namespace, n) for n in names if (o := ring.owner((namespace, n))) and o.identity == i}
            for i in identities
        ]
        assert parts == expected, [len(p) for p in parts]
        assert all(parts), [len(p) for p in parts]
        leases = control_plane.request(
            "GET",
            f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
            f"?labelSelector={GROUP_LABEL}%3D{GROUP}",
        )
        holders = sorted(item["spec"]["holderIdentity"] for item in leases["items"])
        assert holders == sorted(identities)

        async with metric_client(control_plane) as http:
            for svc in svcs:
                for i, name in enumerate(names):

                    async def read(svc: Service = svc, name: str = name) -> tuple[int, Any]:
                        return await read_metric(http, svc.api_port, namespace, name)

                    _, body = await eventually(read, lambda sb: sb[0] == 200, timeout=20)
                    assert body["items"][0]["value"] == str(i + 1), (name, body)
        status = await asyncio.to_thread(
            debug_json, f"http://127.0.0.1:{svcs[1].health_port}/debug/objects"
        )
        assert status["leader"]["shards"]["members"] == sorted(identities)
        assert status["leader"]["shards"]["owned"] == len(parts[1])
        assert {(o["namespace"], o["name"]) for o in status["objects"]} == parts[1]
        forwarded = [
            s.telemetry.registry.get_sample_value(
                "tidal_metrics_api_forwarded_total", {"result": "ok"}
            )
            or 0
            for s in svcs
        ]
        # Each replica answered its own share from its store and forwarded the rest.
        assert all(f >= OBJECTS - len(p) for f, p in zip(forwarded, parts, strict=True)), forwarded


async def test_a_joining_and_a_leaving_replica_move_only_their_share(
    cluster: Cluster, kubeconfig: Path, namespace: str, redis_server: RedisServer
) -> None:
    names = [f"cart-{i:02d}" for i in range(OBJECTS)]
    await make_objects(cluster, redis_server, names)
    async with replica(kubeconfig, namespace, "one") as one:
        await eventually(lambda: _ret(owned(one)), lambda p: len(p) == OBJECTS, timeout=30)
        async with replica(kubeconfig, namespace, "two") as two:
            parts = await eventually(
                lambda: _ret((owned(one), owned(two))),
                lambda p: not (p[0] & p[1]) and len(p[0] | p[1]) == OBJECTS and bool(p[1]),
                timeout=30,
            )
            moved = parts[1]
            # "one" kept everything it did not hand over: only the joiner's share moved.
            assert parts[0] == {(namespace, n) for n in names} - moved
        # "two" left (its Lease deleted on shutdown): "one" takes its share back at once.
        await eventually(lambda: _ret(owned(one)), lambda p: len(p) == OBJECTS, timeout=10)


def debug_json(url: str) -> Any:
    """What `tidal status` reads: the daemon's debug endpoint on its health port."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


async def _ret(value: Any) -> Any:
    await asyncio.sleep(0)
    return value
