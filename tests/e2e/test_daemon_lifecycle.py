"""Leader election, shutdown, other scale-target kinds and watch recovery, on the real cluster."""

from __future__ import annotations

import asyncio
import signal
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis.asyncio as aioredis

from localenv.controlplane import ControlPlane
from localenv.process import ManagedProcess
from localenv.redis import RedisServer
from localenv.tidal import tidal_process
from scaler.kube.paths import namespaced
from tests.e2e.harness import (
    Cluster,
    deployment,
    eventually,
    redis_trigger,
    running_daemon,
    scaled_object,
)


def _http(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


def _writes(port: int) -> float:
    total = 0.0
    for line in _http(f"http://127.0.0.1:{port}/metrics").splitlines():
        if line.startswith("tidal_api_writes_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


@contextmanager
def tidal_run(
    run_dir: Path, kubeconfig: Path, ns: str, identity: str
) -> Iterator[tuple[ManagedProcess, int]]:
    proc, port = tidal_process(
        run_dir,
        kubeconfig,
        [
            "--watch-namespace",
            ns,
            "--leader-election-namespace",
            ns,
            "--identity",
            identity,
            "--lease-duration",
            "3",
            "--renew-deadline",
            "2",
            "--retry-period",
            "0.5",
            "--log-format",
            "json",
        ],
        name=f"tidal-{identity}-{ns}",
    )
    proc.start()
    try:
        yield proc, port
    finally:
        proc.stop()


async def test_one_leader_writes_and_a_standby_takes_over_when_it_dies(
    cluster: Cluster, kubeconfig: Path, redis_server: RedisServer, run_dir: Path
) -> None:
    key = f"jobs-{cluster.ns}"
    r = aioredis.from_url(redis_server.url)
    await cluster.create_deployment(deployment("worker", replicas=0))
    await cluster.create_so(
        scaled_object(
            "worker",
            "worker",
            [redis_trigger(redis_server.address, key)],
            pollingInterval=1,
            cooldownPeriod=1,
        )
    )
    lease = namespaced("coordination.k8s.io", "v1", "leases", cluster.ns, "tidal-leader")
    with (
        tidal_run(run_dir, kubeconfig, cluster.ns, "a") as (a, port_a),
        tidal_run(run_dir, kubeconfig, cluster.ns, "b") as (b, port_b),
    ):
        held = await eventually(
            lambda: cluster.kube.get_or_none(lease),
            lambda obj: obj is not None and obj["spec"].get("holderIdentity") in ("a", "b"),
            what="a lease holder",
        )
        assert held is not None
        leader = held["spec"]["holderIdentity"]
        (lp, lport), (sp, sport) = ((a, port_a), (b, port_b))
        if leader == "b":
            (lp, lport), (sp, sport) = (sp, sport), (lp, lport)
        await r.rpush(key, "x")
        await eventually(lambda: cluster.replicas("worker"), lambda n: n == 1, what="0 -> 1")
        assert await asyncio.to_thread(_writes, lport) > 0
        assert await asyncio.to_thread(_writes, sport) == 0  # the standby never writes

        lp.kill()  # SIGKILL: no chance to release the lease
        standby = "b" if leader == "a" else "a"
        await eventually(
            lambda: cluster.kube.get_or_none(lease),
            lambda obj: obj is not None and obj["spec"].get("holderIdentity") == standby,
            timeout=20,
            what="the standby to take the lease",
        )
        await r.delete(key)
        await eventually(lambda: cluster.replicas("worker"), lambda n: n == 0, what="1 -> 0")
        assert await asyncio.to_thread(_writes, sport) > 0

        # SIGTERM: a clean exit that hands the lease back.
        assert sp.proc is not None
        sp.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(sp.proc.wait, 30)
        assert code == 0
        released = await cluster.kube.get(lease)
        assert not released["spec"].get("holderIdentity")
    await r.aclose()


async def test_statefulset_and_custom_resource_scale_targets(
    crds: ControlPlane, cluster: Cluster, kubeconfig: Path, redis_server: RedisServer
) -> None:
    """Anything with a /scale subresource: a StatefulSet, and a CRD of our own."""
    crds.apply(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.tidal",
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.tidal"},
            "spec": {
                "group": "example.tidal",
                "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
                "scope": "Namespaced",
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            }
                        },
                        "subresources": {
                            "scale": {
                                "specReplicasPath": ".spec.replicas",
                                "statusReplicasPath": ".status.replicas",
                            }
                        },
                    }
                ],
            },
        },
    )
    await asyncio.sleep(2)  # discovery of the new group
    sts = deployment("db", replicas=0)
    sts["kind"] = "StatefulSet"
    sts["spec"]["serviceName"] = "db"
    await cluster.kube.create(namespaced("apps", "v1", "statefulsets", cluster.ns), sts)
    await cluster.kube.create(
        f"/apis/example.tidal/v1/namespaces/{cluster.ns}/widgets",
        {
            "apiVersion": "example.tidal/v1",
            "kind": "Widget",
            "metadata": {"name": "w"},
            "spec": {"replicas": 0},
        },
    )
    key = f"jobs-{cluster.ns}"
    trig = [redis_trigger(redis_server.address, key)]
    sts_so = scaled_object("db", "db", trig, pollingInterval=1)
    sts_so["spec"]["scaleTargetRef"]["kind"] = "StatefulSet"
    widget_so = scaled_object("w", "w", trig, pollingInterval=1)
    widget_so["spec"]["scaleTargetRef"].update(apiVersion="example.tidal/v1", kind="Widget")
    await cluster.create_so(sts_so)
    await cluster.create_so(widget_so)

    async def widget() -> int:
        body = await cluster.kube.get(f"/apis/example.tidal/v1/namespaces/{cluster.ns}/widgets/w")
        return int(body["spec"]["replicas"])

    async with running_daemon(kubeconfig):
        r = aioredis.from_url(redis_server.url)
        await r.rpush(key, "x")
        await r.aclose()
        await eventually(lambda: cluster.replicas("db", "statefulsets"), lambda n: n == 1)
        await eventually(widget, lambda n: n == 1, what="widget 0 -> 1")
        # The status is written after the /scale write (the same poll): wait for it.
        so = await eventually(
            lambda: cluster.get_so("w"),
            lambda o: "scaleTargetKind" in (o.get("status") or {}),
            what="the Widget object's status",
        )
        assert so["status"]["scaleTargetKind"] == "example.tidal/v1.Widget"
        assert so["status"]["scaleTargetGVKR"]["resource"] == "widgets"


async def test_watch_resumes_after_the_apiserver_restarts(
    crds: ControlPlane, cluster: Cluster, kubeconfig: Path, redis_server: RedisServer
) -> None:
    key = f"jobs-{cluster.ns}"
    await cluster.create_deployment(deployment("late", replicas=0))
    async with running_daemon(kubeconfig) as daemon:
        relists = daemon.so_watcher.relists
        await asyncio.to_thread(crds.restart_apiserver)
        # An object created after the restart is only seen if the watch came back by itself.
        await cluster.create_so(
            scaled_object(
                "late", "late", [redis_trigger(redis_server.address, key)], pollingInterval=1
            )
        )
        ready = await eventually(
            lambda: cluster.condition("late", "Ready"),
            lambda c: c is not None and c["status"] == "True",
            what="the new object Ready after the restart",
        )
        assert ready is not None
        assert daemon.so_watcher.relists > relists
