"""parse_scaled_object / parse_annotations: KEDA's defaults, validation wording, immutability."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from scaler.annotations import Annotations, parse_annotations
from scaler.errors import ConfigError, UnsupportedError
from scaler.object_parser import parse_scaled_object
from scaler.objects import (
    ScaledObject,
    hpa_max_replicas,
    hpa_min_replicas,
    hpa_name,
    parse_timestamp,
    thaw,
)


def manifest(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {
            "name": "orders",
            "namespace": "shop",
            "uid": "u-1",
            "generation": 3,
            "resourceVersion": "42",
            "creationTimestamp": "2024-05-01T10:00:00Z",
            "labels": {"app": "orders"},
            "annotations": {},
        },
        "spec": {
            "scaleTargetRef": {"name": "orders-worker"},
            "triggers": [{"type": "redis", "metadata": {"listName": "orders"}}],
        },
    }
    base["spec"].update(spec)
    return base


def with_annotations(**annotations: str) -> dict[str, Any]:
    raw = manifest()
    raw["metadata"]["annotations"] = annotations
    return raw


def problems_of(raw: dict[str, Any]) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as info:
        parse_scaled_object(raw)
    return info.value.problems


# --------------------------------------------------------------------------- defaults


def test_defaults_match_keda() -> None:
    so = parse_scaled_object(manifest())
    assert (so.namespace, so.name, so.uid, so.generation, so.resource_version) == (
        "shop",
        "orders",
        "u-1",
        3,
        "42",
    )
    assert so.creation_timestamp == parse_timestamp("2024-05-01T10:00:00+00:00")
    assert so.polling_interval == 30
    assert so.cooldown_period == 300
    assert so.initial_cooldown_period == 0
    assert so.min_replica_count == 0
    assert so.max_replica_count == 100
    assert so.idle_replica_count is None
    assert so.fallback is None
    assert so.advanced.restore_to_original_replica_count is False
    assert so.advanced.hpa.name is None
    assert so.advanced.hpa.behavior is None
    ref = so.scale_target_ref
    assert (ref.name, ref.api_version, ref.kind, ref.env_source_container_name) == (
        "orders-worker",
        "apps/v1",
        "Deployment",
        None,
    )
    assert ref.gvk == ("apps", "v1", "Deployment")
    assert ref.gvk_string == "apps/v1.Deployment"
    (trigger,) = so.triggers
    assert (trigger.index, trigger.type, trigger.name, trigger.metric_type) == (
        0,
        "redis",
        "",
        "AverageValue",
    )
    assert dict(trigger.metadata) == {"listName": "orders"}
    assert trigger.authentication_ref is None
    assert trigger.use_cached_metrics is False
    assert so.flags == Annotations()
    assert so.key == ("shop", "orders")


def test_every_field_is_read() -> None:
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 60, "policies": [{"type": "Pods"}]}}
    so = parse_scaled_object(
        manifest(
            scaleTargetRef={
                "name": "web",
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "envSourceContainerName": "app",
            },
            pollingInterval=5,
            cooldownPeriod=60,
            initialCooldownPeriod=120,
            minReplicaCount=2,
            maxReplicaCount=20,
            idleReplicaCount=0,
            fallback={"failureThreshold": 3, "replicas": 6, "behavior": "currentReplicasIfHigher"},
            advanced={
                "restoreToOriginalReplicaCount": True,
                "horizontalPodAutoscalerConfig": {"name": "custom-hpa", "behavior": behavior},
            },
            triggers=[
                {
                    "type": "kafka",
                    "name": "lag",
                    "metadata": {"topic": "orders"},
                    "authenticationRef": {
                        "name": "kafka-auth",
                        "kind": "ClusterTriggerAuthentication",
                    },
                    "metricType": "Value",
                    "useCachedMetrics": True,
                },
                {"type": "cpu", "metadata": {"value": "60"}},
            ],
        )
    )
    assert so.scale_target_ref.kind == "StatefulSet"
    assert so.scale_target_ref.env_source_container_name == "app"
    assert (so.polling_interval, so.cooldown_period, so.initial_cooldown_period) == (5, 60, 120)
    assert (so.min_replica_count, so.max_replica_count, so.idle_replica_count) == (2, 20, 0)
    assert so.fallback is not None
    assert (so.fallback.failure_threshold, so.fallback.replicas, so.fallback.behavior) == (
        3,
        6,
        "currentReplicasIfHigher",
    )
    assert so.advanced.restore_to_original_replica_count is True
    assert hpa_name(so) == "custom-hpa"
    assert so.advanced.hpa.behavior_json() == behavior
    kafka, cpu = so.triggers
    assert kafka.authentication_ref is not None
    assert kafka.authentication_ref.kind == "ClusterTriggerAuthentication"
    assert (kafka.name, kafka.metric_type, kafka.use_cached_metrics) == ("lag", "Value", True)
    assert (cpu.index, cpu.metric_type, cpu.is_resource) == (1, "Utilization", True)


def test_authentication_ref_kind_defaults_to_trigger_authentication() -> None:
    raw = manifest(triggers=[{"type": "redis", "metadata": {}, "authenticationRef": {"name": "a"}}])
    ref = parse_scaled_object(raw).triggers[0].authentication_ref
    assert ref is not None
    assert (ref.name, ref.kind) == ("a", "TriggerAuthentication")


def test_fallback_behavior_defaults_to_static() -> None:
    so = parse_scaled_object(manifest(fallback={"failureThreshold": 1, "replicas": 2}))
    assert so.fallback is not None
    assert so.fallback.behavior == "static"


def test_status_fields_are_read() -> None:
    raw = manifest()
    raw["status"] = {
        "lastActiveTime": "2024-05-01T10:05:00Z",
        "originalReplicaCount": 3,
        "pausedReplicaCount": 1,
    }
    so = parse_scaled_object(raw)
    assert so.last_active_time == parse_timestamp("2024-05-01T10:05:00Z")
    assert so.original_replica_count == 3
    assert so.paused_replica_count == 1


def test_missing_status_means_no_times() -> None:
    so = parse_scaled_object(manifest())
    assert so.last_active_time is None
    assert so.original_replica_count is None


def test_parsed_object_is_immutable_and_detached_from_input() -> None:
    raw = manifest(
        advanced={"horizontalPodAutoscalerConfig": {"behavior": {"scaleUp": {"policies": []}}}}
    )
    raw["status"] = {"health": {"s0-redis-orders": {"numberOfFailures": 1}}}
    so = parse_scaled_object(raw)
    raw["metadata"]["labels"]["app"] = "changed"
    raw["spec"]["triggers"][0]["metadata"]["listName"] = "changed"
    assert so.labels["app"] == "orders"
    assert so.triggers[0].metadata["listName"] == "orders"
    with pytest.raises(TypeError):
        so.labels["x"] = "y"  # type: ignore[index]
    with pytest.raises(TypeError):
        so.status["health"]["x"] = 1
    with pytest.raises(AttributeError):
        so.name = "other"  # type: ignore[misc]
    behavior = so.advanced.hpa.behavior_json()
    assert behavior is not None
    json.dumps(behavior)  # plain JSON again
    copy.deepcopy(behavior)
    assert thaw(so.status) == {"health": {"s0-redis-orders": {"numberOfFailures": 1}}}


# --------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("min_", "expected"),
    [
        pytest.param(None, 1, id="unset-is-1"),
        pytest.param(0, 1, id="zero-is-1"),
        pytest.param(4, 4, id="min-4"),
    ],
)
def test_hpa_min_replicas(min_: int | None, expected: int) -> None:
    spec = {} if min_ is None else {"minReplicaCount": min_}
    so = parse_scaled_object(manifest(**spec))
    assert hpa_min_replicas(so) == expected
    assert hpa_max_replicas(so) == 100


def test_default_hpa_name() -> None:
    assert hpa_name(parse_scaled_object(manifest())) == "keda-hpa-orders"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("2024-05-01T10:00:00Z", 1714557600.0, id="zulu"),
        pytest.param("2024-05-01T12:00:00+02:00", 1714557600.0, id="offset"),
        pytest.param("2024-05-01T10:00:00", 1714557600.0, id="naive-is-utc"),
        pytest.param("yesterday", None, id="garbage"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="missing"),
    ],
)
def test_parse_timestamp(text: str | None, expected: float | None) -> None:
    assert parse_timestamp(text) == expected


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        pytest.param(
            {"minReplicaCount": 5, "maxReplicaCount": 3},
            "MinReplicaCount=5 must be less than MaxReplicaCount=3",
            id="min-above-max",
        ),
        pytest.param(
            {"minReplicaCount": 2, "idleReplicaCount": 2},
            "IdleReplicaCount=2 must be less than MinReplicaCount=2",
            id="idle-equal-min",
        ),
        pytest.param(
            {"idleReplicaCount": 0},
            "IdleReplicaCount=0 must be less than MinReplicaCount=0",
            id="idle-without-min",
        ),
        pytest.param(
            {"triggers": []}, "no triggers defined in the ScaledObject/ScaledJob", id="no-triggers"
        ),
        pytest.param(
            {"triggers": [{"type": "", "metadata": {}}]},
            "spec.triggers[0].type is required",
            id="empty-type",
        ),
        pytest.param(
            {
                "triggers": [
                    {"type": "redis", "name": "a", "metadata": {}},
                    {"type": "kafka", "name": "a", "metadata": {}},
                ]
            },
            "triggerName 'a' is defined multiple times in the ScaledObject, but it must be unique",
            id="duplicate-trigger-name",
        ),
        pytest.param(
            {"triggers": [{"type": "redis", "metadata": {}, "metricType": "Utilization"}]},
            "'Utilization' metric type is unsupported for external metrics, "
            "allowed values are 'Value' or 'AverageValue'",
            id="utilization-on-external",
        ),
        pytest.param(
            {"triggers": [{"type": "redis", "metadata": {}, "metricType": "Average"}]},
            "spec.triggers[0].metricType 'Average' is not supported, allowed values are "
            "'Value', 'AverageValue' or 'Utilization'",
            id="unknown-metric-type",
        ),
        pytest.param(
            {"triggers": [{"type": "memory", "metadata": {}, "metricType": "Value"}]},
            "'Value' metric type is unsupported for the memory trigger, "
            "allowed values are 'Utilization' or 'AverageValue'",
            id="value-on-memory",
        ),
        pytest.param(
            {"triggers": [{"type": "cron", "metadata": {}, "useCachedMetrics": True}]},
            "property \"useCachedMetrics\" is not supported for 'cron' scaler",
            id="cached-metrics-cron",
        ),
        pytest.param(
            {"triggers": [{"type": "cpu", "metadata": {}, "useCachedMetrics": True}]},
            "property \"useCachedMetrics\" is not supported for 'cpu' scaler",
            id="cached-metrics-cpu",
        ),
        pytest.param(
            {"fallback": {"failureThreshold": -1, "replicas": 2}},
            "FailureThreshold=-1 & Replicas=2 must both be greater than or equal to 0",
            id="fallback-negative-threshold",
        ),
        pytest.param(
            {"fallback": {"failureThreshold": 1, "replicas": -2}},
            "FailureThreshold=1 & Replicas=-2 must both be greater than or equal to 0",
            id="fallback-negative-replicas",
        ),
        pytest.param(
            {"fallback": {"replicas": 2}},
            "spec.fallback.failureThreshold is required",
            id="fallback-missing-threshold",
        ),
        pytest.param(
            {"fallback": {"failureThreshold": 1, "replicas": 2, "behavior": "sometimes"}},
            "spec.fallback.behavior 'sometimes' is not supported, allowed values are static, "
            "currentReplicas, currentReplicasIfHigher, currentReplicasIfLower",
            id="fallback-unknown-behavior",
        ),
        pytest.param(
            {
                "fallback": {"failureThreshold": 1, "replicas": 2},
                "triggers": [{"type": "cpu", "metadata": {"value": "50"}}],
                "minReplicaCount": 1,
            },
            "at least one trigger (that is not cpu or memory) has to be defined to use fallback",
            id="fallback-cpu-only",
        ),
        pytest.param(
            {"scaleTargetRef": {"kind": "Deployment"}},
            "ScaledObject.spec.scaleTargetRef.name is missing",
            id="target-name-missing",
        ),
        pytest.param(
            {"scaleTargetRef": {"name": "x", "apiVersion": "a/b/c"}},
            "unexpected GroupVersion string: a/b/c",
            id="bad-api-version",
        ),
        pytest.param(
            {"pollingInterval": 0},
            "spec.pollingInterval must be greater than or equal to 1",
            id="polling-zero",
        ),
        pytest.param(
            {"cooldownPeriod": "300"},
            "spec.cooldownPeriod must be an integer",
            id="cooldown-string",
        ),
        pytest.param(
            {"maxReplicaCount": 0},
            "spec.maxReplicaCount must be greater than or equal to 1",
            id="max-zero",
        ),
        pytest.param(
            {"triggers": [{"type": "redis", "metadata": {"listLength": 5}}]},
            "spec.triggers[0].metadata.listLength must be a string",
            id="metadata-not-string",
        ),
        pytest.param(
            {
                "triggers": [
                    {
                        "type": "redis",
                        "metadata": {},
                        "authenticationRef": {"name": "a", "kind": "Secret"},
                    }
                ]
            },
            "spec.triggers[0].authenticationRef.kind 'Secret' is not supported, allowed values "
            "are 'TriggerAuthentication' or 'ClusterTriggerAuthentication'",
            id="auth-kind",
        ),
        pytest.param(
            {"advanced": {"horizontalPodAutoscalerConfig": {"name": "h" * 64}}},
            f"the HPA name {'h' * 64!r} is 64 characters long, but it must be at most 63 "
            "(a ScaledObject name of at most 54 characters, or set "
            "advanced.horizontalPodAutoscalerConfig.name)",
            id="hpa-name-too-long",
        ),
    ],
)
def test_validation_problem(spec: dict[str, Any], problem: str) -> None:
    assert problem in problems_of(manifest(**spec))


def test_explicit_min_zero_allows_idle_zero_like_keda() -> None:
    so = parse_scaled_object(manifest(minReplicaCount=0, idleReplicaCount=0))
    assert (so.min_replica_count, so.idle_replica_count) == (0, 0)


def test_name_length_limits() -> None:
    raw = manifest()
    raw["metadata"]["name"] = "n" * 64
    problems = problems_of(raw)
    assert f"ScaledObject name {'n' * 64!r} is 64 characters long, but it must be at most 63" in (
        problems
    )
    raw["metadata"]["name"] = "n" * 54
    assert hpa_name(parse_scaled_object(raw)) == "keda-hpa-" + "n" * 54
    raw["metadata"]["name"] = "n" * 55
    assert any("the HPA name" in p for p in problems_of(raw))


def test_every_problem_is_collected_at_once() -> None:
    raw = manifest(
        minReplicaCount=5,
        maxReplicaCount=3,
        pollingInterval=0,
        scaleTargetRef={},
        triggers=[
            {"type": "redis", "name": "a", "metadata": {}},
            {"type": "redis", "name": "a", "metadata": {}, "metricType": "Utilization"},
        ],
    )
    raw["metadata"]["annotations"] = {"autoscaling.keda.sh/paused-replicas": "many"}
    problems = problems_of(raw)
    assert len(problems) == 6, problems


TWO_NAMED = [
    {"type": "redis", "name": "queue_a", "metadata": {"listName": "a"}},
    {"type": "redis", "name": "queue_b", "metadata": {"listName": "b"}},
    {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "50"}},
]


def test_scaling_modifiers_parse_with_their_defaults() -> None:
    raw = manifest(
        triggers=TWO_NAMED,
        advanced={"scalingModifiers": {"formula": "queue_a + queue_b", "target": "5"}},
    )
    m = parse_scaled_object(raw).advanced.scaling_modifiers
    assert m is not None
    assert (m.target, m.activation_target, m.metric_type) == (5.0, 0.0, "AverageValue")
    assert m.formula.variables == {"queue_a", "queue_b"}
    assert m.formula.evaluate({"queue_a": 2, "queue_b": 3}) == 5


@pytest.mark.parametrize(
    ("modifiers", "problem"),
    [
        pytest.param(
            {"target": "5"}, "error ScalingModifiers.Formula is mandatory", id="no-formula"
        ),
        pytest.param(
            {"formula": "queue_a"}, "formula is given but target is empty", id="no-target"
        ),
        pytest.param({"formula": "queue_a", "target": "0"}, "valid target", id="target-zero"),
        pytest.param({"formula": "queue_a", "target": "x"}, "valid target", id="target-nan"),
        pytest.param(
            {"formula": "queue_a", "target": "1", "activationTarget": "soon"},
            "activationTarget 'soon' is not a number",
            id="activation-nan",
        ),
        pytest.param(
            {"formula": "queue_a", "target": "1", "metricType": "Utilization"},
            "needs to be AverageValue or Value",
            id="utilization",
        ),
        pytest.param(
            {"formula": "queue_c * 2", "target": "1"},
            "unknown name(s) queue_c (trigger names: queue_a, queue_b)",
            id="unknown-trigger",
        ),
        pytest.param(
            {"formula": "queue_a > 1", "target": "1"},
            "must give a number",
            id="bool-formula",
        ),
    ],
)
def test_bad_scaling_modifiers_are_config_errors(modifiers: dict[str, str], problem: str) -> None:
    raw = manifest(triggers=TWO_NAMED, advanced={"scalingModifiers": modifiers})
    assert any(problem in p for p in problems_of(raw)), problems_of(raw)


def test_empty_scaling_modifiers_are_none() -> None:
    raw = manifest(advanced={"scalingModifiers": {}})
    assert parse_scaled_object(raw).advanced.scaling_modifiers is None


@pytest.mark.parametrize(
    "behavior",
    [
        pytest.param("scalingModifiers", id="scalingModifiers"),
        pytest.param("triggerScoped", id="triggerScoped"),
    ],
)
def test_fallback_behavior_scaling_modifiers_is_unsupported(behavior: str) -> None:
    """KEDA has named the per-trigger fallback both ways: both get the same refusal."""
    raw = manifest(fallback={"failureThreshold": 1, "replicas": 2, "behavior": behavior})
    with pytest.raises(UnsupportedError, match=f"'{behavior}' is not supported by Tidal"):
        parse_scaled_object(raw)


def test_unsupported_mixed_with_errors_is_a_plain_config_error() -> None:
    raw = manifest(
        minReplicaCount=5,
        maxReplicaCount=3,
        fallback={"failureThreshold": 1, "replicas": 2, "behavior": "scalingModifiers"},
    )
    with pytest.raises(ConfigError) as info:
        parse_scaled_object(raw)
    assert not isinstance(info.value, UnsupportedError)
    assert len(info.value.problems) == 2


def test_garbage_input_is_a_config_error_not_a_crash() -> None:
    for raw in ({}, {"spec": []}, {"metadata": "x", "spec": {"triggers": "x"}}):
        with pytest.raises(ConfigError):
            parse_scaled_object(raw)


# --------------------------------------------------------------------------- annotations


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        pytest.param({}, Annotations(), id="none"),
        pytest.param({"autoscaling.keda.sh/paused": "true"}, Annotations(paused=True), id="paused"),
        pytest.param({"autoscaling.keda.sh/paused": "false"}, Annotations(), id="paused-false"),
        pytest.param(
            {"autoscaling.keda.sh/paused": "please"},
            Annotations(paused=True),
            id="paused-non-bool-is-true",
        ),
        pytest.param(
            {"autoscaling.keda.sh/paused-replicas": "3"},
            Annotations(paused=True, paused_replicas=3),
            id="paused-replicas",
        ),
        pytest.param(
            {"autoscaling.keda.sh/paused": "false", "autoscaling.keda.sh/paused-replicas": "0"},
            Annotations(paused=True, paused_replicas=0),
            id="paused-replicas-wins",
        ),
        pytest.param(
            {"autoscaling.keda.sh/paused-scale-in": "true"},
            Annotations(pause_scale_in=True),
            id="scale-in",
        ),
        pytest.param(
            {"autoscaling.keda.sh/paused-scale-out": "1"},
            Annotations(pause_scale_out=True),
            id="scale-out",
        ),
        pytest.param(
            {"autoscaling.keda.sh/force-activation": "true"},
            Annotations(force_activation=True),
            id="force",
        ),
        pytest.param(
            {"autoscaling.keda.sh/force-activation": "please"},
            Annotations(),
            id="force-non-bool-is-false",
        ),
        pytest.param(
            {"scaledobject.keda.sh/transfer-hpa-ownership": "true"},
            Annotations(transfer_hpa_ownership=True),
            id="transfer",
        ),
        pytest.param(
            {"scaledobject.keda.sh/hpa-excluded-labels": "a, b,,c"},
            Annotations(hpa_excluded_labels=frozenset({"a", "b", "c"})),
            id="excluded-labels",
        ),
    ],
)
def test_parse_annotations(annotations: dict[str, str], expected: Annotations) -> None:
    assert parse_annotations(annotations) == expected
    assert parse_scaled_object(with_annotations(**annotations)).flags == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("three", id="word"),
        pytest.param("1.5", id="float"),
        pytest.param("-1", id="negative"),
    ],
)
def test_invalid_paused_replicas_is_a_problem(value: str) -> None:
    with pytest.raises(ConfigError, match=r"autoscaling\.keda\.sh/paused-replicas"):
        parse_annotations({"autoscaling.keda.sh/paused-replicas": value})
    assert any(
        "paused-replicas" in p
        for p in problems_of(with_annotations(**{"autoscaling.keda.sh/paused-replicas": value}))
    )


def test_scaled_object_type_is_a_frozen_dataclass() -> None:
    assert ScaledObject.__dataclass_params__.frozen  # type: ignore[attr-defined]
    assert hasattr(ScaledObject, "__slots__")
