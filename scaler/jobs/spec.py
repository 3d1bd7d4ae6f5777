"""The ScaledJob (`keda.sh/v1alpha1`) as Tidal holds it, and its parser.

`read_scaled_job(raw)` takes the API's JSON and returns a frozen `ScaledJob` with KEDA's defaults
(scaledjob_types.go, scale_jobs.go) and every problem found, each with its field, worded like
KEDA where KEDA has a message. Triggers are parsed by the ScaledObject parser's own trigger
reader (one trigger grammar), plus KEDA's ScaledJob rule that a trigger sets no `metricType`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast, get_args

from scaler.annotations import PAUSED
from scaler.errors import ConfigError
from scaler.field_reader import FieldProblem, FieldReader
from scaler.object_parser import parse_triggers
from scaler.objects import (
    EMPTY,
    MAX_NAME_LENGTH,
    ScaledObject,
    ScaleTargetRef,
    Trigger,
    freeze,
    parse_timestamp,
    thaw,
)

Strategy = Literal["default", "custom", "accurate", "eager"]
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
Calculation = Literal["max", "min", "avg", "sum"]
CALCULATIONS: tuple[Calculation, ...] = get_args(Calculation)
Rollout = Literal["default", "gradual"]
Propagation = Literal["background", "foreground"]

DEFAULT_POLLING_INTERVAL: Final = 30
DEFAULT_HISTORY_LIMIT: Final = 100
DEFAULT_MAX: Final = 100
NAME_LABEL: Final = "scaledjob.keda.sh/name"
GENERATION_ANNOTATION: Final = "scaledjob.keda.sh/generation"
EXCLUDED_LABELS_ANNOTATION: Final = "scaledjob.keda.sh/job-excluded-labels"
API_VERSION: Final = "keda.sh/v1alpha1"


@dataclass(frozen=True, slots=True)
class ScalingStrategy:
    strategy: Strategy = "default"
    # custom: both are needed (KEDA falls back to default when the percentage does not parse)
    queue_length_deduction: int = 0
    running_job_percentage: float | None = None
    pending_pod_conditions: tuple[str, ...] = ()
    multiple_scalers_calculation: Calculation = "max"

    @property
    def effective(self) -> Strategy:
        """KEDA's NewScalingStrategy: `custom` without a parsable percentage is `default`."""
        if self.strategy == "custom" and self.running_job_percentage is None:
            return "default"
        return self.strategy


@dataclass(frozen=True, slots=True)
class ScaledJob:
    namespace: str
    name: str
    job_spec: Mapping[str, Any]  # frozen batch/v1 JobSpec, verbatim
    triggers: tuple[Trigger, ...]
    uid: str = ""
    generation: int = 0
    creation_timestamp: float | None = None
    labels: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    annotations: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    polling_interval: int = DEFAULT_POLLING_INTERVAL
    successful_history_limit: int = DEFAULT_HISTORY_LIMIT
    failed_history_limit: int = DEFAULT_HISTORY_LIMIT
    env_source_container_name: str | None = None
    min_replica_count_spec: int | None = None
    max_replica_count_spec: int | None = None
    rollout: Rollout = "default"
    propagation: Propagation = "background"
    scaling: ScalingStrategy = ScalingStrategy()
    status: Mapping[str, Any] = field(default_factory=lambda: EMPTY)

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def min_replica_count(self) -> int:
        """KEDA's MinReplicaCount(): the spec's, capped at the spec's maximum (default 0)."""
        if self.min_replica_count_spec is None:
            return 0
        cap = DEFAULT_MAX if self.max_replica_count_spec is None else self.max_replica_count_spec
        return min(self.min_replica_count_spec, cap)

    @property
    def max_replica_count(self) -> int:
        """KEDA's MaxReplicaCount(): maxReplicaCount - min when set, else 100. Jobs kept for
        minReplicaCount are outside this budget."""
        if self.max_replica_count_spec is None:
            return DEFAULT_MAX
        return self.max_replica_count_spec - self.min_replica_count

    @property
    def paused(self) -> bool:
        """KEDA's checkIfPaused: the annotation parsed as a bool; unparsable counts as paused."""
        value = self.annotations.get(PAUSED)
        if value is None:
            return False
        return value.strip() not in ("0", "f", "F", "false", "FALSE", "False")

    def as_scaled_object(self) -> ScaledObject:
        """The view scaler.builder.build_triggers reads: namespace, name (the metric names'
        object), triggers and the env source container; no scale target."""
        return ScaledObject(
            namespace=self.namespace,
            name=self.name,
            scale_target_ref=ScaleTargetRef(
                name=self.name,
                api_version="batch/v1",
                kind="Job",
                env_source_container_name=self.env_source_container_name,
            ),
            triggers=self.triggers,
            uid=self.uid,
            generation=self.generation,
            polling_interval=self.polling_interval,
        )

    @property
    def pod_spec(self) -> dict[str, Any] | None:
        """The Job template's pod spec as plain JSON (env resolution reads lists)."""
        template = self.job_spec.get("template")
        spec = template.get("spec") if isinstance(template, Mapping) else None
        return thaw(spec) if isinstance(spec, Mapping) else None


def parse_scaled_job(raw: Mapping[str, Any]) -> ScaledJob:
    """Parse one ScaledJob; raise ConfigError listing every problem."""
    sj, problems = read_scaled_job(raw)
    if problems:
        raise ConfigError([f"{p.path}: {p.message}" for p in problems])
    return sj


def read_scaled_job(raw: Mapping[str, Any]) -> tuple[ScaledJob, tuple[FieldProblem, ...]]:
    """The ScaledJob as far as it reads (defaults where a field is bad) and every problem."""
    r = FieldReader()
    meta = r.obj(raw, "metadata", "metadata") or EMPTY
    spec = r.obj(raw, "spec", "spec")
    if spec is None:
        r.fail("spec", "spec is required")
        spec = EMPTY
    name = r.str_(meta, "name", "metadata.name")
    if not name:
        r.fail("metadata.name", "metadata.name is required")
    elif len(name) > MAX_NAME_LENGTH:
        r.fail(
            "metadata.name",
            f"ScaledJob name {name!r} is {len(name)} characters long, "
            f"but it must be at most {MAX_NAME_LENGTH}",
        )
    job_spec = r.obj(spec, "jobTargetRef", "spec.jobTargetRef")
    if job_spec is None:
        r.fail("spec.jobTargetRef", "ScaledJob.spec.jobTargetRef not found")
        job_spec = EMPTY
    else:
        _check_template(r, job_spec)
    polling = r.int_(spec, "pollingInterval", "spec.pollingInterval", DEFAULT_POLLING_INTERVAL, 1)
    ok_limit = r.int_(spec, "successfulJobsHistoryLimit", "spec.successfulJobsHistoryLimit", 100, 0)
    failed_limit = r.int_(spec, "failedJobsHistoryLimit", "spec.failedJobsHistoryLimit", 100, 0)
    min_ = r.opt_int(spec, "minReplicaCount", "spec.minReplicaCount", 0)
    max_ = r.opt_int(spec, "maxReplicaCount", "spec.maxReplicaCount", 0)
    env_container = r.str_(spec, "envSourceContainerName", "spec.envSourceContainerName")
    rollout, propagation = _parse_rollout(r, spec)
    scaling = _parse_scaling(r, spec)
    triggers = parse_triggers(r, spec)
    for trig in triggers:
        raw_trigger = (spec.get("triggers") or [])[trig.index]
        if isinstance(raw_trigger, Mapping) and raw_trigger.get("metricType"):
            r.fail(
                f"spec.triggers[{trig.index}].metricType",
                "metricType is set in one of the ScaledJob scaler: "
                "Cannot set metricType in ScaledJob triggers",
            )
    generation = meta.get("generation")
    status = raw.get("status")
    sj = ScaledJob(
        namespace=r.str_(meta, "namespace", "metadata.namespace"),
        name=name,
        job_spec=freeze(job_spec),
        triggers=triggers,
        uid=str(meta.get("uid") or ""),
        generation=generation if isinstance(generation, int) else 0,
        creation_timestamp=parse_timestamp(meta.get("creationTimestamp")),
        labels=r.str_map(meta, "labels", "metadata.labels"),
        annotations=r.str_map(meta, "annotations", "metadata.annotations"),
        polling_interval=polling,
        successful_history_limit=ok_limit,
        failed_history_limit=failed_limit,
        env_source_container_name=env_container or None,
        min_replica_count_spec=min_,
        max_replica_count_spec=max_,
        rollout=rollout,
        propagation=propagation,
        scaling=scaling,
        status=freeze(status) if isinstance(status, Mapping) else EMPTY,
    )
    return sj, (*r.problems, *r.unsupported)


def _check_template(r: FieldReader, job_spec: Mapping[str, Any]) -> None:
    template = r.obj(job_spec, "template", "spec.jobTargetRef.template")
    pod = r.obj(template or EMPTY, "spec", "spec.jobTargetRef.template.spec")
    containers = (pod or EMPTY).get("containers")
    if not isinstance(containers, list | tuple) or not containers:
        r.fail(
            "spec.jobTargetRef.template.spec.containers",
            "spec.jobTargetRef.template.spec.containers must list at least one container",
        )
    restart = (pod or EMPTY).get("restartPolicy")
    if restart == "Always":
        r.fail(
            "spec.jobTargetRef.template.spec.restartPolicy",
            'a Job\'s restartPolicy must be "OnFailure" or "Never" (empty means OnFailure)',
        )


def _parse_rollout(r: FieldReader, spec: Mapping[str, Any]) -> tuple[Rollout, Propagation]:
    raw = r.obj(spec, "rollout", "spec.rollout") or EMPTY
    # The deprecated spec.rolloutStrategy wins when set, as in KEDA.
    strategy = r.str_(spec, "rolloutStrategy", "spec.rolloutStrategy") or r.str_(
        raw, "strategy", "spec.rollout.strategy"
    )
    if strategy not in ("", "default", "gradual"):
        r.fail(
            "spec.rollout.strategy",
            f"rollout strategy {strategy!r} is not supported, allowed values are "
            "'default' or 'gradual'",
        )
    policy = r.str_(raw, "propagationPolicy", "spec.rollout.propagationPolicy")
    if policy not in ("", "background", "foreground"):
        r.fail(
            "spec.rollout.propagationPolicy",
            f"propagationPolicy {policy!r} is not supported, allowed values are "
            "'background' or 'foreground'",
        )
    return (
        "gradual" if strategy == "gradual" else "default",
        "foreground" if policy == "foreground" else "background",
    )


def _parse_scaling(r: FieldReader, spec: Mapping[str, Any]) -> ScalingStrategy:
    raw = r.obj(spec, "scalingStrategy", "spec.scalingStrategy")
    if raw is None:
        return ScalingStrategy()
    path = "spec.scalingStrategy"
    strategy = r.str_(raw, "strategy", f"{path}.strategy") or "default"
    if strategy not in STRATEGIES:
        # KEDA runs an unknown strategy as default; a typo is worth refusing instead.
        r.fail(
            f"{path}.strategy",
            f"scaling strategy {strategy!r} is not supported, allowed values are "
            + ", ".join(STRATEGIES),
        )
        strategy = "default"
    deduction = r.int_(
        raw,
        "customScalingQueueLengthDeduction",
        f"{path}.customScalingQueueLengthDeduction",
        0,
        -(2**31),  # KEDA's int32, negative allowed (its tests use -2)
    )
    percentage: float | None = None
    text = raw.get("customScalingRunningJobPercentage")
    if text is not None:
        try:
            percentage = float(str(text))
        except ValueError:
            r.fail(
                f"{path}.customScalingRunningJobPercentage",
                f"customScalingRunningJobPercentage {text!r} is not a number",
            )
    conditions_raw = raw.get("pendingPodConditions") or []
    if not isinstance(conditions_raw, list | tuple) or not all(
        isinstance(c, str) for c in conditions_raw
    ):
        r.fail(f"{path}.pendingPodConditions", "pendingPodConditions must be a list of strings")
        conditions_raw = []
    calc = r.str_(raw, "multipleScalersCalculation", f"{path}.multipleScalersCalculation") or "max"
    if calc not in CALCULATIONS:
        r.fail(
            f"{path}.multipleScalersCalculation",
            f"multipleScalersCalculation {calc!r} is not supported, allowed values are "
            + ", ".join(CALCULATIONS),
        )
        calc = "max"
    return ScalingStrategy(
        strategy=cast(Strategy, strategy),
        queue_length_deduction=deduction,
        running_job_percentage=percentage,
        pending_pod_conditions=tuple(conditions_raw),
        multiple_scalers_calculation=cast(Calculation, calc),
    )
