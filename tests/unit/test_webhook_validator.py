"""The webhook's own decisions around the core (scaler/webhook.py), on a stand-in for the
daemon's state: what it lets through unchecked, the warning before the watches have synced,
the message kubectl shows, LimitRanges that can't be read."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import pytest

from metrics_api.admission import AdmissionRequest
from scaler.daemon import Daemon
from scaler.errors import KubeError
from scaler.object_parser import parse_scaled_object
from scaler.settings import Settings, WatchSettings
from scaler.webhook import NOT_SYNCED, DaemonValidator

NS = "shop"


def so(name: str, target: str = "web", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"name": target},
            "triggers": [{"type": "redis", "metadata": {"address": "r:6379", "listName": "j"}}],
            **spec,
        },
    }


class FakeKube:
    def __init__(self, limit_ranges: list[dict[str, Any]] | None) -> None:
        self.limit_ranges = limit_ranges
        self.gets: list[str] = []

    async def get(self, path: str) -> dict[str, Any]:
        self.gets.append(path)
        if self.limit_ranges is None:
            raise KubeError("forbidden", 403)
        return {"items": self.limit_ranges}


def fake_daemon(
    *,
    owners: tuple[dict[str, Any], ...] = (),
    synced: bool = True,
    watch_namespace: str = "",
    containers: list[dict[str, Any]] | None = None,
    limit_ranges: list[dict[str, Any]] | None = None,
) -> tuple[Daemon, FakeKube]:
    old = {"namespace": NS, "creationTimestamp": "2024-01-01T00:00:00Z"}
    runtimes = [
        SimpleNamespace(so=parse_scaled_object({**o, "metadata": {**o["metadata"], **old}}))
        for o in owners
    ]
    deployments = SimpleNamespace(
        synced=SimpleNamespace(is_set=lambda: True),
        objects={} if containers is None else {(NS, "web"): {"containers": containers}},
    )
    kube = FakeKube(limit_ranges)
    daemon = SimpleNamespace(
        settings=Settings(watch=WatchSettings(namespace=watch_namespace)),
        ready=lambda: synced,
        objects=SimpleNamespace(runtimes=lambda: runtimes),
        inputs=SimpleNamespace(
            foreign_hpas=dict,
            trigger_auths=SimpleNamespace(objects={}),
            cluster_trigger_auths=SimpleNamespace(objects={}),
        ),
        targets=SimpleNamespace(watchers={("apps", "deployments"): deployments}),
        kube=kube,
    )
    return cast(Daemon, daemon), kube


def request(
    obj: dict[str, Any],
    operation: str = "CREATE",
    namespace: str = NS,
    old: dict[str, Any] | None = None,
    kind: str = "ScaledObject",
) -> AdmissionRequest:
    return AdmissionRequest(
        uid="u",
        kind=kind,
        operation=operation,
        namespace=namespace,
        name=obj["metadata"]["name"],
        object=obj,
        old_object=old,
        dry_run=False,
    )


def review(daemon: Daemon, req: AdmissionRequest) -> Any:
    return asyncio.run(DaemonValidator(daemon, registry=None).review(req))


def test_denial_names_every_problem_with_its_field() -> None:
    daemon, _ = fake_daemon(owners=(so("first"),))
    verdict = review(daemon, request(so("second", minReplicaCount=1, idleReplicaCount=1)))
    assert not verdict.allowed
    assert verdict.message == (
        "spec.idleReplicaCount: IdleReplicaCount=1 must be less than MinReplicaCount=1; "
        "spec.scaleTargetRef: the workload 'web' of type 'apps/v1.Deployment' is already "
        "managed by the ScaledObject 'first'"
    )


def test_before_the_watches_sync_only_the_object_itself_is_checked() -> None:
    daemon, _ = fake_daemon(owners=(so("first"),), synced=False)
    verdict = review(daemon, request(so("second")))
    assert verdict.allowed
    assert verdict.warnings == (NOT_SYNCED,)
    verdict = review(daemon, request(so("third", minReplicaCount=1, idleReplicaCount=1)))
    assert not verdict.allowed


@pytest.mark.parametrize(
    ("req", "watch_namespace"),
    [
        pytest.param(
            request(so("x", minReplicaCount=1, idleReplicaCount=1), "DELETE"), "", id="delete"
        ),
        pytest.param(
            request(so("x", minReplicaCount=1, idleReplicaCount=1), namespace="other"),
            NS,
            id="namespace-not-watched",
        ),
        pytest.param(
            request(
                so("x", minReplicaCount=1, idleReplicaCount=1),
                "UPDATE",
                old={
                    **so("x", minReplicaCount=1, idleReplicaCount=1),
                    "metadata": {"name": "x", "finalizers": ["finalizer.keda.sh"]},
                },
            ),
            "",
            id="finalizer-removed",
        ),
    ],
)
def test_let_through_unchecked(req: AdmissionRequest, watch_namespace: str) -> None:
    daemon, _ = fake_daemon(watch_namespace=watch_namespace)
    assert review(daemon, req).allowed


@pytest.mark.parametrize(
    ("limit_ranges", "allowed"),
    [
        pytest.param([], False, id="no-limitrange"),
        pytest.param(
            [{"spec": {"limits": [{"type": "Container", "defaultRequest": {"cpu": "100m"}}]}}],
            True,
            id="limitrange-default",
        ),
        pytest.param(None, True, id="limitranges-unreadable"),
    ],
)
def test_cpu_requests_and_limit_ranges(
    limit_ranges: list[dict[str, Any]] | None, allowed: bool
) -> None:
    cpu = {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "50"}}
    daemon, kube = fake_daemon(containers=[{"name": "app"}], limit_ranges=limit_ranges)
    verdict = review(daemon, request(so("c", triggers=[cpu], minReplicaCount=1)))
    assert verdict.allowed is allowed
    assert kube.gets == [f"/api/v1/namespaces/{NS}/limitranges"]
    daemon, kube = fake_daemon(
        containers=[{"name": "app", "resources": {"requests": {"cpu": "1"}}}], limit_ranges=[]
    )
    assert review(daemon, request(so("c", triggers=[cpu], minReplicaCount=1))).allowed
    assert kube.gets == []  # requests set: no LimitRange read


def test_trigger_authentication() -> None:
    daemon, _ = fake_daemon()
    auth = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": {"name": "a"},
        "spec": {"filePath": "/etc/creds"},
    }
    verdict = review(daemon, request(auth, kind="TriggerAuthentication"))
    assert not verdict.allowed
    assert verdict.message.startswith("spec.filePath: authentication source 'filePath'")
