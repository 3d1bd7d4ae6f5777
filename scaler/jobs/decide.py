"""How many Jobs a ScaledJob poll creates: KEDA's arithmetic, pure (no clock, no I/O, no log).

Follows kedacore/keda `pkg/scaling/scaledjob/metrics.go` (per trigger: queue length, the Jobs it
asks for capped at the maximum, combined over the active triggers by
`multipleScalersCalculation`) and `pkg/scaling/executor/scale_jobs.go` (the minimum first, then
the scaling strategy's effective maximum from the running and pending Jobs), and the Job
classification of the same file (running = not finished; pending = running with no pod
Running/Succeeded, or, with `pendingPodConditions`, no pod with all of them True; the history
limits keep the newest finished Jobs).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from scaler.jobs.spec import Calculation, ScaledJob, Strategy


@dataclass(frozen=True, slots=True)
class TriggerReading:
    """One trigger's sample: the queue length (its metric value) and its target per Job."""

    queue_length: float
    target: float
    active: bool


@dataclass(frozen=True, slots=True)
class JobCounts:
    running: int  # owned Jobs not Complete/Failed (also the ones just created, not seen yet)
    pending: int  # of those, the ones whose pods have not started (see `is_pending`)


@dataclass(frozen=True, slots=True)
class JobsDecision:
    active: bool
    queue_length: int  # KEDA's scaleTo before the strategy: ceil(combined queue length)
    max_scale: int  # ceil(combined Jobs wanted), capped at the maximum
    effective_max: int  # what the strategy allows now (never below 0)
    create: int  # Jobs to create this poll
    branch: Literal["inactive", "to-min", "strategy"]


def max_value(reading: TriggerReading, max_replicas: int) -> float:
    """CalculateQueueLengthAndMaxValue: queue length / target, at most max (0 for target 0)."""
    if reading.target == 0:
        return 0.0
    return min(reading.queue_length / reading.target, float(max_replicas))


def combine(
    readings: Sequence[TriggerReading], calculation: Calculation, max_replicas: int
) -> tuple[bool, float, float]:
    """IsScaledJobActive's combination over the ACTIVE triggers: (active, queue length, Jobs
    wanted). `max` picks the first trigger with the largest queue length above 0 (an active
    trigger reporting 0 does not make the object active); `min` the smallest (a 0 is replaced
    by the next); `avg` and `sum` combine every active trigger."""
    active, queue, wanted = False, 0.0, 0.0
    values = [(r.queue_length, max_value(r, max_replicas)) for r in readings if r.active]
    if calculation in ("avg", "sum") and values:
        n = len(values) if calculation == "avg" else 1
        return True, sum(q for q, _ in values) / n, sum(v for _, v in values) / n
    for q, v in values:
        better = (queue == 0 or q < queue) if calculation == "min" else q > queue
        if better:
            active, queue, wanted = True, q, v
    return active, queue, wanted


def effective_max_scale(
    strategy: Strategy,
    max_scale: int,
    running: int,
    pending: int,
    max_replicas: int,
    scale_to: int,
    *,
    deduction: int = 0,
    percentage: float = 0.0,
) -> tuple[int, int]:
    """GetEffectiveMaxScale of each strategy: (effective max, scaleTo). `running` excludes the
    Jobs kept for minReplicaCount."""
    if strategy == "custom":
        # Go converts running * percentage to int64: truncation toward zero.
        allowed = max_scale - deduction - math.trunc(running * percentage)
        return min(allowed, max_replicas), scale_to
    if strategy == "accurate":
        if max_scale + running > max_replicas:
            return max_replicas - running, scale_to
        return max_scale - pending, scale_to
    if strategy == "eager":
        return min(max_replicas - running - pending, max_scale), max_replicas
    return max_scale - running, scale_to


def decide_jobs(
    sj: ScaledJob, readings: Sequence[TriggerReading], counts: JobCounts
) -> JobsDecision:
    """The Jobs one poll creates (RequestJobScale): the minimum first, then the strategy."""
    max_replicas = sj.max_replica_count
    min_replicas = sj.min_replica_count
    scaling = sj.scaling
    active, queue, wanted = combine(readings, scaling.multiple_scalers_calculation, max_replicas)
    if min_replicas > 0:
        active = True
    scale_to = math.ceil(queue)
    max_scale = math.ceil(min(wanted, float(max_replicas)))
    if counts.running < min_replicas:
        effective = scale_to = min_replicas - counts.running
        branch: Literal["inactive", "to-min", "strategy"] = "to-min"
    else:
        effective, scale_to = effective_max_scale(
            scaling.effective,
            max_scale,
            counts.running - min_replicas,
            counts.pending,
            max_replicas,
            scale_to,
            deduction=scaling.queue_length_deduction,
            percentage=scaling.running_job_percentage or 0.0,
        )
        branch = "strategy"
    effective = max(effective, 0)
    create = min(scale_to, effective) if active and effective > 0 else 0
    if not active:
        branch = "inactive"
    return JobsDecision(active, math.ceil(queue), max_scale, effective, max(create, 0), branch)


# --------------------------------------------------------------------- Jobs and their pods


def finished_type(job: Mapping[str, Any]) -> str:
    """ "Complete" or "Failed" when the Job has that condition True, else ""."""
    for c in (job.get("status") or {}).get("conditions") or ():
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return str(c["type"])
    return ""


def is_pending(pods: Iterable[Mapping[str, Any]], pending_conditions: Sequence[str]) -> bool:
    """Whether an unfinished Job still counts as pending from its pods (getPendingJobCount)."""
    if pending_conditions:
        wanted = set(pending_conditions)
        for pod in pods:
            true = {
                str(c.get("type"))
                for c in (pod.get("status") or {}).get("conditions") or ()
                if c.get("status") == "True"
            }
            if wanted <= true:
                return False
        return True
    return not any(
        (pod.get("status") or {}).get("phase") in ("Running", "Succeeded") for pod in pods
    )


def to_prune(jobs: Iterable[Mapping[str, Any]], successful: int, failed: int) -> list[str]:
    """Names of the finished Jobs beyond the history limits, oldest completion first (cleanUp).
    A Job without a completionTime sorts first, as a nil time does in Go's Before."""
    done: dict[str, list[tuple[str, str]]] = {"Complete": [], "Failed": []}
    for job in jobs:
        kind = finished_type(job)
        if kind:
            status = job.get("status") or {}
            when = str(status.get("completionTime") or "")
            if not when and kind == "Failed":
                when = _failed_time(status)
            done[kind].append((when, str(job["metadata"]["name"])))
    names: list[str] = []
    for kind, limit in (("Complete", successful), ("Failed", failed)):
        items = sorted(done[kind])
        names += [name for _, name in items[: max(0, len(items) - limit)]]
    return names


def _failed_time(status: Mapping[str, Any]) -> str:
    for c in status.get("conditions") or ():
        if c.get("type") == "Failed":
            return str(c.get("lastTransitionTime") or "")
    return ""
