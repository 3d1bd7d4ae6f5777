"""The daemon on a real control plane: 0 ↔ 1 scaling, safety rules, HPA, status, Events."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import redis.asyncio as aioredis

from localenv.redis import RedisServer
from tests.e2e.harness import (
    Cluster,
    deployment,
    eventually,
    redis_trigger,
    running_daemon,
    scaled_object,
)

T = TypeVar("T")


async def test_activation_then_scale_to_zero_after_cooldown(
    cluster: Cluster, kubeconfig: Path, redis_server: RedisServer
) -> None:
    """A list that gets work scales 0 → 1 and the HPA is created; drained, it goes back to 0
    only after cooldownPeriod, with the Events and conditions KEDA users know."""
    list_name = f"jobs-{cluster.ns}"
    r = aioredis.from_url(redis_server.url)
    await cluster.create_deployment(deployment("worker", replicas=0))
    await cluster.create_so(
        scaled_object(
            "worker",
            "worker",
            [redis_trigger(f"127.0.0.1:{redis_server.port}", list_name, listLength="2")],
            pollingInterval=1,
            cooldownPeriod=2,
        )
    )
    async with running_daemon(kubeconfig):
        ready = await eventually(
            lambda: cluster.condition("worker", "Ready"),
            lambda c: c is not None and c["status"] == "True",
            what="Ready=True",
        )
        assert ready is not None
        assert ready["reason"] == "ScaledObjectReady"
        hpa = await eventually(lambda: cluster.hpa("keda-hpa-worker"), lambda h: h is not None)
        assert hpa is not None
        metric = hpa["spec"]["metrics"][0]["external"]
        assert metric["metric"]["name"] == f"s0-redis-{list_name}"
        assert metric["target"] == {"type": "AverageValue", "averageValue": "2"}
        assert hpa["spec"]["minReplicas"] == 1
        assert hpa["metadata"]["ownerReferences"][0]["kind"] == "ScaledObject"
        assert await cluster.replicas("worker") == 0

        await r.rpush(list_name, "a", "b", "c")
        await eventually(lambda: cluster.replicas("worker"), lambda n: n == 1, what="0 -> 1")
        # The status is written after the /scale write (a 0 -> 1 never waits behind it).
        await eventually(
            lambda: cluster.condition("worker", "Active"),
            lambda c: c is not None and c["status"] == "True",
            what="Active=True",
        )
        events = await cluster.events("worker")
        activated = [e for e in events if e["reason"] == "KEDAScaleTargetActivated"]
        assert activated
        assert f"s0-redis-{list_name}" in activated[0]["message"]

        await r.delete(list_name)
        await eventually(lambda: cluster.replicas("worker"), lambda n: n == 0, what="1 -> 0")
        so = await cluster.get_so("worker")
        assert so["status"]["lastActiveTime"]
        events = await cluster.events("worker")
        assert any(e["reason"] == "KEDAScaleTargetDeactivated" for e in events)
    await r.aclose()


async def _with_work(server: RedisServer, key: str, n: int = 3) -> None:
    r = aioredis.from_url(server.url)
    await r.rpush(key, *[str(i) for i in range(n)])
    await r.aclose()


async def test_no_scale_down_while_a_trigger_errors(
    cluster: Cluster, kubeconfig: Path, redis_factory: Callable[..., RedisServer]
) -> None:
    """Safety rule 1: Redis dies while the workload runs; cooldown passes many times over and
    the workload keeps its replica. Once Redis is back (empty), it goes to 0 after cooldown."""
    server = redis_factory()
    await _with_work(server, "jobs")
    await cluster.create_deployment(deployment("worker", replicas=0))
    await cluster.create_so(
        scaled_object(
            "worker",
            "worker",
            [redis_trigger(server.address, "jobs")],
            pollingInterval=1,
            cooldownPeriod=1,
        )
    )
    async with running_daemon(kubeconfig) as daemon:
        await eventually(lambda: cluster.replicas("worker"), lambda n: n == 1, what="0 -> 1")
        server.kill()
        record = await eventually(
            _async(lambda: daemon.store.get(cluster.ns, "worker", "s0-redis-jobs")),
            lambda r: r is not None and r.consecutive_failures >= 5,
            what="five failed polls",
        )
        assert record is not None
        assert record.value == 3  # the last good value is held, never replaced by 0
        assert await cluster.replicas("worker") == 1
        server.restart()  # a fresh, empty Redis on the same port
        await eventually(lambda: cluster.replicas("worker"), lambda n: n == 0, what="1 -> 0")


async def test_fallback_scales_from_zero_when_source_fails(
    cluster: Cluster, kubeconfig: Path, redis_factory: Callable[..., RedisServer]
) -> None:
    """With fallback configured, failures past failureThreshold make the object active
    (scaled 0 -> 1) and the HPA is served target x fallback.replicas."""
    server = redis_factory()
    await cluster.create_deployment(deployment("worker", replicas=0))
    await cluster.create_so(
        scaled_object(
            "worker",
            "worker",
            [redis_trigger(server.address, "jobs", listLength="4")],
            pollingInterval=1,
            cooldownPeriod=1,
            fallback={"failureThreshold": 2, "replicas": 3},
        )
    )
    async with running_daemon(kubeconfig) as daemon:
        await eventually(
            lambda: cluster.condition("worker", "Ready"),
            lambda c: c is not None and c["status"] == "True",
        )
        server.kill()
        await eventually(lambda: cluster.replicas("worker"), lambda n: n == 1, what="0 -> 1")
        fb = await eventually(
            lambda: cluster.condition("worker", "Fallback"),
            lambda c: c is not None and c["status"] == "True",
        )
        assert fb is not None
        assert fb["reason"] == "FallbackExists"
        so = await cluster.get_so("worker")
        assert so["status"]["health"]["s0-redis-jobs"]["status"] == "Failing"
        reading = daemon.store.metric_value_for_hpa(cluster.ns, "s0-redis-jobs", "worker", 0.0)
        assert reading.fallback
        assert reading.value == 12  # target 4 x 3 fallback replicas


async def test_pause_annotations(
    cluster: Cluster, kubeconfig: Path, redis_server: RedisServer
) -> None:
    """paused deletes the HPA and leaves replicas alone; paused-replicas sets the count;
    removing the annotation brings the HPA back and scaling resumes."""
    key = f"jobs-{cluster.ns}"
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
    async with running_daemon(kubeconfig):
        await eventually(lambda: cluster.hpa("keda-hpa-worker"), lambda h: h is not None)
        await cluster.patch_so(
            "worker", {"metadata": {"annotations": {"autoscaling.keda.sh/paused": "true"}}}
        )
        await eventually(
            lambda: cluster.hpa("keda-hpa-worker"), lambda h: h is None, what="HPA deleted"
        )
        paused = await eventually(
            lambda: cluster.condition("worker", "Paused"),
            lambda c: c is not None and c["status"] == "True",
        )
        assert paused is not None
        await _with_work(redis_server, key)
        await asyncio.sleep(3)  # three polls with work: a paused object must not scale
        assert await cluster.replicas("worker") == 0

        await cluster.patch_so(
            "worker",
            {
                "metadata": {
                    "annotations": {
                        "autoscaling.keda.sh/paused": None,
                        "autoscaling.keda.sh/paused-replicas": "4",
                    }
                }
            },
        )
        await eventually(lambda: cluster.replicas("worker"), lambda n: n == 4, what="paused at 4")
        # The status is written right after the /scale write of the same poll: wait for it.
        so = await eventually(
            lambda: cluster.get_so("worker"),
            lambda o: o.get("status", {}).get("pausedReplicaCount") == 4,
            what="pausedReplicaCount in status",
        )
        assert so["status"].get("pausedReplicaCount") == 4

        await cluster.patch_so(
            "worker", {"metadata": {"annotations": {"autoscaling.keda.sh/paused-replicas": None}}}
        )
        await eventually(lambda: cluster.hpa("keda-hpa-worker"), lambda h: h is not None)
        unpaused = await eventually(
            lambda: cluster.condition("worker", "Paused"),
            lambda c: c is not None and c["status"] == "False",
        )
        assert unpaused is not None


async def test_hpa_follows_spec_repairs_drift_and_is_garbage_collected(
    cluster: Cluster, kubeconfig: Path, redis_server: RedisServer
) -> None:
    await cluster.create_deployment(deployment("worker", replicas=1))
    await cluster.create_so(
        scaled_object(
            "worker",
            "worker",
            [redis_trigger(redis_server.address, f"q-{cluster.ns}")],
            pollingInterval=1,
            minReplicaCount=1,
            maxReplicaCount=7,
        )
    )
    async with running_daemon(kubeconfig):
        hpa = await eventually(lambda: cluster.hpa("keda-hpa-worker"), lambda h: h is not None)
        assert hpa is not None
        assert hpa["spec"]["maxReplicas"] == 7
        await cluster.patch_so("worker", {"spec": {"maxReplicaCount": 9}})
        await eventually(
            lambda: cluster.hpa("keda-hpa-worker"),
            lambda h: h is not None and h["spec"]["maxReplicas"] == 9,
            what="HPA updated on spec change",
        )
        await cluster.kube.merge_patch(
            f"/apis/autoscaling/v2/namespaces/{cluster.ns}/horizontalpodautoscalers/keda-hpa-worker",
            {"spec": {"maxReplicas": 2}},
        )
        await eventually(
            lambda: cluster.hpa("keda-hpa-worker"),
            lambda h: h is not None and h["spec"]["maxReplicas"] == 9,
            what="manual edit repaired",
        )
        await cluster.delete_so("worker")
        await eventually(
            lambda: cluster.hpa("keda-hpa-worker"),
            lambda h: h is None,
            what="HPA garbage-collected",
        )


async def test_broken_object_never_stalls_healthy_ones(
    cluster: Cluster, kubeconfig: Path, redis_server: RedisServer
) -> None:
    key = f"jobs-{cluster.ns}"
    await cluster.create_deployment(deployment("good", replicas=0))
    await cluster.create_deployment(deployment("bad", replicas=0))
    await cluster.create_deployment(deployment("bad-auth", replicas=0))
    await cluster.create_so(
        scaled_object(
            "bad", "bad", [{"type": "no-such-trigger", "metadata": {}}], pollingInterval=1
        )
    )
    await cluster.create_so(
        scaled_object(
            "missing-auth",
            "bad-auth",
            [{**redis_trigger(redis_server.address, key), "authenticationRef": {"name": "nope"}}],
            pollingInterval=1,
        )
    )
    await cluster.create_so(
        scaled_object("good", "good", [redis_trigger(redis_server.address, key)], pollingInterval=1)
    )
    async with running_daemon(kubeconfig):
        bad = await eventually(
            lambda: cluster.condition("bad", "Ready"),
            lambda c: c is not None and c["status"] == "False",
        )
        assert bad is not None
        assert "no-such-trigger" in bad["message"]
        missing = await eventually(
            lambda: cluster.condition("missing-auth", "Ready"),
            lambda c: c is not None and c["status"] == "False",
        )
        assert missing is not None
        assert "TriggerAuthentication 'nope' not found" in missing["message"]
        assert any(e["reason"] == "ScaledObjectCheckFailed" for e in await cluster.events("bad"))
        await _with_work(redis_server, key)
        await eventually(lambda: cluster.replicas("good"), lambda n: n == 1, what="good 0 -> 1")
        assert await cluster.replicas("bad") == 0


async def test_restore_to_original_replica_count_on_delete(
    cluster: Cluster, kubeconfig: Path, redis_server: RedisServer
) -> None:
    """The replica count found when the object was first seen comes back on deletion, and the
    finalizer is removed. (Tidal lowers only 1 -> 0 itself; N -> 1 is the HPA's job.)"""
    await cluster.create_deployment(deployment("worker", replicas=1))
    await cluster.create_so(
        scaled_object(
            "worker",
            "worker",
            [redis_trigger(redis_server.address, f"q-{cluster.ns}")],
            pollingInterval=1,
            cooldownPeriod=0,
            advanced={"restoreToOriginalReplicaCount": True},
        )
    )
    async with running_daemon(kubeconfig):
        await eventually(lambda: cluster.replicas("worker"), lambda n: n == 0, what="idle -> 0")
        so = await eventually(
            lambda: cluster.get_so("worker"),
            lambda o: "originalReplicaCount" in o.get("status", {}),
        )
        assert so["status"]["originalReplicaCount"] == 1
        assert "finalizer.keda.sh" in so["metadata"]["finalizers"]
        await cluster.delete_so("worker")
        await eventually(lambda: cluster.replicas("worker"), lambda n: n == 1, what="restored")
        await eventually(
            lambda: cluster.kube.get_or_none(
                f"/apis/keda.sh/v1alpha1/namespaces/{cluster.ns}/scaledobjects/worker"
            ),
            lambda o: o is None,
            what="finalizer removed",
        )


def _async(fn: Callable[[], T]) -> Callable[[], Awaitable[T]]:
    async def probe() -> T:
        return fn()

    return probe


async def test_one_workload_one_owner(
    cluster: Cluster, kubeconfig: Path, redis_server: RedisServer
) -> None:
    """KEDA's admission rules, checked at reconcile: a second ScaledObject or a foreign HPA on
    the same workload is refused with KEDA's message; transfer-hpa-ownership adopts the HPA."""
    trig = [redis_trigger(redis_server.address, f"q-{cluster.ns}")]
    await cluster.create_deployment(deployment("worker", replicas=1))
    await cluster.create_deployment(deployment("legacy", replicas=1))
    await cluster.create_so(scaled_object("first", "worker", trig, pollingInterval=1))
    await asyncio.sleep(1.1)  # creationTimestamp has one-second resolution
    await cluster.create_so(scaled_object("second", "worker", trig, pollingInterval=1))
    await cluster.kube.create(
        f"/apis/autoscaling/v2/namespaces/{cluster.ns}/horizontalpodautoscalers",
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "legacy-hpa"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "legacy"},
                "minReplicas": 1,
                "maxReplicas": 3,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 50},
                        },
                    }
                ],
            },
        },
    )
    await cluster.create_so(scaled_object("on-legacy", "legacy", trig, pollingInterval=1))
    async with running_daemon(kubeconfig):
        second = await eventually(
            lambda: cluster.condition("second", "Ready"),
            lambda c: c is not None and c["status"] == "False",
        )
        assert second is not None
        assert (
            "the workload 'worker' of type 'apps/v1.Deployment' is already managed by the "
            "ScaledObject 'first'" in second["message"]
        )
        first = await eventually(
            lambda: cluster.condition("first", "Ready"),
            lambda c: c is not None and c["status"] == "True",
        )
        assert first is not None
        legacy = await eventually(
            lambda: cluster.condition("on-legacy", "Ready"),
            lambda c: c is not None and c["status"] == "False",
        )
        assert legacy is not None
        assert "is already managed by the hpa 'legacy-hpa'" in legacy["message"]

        await cluster.patch_so(
            "on-legacy",
            {
                "metadata": {
                    "annotations": {"scaledobject.keda.sh/transfer-hpa-ownership": "true"}
                },
                "spec": {"advanced": {"horizontalPodAutoscalerConfig": {"name": "legacy-hpa"}}},
            },
        )
        adopted = await eventually(
            lambda: cluster.hpa("legacy-hpa"),
            lambda h: (
                h is not None
                and any(
                    o["kind"] == "ScaledObject" for o in h["metadata"].get("ownerReferences", [])
                )
            ),
            what="HPA adopted",
        )
        assert adopted is not None
        assert adopted["spec"]["metrics"][0]["type"] == "External"
        ready = await eventually(
            lambda: cluster.condition("on-legacy", "Ready"),
            lambda c: c is not None and c["status"] == "True",
        )
        assert ready is not None


async def test_secret_changes_rebuild_the_object(
    cluster: Cluster, kubeconfig: Path, redis_factory: Callable[..., RedisServer]
) -> None:
    """A TriggerAuthentication naming a Secret that does not exist yet: Ready=False with the
    reason; the Secret appearing (and later changing) rebuilds the object's scalers at once."""
    server = redis_factory(password="s3cret-pw")
    await _with_work(server, "jobs")
    await cluster.create_deployment(deployment("worker", replicas=0))
    await cluster.kube.create(
        f"/apis/keda.sh/v1alpha1/namespaces/{cluster.ns}/triggerauthentications",
        {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "TriggerAuthentication",
            "metadata": {"name": "redis-auth"},
            "spec": {"secretTargetRef": [{"parameter": "password", "name": "redis", "key": "pw"}]},
        },
    )
    trigger = {
        **redis_trigger(server.address, "jobs"),
        "authenticationRef": {"name": "redis-auth"},
    }
    await cluster.create_so(
        scaled_object("worker", "worker", [trigger], pollingInterval=300, cooldownPeriod=300)
    )
    secrets = f"/api/v1/namespaces/{cluster.ns}/secrets"
    async with running_daemon(kubeconfig):
        missing = await eventually(
            lambda: cluster.condition("worker", "Ready"),
            lambda c: c is not None and c["status"] == "False",
        )
        assert missing is not None
        assert "Secret" in missing["message"]
        assert "not found" in missing["message"]
        await cluster.kube.create(
            secrets,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "redis"},
                "stringData": {"pw": "s3cret-pw"},
            },
        )
        # pollingInterval is 300 s: only the Secret watch can explain a quick recovery.
        await eventually(lambda: cluster.replicas("worker"), lambda n: n == 1, what="0 -> 1")
        # The status is written after the /scale write (a 0 -> 1 never waits behind it).
        await eventually(
            lambda: cluster.condition("worker", "Ready"),
            lambda c: c is not None and c["status"] == "True",
            what="Ready=True",
        )
        assert "s3cret-pw" not in str(await cluster.get_so("worker"))
