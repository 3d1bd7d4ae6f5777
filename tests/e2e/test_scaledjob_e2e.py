"""ScaledJobs end to end: the ScaledJob controller (scaler/jobs) in-process against the real
kube-apiserver and kube-controller-manager (its job controller creates the Jobs' pods, which
stay Pending: no kubelet), a real Redis list as the trigger, and kwok (deploy/local/localenv
/kwok.py) where a Job must run to completion.

One fake, said where used: `test_pending_pod_conditions` sets a pod's conditions through the
pod status API, as a kubelet would, because no kubelet runs here to make a pod Ready on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import yaml

from localenv.kwok import Kwok
from localenv.redis import RedisServer
from scaler.jobs.controller import PollResult, ScaledJobController
from scaler.jobs.writer import jobs_path, scaled_jobs_path
from scaler.kube.client import JSON, KubeClient
from scaler.kube.paths import namespaced
from scaler.settings import WatchSettings
from scaler.telemetry import Telemetry
from tests.e2e.harness import Cluster, eventually, settings_for
from tests.unit.test_scaledjob_spec import KEDA_SAMPLE, KEDA_SPEC


@contextlib.asynccontextmanager
async def running_controller(
    kubeconfig: Path, namespace: str, may_write: Callable[[], bool] = lambda: True
) -> AsyncIterator[ScaledJobController]:
    kube = await KubeClient.from_kubeconfig(str(kubeconfig))
    settings = settings_for(
        kubeconfig,
        watch=WatchSettings(namespace=namespace, cluster_object_namespace="tidal-system"),
    )
    controller = ScaledJobController(
        kube, settings, may_write=lambda: may_write(), telemetry=Telemetry()
    )
    task = asyncio.create_task(controller.run())
    try:
        async with asyncio.timeout(30):
            while not controller.started.is_set():
                if task.done():
                    task.result()
                await asyncio.sleep(0.05)
        yield controller
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await kube.aclose()


def scaled_job(name: str, triggers: list[JSON], pod: JSON | None = None, **spec: Any) -> JSON:
    pod_spec: JSON = {"containers": [{"name": "worker", "image": "registry.invalid/worker:1"}]}
    pod_spec.update(pod or {})
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledJob",
        "metadata": {"name": name},
        "spec": {
            "jobTargetRef": {"template": {"spec": pod_spec}, "backoffLimit": 0},
            "pollingInterval": 1,
            "triggers": triggers,
            **spec,
        },
    }


def redis_list(address: str, key: str, length: str = "1") -> JSON:
    return {
        "type": "redis",
        "metadata": {"address": address, "listName": key, "listLength": length},
    }


class Jobs:
    """The test's view of one ScaledJob, its Jobs and their pods, read from the API."""

    def __init__(self, cluster: Cluster, controller: ScaledJobController, name: str) -> None:
        self.cluster = cluster
        self.controller = controller
        self.name = name
        self.key = (cluster.ns, name)

    async def create(self, body: JSON) -> JSON:
        return await self.cluster.kube.create(scaled_jobs_path(self.cluster.ns), body)

    async def jobs(self) -> list[JSON]:
        body = await self.cluster.kube.get(
            jobs_path(self.cluster.ns), labelSelector=f"scaledjob.keda.sh/name={self.name}"
        )
        return list(body.get("items", []))

    async def pods(self) -> list[JSON]:
        body = await self.cluster.kube.get(
            namespaced("", "v1", "pods", self.cluster.ns),
            labelSelector=f"scaledjob.keda.sh/name={self.name}",
        )
        return list(body.get("items", []))

    async def sj(self) -> JSON:
        return await self.cluster.kube.get(scaled_jobs_path(self.cluster.ns, self.name))

    async def condition(self, type_: str) -> JSON | None:
        for c in (await self.sj()).get("status", {}).get("conditions", []):
            if c.get("type") == type_:
                return dict(c)
        return None

    async def settled(self, check: Any, what: str) -> PollResult:
        """Two polls in a row that created nothing and satisfy `check` (the controller's own
        record of each poll: no timed wait)."""
        seen: list[PollResult] = []

        async def last() -> PollResult | None:
            result = self.controller.last.get(self.key)
            if result is not None and (not seen or result is not seen[-1]):
                seen.append(result)
            return result

        def done(result: PollResult | None) -> bool:
            tail = seen[-2:]
            return len(tail) == 2 and all(r.created == 0 and check(r) for r in tail)

        result = await eventually(last, done, timeout=60, what=what)
        assert result is not None
        return result


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.from_url(redis_server.url)
    try:
        yield r
    finally:
        await r.aclose()


async def test_redis_list_creates_jobs_0_to_n_within_max(
    cluster: Cluster, kubeconfig: Path, redis_server: RedisServer, redis: aioredis.Redis
) -> None:
    """0 items: no Job, Active=False; 3 items: 3 Jobs (the job controller makes their pods,
    Pending); 13 items: one more, up to maxReplicaCount 4, and no further."""
    key = f"{cluster.ns}-work"
    async with running_controller(kubeconfig, cluster.ns) as controller:
        view = Jobs(cluster, controller, "worker")
        sj = await view.create(
            scaled_job("worker", [redis_list(redis_server.address, key)], maxReplicaCount=4)
        )
        ready = await eventually(lambda: view.condition("Ready"), lambda c: c is not None)
        assert (ready["status"], ready["reason"]) == ("True", "ScaledJobReady")
        active = await view.condition("Active")
        assert active is not None
        assert (active["status"], active["reason"]) == (
            "False",
            "ScalerNotActive",
        )
        await view.settled(lambda r: r.branch == "inactive", "an idle poll")
        assert await view.jobs() == []

        await redis.rpush(key, *["job"] * 3)
        jobs = await eventually(view.jobs, lambda js: len(js) == 3, what="3 Jobs")
        for job in jobs:
            meta = job["metadata"]
            assert meta["generateName"] == "worker-"
            assert meta["labels"]["scaledjob.keda.sh/name"] == "worker"
            assert meta["annotations"]["scaledjob.keda.sh/generation"] == "1"
            owner = meta["ownerReferences"][0]
            assert (owner["kind"], owner["uid"], owner["controller"]) == (
                "ScaledJob",
                sj["metadata"]["uid"],
                True,
            )
        pods = await eventually(view.pods, lambda ps: len(ps) == 3, what="the Jobs' pods")
        assert {p["status"].get("phase") for p in pods} == {"Pending"}
        settled = await view.settled(lambda r: r.running == 3, "3 running Jobs")
        assert settled.pending == 3  # no pod runs: every Job counts as pending
        active = await view.condition("Active")
        assert active is not None
        assert (active["status"], active["reason"]) == (
            "True",
            "ScalerActive",
        )

        await redis.rpush(key, *["job"] * 10)
        await eventually(view.jobs, lambda js: len(js) == 4, what="4 Jobs")
        await view.settled(lambda r: r.running == 4, "maxReplicaCount reached")
        assert len(await view.jobs()) == 4
        telemetry = controller.telemetry
        assert telemetry is not None
        labels = {
            "namespace": cluster.ns,
            "metric": f"s0-redis-{key}",
            "scaledObject": "worker",
            "scaler": "redis",
            "triggerIndex": "0",
            "type": "scaledjob",
        }
        value = telemetry.registry.get_sample_value("keda_scaler_metrics_value", labels)
        assert value == 13
        reasons = [e["reason"] for e in await cluster.events("worker")]
        assert "KEDAJobsCreated" in reasons
        assert "ScaledJobActive" in reasons


async def test_trigger_authentication_supplies_the_address(
    cluster: Cluster, kubeconfig: Path, redis_server: RedisServer, redis: aioredis.Redis
) -> None:
    """The trigger's address comes from a Secret through a TriggerAuthentication, as KEDA's."""
    key = f"{cluster.ns}-auth"
    await cluster.create_address_auth("redis-auth", redis_server.address)
    trigger = {
        "type": "redis",
        "metadata": {"listName": key, "listLength": "2"},
        "authenticationRef": {"name": "redis-auth"},
    }
    await redis.rpush(key, *["job"] * 5)
    async with running_controller(kubeconfig, cluster.ns) as controller:
        view = Jobs(cluster, controller, "authed")
        await view.create(scaled_job("authed", [trigger]))
        await eventually(view.jobs, lambda js: len(js) == 3, what="ceil(5 / 2) Jobs")
        await view.settled(lambda r: r.running == 3, "3 Jobs")
        assert len(await view.jobs()) == 3


@pytest.mark.parametrize(
    ("spec", "field", "text"),
    [
        pytest.param(
            {"triggers": [{"type": "redis", "metadata": {"address": "127.0.0.1:1"}}]},
            "trigger 0 (redis)",
            "listName",
            id="trigger-metadata",
        ),
        pytest.param(
            {
                "triggers": [
                    {
                        "type": "redis",
                        "metadata": {"listName": "l"},
                        "authenticationRef": {"name": "missing"},
                    }
                ]
            },
            "trigger 0",
            "TriggerAuthentication 'missing' not found",
            id="missing-trigger-authentication",
        ),
        pytest.param(
            {"scalingStrategy": {"strategy": "fastest"}},
            "spec.scalingStrategy.strategy",
            "'fastest' is not supported",
            id="unknown-strategy",
        ),
    ],
)
async def test_bad_spec_is_ready_false_with_a_clear_message(
    cluster: Cluster, kubeconfig: Path, spec: JSON, field: str, text: str
) -> None:
    body = scaled_job("bad", [redis_list("127.0.0.1:1", "l")])
    body["spec"].update(spec)
    async with running_controller(kubeconfig, cluster.ns) as controller:
        view = Jobs(cluster, controller, "bad")
        await view.create(body)
        ready = await eventually(
            lambda: view.condition("Ready"), lambda c: c is not None and c["status"] == "False"
        )
        assert ready["reason"] == "ScaledJobCheckFailed"
        assert field in ready["message"]
        assert text in ready["message"]
        active = await view.condition("Active")
        assert active is not None
        assert active["status"] == "Unknown"
        events = await eventually(
            lambda: cluster.events("bad"),
            lambda es: any(e["reason"] == "ScaledJobCheckFailed" for e in es),
        )
        warning = next(e for e in events if e["reason"] == "ScaledJobCheckFailed")
        assert warning["type"] == "Warning"
        assert text in warning["message"]
        assert await view.jobs() == []


async def test_pending_pod_conditions(
    cluster: Cluster, kubeconfig: Path, redis_server: RedisServer, redis: aioredis.Redis
) -> None:
    """`accurate` with pendingPodConditions [Ready, PodScheduled]: a Job counts as pending
    until one of its pods has both True. The pod's conditions are set through its status API
    (the fake: no kubelet here), and the next poll creates one more Job for the queue of 2."""
    key = f"{cluster.ns}-pending"
    await redis.rpush(key, "a", "b")
    async with running_controller(kubeconfig, cluster.ns) as controller:
        view = Jobs(cluster, controller, "careful")
        await view.create(
            scaled_job(
                "careful",
                [redis_list(redis_server.address, key)],
                maxReplicaCount=10,
                scalingStrategy={
                    "strategy": "accurate",
                    "pendingPodConditions": ["Ready", "PodScheduled"],
                },
            )
        )
        await eventually(view.jobs, lambda js: len(js) == 2, what="2 Jobs")
        pods = await eventually(view.pods, lambda ps: len(ps) == 2, what="their pods")
        settled = await view.settled(lambda r: r.running == 2, "2 pending Jobs")
        assert settled.pending == 2
        pod = pods[0]["metadata"]["name"]
        now = "2026-01-01T00:00:00Z"
        await cluster.kube.merge_patch(
            namespaced("", "v1", "pods", cluster.ns, pod) + "/status",
            {
                "status": {
                    "conditions": [
                        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                        {"type": "Ready", "status": "True", "lastTransitionTime": now},
                    ]
                }
            },
        )
        await eventually(view.jobs, lambda js: len(js) == 3, what="a third Job")
        settled = await view.settled(lambda r: r.running == 3, "3 Jobs, 2 pending")
        assert settled.pending == 2
        assert len(await view.jobs()) == 3


async def test_history_limits_prune_finished_jobs(
    cluster: Cluster,
    kubeconfig: Path,
    kwok: Kwok,
    redis_server: RedisServer,
    redis: aioredis.Redis,
) -> None:
    """Jobs bound to kwok's node run to completion (kwok completes a Job's pods, the real job
    controller marks the Job Complete); successfulJobsHistoryLimit 1 keeps the newest."""
    key = f"{cluster.ns}-history"
    await redis.rpush(key, "a", "b", "c")
    async with running_controller(kubeconfig, cluster.ns) as controller:
        view = Jobs(cluster, controller, "short")
        await view.create(
            scaled_job(
                "short",
                [redis_list(redis_server.address, key)],
                pod={"nodeName": kwok.node, "restartPolicy": "Never"},
                maxReplicaCount=3,
                successfulJobsHistoryLimit=1,
                failedJobsHistoryLimit=1,
            )
        )
        await eventually(view.jobs, lambda js: len(js) >= 3, what="3 Jobs")
        await redis.delete(key)  # the work is done: nothing more to create

        def one_complete(jobs: list[JSON]) -> bool:
            return len(jobs) == 1 and any(
                c["type"] == "Complete" and c["status"] == "True"
                for c in jobs[0].get("status", {}).get("conditions", [])
            )

        await eventually(view.jobs, one_complete, timeout=90, what="one Complete Job kept")
        await view.settled(lambda r: r.running == 0 and r.pruned == 0, "nothing left to prune")
        assert len(await view.jobs()) == 1


@pytest.mark.parametrize(
    ("rollout", "kept"),
    [
        pytest.param("default", False, id="default-deletes"),
        pytest.param("gradual", True, id="gradual-keeps"),
    ],
)
async def test_rollout_strategy_on_update(
    cluster: Cluster,
    kubeconfig: Path,
    redis_server: RedisServer,
    redis: aioredis.Redis,
    rollout: str,
    kept: bool,
) -> None:
    """An edit of the ScaledJob (a new generation): `default` deletes the Jobs of the older
    generation (and new ones are made from the new template), `gradual` keeps them."""
    key = f"{cluster.ns}-rollout"
    await redis.rpush(key, "a", "b")
    async with running_controller(kubeconfig, cluster.ns) as controller:
        view = Jobs(cluster, controller, "rolling")
        await view.create(
            scaled_job(
                "rolling",
                [redis_list(redis_server.address, key)],
                rollout={"strategy": rollout},
                maxReplicaCount=4,
            )
        )
        first = await eventually(view.jobs, lambda js: len(js) == 2, what="2 Jobs")
        old = {j["metadata"]["name"] for j in first}
        await cluster.kube.merge_patch(
            scaled_jobs_path(cluster.ns, "rolling"), {"spec": {"maxReplicaCount": 5}}
        )

        def generation_2(jobs: list[JSON]) -> bool:
            new = [
                j
                for j in jobs
                if j["metadata"]["annotations"]["scaledjob.keda.sh/generation"] == "2"
            ]
            names = {j["metadata"]["name"] for j in jobs}
            return (old <= names) is kept and (kept or len(new) == 2)

        await eventually(view.jobs, generation_2, what=f"rollout {rollout}")
        if kept:
            await view.settled(lambda r: r.running == 2, "the old Jobs still counted")
            assert {j["metadata"]["name"] for j in await view.jobs()} == old


async def test_fenced_and_paused_write_nothing(
    cluster: Cluster, kubeconfig: Path, redis_server: RedisServer, redis: aioredis.Redis
) -> None:
    """With work waiting: while `may_write()` says no (not the leader), no Job and no status;
    paused (autoscaling.keda.sh/paused), Paused=True and no Job; unpaused, the Jobs come."""
    key = f"{cluster.ns}-fenced"
    await redis.rpush(key, "a", "b")
    leader = False
    async with running_controller(kubeconfig, cluster.ns, lambda: leader) as controller:
        view = Jobs(cluster, controller, "fenced")
        await view.create(scaled_job("fenced", [redis_list(redis_server.address, key)]))
        await view.settled(lambda r: r.branch == "fenced", "polls of a replica that may not write")
        assert await view.jobs() == []
        assert "status" not in await view.sj()

        await cluster.kube.merge_patch(
            scaled_jobs_path(cluster.ns, "fenced"),
            {"metadata": {"annotations": {"autoscaling.keda.sh/paused": "true"}}},
        )
        leader = True
        await view.settled(lambda r: r.branch == "paused", "paused polls")
        paused = await view.condition("Paused")
        assert paused is not None
        assert (paused["status"], paused["reason"]) == ("True", "ScaledJobPaused")
        assert await view.jobs() == []

        await cluster.kube.merge_patch(
            scaled_jobs_path(cluster.ns, "fenced"),
            {"metadata": {"annotations": {"autoscaling.keda.sh/paused": "false"}}},
        )
        await eventually(view.jobs, lambda js: len(js) == 2, what="2 Jobs once unpaused")
        paused = await eventually(
            lambda: view.condition("Paused"), lambda c: c is not None and c["status"] == "False"
        )
        assert paused["reason"] == "ScaledJobUnpaused"


async def test_keda_documented_scaledjobs_apply_unchanged(cluster: Cluster) -> None:
    """The ScaledJobs of KEDA's docs (tests/unit/test_scaledjob_spec.py) are accepted by the
    ScaledJob CRD (deploy/crds/keda.sh_scaledjobs.yaml) as written."""
    for text in (KEDA_SAMPLE, KEDA_SPEC):
        body = yaml.safe_load(text)
        body["metadata"].pop("namespace", None)
        created = await cluster.kube.create(scaled_jobs_path(cluster.ns), body)
        assert created["spec"] == body["spec"]


async def test_deleting_the_scaled_job_removes_its_jobs(
    cluster: Cluster, kubeconfig: Path, redis_server: RedisServer, redis: aioredis.Redis
) -> None:
    """The Jobs are owned by their ScaledJob: the garbage collector deletes them with it, and
    the controller forgets it (no poll, nothing more created)."""
    key = f"{cluster.ns}-gone"
    await redis.rpush(key, "a", "b")
    async with running_controller(kubeconfig, cluster.ns) as controller:
        view = Jobs(cluster, controller, "gone")
        await view.create(scaled_job("gone", [redis_list(redis_server.address, key)]))
        await eventually(view.jobs, lambda js: len(js) == 2, what="2 Jobs")
        await cluster.kube.delete(scaled_jobs_path(cluster.ns, "gone"))
        await eventually(view.jobs, lambda js: js == [], what="the Jobs garbage-collected")

        async def known() -> bool:
            return view.key in controller.entries

        await eventually(known, lambda k: not k, what="the ScaledJob forgotten")
        assert view.key not in controller.last


async def mark_running(cluster: Cluster, pods: list[JSON]) -> None:
    """What a kubelet would report for a started pod (the fake: no kubelet runs here)."""
    for pod in pods:
        await cluster.kube.merge_patch(
            namespaced("", "v1", "pods", cluster.ns, pod["metadata"]["name"]) + "/status",
            {"status": {"phase": "Running"}},
        )


@pytest.mark.parametrize(
    ("strategy", "total"),
    [pytest.param("default", 6, id="default"), pytest.param("eager", 9, id="eager")],
)
async def test_documented_eager_example(
    cluster: Cluster,
    kubeconfig: Path,
    redis_server: RedisServer,
    redis: aioredis.Redis,
    strategy: str,
    total: int,
) -> None:
    """KEDA's docs: maxReplicaCount 10, long Jobs, 3 messages then 3 more. `default` ends with
    6 Jobs (6 queued - 3 running), `eager` with 9 (min(10 - 3 running, 6) more). The first
    Jobs' pods are reported Running through the pod status API (see the module docstring);
    until they are, the controller is fenced (`may_write`) once it has made the first 3, so no
    poll sees them still Pending (eager counts a pending Job twice, as KEDA does)."""
    key = f"{cluster.ns}-eager"
    await redis.rpush(key, "a", "b", "c")
    second = False
    view: Jobs | None = None

    def may_write() -> bool:
        if second:
            return True
        if view is None:
            return False
        entry = view.controller.entries.get(view.key)
        made = len(view.controller.owned.of(view.key)) + (len(entry.unseen) if entry else 0)
        return made < 3

    async with running_controller(kubeconfig, cluster.ns, may_write) as controller:
        view = Jobs(cluster, controller, "long")
        await view.create(
            scaled_job(
                "long",
                [redis_list(redis_server.address, key)],
                maxReplicaCount=10,
                scalingStrategy={"strategy": strategy},
            )
        )
        await eventually(view.jobs, lambda js: len(js) == 3, what="3 Jobs")
        await view.settled(lambda r: r.branch == "fenced", "fenced with 3 Jobs")
        pods = await eventually(view.pods, lambda ps: len(ps) == 3, what="their pods")
        await mark_running(cluster, pods)

        async def counts() -> tuple[int, int]:
            c = controller.owned.counts(view.key, ())
            return c.running, c.pending

        await eventually(counts, lambda c: c == (3, 0), what="3 running, none pending")
        await redis.rpush(key, "d", "e", "f")
        second = True
        await eventually(view.jobs, lambda js: len(js) == total, what=f"{total} Jobs")
        await view.settled(lambda r: r.running == total, f"{total} Jobs, no more")
        assert len(await view.jobs()) == total


@pytest.mark.parametrize(
    ("calculation", "jobs"),
    [
        pytest.param("max", 3, id="max"),
        pytest.param("min", 2, id="min"),
        pytest.param("avg", 3, id="avg-rounds-up"),
        pytest.param("sum", 5, id="sum"),
    ],
)
async def test_multiple_scalers_calculation_over_two_lists(
    cluster: Cluster,
    kubeconfig: Path,
    redis_server: RedisServer,
    redis: aioredis.Redis,
    calculation: str,
    jobs: int,
) -> None:
    """Two Redis lists of 3 and 2 items (target 1 each): the Jobs created follow
    multipleScalersCalculation."""
    first, second = f"{cluster.ns}-a", f"{cluster.ns}-b"
    await redis.rpush(first, "1", "2", "3")
    await redis.rpush(second, "1", "2")
    triggers = [redis_list(redis_server.address, first), redis_list(redis_server.address, second)]
    async with running_controller(kubeconfig, cluster.ns) as controller:
        view = Jobs(cluster, controller, "two")
        await view.create(
            scaled_job("two", triggers, scalingStrategy={"multipleScalersCalculation": calculation})
        )
        await eventually(view.jobs, lambda js: len(js) == jobs, what=f"{jobs} Jobs")
        await view.settled(lambda r: r.running == jobs, f"{jobs} Jobs, no more")
        assert len(await view.jobs()) == jobs
