"""The chart on the real control plane: `helm install`, Tidal run as the chart's ServiceAccount
through every API call it makes, `helm upgrade` while it scales, `helm uninstall` leaving nothing.

No kubelet runs, so the chart's pods stay Pending; Tidal runs in-process instead, with exactly
the args and env the chart gives its container, and the bearer token the TokenRequest API issues
for the chart's ServiceAccount (what the kubelet would project into the pod). Every permission
Tidal lacks either fails an assertion (the scaling it blocks never happens) or is logged by the
loop that swallowed it: the test fails on any 403 in Tidal's logs. The aggregator reaches the
in-process metrics API through the chart's own `metricsApi.service.externalName` (localhost) at
a free loopback port, and verifies it against the CA Tidal keeps in the chart's Secret.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from localenv.controlplane import ControlPlane
from localenv.crds import install_crds
from localenv.helm import Release
from localenv.process import free_port
from localenv.redis import RedisServer
from scaler.kube.client import JSON, KubeClient
from scaler.kube.paths import hpa, namespaced, scaled_objects
from tests.deploy.chart import (
    FAST_LEASE,
    Obj,
    call_status,
    chart_settings,
    parse,
    refused_in_logs,
)
from tests.e2e.harness import Cluster, deployment, eventually, running_service, scaled_object

APISERVICE = "/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.external.metrics.k8s.io"
# kind -> (API prefix, plural, namespaced) of what the chart renders.
KINDS = {
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "Secret": ("/api/v1", "secrets", True),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "Service": ("/api/v1", "services", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets", True),
    "Lease": ("/apis/coordination.k8s.io/v1", "leases", True),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "APIService": ("/apis/apiregistration.k8s.io/v1", "apiservices", False),
}
GIZMO_CRD = "gizmos.charttest.tidal"
GIZMOS = "/apis/charttest.tidal/v1/namespaces/{ns}/gizmos"


def object_path(obj: Obj) -> str:
    prefix, plural, is_namespaced = KINDS[obj["kind"]]
    meta = obj["metadata"]
    where = f"/namespaces/{meta['namespace']}" if is_namespaced else ""
    return f"{prefix}{where}/{plural}/{meta['name']}"


def _progress(what: str) -> None:
    print(f"[deploy-e2e] {what}")


async def _apiservice_available(kube: KubeClient) -> bool:
    body = await kube.get(APISERVICE)
    return any(
        c["type"] == "Available" and c["status"] == "True"
        for c in body.get("status", {}).get("conditions", [])
    )


def _gizmo_crd(plane: ControlPlane, directory: Path) -> None:
    """A custom resource with a /scale subresource and no controller: only Tidal scales it."""
    schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    scale = {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": GIZMO_CRD},
        "spec": {
            "group": "charttest.tidal",
            "names": {"kind": "Gizmo", "plural": "gizmos", "singular": "gizmo"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {"scale": scale},
                }
            ],
        },
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "gizmo.yaml").write_text(json.dumps(crd))
    install_crds(plane, directory)


def _redis_trigger(list_name: str, auth: JSON | None = None, **metadata: str) -> JSON:
    trigger: JSON = {"type": "redis", "metadata": {"listName": list_name, **metadata}}
    if auth is not None:
        trigger["authenticationRef"] = auth
    return trigger


async def _workloads(
    cluster: Cluster, release_ns: str, cta: str, redis: RedisServer, keys: dict[str, str]
) -> None:
    """worker (Deployment; TriggerAuthentication -> Secret), db (StatefulSet; address from a
    ConfigMap through the container's env), g (Gizmo; ClusterTriggerAuthentication -> a Secret
    in the release namespace, Tidal's cluster object namespace)."""
    kube, ns = cluster.kube, cluster.ns
    await cluster.create_address_auth("redis", redis.address)
    await cluster.create_deployment(deployment("worker", replicas=0))
    await cluster.create_so(
        scaled_object(
            "worker",
            "worker",
            [_redis_trigger(keys["worker"], {"name": "redis"}, listLength="2")],
            pollingInterval=1,
            cooldownPeriod=1,
            maxReplicaCount=4,
        )
    )
    await kube.create(
        namespaced("", "v1", "configmaps", ns),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "redis-conf"},
         "data": {"address": redis.address}},
    )  # fmt: skip
    env = [
        {
            "name": "REDIS_ADDRESS",
            "valueFrom": {"configMapKeyRef": {"name": "redis-conf", "key": "address"}},
        }
    ]
    sts = deployment("db", replicas=0, env=env)
    sts["kind"] = "StatefulSet"
    sts["spec"]["serviceName"] = "db"
    await kube.create(namespaced("apps", "v1", "statefulsets", ns), sts)
    db = scaled_object(
        "db",
        "db",
        [_redis_trigger(keys["db"], addressFromEnv="REDIS_ADDRESS")],
        pollingInterval=1,
        cooldownPeriod=1,
    )
    db["spec"]["scaleTargetRef"]["kind"] = "StatefulSet"
    await cluster.create_so(db)
    await kube.create(
        namespaced("", "v1", "secrets", release_ns),
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "redis-cluster-auth"},
         "stringData": {"address": redis.address}},
    )  # fmt: skip
    await kube.create(
        "/apis/keda.sh/v1alpha1/clustertriggerauthentications",
        {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ClusterTriggerAuthentication",
            "metadata": {"name": cta},
            "spec": {
                "secretTargetRef": [
                    {"parameter": "address", "name": "redis-cluster-auth", "key": "address"}
                ]
            },
        },
    )
    await kube.create(
        GIZMOS.format(ns=ns),
        {"apiVersion": "charttest.tidal/v1", "kind": "Gizmo", "metadata": {"name": "g"},
         "spec": {"replicas": 0}},
    )  # fmt: skip
    gizmo = scaled_object(
        "g",
        "g",
        [_redis_trigger(keys["g"], {"name": cta, "kind": "ClusterTriggerAuthentication"})],
        pollingInterval=1,
        cooldownPeriod=1,
        advanced={"restoreToOriginalReplicaCount": True},
    )
    gizmo["spec"]["scaleTargetRef"].update(apiVersion="charttest.tidal/v1", kind="Gizmo")
    await cluster.create_so(gizmo)


async def test_tidal_runs_as_the_chart_installs_it(
    crds: ControlPlane,
    cluster: Cluster,
    redis_server: RedisServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """install -> every API call as the chart's ServiceAccount -> upgrade while scaling ->
    uninstall leaves no HPA, APIService, Lease, Secret, RBAC or webhook behind."""
    caplog.set_level(logging.DEBUG, logger="scaler")
    caplog.set_level(logging.DEBUG, logger="metrics_api")
    plane, kube, ns = crds, cluster.kube, cluster.ns
    suffix = uuid.uuid4().hex[:6]
    release = Release(plane.kubeconfig, f"tidal-{suffix}", f"tidal-{suffix}")
    rns, fullname = release.namespace, release.name
    cta = f"redis-{suffix}"
    keys = {name: f"{name}-{suffix}" for name in ("worker", "db", "g")}
    api_port = free_port()
    r = aioredis.from_url(redis_server.url)

    async def replicas(path: str) -> int:
        return int((await kube.get(path))["spec"].get("replicas") or 0)

    worker = namespaced("apps", "v1", "deployments", ns, "worker")
    db = namespaced("apps", "v1", "statefulsets", ns, "db")
    gizmo = GIZMOS.format(ns=ns) + "/g"
    lease = namespaced("coordination.k8s.io", "v1", "leases", rns, "tidal-leader")
    secret = namespaced("", "v1", "secrets", rns, f"{fullname}-certs")

    async def until(probe: Callable[[], Awaitable[Any]], check: Callable[[Any], bool], what: str,
                    timeout: float = 30.0) -> Any:  # fmt: skip
        value = await eventually(probe, check, timeout=timeout, what=what)
        _progress(f"{what}: ok")
        return value

    # A leftover registration (a crashed test) would make the install fail: only one provider.
    if await kube.get_or_none(APISERVICE) is not None:
        await kube.delete(APISERVICE)
    await asyncio.to_thread(_gizmo_crd, plane, tmp_path / "crds")
    values = {
        **FAST_LEASE,
        "metricsApi.service.externalName": "localhost",
        "metricsApi.service.port": api_port,
    }
    installed = await asyncio.to_thread(release.install, values)
    try:
        notes = installed[installed.index("NOTES:") :]
        print(notes)
        assert f"Lease {rns}/tidal-leader" in notes
        assert f"Secret {rns}/{fullname}-certs" in notes
        # 1. Everything the chart renders exists; the Lease and Secret wait, empty, for Tidal.
        objs = parse(await asyncio.to_thread(release.manifest))
        assert {o["kind"] for o in objs} >= {"Deployment", "APIService", "Lease", "Secret"}
        for obj in objs:
            assert await kube.get_or_none(object_path(obj)) is not None, object_path(obj)
        assert not (await kube.get(lease)).get("spec", {}).get("holderIdentity")
        assert not (await kube.get(secret)).get("data")
        api = await kube.get(APISERVICE)
        assert "caBundle" not in api["spec"]
        assert "insecureSkipTLSVerify" not in api["spec"]

        await _workloads(cluster, rns, cta, redis_server, keys)
        sa = await asyncio.to_thread(plane.service_account_kubeconfig, rns, fullname)
        s = chart_settings(
            objs, pod_name=f"{fullname}-a", kubeconfig=sa, cert_dir=tmp_path, api_port=api_port
        )
        assert s.leader.enabled
        assert s.serve.cert_secret == f"{rns}/{fullname}-certs"
        assert s.serve.metrics_authorization == "delegated"
        as_tidal = await KubeClient.from_kubeconfig(str(sa))
        async with running_service(
            sa, watch=s.watch, leader=s.leader, poll=s.poll, serve=s.serve
        ) as svc:
            _progress(f"tidal running as system:serviceaccount:{rns}:{fullname}")
            # 2. Leases: the chart's Lease, taken by this replica.
            await until(
                lambda: kube.get(lease),
                lambda o: o["spec"].get("holderIdentity") == f"{fullname}-a",
                "Lease held",
            )
            # 3. The managed CA in the chart's Secret, in the APIService's caBundle: Available.
            await until(lambda: _apiservice_available(kube), bool, "APIService Available")
            stored = await kube.get(secret)
            assert stored["data"]
            assert (await kube.get(APISERVICE))["spec"]["caBundle"]
            # The group's discovery works for the aggregator itself: a namespace deletion
            # (which needs every group's discovery) completes.
            probe = f"/api/v1/namespaces/probe-{suffix}"
            await kube.create(
                "/api/v1/namespaces",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"probe-{suffix}"}},
            )
            await kube.delete(probe)
            await until(lambda: kube.get_or_none(probe), lambda o: o is None, "namespace deleted")
            # 4. Status, finalizers, HPAs (create) for all three kinds of target.
            for name in ("worker", "db", "g"):
                so = await until(
                    lambda n=name: cluster.get_so(n),
                    lambda o: any(
                        c["type"] == "Ready" and c["status"] == "True"
                        for c in o.get("status", {}).get("conditions", [])
                    ),
                    f"{name} Ready",
                )
                assert "finalizer.keda.sh" in so["metadata"].get("finalizers", []), so
                await until(lambda n=name: cluster.hpa(f"keda-hpa-{n}"), bool, f"HPA {name}")
            # 5. /scale of a Deployment, a StatefulSet and a custom resource: 0 -> 1; then the
            # HPA reads the metric through the aggregator (delegated authorization) to 1 -> 3.
            await r.rpush(keys["worker"], *"abcdef")
            await r.rpush(keys["db"], "x")
            await r.rpush(keys["g"], "x")
            await until(lambda: replicas(db), lambda n: n == 1, "db (StatefulSet) 0 -> 1")
            await until(lambda: replicas(gizmo), lambda n: n == 1, "g (Gizmo) 0 -> 1")
            await until(lambda: replicas(worker), lambda n: n == 3, "worker 0 -> 1 -> 3 (HPA)")
            reviewed = svc.telemetry.registry.get_sample_value(
                "tidal_metrics_api_authorization_total", {"decision": "allowed", "source": "review"}
            )
            assert reviewed, [
                (m.name, smp)
                for m in svc.telemetry.registry.collect()
                if "authoriz" in m.name
                for smp in m.samples
            ]
            # 6. HPA update: a new maxReplicaCount reaches the HPA, and the HPA acts on it.
            await cluster.patch_so("worker", {"spec": {"maxReplicaCount": 2}})
            await until(
                lambda: cluster.hpa("keda-hpa-worker"),
                lambda h: h["spec"]["maxReplicas"] == 2,
                "HPA updated",
            )
            await until(lambda: replicas(worker), lambda n: n == 2, "worker 3 -> 2")
            # 7. HPA delete: a paused object loses its HPA.
            await cluster.patch_so(
                "db", {"metadata": {"annotations": {"autoscaling.keda.sh/paused": "true"}}}
            )
            await until(lambda: cluster.hpa("keda-hpa-db"), lambda h: h is None, "HPA deleted")
            # 8. Events: a second identical activation bumps the first Event's count (patch).
            await r.delete(keys["g"])
            await until(lambda: replicas(gizmo), lambda n: n == 0, "g 1 -> 0")
            await r.rpush(keys["g"], "x")
            await until(lambda: replicas(gizmo), lambda n: n == 1, "g 0 -> 1 again")
            await until(
                lambda: cluster.events("g"),
                lambda evs: any(
                    e["reason"] == "KEDAScaleTargetActivated" and e.get("count", 1) >= 2
                    for e in evs
                ),
                "Event count 2",
            )
            # 9. Refused: calls outside the role, made with the same token.
            so_path = scaled_objects(ns, "worker")
            refused = {
                "delete a Deployment": await call_status(as_tidal, "DELETE", worker),
                "update a ScaledObject": await call_status(
                    as_tidal, "PUT", so_path, await as_tidal.get(so_path)
                ),
                "create a Secret outside its namespace": await call_status(
                    as_tidal,
                    "POST",
                    namespaced("", "v1", "secrets", ns),
                    {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}},
                ),
                "read another Lease": await call_status(
                    as_tidal, "GET", namespaced("coordination.k8s.io", "v1", "leases", rns, "x")
                ),
                "patch another APIService": await call_status(
                    as_tidal, "PATCH", "/apis/apiregistration.k8s.io/v1/apiservices/v1.apps", {}
                ),
            }
            assert refused == dict.fromkeys(refused, 403)

            # 10. helm upgrade while it runs: the Deployment changes; the Lease, the Secret's
            # material and the caBundle Tidal wrote survive the three-way merge; scaling goes on.
            bundle = (await kube.get(APISERVICE))["spec"]["caBundle"]
            await asyncio.to_thread(release.upgrade, {"log.level": "debug"})
            upgraded = parse(await asyncio.to_thread(release.manifest))
            live = await kube.get(namespaced("apps", "v1", "deployments", rns, fullname))
            args = live["spec"]["template"]["spec"]["containers"][0]["args"]
            assert "--log-level=debug" in args
            assert (
                "--log-level=debug"
                in next(o for o in upgraded if o["kind"] == "Deployment")["spec"]["template"][
                    "spec"
                ]["containers"][0]["args"]
            )
            assert (await kube.get(secret))["data"] == stored["data"]
            assert (await kube.get(APISERVICE))["spec"]["caBundle"] == bundle
            assert await _apiservice_available(kube)
            held = (await kube.get(lease))["spec"]
            assert held["holderIdentity"] == f"{fullname}-a"
            await until(
                lambda: kube.get(lease),
                lambda o: o["spec"].get("renewTime") != held.get("renewTime"),
                "Lease renewed after the upgrade",
            )
            await r.delete(keys["worker"])
            await until(lambda: replicas(worker), lambda n: n == 0, "worker 2 -> 1 -> 0")
            # 11. Finalizer: a deleted object restores its original count, then goes; its HPA
            # is garbage-collected through its ownerReference.
            await cluster.delete_so("g")
            await until(lambda: replicas(gizmo), lambda n: n == 0, "g restored to 0")
            await until(
                lambda: kube.get_or_none(scaled_objects(ns, "g")), lambda o: o is None, "g gone"
            )
            # The garbage collector learns new resources (the CRDs, when this test is the
            # session's first to install them) on its 30 s discovery resync.
            await until(
                lambda: cluster.hpa("keda-hpa-g"), lambda h: h is None, "g's HPA GC'd", timeout=90
            )
        await as_tidal.aclose()
        released = (await kube.get(lease))["spec"]
        assert not released.get("holderIdentity")
        assert refused_in_logs(caplog.records) == []
        assert not [r for r in caplog.records if "request forbidden" in r.getMessage()]

        # 12. helm uninstall: nothing of the release is left, nothing Tidal wrote either.
        await asyncio.to_thread(release.uninstall)
        assert await kube.get_or_none(APISERVICE) is None
        for obj in objs:
            assert await kube.get_or_none(object_path(obj)) is None, object_path(obj)
        leftover = await kube.get(namespaced("", "v1", "secrets", rns))
        assert [s["metadata"]["name"] for s in leftover["items"]] == ["redis-cluster-auth"]
        leases = await kube.get(namespaced("coordination.k8s.io", "v1", "leases", rns))
        assert leases["items"] == []
        selector = {"labelSelector": f"app.kubernetes.io/instance={fullname}"}
        for path in (
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/rolebindings",
        ):
            assert (await kube.get(path, **selector))["items"] == [], path
        for hook in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"):
            hooks = await kube.get(f"/apis/admissionregistration.k8s.io/v1/{hook}")
            assert not [h for h in hooks["items"] if "tidal" in h["metadata"]["name"]]
        # The ScaledObjects outlive Tidal, with its finalizer (docs/install.md: delete them
        # first). Dropping the finalizer by hand lets them go, and their HPAs with them.
        for name in ("worker", "db"):
            await cluster.patch_so(name, {"metadata": {"finalizers": None}})
            await cluster.delete_so(name)
        await until(
            lambda: kube.get(hpa(ns), labelSelector="app.kubernetes.io/managed-by=tidal"),
            lambda body: body["items"] == [],
            "no HPA left",
            timeout=90,
        )
    finally:
        await r.aclose()
        await kube.delete(f"/apis/keda.sh/v1alpha1/clustertriggerauthentications/{cta}")
        if await asyncio.to_thread(release.installed):
            await asyncio.to_thread(release.uninstall)
        await kube.delete(f"/api/v1/namespaces/{rns}")


async def test_the_hpa_controller_reads_external_metrics_without_a_grant_from_the_chart(
    cluster: Cluster,
) -> None:
    """Kubernetes' own role for the HPA controller already lists external metrics: the chart
    binds nothing to kube-system:horizontal-pod-autoscaler (the old manifests did)."""
    review = await cluster.kube.create(
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system"],
                "resourceAttributes": {
                    "verb": "list",
                    "group": "external.metrics.k8s.io",
                    "version": "v1beta1",
                    "resource": "s0-redis-jobs",
                    "namespace": cluster.ns,
                },
            },
        },
    )
    assert review["status"]["allowed"] is True, review["status"]
