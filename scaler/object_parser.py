"""Parsing a ScaledObject: `parse_scaled_object(raw)` takes the plain dict the API server returns
(as decoded from JSON) and returns a frozen `ScaledObject` (scaler.objects), or raises
`ConfigError` listing EVERY problem found, worded like KEDA where KEDA has a message
(``CheckReplicaCountBoundsAreValid``, ``ValidateTriggers``, ``CheckFallbackValid``, the admission
webhook). Features Tidal deliberately lacks (``fallback.behavior: scalingModifiers``) raise
`UnsupportedError` when they are the only problems.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, cast

from scaler.annotations import collect_annotations
from scaler.contract import METRIC_TARGET_TYPES, MetricTargetType
from scaler.errors import ConfigError, UnsupportedError
from scaler.field_reader import FieldProblem, FieldReader
from scaler.formula import FormulaError, compile_formula
from scaler.objects import (
    AUTH_KINDS,
    DEFAULT_API_VERSION,
    DEFAULT_COOLDOWN_PERIOD,
    DEFAULT_INITIAL_COOLDOWN_PERIOD,
    DEFAULT_MAX_REPLICAS,
    DEFAULT_MIN_REPLICAS,
    DEFAULT_POLLING_INTERVAL,
    EMPTY,
    FALLBACK_BEHAVIORS,
    HPA_NAME_PREFIX,
    MAX_NAME_LENGTH,
    NO_CACHED_METRICS_TYPES,
    Advanced,
    AuthenticationRef,
    AuthKind,
    Fallback,
    FallbackBehavior,
    HpaConfig,
    ScaledObject,
    ScaleTargetRef,
    ScalingModifiers,
    Trigger,
    freeze,
    parse_timestamp,
)
from scaler.resource_trigger import is_resource_trigger
from scaler.values import (
    DEFAULT_KIND,
    parse_gvk,
)


def _parse_target(r: FieldReader, spec: Mapping[str, Any]) -> ScaleTargetRef:
    ref = r.obj(spec, "scaleTargetRef", "spec.scaleTargetRef") or EMPTY
    name = r.str_(ref, "name", "spec.scaleTargetRef.name")
    if not name:
        r.fail("spec.scaleTargetRef.name", "ScaledObject.spec.scaleTargetRef.name is missing")
    api_version = r.str_(ref, "apiVersion", "spec.scaleTargetRef.apiVersion") or DEFAULT_API_VERSION
    kind = r.str_(ref, "kind", "spec.scaleTargetRef.kind") or DEFAULT_KIND
    try:
        parse_gvk(api_version, kind)
    except ValueError as exc:
        r.fail("spec.scaleTargetRef.apiVersion", str(exc))
    container = r.str_(ref, "envSourceContainerName", "spec.scaleTargetRef.envSourceContainerName")
    return ScaleTargetRef(
        name=name, api_version=api_version, kind=kind, env_source_container_name=container or None
    )


def _parse_trigger(r: FieldReader, raw: object, index: int) -> Trigger | None:
    path = f"spec.triggers[{index}]"
    if not isinstance(raw, Mapping):
        r.fail(path, f"{path} must be an object")
        return None
    type_ = r.str_(raw, "type", f"{path}.type")
    if not type_:
        r.fail(f"{path}.type", f"{path}.type is required")
    name = r.str_(raw, "name", f"{path}.name")
    metadata = r.str_map(raw, "metadata", f"{path}.metadata")
    auth: AuthenticationRef | None = None
    auth_raw = r.obj(raw, "authenticationRef", f"{path}.authenticationRef")
    if auth_raw is not None:
        auth_name = r.str_(auth_raw, "name", f"{path}.authenticationRef.name")
        if not auth_name:
            r.fail(f"{path}.authenticationRef.name", f"{path}.authenticationRef.name is required")
        auth_kind = r.str_(auth_raw, "kind", f"{path}.authenticationRef.kind")
        auth_kind = auth_kind or "TriggerAuthentication"
        if auth_kind not in AUTH_KINDS:
            r.fail(
                f"{path}.authenticationRef.kind",
                f"{path}.authenticationRef.kind {auth_kind!r} is not supported, allowed values "
                "are 'TriggerAuthentication' or 'ClusterTriggerAuthentication'",
            )
            auth_kind = "TriggerAuthentication"
        auth = AuthenticationRef(auth_name, cast(AuthKind, auth_kind))
    resource = is_resource_trigger(type_)
    metric_type = r.str_(raw, "metricType", f"{path}.metricType")
    if not metric_type:
        # KEDA's cpu/memory scalers fall back to the deprecated metadata `type`; Utilization is
        # what every cpu/memory example uses. Everything else defaults to AverageValue.
        metric_type = (metadata.get("type") or "Utilization") if resource else "AverageValue"
    if metric_type not in METRIC_TARGET_TYPES:
        r.fail(
            f"{path}.metricType",
            f"{path}.metricType {metric_type!r} is not supported, allowed values are "
            "'Value', 'AverageValue' or 'Utilization'",
        )
        metric_type = "AverageValue"
    elif metric_type == "Utilization" and not resource:
        r.fail(
            f"{path}.metricType",
            "'Utilization' metric type is unsupported for external metrics, "
            "allowed values are 'Value' or 'AverageValue'",
        )
    elif metric_type == "Value" and resource:
        r.fail(
            f"{path}.metricType",
            f"'Value' metric type is unsupported for the {type_} trigger, "
            "allowed values are 'Utilization' or 'AverageValue'",
        )
    use_cached = r.bool_(raw, "useCachedMetrics", f"{path}.useCachedMetrics")
    if use_cached and type_ in NO_CACHED_METRICS_TYPES:
        r.fail(
            f"{path}.useCachedMetrics",
            f'property "useCachedMetrics" is not supported for {type_!r} scaler',
        )
    return Trigger(
        index=index,
        type=type_,
        name=name,
        metadata=metadata,
        authentication_ref=auth,
        metric_type=cast(MetricTargetType, metric_type),
        use_cached_metrics=use_cached,
    )


def parse_triggers(r: FieldReader, spec: Mapping[str, Any]) -> tuple[Trigger, ...]:
    """`spec.triggers` of a ScaledObject or a ScaledJob (one trigger grammar for both)."""
    raw = spec.get("triggers")
    if raw is not None and not isinstance(raw, list | tuple):
        r.fail("spec.triggers", "spec.triggers must be a list")
        raw = None
    if not raw:
        r.fail("spec.triggers", "no triggers defined in the ScaledObject/ScaledJob")
        return ()
    triggers = tuple(t for i, item in enumerate(raw) if (t := _parse_trigger(r, item, i)))
    seen: set[str] = set()
    for trigger in triggers:
        if not trigger.name:
            continue
        if trigger.name in seen:
            r.fail(
                f"spec.triggers[{trigger.index}].name",
                f"triggerName {trigger.name!r} is defined multiple times in the ScaledObject, "
                "but it must be unique",
            )
        seen.add(trigger.name)
    return triggers


def _parse_fallback(
    r: FieldReader, spec: Mapping[str, Any], triggers: tuple[Trigger, ...]
) -> Fallback | None:
    raw = r.obj(spec, "fallback", "spec.fallback")
    if raw is None:
        return None
    threshold = raw.get("failureThreshold")
    replicas = raw.get("replicas")
    ints_ok = True
    for key, value in (("failureThreshold", threshold), ("replicas", replicas)):
        if value is None:
            r.fail(f"spec.fallback.{key}", f"spec.fallback.{key} is required")
            ints_ok = False
        elif isinstance(value, bool) or not isinstance(value, int):
            r.fail(f"spec.fallback.{key}", f"spec.fallback.{key} must be an integer")
            ints_ok = False
    if not ints_ok or not isinstance(threshold, int) or not isinstance(replicas, int):
        return None
    if threshold < 0 or replicas < 0:
        r.fail(
            "spec.fallback.failureThreshold" if threshold < 0 else "spec.fallback.replicas",
            f"FailureThreshold={threshold} & Replicas={replicas} must both be greater than "
            "or equal to 0",
        )
    behavior = r.str_(raw, "behavior", "spec.fallback.behavior") or "static"
    if behavior in ("scalingModifiers", "triggerScoped"):  # KEDA's two names for it
        r.refuse(
            "spec.fallback.behavior",
            f"spec.fallback.behavior '{behavior}' is not supported by Tidal "
            "(advanced.scalingModifiers is; with it a fallback serves target x replicas as the "
            "composite metric); use static, currentReplicas, currentReplicasIfHigher or "
            "currentReplicasIfLower",
        )
        behavior = "static"
    elif behavior not in FALLBACK_BEHAVIORS:
        r.fail(
            "spec.fallback.behavior",
            f"spec.fallback.behavior {behavior!r} is not supported, allowed values are "
            + ", ".join(FALLBACK_BEHAVIORS),
        )
        behavior = "static"
    if triggers and all(t.is_resource for t in triggers):
        r.fail(
            "spec.fallback",
            "at least one trigger (that is not cpu or memory) has to be defined to use fallback",
        )
    return Fallback(threshold, replicas, cast(FallbackBehavior, behavior))


def _parse_modifiers(
    r: FieldReader, raw: Mapping[str, Any], triggers: tuple[Trigger, ...]
) -> ScalingModifiers | None:
    """KEDA's ValidateAndCompileScalingModifiers: a formula (over the names of the triggers
    that are not cpu/memory) and a target > 0 are required; metricType AverageValue or Value."""
    path = "spec.advanced.scalingModifiers"
    modifiers = r.obj(raw, "scalingModifiers", path)
    if modifiers is None or not any(modifiers.values()):
        return None
    formula_text = r.str_(modifiers, "formula", f"{path}.formula")
    target_text = r.str_(modifiers, "target", f"{path}.target").strip()
    activation_text = r.str_(modifiers, "activationTarget", f"{path}.activationTarget").strip()
    metric_type = r.str_(modifiers, "metricType", f"{path}.metricType") or "AverageValue"
    ok = True
    if not formula_text.strip():
        r.fail(f"{path}.formula", "error ScalingModifiers.Formula is mandatory")
        ok = False
    if not target_text:
        r.fail(f"{path}.target", "formula is given but target is empty")
        ok = False
    target = _float_or_none(target_text)
    if target_text and (target is None or target <= 0):
        r.fail(
            f"{path}.target",
            f"error converting target for scalingModifiers (string->float) to valid target: "
            f"{target_text!r} is not a number > 0",
        )
        ok = False
    activation = _float_or_none(activation_text) if activation_text else 0.0
    if activation is None:
        r.fail(f"{path}.activationTarget", f"activationTarget {activation_text!r} is not a number")
        ok = False
    if metric_type not in ("AverageValue", "Value"):
        r.fail(
            f"{path}.metricType",
            f"error trigger type is {metric_type}, but it needs to be AverageValue or Value "
            "for external metrics",
        )
        ok = False
    names = [t.name for t in triggers if t.name and not t.is_resource]
    formula = None
    if formula_text.strip():
        try:
            formula = compile_formula(formula_text, names)
        except FormulaError as exc:
            r.fail(f"{path}.formula", f"invalid formula {formula_text!r}: {exc}")
            ok = False
    if not ok or formula is None or target is None or activation is None:
        return None
    return ScalingModifiers(
        formula, target, activation, "Value" if metric_type == "Value" else "AverageValue"
    )


def _float_or_none(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _parse_advanced(
    r: FieldReader, spec: Mapping[str, Any], triggers: tuple[Trigger, ...]
) -> Advanced:
    raw = r.obj(spec, "advanced", "spec.advanced")
    if raw is None:
        return Advanced()
    restore = r.bool_(
        raw, "restoreToOriginalReplicaCount", "spec.advanced.restoreToOriginalReplicaCount"
    )
    hpa_raw = r.obj(
        raw, "horizontalPodAutoscalerConfig", "spec.advanced.horizontalPodAutoscalerConfig"
    )
    hpa = HpaConfig()
    if hpa_raw is not None:
        name = r.str_(hpa_raw, "name", "spec.advanced.horizontalPodAutoscalerConfig.name")
        behavior = r.obj(
            hpa_raw, "behavior", "spec.advanced.horizontalPodAutoscalerConfig.behavior"
        )
        hpa = HpaConfig(name or None, None if behavior is None else freeze(behavior))
    return Advanced(
        restore_to_original_replica_count=restore,
        hpa=hpa,
        scaling_modifiers=_parse_modifiers(r, raw, triggers),
    )


def parse_scaled_object(raw: Mapping[str, Any]) -> ScaledObject:
    """Parse one ScaledObject from the API's JSON; raise ConfigError listing every problem."""
    so, problems = read_scaled_object(raw)
    if any(not p.unsupported for p in problems):
        raise ConfigError([p.message for p in problems])
    if problems:
        raise UnsupportedError([p.message for p in problems])
    return so


def read_scaled_object(raw: Mapping[str, Any]) -> tuple[ScaledObject, tuple[FieldProblem, ...]]:
    """The object as far as it reads (defaults where a field is bad) and every problem found,
    each with the field it is about; the problems of Tidal's unsupported features come last.
    `parse_scaled_object` is this, raising when there is any problem."""
    r = FieldReader()
    meta = r.obj(raw, "metadata", "metadata") or EMPTY
    spec = r.obj(raw, "spec", "spec")
    if spec is None:
        r.fail("spec", "spec is required")
        spec = EMPTY
    name = r.str_(meta, "name", "metadata.name")
    namespace = r.str_(meta, "namespace", "metadata.namespace")
    if not name:
        r.fail("metadata.name", "metadata.name is required")
    labels = r.str_map(meta, "labels", "metadata.labels")
    annotations = r.str_map(meta, "annotations", "metadata.annotations")
    annotation_problems: list[str] = []
    flags = collect_annotations(annotations, annotation_problems)
    for message in annotation_problems:
        r.fail("metadata.annotations", message)

    target = _parse_target(r, spec)
    polling = r.int_(spec, "pollingInterval", "spec.pollingInterval", DEFAULT_POLLING_INTERVAL, 1)
    cooldown = r.int_(spec, "cooldownPeriod", "spec.cooldownPeriod", DEFAULT_COOLDOWN_PERIOD, 0)
    initial = r.int_(
        spec,
        "initialCooldownPeriod",
        "spec.initialCooldownPeriod",
        DEFAULT_INITIAL_COOLDOWN_PERIOD,
        0,
    )
    min_set = spec.get("minReplicaCount") is not None
    min_ = r.int_(spec, "minReplicaCount", "spec.minReplicaCount", DEFAULT_MIN_REPLICAS, 0)
    max_ = r.int_(spec, "maxReplicaCount", "spec.maxReplicaCount", DEFAULT_MAX_REPLICAS, 1)
    idle = r.opt_int(spec, "idleReplicaCount", "spec.idleReplicaCount", 0)

    # KEDA's CheckReplicaCountBoundsAreValid compares with the HPA's min (an explicit 0 counts as
    # 1), so {min: 0, idle: 0} is accepted and {idle: 0} alone is not. Same here.
    bound_min = (min_ if min_ > 0 else 1) if min_set else 0
    if bound_min > max_:
        r.fail(
            "spec.minReplicaCount",
            f"MinReplicaCount={bound_min} must be less than MaxReplicaCount={max_}",
        )
    if idle is not None and idle >= bound_min:
        r.fail(
            "spec.idleReplicaCount",
            f"IdleReplicaCount={idle} must be less than MinReplicaCount={bound_min}",
        )

    triggers = parse_triggers(r, spec)
    fallback = _parse_fallback(r, spec, triggers)
    advanced = _parse_advanced(r, spec, triggers)

    if len(name) > MAX_NAME_LENGTH:
        r.fail(
            "metadata.name",
            f"ScaledObject name {name!r} is {len(name)} characters long, "
            f"but it must be at most {MAX_NAME_LENGTH}",
        )
    hpa = advanced.hpa.name or f"{HPA_NAME_PREFIX}{name}"
    if name and len(hpa) > MAX_NAME_LENGTH:
        r.fail(
            "spec.advanced.horizontalPodAutoscalerConfig.name"
            if advanced.hpa.name
            else "metadata.name",
            f"the HPA name {hpa!r} is {len(hpa)} characters long, but it must be at most "
            f"{MAX_NAME_LENGTH} (a ScaledObject name of at most "
            f"{MAX_NAME_LENGTH - len(HPA_NAME_PREFIX)} characters, or set "
            "advanced.horizontalPodAutoscalerConfig.name)",
        )

    generation = meta.get("generation")
    status = raw.get("status")
    so = ScaledObject(
        namespace=namespace,
        name=name,
        uid=str(meta.get("uid") or ""),
        generation=generation if isinstance(generation, int) else 0,
        resource_version=str(meta.get("resourceVersion") or ""),
        creation_timestamp=parse_timestamp(meta.get("creationTimestamp")),
        labels=labels,
        annotations=annotations,
        flags=flags,
        scale_target_ref=target,
        polling_interval=polling,
        cooldown_period=cooldown,
        initial_cooldown_period=initial,
        min_replica_count=min_,
        max_replica_count=max_,
        idle_replica_count=idle,
        fallback=fallback,
        advanced=advanced,
        triggers=triggers,
        status=freeze(status) if isinstance(status, Mapping) else EMPTY,
    )
    return so, (*r.problems, *r.unsupported)
