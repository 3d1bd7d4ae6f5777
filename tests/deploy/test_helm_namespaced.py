"""A namespace-scoped release (`watch.namespace`): Tidal, as the chart's ServiceAccount, scales
in the watched namespace with the Role the chart puts there, and can do nothing outside it."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from localenv.controlplane import ControlPlane
from localenv.helm import Release
from localenv.redis import RedisServer
from scaler.kube.client import KubeClient
from tests.deploy.chart import (
    FAST_LEASE,
    Obj,
    call_status,
    chart_settings,
    parse,
    refused_in_logs,
)
from tests.e2e.harness import (
    Cluster,
    deployment,
    eventually,
    redis_trigger,
    running_service,
    scaled_object,
)


@dataclass(frozen=True)
class Scoped:
    release: Release
    watched: str
    other: str
    kubeconfig: Path  # the chart's ServiceAccount
    objects: list[Obj]


def _namespace(plane: ControlPlane, name: str) -> None:
    plane.apply(
        f"/api/v1/namespaces/{name}",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )


@pytest.fixture(scope="module")
def scoped(crds: ControlPlane) -> Iterator[Scoped]:
    """A release watching one namespace, without an APIService (another release may own it)."""
    suffix = uuid.uuid4().hex[:6]
    release = Release(crds.kubeconfig, f"tidal-{suffix}", f"tidal-{suffix}")
    watched, other = f"apps-{suffix}", f"other-{suffix}"
    for name in (watched, other):
        _namespace(crds, name)
    release.install(
        {**FAST_LEASE, "watch.namespace": watched, "metricsApi.apiService.create": False}
    )
    try:
        sa = crds.service_account_kubeconfig(release.namespace, release.name)
        yield Scoped(release, watched, other, sa, parse(release.manifest()))
    finally:
        release.uninstall()
        for name in (watched, other, release.namespace):
            crds.delete(f"/api/v1/namespaces/{name}")


async def test_a_namespaced_release_scales_only_its_namespace(
    scoped: Scoped,
    cluster: Cluster,
    redis_server: RedisServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="scaler")
    key = f"jobs-{scoped.watched}"
    inside, outside = Cluster(cluster.kube, scoped.watched), Cluster(cluster.kube, scoped.other)
    for c in (inside, outside):
        await c.create_deployment(deployment("worker", replicas=0))
        await c.create_so(
            scaled_object(
                "worker", "worker", [redis_trigger(redis_server.address, key)], pollingInterval=1
            )
        )
    s = chart_settings(
        scoped.objects, pod_name="tidal-a", kubeconfig=scoped.kubeconfig, cert_dir=tmp_path
    )
    assert s.watch.namespace == scoped.watched
    assert s.serve.cert_apiservice == ""
    r = aioredis.from_url(redis_server.url)
    try:
        async with running_service(
            scoped.kubeconfig, watch=s.watch, leader=s.leader, poll=s.poll, serve=s.serve
        ):
            await r.rpush(key, "x")
            await eventually(lambda: inside.replicas("worker"), lambda n: n == 1, what="0 -> 1")
            assert await inside.hpa("keda-hpa-worker") is not None
            ready = await inside.condition("worker", "Ready")
            assert ready is not None
            assert ready["status"] == "True"
            await asyncio.sleep(2)  # two polls: the other namespace's object stays untouched
            assert await outside.replicas("worker") == 0
            untouched = await outside.get_so("worker")
            assert "status" not in untouched
            assert not untouched["metadata"].get("finalizers")
            assert await outside.hpa("keda-hpa-worker") is None
    finally:
        await r.aclose()
    assert refused_in_logs(caplog.records) == []


# id -> (method, path, expected status) of calls made with the release's ServiceAccount token.
# {w}: the watched namespace, {o}: another one, {r}: the release's own.
CORE, APPS = "/api/v1/namespaces", "/apis/apps/v1/namespaces"
CALLS = {
    "read-secret-watched-ns-allowed": ("GET", CORE + "/{w}/secrets/x", 404),
    "read-secret-cluster-object-ns-allowed": ("GET", CORE + "/{r}/secrets/x", 404),
    "read-secret-other-ns": ("GET", CORE + "/{o}/secrets/x", 403),
    "list-secrets-cluster-wide": ("GET", "/api/v1/secrets", 403),
    "list-scaledobjects-other-ns": (
        "GET",
        "/apis/keda.sh/v1alpha1/namespaces/{o}/scaledobjects",
        403,
    ),
    "scale-other-ns": ("PATCH", APPS + "/{o}/deployments/x/scale", 403),
    "scale-watched-ns-allowed": ("PATCH", APPS + "/{w}/deployments/x/scale", 404),
    "delete-deployment": ("DELETE", APPS + "/{w}/deployments/x", 403),
    "create-secret-watched-ns": ("POST", CORE + "/{w}/secrets", 403),
    "write-another-lease": ("PUT", "/apis/coordination.k8s.io/v1/namespaces/{r}/leases/x", 403),
    "patch-apiservice-not-managed": (
        "PATCH",
        "/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.external.metrics.k8s.io",
        403,
    ),
    "list-hpas-cluster-wide": ("GET", "/apis/autoscaling/v2/horizontalpodautoscalers", 403),
}


@pytest.mark.parametrize(
    ("method", "path", "expected"), [pytest.param(*call, id=name) for name, call in CALLS.items()]
)
async def test_calls_outside_the_role_are_forbidden(
    scoped: Scoped, method: str, path: str, expected: int
) -> None:
    """403 where the Role does not reach; 404 (allowed, no such object) where it does."""
    url = path.format(w=scoped.watched, o=scoped.other, r=scoped.release.namespace)
    body: dict[str, object] | None = None
    if method in ("POST", "PUT"):
        body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}
    elif method == "PATCH":
        body = {"spec": {"replicas": 1}}
    kube = await KubeClient.from_kubeconfig(str(scoped.kubeconfig))
    try:
        assert await call_status(kube, method, url, body) == expected
    finally:
        await kube.aclose()


def test_the_namespaced_release_grants_nothing_cluster_wide_but_its_cluster_objects(
    scoped: Scoped,
) -> None:
    """Only ClusterTriggerAuthentications (a cluster-scoped kind) are read cluster-wide, and
    SubjectAccessReviews made (delegated authorization)."""
    sa = {"kind": "ServiceAccount", "name": scoped.release.name}
    bound = {
        o["roleRef"]["name"]
        for o in scoped.objects
        if o["kind"] == "ClusterRoleBinding" and any(sa.items() <= s.items() for s in o["subjects"])
    }
    cluster_rules = [
        rule
        for o in scoped.objects
        if o["kind"] == "ClusterRole" and o["metadata"]["name"] in bound
        for rule in o.get("rules") or []
    ]
    resources = sorted(r for rule in cluster_rules for r in rule["resources"])
    assert resources == ["clustertriggerauthentications", "subjectaccessreviews"]
