"""A new ScaledObject's first writes on the real API server, without a read before each: the
finalizer is added from the watch event's finalizers and resourceVersion, the HPA is created
when the HPA watch holds none of its name. When the watch was behind (the object changed, the
HPA exists), the write's 409 falls back to reading first, and nothing is lost."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from localenv.redis import RedisServer
from scaler.contract import MetricSpec
from scaler.finalizers import FINALIZER, Finalizers
from scaler.kube.client import JSON, KubeClient
from scaler.kube.events import EventRecorder
from scaler.kube.hpa import HpaRequest, ensure_hpa
from scaler.kube.paths import GVKR
from scaler.object_parser import parse_scaled_object
from scaler.telemetry import Telemetry
from tests.e2e.harness import (
    Cluster,
    deployment,
    eventually,
    redis_trigger,
    running_daemon,
    scaled_object,
)

DEPLOYMENTS = GVKR("apps", "v1", "Deployment", "deployments")
OTHER = "example.com/cleanup"


def counting(kube: KubeClient) -> list[str]:
    """Record the method of every request `kube` makes (the real client, wrapped)."""
    methods: list[str] = []
    request: Callable[..., Any] = kube.request

    async def counted(method: str, path: str, **options: Any) -> JSON:
        methods.append(method)
        return await request(method, path, **options)

    kube.request = counted  # type: ignore[method-assign]
    return methods


async def new_object(cluster: Cluster, name: str) -> JSON:
    await cluster.create_deployment(deployment(name))
    body = scaled_object(name, name, [redis_trigger("127.0.0.1:1", "q")])
    body["metadata"]["finalizers"] = [OTHER]
    return await cluster.create_so(body)


@pytest.mark.parametrize(
    "name",
    [pytest.param("orders", id="plain"), pytest.param("shop.orders-v2", id="dots")],
)
async def test_the_finalizer_is_added_in_one_request_from_the_watch_event(
    cluster: Cluster, name: str
) -> None:
    raw = await new_object(cluster, name)
    so = parse_scaled_object(raw)
    methods = counting(cluster.kube)
    finalizers = Finalizers(cluster.kube, Telemetry(), EventRecorder(cluster.kube, "test"))
    await finalizers.add(so, tuple(raw["metadata"]["finalizers"]))
    assert methods == ["PATCH"]
    live = await cluster.get_so(so.name)
    assert live["metadata"]["finalizers"] == [OTHER, FINALIZER]


async def test_a_stale_watch_event_falls_back_to_a_read_and_keeps_every_finalizer(
    cluster: Cluster,
) -> None:
    raw = await new_object(cluster, "carts")
    so = parse_scaled_object(raw)
    # Someone adds their finalizer after the event the runtime was admitted from.
    await cluster.patch_so("carts", {"metadata": {"finalizers": [OTHER, "example.com/late"]}})
    methods = counting(cluster.kube)
    finalizers = Finalizers(cluster.kube, Telemetry(), EventRecorder(cluster.kube, "test"))
    await finalizers.add(so, tuple(raw["metadata"]["finalizers"]))
    assert methods == ["PATCH", "GET", "PATCH"]  # 409, read, patch from what was read
    live = await cluster.get_so("carts")
    assert live["metadata"]["finalizers"] == [OTHER, "example.com/late", FINALIZER]


def hpa_request(cluster: Cluster, name: str, uid: str) -> HpaRequest:
    return HpaRequest(
        name=f"keda-hpa-{name}",
        namespace=cluster.ns,
        so_name=name,
        so_uid=uid,
        target=DEPLOYMENTS,
        target_name=name,
        min_replicas=1,
        max_replicas=5,
        metrics=(MetricSpec(f"s0-redis-{name}", 5.0),),
    )


async def test_an_hpa_the_watch_does_not_hold_is_created_in_one_request(
    cluster: Cluster,
) -> None:
    raw = await new_object(cluster, "payments")
    req = hpa_request(cluster, "payments", raw["metadata"]["uid"])
    methods = counting(cluster.kube)
    outcome, live = await ensure_hpa(cluster.kube, req, absent=True)
    assert (outcome, methods) == ("created", ["POST"])
    assert live["spec"]["maxReplicas"] == 5


async def test_an_hpa_that_exists_after_all_is_read_and_compared(cluster: Cluster) -> None:
    raw = await new_object(cluster, "refunds")
    req = hpa_request(cluster, "refunds", raw["metadata"]["uid"])
    await ensure_hpa(cluster.kube, req)
    methods = counting(cluster.kube)
    outcome, _ = await ensure_hpa(cluster.kube, req, absent=True)  # the watch was behind
    assert (outcome, methods) == ("unchanged", ["POST", "GET"])
    edited = dataclasses.replace(req, max_replicas=9)
    methods.clear()
    outcome, live = await ensure_hpa(cluster.kube, edited, absent=True)
    assert (outcome, methods) == ("updated", ["POST", "GET", "PUT"])
    assert live["spec"]["maxReplicas"] == 9


async def test_the_daemon_makes_a_new_objects_first_writes_without_reading_first(
    cluster: Cluster, kubeconfig: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon end to end: a ScaledObject created while it runs gets its finalizer, HPA and
    Ready status with no GET of either (the watches already hold what the writes need)."""
    async with running_daemon(kubeconfig) as daemon:
        requests: list[tuple[str, str]] = []
        request = daemon.kube.request

        async def counted(method: str, path: str, **options: Any) -> JSON:
            requests.append((method, path))
            return await request(method, path, **options)

        monkeypatch.setattr(daemon.kube, "request", counted)
        await cluster.create_deployment(deployment("web.app-1"))
        address = f"127.0.0.1:{redis_server.port}"
        await cluster.create_so(
            scaled_object("web.app-1", "web.app-1", [redis_trigger(address, "jobs")])
        )

        async def ready() -> str:
            cond = await cluster.condition("web.app-1", "Ready")
            return "" if cond is None else str(cond.get("status"))

        await eventually(ready, lambda s: s == "True", what="Ready=True")
        hpa = await cluster.hpa("keda-hpa-web.app-1")
        assert hpa is not None
        live = await cluster.get_so("web.app-1")
        assert FINALIZER in live["metadata"]["finalizers"]
    mine = [
        (m, p)
        for m, p in requests
        if f"/namespaces/{cluster.ns}/" in p
        and ("web.app-1" in p or p.endswith("/horizontalpodautoscalers"))
    ]
    reads = [(m, p) for m, p in mine if m == "GET" and "/scale" not in p]
    writes = sorted(m for m, p in mine if m != "GET")
    assert reads == [], mine
    assert writes == ["PATCH", "PATCH", "POST"], mine  # finalizer, status; the HPA
