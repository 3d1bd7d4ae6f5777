"""Migrating from KEDA (docs/migrate-from-keda.md): what KEDA leaves behind is taken over in place.

KEDA's operator is not run here; the test writes what it leaves in the cluster, field by field as
KEDA writes it: a ScaledObject carrying `finalizer.keda.sh` and KEDA's status, and the HPA
`keda-hpa-<name>` that KEDA's operator created, owned by the ScaledObject and labelled
`app.kubernetes.io/managed-by: keda-operator`. Tidal then starts, as after step 2 of the guide.
"""

from __future__ import annotations

from pathlib import Path

import redis.asyncio as aioredis

from localenv.redis import RedisServer
from scaler.kube.client import JSON
from scaler.kube.paths import hpa as hpa_path
from scaler.kube.paths import scaled_objects
from tests.e2e.harness import (
    Cluster,
    deployment,
    eventually,
    redis_trigger,
    running_daemon,
    scaled_object,
)

KEDA_FINALIZER = "finalizer.keda.sh"


def _keda_hpa(so: JSON, metric: str) -> JSON:
    """keda-hpa-<name> as KEDA 2.x's operator creates it (pkg/controller/keda/hpa.go)."""
    name = so["metadata"]["name"]
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": f"keda-hpa-{name}",
            "labels": {
                "app.kubernetes.io/managed-by": "keda-operator",
                "app.kubernetes.io/name": f"keda-hpa-{name}",
                "app.kubernetes.io/part-of": name,
                "app.kubernetes.io/version": "2.17.2",
                "scaledobject.keda.sh/name": name,
            },
            "ownerReferences": [
                {
                    "apiVersion": "keda.sh/v1alpha1",
                    "kind": "ScaledObject",
                    "name": name,
                    "uid": so["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": 1,
            "maxReplicas": 10,
            "metrics": [
                {
                    "type": "External",
                    "external": {
                        "metric": {
                            "name": metric,
                            "selector": {"matchLabels": {"scaledobject.keda.sh/name": name}},
                        },
                        "target": {"type": "AverageValue", "averageValue": "2"},
                    },
                }
            ],
        },
    }


def _keda_status(metric: str) -> JSON:
    """The status KEDA's operator wrote while the workload was active at 1 replica."""
    condition = {"lastTransitionTime": "2026-01-01T00:00:00Z", "message": ""}
    return {
        "status": {
            "scaleTargetKind": "apps/v1.Deployment",
            "scaleTargetGVKR": {
                "group": "apps",
                "version": "v1",
                "kind": "Deployment",
                "resource": "deployments",
            },
            "originalReplicaCount": 1,
            "lastActiveTime": "2026-01-01T00:00:00Z",
            "externalMetricNames": [metric],
            "hpaName": "keda-hpa-worker",
            "conditions": [
                {**condition, "type": "Ready", "status": "True", "reason": "ScaledObjectReady"},
                {**condition, "type": "Active", "status": "True", "reason": "ScalerActive"},
                {**condition, "type": "Fallback", "status": "False", "reason": "NoFallbackFound"},
                {
                    **condition,
                    "type": "Paused",
                    "status": "False",
                    "reason": "ScaledObjectUnpaused",
                },
            ],
        }
    }


async def test_keda_objects_are_taken_over_in_place(
    cluster: Cluster, kubeconfig: Path, redis_server: RedisServer
) -> None:
    """A ScaledObject and HPA left by KEDA: Tidal updates the same HPA in place (same uid, now
    managed by tidal), reports Ready without an ownership problem, keeps KEDA's finalizer once,
    and runs the object: 1 -> 0 after the cooldown, Events with KEDA's reasons."""
    list_name = f"jobs-{cluster.ns}"
    metric = f"s0-redis-{list_name}"
    r = aioredis.from_url(redis_server.url)
    await r.rpush(list_name, "a")
    await cluster.create_deployment(deployment("worker", replicas=1))
    body = scaled_object(
        "worker",
        "worker",
        [redis_trigger(redis_server.address, list_name, listLength="2")],
        pollingInterval=1,
        cooldownPeriod=2,
    )
    body["metadata"]["finalizers"] = [KEDA_FINALIZER]
    so = await cluster.create_so(body)
    await cluster.kube.merge_patch(
        scaled_objects(cluster.ns, "worker") + "/status", _keda_status(metric)
    )
    keda_hpa = await cluster.kube.create(hpa_path(cluster.ns), _keda_hpa(so, metric))

    async with running_daemon(kubeconfig):
        taken = await eventually(
            lambda: cluster.hpa("keda-hpa-worker"),
            lambda h: (
                h is not None
                and h["metadata"]["labels"].get("app.kubernetes.io/managed-by") == "tidal"
            ),
            what="the HPA taken over",
        )
        assert taken is not None
        assert taken["metadata"]["uid"] == keda_hpa["metadata"]["uid"]  # updated, not recreated
        assert [o["uid"] for o in taken["metadata"]["ownerReferences"]] == [so["metadata"]["uid"]]
        assert taken["spec"]["metrics"][0]["external"]["metric"]["name"] == metric
        ready = await eventually(
            lambda: cluster.condition("worker", "Ready"),
            lambda c: (
                c is not None and c["reason"] == "ScaledObjectReady" and c["status"] == "True"
            ),
            what="Ready under Tidal",
        )
        assert ready is not None

        await r.delete(list_name)
        await eventually(lambda: cluster.replicas("worker"), lambda n: n == 0, what="1 -> 0")
        events = await cluster.events("worker")
        assert any(e["reason"] == "KEDAScaleTargetDeactivated" for e in events)
        assert not any(e["reason"] == "ScaledObjectCheckFailed" for e in events)
        after = await cluster.get_so("worker")
        assert after["metadata"]["finalizers"].count(KEDA_FINALIZER) == 1
        assert (await cluster.hpa("keda-hpa-worker") or {}).get("metadata", {}).get(
            "uid"
        ) == keda_hpa["metadata"]["uid"]
    await r.aclose()
