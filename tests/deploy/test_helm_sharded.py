"""The chart with `shards.mode: auto`: two replicas running as the chart's ServiceAccount (its
RBAC, nothing more) register member Leases, split the objects, forward metric reads to each
other, and leave no Lease behind when they stop; the release uninstalls cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from pathlib import Path

import redis.asyncio as aioredis

from localenv.controlplane import ControlPlane
from localenv.helm import Release
from localenv.process import free_port
from localenv.redis import RedisServer
from scaler.kube.members import GROUP_LABEL
from scaler.kube.paths import namespaced
from scaler.service import Service
from tests.deploy.chart import FAST_LEASE, chart_settings, parse
from tests.e2e.harness import (
    Cluster,
    deployment,
    eventually,
    redis_trigger,
    running_service,
    scaled_object,
)
from tests.e2e.test_shards import metric_client, read_metric

OBJECTS = 8


async def test_sharded_replicas_run_with_the_charts_rights_and_split_the_work(
    crds: ControlPlane, cluster: Cluster, redis_server: RedisServer, tmp_path: Path
) -> None:
    plane, kube, ns = crds, cluster.kube, cluster.ns
    suffix = uuid.uuid4().hex[:6]
    release = Release(plane.kubeconfig, f"tidal-{suffix}", f"tidal-{suffix}")
    rns, fullname = release.namespace, release.name
    values = {
        **FAST_LEASE,
        "shards.mode": "auto",
        "replicaCount": 2,
        "watch.namespace": ns,
        "metricsApi.apiService.create": False,
        "metricsApi.authorization": "none",
    }
    await asyncio.to_thread(release.install, values)
    names = [f"orders-{i}" for i in range(OBJECTS)]
    r = aioredis.from_url(redis_server.url)
    for i, name in enumerate(names):
        await r.delete(f"{ns}-{name}")
        await r.rpush(f"{ns}-{name}", *(["job"] * (i + 1)))
        await cluster.create_deployment(deployment(name, replicas=1))
        trigger = redis_trigger(redis_server.address, f"{ns}-{name}", listLength="100")
        await cluster.create_so(scaled_object(name, name, [trigger], pollingInterval=1))
    await r.aclose()
    leases = namespaced("coordination.k8s.io", "v1", "leases", rns)
    try:
        objs = parse(await asyncio.to_thread(release.manifest))
        sa = await asyncio.to_thread(plane.service_account_kubeconfig, rns, fullname)
        svcs: list[Service] = []
        async with contextlib.AsyncExitStack() as stack:
            for pod in ("a", "b"):
                s = chart_settings(
                    objs, pod_name=f"{fullname}-{pod}", kubeconfig=sa, cert_dir=tmp_path
                )
                assert s.shards.enabled
                peer = f"127.0.0.1:{free_port()}"
                svc = await stack.enter_async_context(
                    running_service(
                        sa,
                        watch=s.watch,
                        leader=s.leader,
                        shards=dataclasses.replace(s.shards, peer_address=peer, advertise=peer),
                        poll=s.poll,
                        serve=s.serve,
                    )
                )
                svcs.append(svc)

            async def split() -> list[int]:
                return [len(svc.daemon.objects) for svc in svcs if svc.daemon is not None]

            parts = await eventually(
                split, lambda p: sum(p) == OBJECTS and all(p), timeout=60, what="a split"
            )
            listed = await kube.get(leases, labelSelector=f"{GROUP_LABEL}=tidal-leader")
            holders = sorted(i["spec"]["holderIdentity"] for i in listed["items"])
            assert holders == [f"{fullname}-a", f"{fullname}-b"], holders
            async with metric_client(plane) as http:
                for svc in svcs:
                    for i, name in enumerate(names):

                        async def read(svc: Service = svc, name: str = name) -> tuple[int, object]:
                            return await read_metric(http, svc.api_port, ns, name, f"{ns}-{name}")

                        _, body = await eventually(read, lambda sb: sb[0] == 200, timeout=30)
                        assert body["items"][0]["value"] == str(i + 1)  # type: ignore[index]
            print(f"\n[sharded chart] objects per replica {parts}; every metric from both")
        # Both stopped: each deleted its member Lease on the way out.
        listed = await kube.get(leases, labelSelector=f"{GROUP_LABEL}=tidal-leader")
        assert listed["items"] == []
    finally:
        await asyncio.to_thread(release.uninstall)
