"""decide_jobs(): KEDA's ScaledJob arithmetic, checked against the numbers KEDA documents
(docs reference/scaledjob-spec.md) and asserts in its own tests (scale_jobs_test.go,
metrics_test.go)."""

from __future__ import annotations

from typing import Any

import pytest

from scaler.jobs.decide import (
    JobCounts,
    TriggerReading,
    combine,
    decide_jobs,
    effective_max_scale,
    is_pending,
    to_prune,
)
from scaler.jobs.spec import ScaledJob, Strategy, parse_scaled_job


def sj_with(**spec: Any) -> ScaledJob:
    body = {
        "jobTargetRef": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
        "triggers": [{"type": "redis", "metadata": {"listName": "jobs"}}],
        **spec,
    }
    return parse_scaled_job({"metadata": {"name": "sj", "namespace": "ns"}, "spec": body})


def one(queue: float, target: float = 1.0, active: bool | None = None) -> list[TriggerReading]:
    return [TriggerReading(queue, target, queue > 0 if active is None else active)]


# The "Maximum Replica Count" table of KEDA's ScaledJob spec (default strategy).
@pytest.mark.parametrize(
    ("queue", "max_replicas", "target", "running", "created"),
    [
        pytest.param(10, 3, 1, 0, 3, id="queue10-max3-target1"),
        pytest.param(10, 3, 2, 0, 3, id="queue10-max3-target2"),
        pytest.param(10, 3, 1, 1, 2, id="queue10-max3-running1"),
        pytest.param(10, 100, 1, 0, 10, id="queue10-max100"),
        pytest.param(4, 3, 5, 0, 1, id="queue4-target5-rounds-up"),
    ],
)
def test_documented_max_replica_table(
    queue: int, max_replicas: int, target: int, running: int, created: int
) -> None:
    sj = sj_with(maxReplicaCount=max_replicas)
    decision = decide_jobs(sj, one(queue, target), JobCounts(running, 0))
    assert decision.create == created
    assert decision.branch == "strategy"


# The eager example of KEDA's docs: max 10, target 1, 3 long Jobs running, the queue now 6.
@pytest.mark.parametrize(
    ("strategy", "created"),
    [pytest.param("default", 3, id="default-creates-3"), pytest.param("eager", 6, id="eager-6")],
)
def test_documented_eager_example(strategy: str, created: int) -> None:
    sj = sj_with(maxReplicaCount=10, scalingStrategy={"strategy": strategy})
    first = decide_jobs(sj, one(3), JobCounts(0, 0))
    assert first.create == 3
    second = decide_jobs(sj, one(6), JobCounts(3, 0))
    assert second.create == created


# GetEffectiveMaxScale(maxScale, running, pending, maxReplicaCount, scaleTo) of KEDA's tests.
@pytest.mark.parametrize(
    ("strategy", "args", "deduction", "percentage", "want"),
    [
        pytest.param("default", (3, 2, 0, 5, 1), 0, 0.0, (1, 1), id="default-3-2"),
        pytest.param("default", (2, 0, 0, 5, 1), 0, 0.0, (2, 1), id="default-2-0"),
        pytest.param("custom", (3, 2, 0, 5, 1), 1, 0.5, (1, 1), id="custom-1-0.5"),
        pytest.param("custom", (10, 0, 0, 10, 1), 1, 0.5, (9, 1), id="custom-10-0"),
        pytest.param("custom", (3, 2, 0, 5, 1), 2, 0.0, (1, 1), id="custom-percentage-0"),
        pytest.param("custom", (3, 2, 0, 4, 1), -2, 0.0, (4, 1), id="custom-capped-at-max"),
        pytest.param("accurate", (3, 2, 0, 5, 1), 0, 0.0, (3, 1), id="accurate-under-max"),
        pytest.param("accurate", (5, 2, 0, 5, 1), 0, 0.0, (3, 1), id="accurate-over-max"),
        pytest.param("accurate", (3, 4, 2, 10, 1), 0, 0.0, (1, 1), id="accurate-2-pending"),
        pytest.param("accurate", (5, 4, 2, 5, 1), 0, 0.0, (1, 1), id="accurate-pending-max"),
        pytest.param("eager", (4, 3, 0, 10, 1), 0, 0.0, (4, 10), id="eager-3-running"),
        pytest.param("eager", (4, 0, 3, 10, 1), 0, 0.0, (4, 10), id="eager-3-pending"),
        pytest.param("eager", (4, 7, 0, 10, 1), 0, 0.0, (3, 10), id="eager-7-running"),
        pytest.param("eager", (4, 1, 6, 10, 1), 0, 0.0, (3, 10), id="eager-1-running-6-pending"),
        pytest.param("eager", (15, 0, 0, 10, 1), 0, 0.0, (10, 10), id="eager-over-max"),
    ],
)
def test_effective_max_scale_matches_keda(
    strategy: Strategy,
    args: tuple[int, int, int, int, int],
    deduction: int,
    percentage: float,
    want: tuple[int, int],
) -> None:
    got = effective_max_scale(strategy, *args, deduction=deduction, percentage=percentage)
    assert got == want


@pytest.mark.parametrize(
    ("scaling", "effective"),
    [
        pytest.param({"strategy": "custom"}, "default", id="custom-without-parameters"),
        pytest.param(
            {"strategy": "custom", "customScalingQueueLengthDeduction": 1},
            "default",
            id="custom-without-percentage",
        ),
        pytest.param(
            {"strategy": "custom", "customScalingRunningJobPercentage": "0.5"},
            "custom",
            id="custom-with-percentage",
        ),
        pytest.param({}, "default", id="nothing-set"),
        pytest.param({"strategy": "accurate"}, "accurate", id="accurate"),
    ],
)
def test_custom_without_a_percentage_runs_as_default(
    scaling: dict[str, Any], effective: str
) -> None:
    assert sj_with(scalingStrategy=scaling).scaling.effective == effective


# minReplicaCount: KEDA's getScalingDecision tests (maxReplicaCount 100).
@pytest.mark.parametrize(
    ("min_replicas", "running", "queue", "create", "branch"),
    [
        pytest.param(2, 0, 0, 2, "to-min", id="min2-none-running"),
        pytest.param(2, 1, 0, 1, "to-min", id="min2-one-running"),
        pytest.param(1, 1, 2, 2, "strategy", id="min1-met-queue2"),
        pytest.param(1, 1, 0, 0, "strategy", id="min1-met-idle-is-still-active"),
    ],
)
def test_min_replica_count_first(
    min_replicas: int, running: int, queue: int, create: int, branch: str
) -> None:
    sj = sj_with(minReplicaCount=min_replicas, maxReplicaCount=100)
    decision = decide_jobs(sj, one(queue), JobCounts(running, 0))
    assert (decision.create, decision.branch, decision.active) == (create, branch, True)


@pytest.mark.parametrize(
    ("spec", "min_", "max_"),
    [
        pytest.param({}, 0, 100, id="defaults"),
        pytest.param({"maxReplicaCount": 10}, 0, 10, id="max-only"),
        pytest.param({"minReplicaCount": 2, "maxReplicaCount": 10}, 2, 8, id="max-minus-min"),
        pytest.param({"minReplicaCount": 12, "maxReplicaCount": 10}, 10, 0, id="min-capped"),
    ],
)
def test_replica_bounds_as_keda_computes_them(spec: dict[str, Any], min_: int, max_: int) -> None:
    sj = sj_with(**spec)
    assert (sj.min_replica_count, sj.max_replica_count) == (min_, max_)


def test_max_replica_count_is_respected_with_a_long_queue() -> None:
    sj = sj_with(maxReplicaCount=4)
    assert decide_jobs(sj, one(1000), JobCounts(0, 0)).create == 4
    assert decide_jobs(sj, one(1000), JobCounts(3, 3)).create == 1
    assert decide_jobs(sj, one(1000), JobCounts(4, 0)).create == 0


def test_inactive_creates_nothing() -> None:
    decision = decide_jobs(sj_with(), one(5, active=False), JobCounts(0, 0))
    assert (decision.active, decision.create, decision.branch) == (False, 0, "inactive")


def test_no_reading_at_all_creates_nothing() -> None:
    """Every trigger failed: no reading is a 0 queue, and nothing is created."""
    decision = decide_jobs(sj_with(), [], JobCounts(0, 0))
    assert (decision.active, decision.create) == (False, 0)


A = TriggerReading(10, 2, True)  # 5 Jobs wanted
B = TriggerReading(4, 1, True)  # 4 Jobs wanted
C = TriggerReading(100, 1, False)  # inactive: never counted


@pytest.mark.parametrize(
    ("calculation", "want"),
    [
        pytest.param("max", (True, 10, 5), id="max-picks-longest-queue"),
        pytest.param("min", (True, 4, 4), id="min-picks-shortest-queue"),
        pytest.param("avg", (True, 7, 4.5), id="avg"),
        pytest.param("sum", (True, 14, 9), id="sum"),
    ],
)
def test_multiple_scalers_calculation(calculation: Any, want: tuple[bool, float, float]) -> None:
    assert combine([A, B, C], calculation, 100) == want


def test_max_ignores_an_active_trigger_reporting_zero() -> None:
    """KEDA's `max` only takes a queue length above the one so far (0): an active trigger at 0
    leaves the object inactive."""
    assert combine([TriggerReading(0, 1, True)], "max", 100) == (False, 0, 0)


def test_combined_value_is_capped_by_max() -> None:
    assert combine([A, B], "sum", 6) == (True, 14, 9)  # each capped at 6: 5 + 4
    sj = sj_with(maxReplicaCount=6, scalingStrategy={"multipleScalersCalculation": "sum"})
    assert decide_jobs(sj, [A, B], JobCounts(0, 0)).create == 6


def pod(phase: str = "Pending", *conditions: str) -> dict[str, Any]:
    return {
        "status": {
            "phase": phase,
            "conditions": [{"type": c, "status": "True"} for c in conditions],
        }
    }


# KEDA's TestGetPendingJobCount rows.
@pytest.mark.parametrize(
    ("pods", "conditions", "pending"),
    [
        pytest.param([pod("Succeeded")], (), False, id="succeeded"),
        pytest.param([pod("Running")], (), False, id="running"),
        pytest.param([pod("Failed")], (), True, id="failed"),
        pytest.param([pod("Pending")], (), True, id="pending"),
        pytest.param([pod("Unknown")], (), True, id="unknown"),
        pytest.param([], (), True, id="no-pod-yet"),
        pytest.param([pod()], ("Ready", "PodScheduled"), True, id="conditions-none"),
        pytest.param([pod("Running", "Ready")], ("Ready", "PodScheduled"), True, id="ready-only"),
        pytest.param(
            [pod("", "Ready", "PodScheduled")], ("Ready", "PodScheduled"), False, id="all"
        ),
        pytest.param(
            [pod("", "Ready"), pod("", "PodScheduled")],
            ("Ready", "PodScheduled"),
            True,
            id="split-over-two-pods",
        ),
        pytest.param(
            [pod(), pod("", "Ready"), pod("", "Ready", "PodScheduled")],
            ("Ready", "PodScheduled"),
            False,
            id="one-of-three-has-all",
        ),
    ],
)
def test_pending(pods: list[dict[str, Any]], conditions: tuple[str, ...], pending: bool) -> None:
    assert is_pending(pods, conditions) is pending


def job(name: str, kind: str, completed: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "status": {
            "conditions": [{"type": kind, "status": "True"}],
            "completionTime": completed,
        },
    }


def test_prune_keeps_the_newest_finished_jobs() -> None:
    """KEDA's TestCleanUpMixedCaseWithSortByTime: limits 1 and 2."""
    jobs = [
        job("success1", "Complete", "2020-07-29T15:37:00Z"),
        job("success2", "Complete", "2020-07-29T15:36:00Z"),
        job("success3", "Complete", "2020-07-29T15:35:00Z"),
        job("fail1", "Failed", "2020-07-29T15:37:00Z"),
        job("fail2", "Failed", "2020-07-29T15:36:00Z"),
        job("fail3", "Failed", "2020-07-29T15:38:00Z"),
        {"metadata": {"name": "running"}, "status": {}},
    ]
    assert sorted(to_prune(jobs, 1, 2)) == ["fail2", "success2", "success3"]


def test_prune_defaults_keep_100_of_each() -> None:
    """KEDA's TestCleanUpDefaultValue."""
    jobs = [job("success0", "Complete", "2020-07-29T15:35:00Z")]
    jobs += [job(f"success{i}", "Complete", "2020-07-29T15:40:00Z") for i in range(1, 101)]
    jobs += [job("fail101", "Failed", "2020-07-29T15:35:00Z")]
    jobs += [job(f"fail{i}", "Failed", "2020-07-29T15:40:00Z") for i in range(102, 202)]
    sj = sj_with()
    limits = (sj.successful_history_limit, sj.failed_history_limit)
    assert sorted(to_prune(jobs, *limits)) == ["fail101", "success0"]
