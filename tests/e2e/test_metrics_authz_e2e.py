"""Delegated authorization of the metrics API (SubjectAccessReview, cached) through the real
aggregator and RBAC of the local kube-apiserver.

Identities: a `reader` allowed by a Role to get/list external.metrics.k8s.io in the test's
namespace; `nobody`, allowed nothing; the HPA controller. The local kube-controller-manager runs
with the admin kubeconfig and --use-service-account-credentials=false, so its HPA controller
calls as `admin` (system:masters); a cluster's calls as
system:serviceaccount:kube-system:horizontal-pod-autoscaler, which the bootstrap ClusterRole
system:controller:horizontal-pod-autoscaler allows get/list on external.metrics.k8s.io: both are
checked (the second by asserting its identity straight to Tidal through the front-proxy
certificate, against the real RBAC). Tidal runs as its own audited user, so every
SubjectAccessReview it makes is counted in the apiserver's audit log.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from localenv.controlplane import ControlPlane
from localenv.process import free_port
from localenv.redis import RedisServer
from scaler.service import Service
from scaler.settings import ServeSettings
from tests.e2e.harness import (
    Cluster,
    deployment,
    eventually,
    redis_trigger,
    running_service,
    scaled_object,
)
from tests.e2e.serving_helpers import (
    APISERVICE,
    SERVICE,
    SERVICE_NS,
    create_apiservice_without_ca,
    get_as,
    secret_data,
    user_context,
)

SO_LABEL = "scaledobject.keda.sh/name"
HPA_SA = "system:serviceaccount:kube-system:horizontal-pod-autoscaler"
HPA_GROUPS = (
    "system:serviceaccounts",
    "system:serviceaccounts:kube-system",
    "system:authenticated",
)


def _grant_reader(plane: ControlPlane, namespace: str, user: str) -> None:
    base = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    plane.apply(
        f"{base}/roles/metrics-reader",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "metrics-reader", "namespace": namespace},
            "rules": [
                {
                    "apiGroups": ["external.metrics.k8s.io"],
                    "resources": ["*"],
                    "verbs": ["get", "list"],
                }
            ],
        },
    )
    plane.apply(
        f"{base}/rolebindings/metrics-reader",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "metrics-reader", "namespace": namespace},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "metrics-reader",
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        },
    )


class Direct:
    """Calls Tidal's metrics API straight, as the aggregator does: the front-proxy client
    certificate, and the identity in X-Remote-User / X-Remote-Group."""

    def __init__(self, plane: ControlPlane, port: int, ca_pem: str) -> None:
        assert plane.certs is not None
        self.port = port
        self.ctx = ssl.create_default_context(cadata=ca_pem)
        self.ctx.load_cert_chain(
            plane.certs.front_proxy_client_crt, plane.certs.front_proxy_client_key
        )

    async def get(self, path: str, user: str, groups: tuple[str, ...] = ()) -> tuple[int, Any]:
        headers = [("X-Remote-User", user), *(("X-Remote-Group", g) for g in groups)]
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"https://127.0.0.1:{self.port}{path}",
                headers=headers,
                ssl=self.ctx,
                server_hostname=f"{SERVICE}.{SERVICE_NS}.svc",
            ) as resp,
        ):
            return resp.status, await resp.json(content_type=None)


def _reviews(plane: ControlPlane, since: int) -> int:
    return sum(
        1
        for e in plane.audit_events(since, user="tidal-authz")
        if e["verb"] == "create" and e["objectRef"].get("resource") == "subjectaccessreviews"
    )


def _cached(svc: Service, source: str) -> float:
    total = 0.0
    for decision in ("allowed", "denied"):
        total += (
            svc.telemetry.registry.get_sample_value(
                "tidal_metrics_api_authorization_total", {"decision": decision, "source": source}
            )
            or 0.0
        )
    return total


async def test_only_identities_rbac_allows_get_values(
    control_plane: ControlPlane,
    cluster: Cluster,
    redis_factory: Callable[..., RedisServer],
    tmp_path: Path,
) -> None:
    server = redis_factory()
    r = aioredis.from_url(server.url)
    await r.rpush("jobs", *[str(i) for i in range(7)])
    await cluster.create_deployment(deployment("worker", replicas=1))
    await cluster.create_so(
        scaled_object(
            "worker",
            "worker",
            [redis_trigger(server.address, "jobs", listLength="2")],
            pollingInterval=1,
            maxReplicaCount=10,
        )
    )
    ns = cluster.ns
    reader, nobody = f"reader-{ns}", f"nobody-{ns}"
    await asyncio.to_thread(_grant_reader, control_plane, ns, reader)
    path = (
        f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/s0-redis-jobs"
        f"?labelSelector={SO_LABEL}%3Dworker"
    )
    port = free_port()
    await asyncio.to_thread(create_apiservice_without_ca, control_plane, port)
    serve = ServeSettings(
        metrics_address="127.0.0.1:0",
        api_address=f"127.0.0.1:{port}",
        cert_secret=f"{ns}/tidal-serving",
        cert_service=f"{SERVICE_NS}/{SERVICE}",
        authorization_allow_ttl=10.0,  # short, so the test sees a decision asked again
    )
    kubeconfig = control_plane.user_kubeconfig("tidal-authz")
    try:
        async with running_service(kubeconfig, serve=serve) as svc:
            await asyncio.to_thread(control_plane.wait_apiservice_available, APISERVICE, 30)

            # Through kube-apiserver and the aggregator, as the users themselves.
            as_reader = user_context(control_plane, tmp_path, reader)
            status, body = await eventually(
                lambda: asyncio.to_thread(get_as, control_plane, as_reader, path),
                lambda sb: sb[0] == 200,
                what="the reader's value through the aggregator",
            )
            assert body["items"][0]["value"] == "7"
            as_nobody = user_context(control_plane, tmp_path, nobody)
            status, body = await asyncio.to_thread(get_as, control_plane, as_nobody, path)
            assert status == 403
            assert body["reason"] == "Forbidden"

            # The HPA controller gets values: 7 items / 2 per replica -> 4 replicas.
            await eventually(lambda: cluster.replicas("worker"), lambda n: n == 4, what="1 -> 4")

            # Straight to Tidal with the aggregator's certificate: Tidal's own decision.
            ca = secret_data(control_plane, ns, "tidal-serving")["ca.crt"]
            direct = Direct(control_plane, port, ca)
            status, body = await direct.get(path, reader)
            assert status == 200
            assert body["items"][0]["value"] == "7"
            status, body = await direct.get(path, HPA_SA, HPA_GROUPS)
            assert status == 200, body
            status, body = await direct.get(path, nobody, ("system:authenticated",))
            assert status == 403
            assert body["kind"] == "Status"
            assert body["reason"] == "Forbidden"
            assert f'User "{nobody}" cannot list resource "s0-redis-jobs"' in body["message"]
            assert f'in the namespace "{ns}"' in body["message"]

            # Cached: 30 requests by one identity in a few seconds make one review (at most one
            # more in the window comes from the HPA's and the aggregator's own keys).
            other = path.replace("s0-redis-jobs", "s1-not-served")
            since, cached_before = control_plane.audit_offset(), _cached(svc, "cache")
            t0 = time.monotonic()
            for _ in range(30):
                status, _ = await direct.get(other, reader)
                assert status == 404  # authorized, then not a metric Tidal serves
            window = time.monotonic() - t0
            reviews = _reviews(control_plane, since)
            print(f"[authz] 30 requests in {window:.2f} s -> {reviews} SubjectAccessReviews")
            assert 1 <= reviews <= 2
            assert _cached(svc, "cache") - cached_before >= 29

            # After the TTL (10 s here, --authorization-cache-ttl) the decision is asked again.
            await asyncio.sleep(10.5)
            since = control_plane.audit_offset()
            status, _ = await direct.get(other, reader)
            assert status == 404
            assert _reviews(control_plane, since) >= 1
    finally:
        await asyncio.to_thread(control_plane.unregister_apiservice)
        await r.aclose()


async def test_authorization_none_serves_any_identity_the_aggregator_vouches_for(
    control_plane: ControlPlane, cluster: Cluster, kubeconfig: Path
) -> None:
    """--metrics-authorization=none: the front-proxy certificate alone (today's behaviour)."""
    port = free_port()
    serve = ServeSettings(
        metrics_address="127.0.0.1:0",
        api_address=f"127.0.0.1:{port}",
        cert_secret=f"{cluster.ns}/tidal-serving",
        cert_service=f"{SERVICE_NS}/{SERVICE}",
        cert_apiservice="",
        metrics_authorization="none",
    )
    async with running_service(kubeconfig, serve=serve) as svc:
        assert svc.authorizer is None
        ca = secret_data(control_plane, cluster.ns, "tidal-serving")["ca.crt"]
        direct = Direct(control_plane, port, ca)
        status, _ = await direct.get(
            f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{cluster.ns}/m"
            f"?labelSelector={SO_LABEL}%3Dx",
            "nobody",
        )
        assert status == 404  # not 403: nothing was asked
