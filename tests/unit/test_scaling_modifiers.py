"""advanced.scalingModifiers end to end inside one process: the HPA's metrics, the composite
value served (scaler.store), and activity from the composite (scaler.decide), KEDA's rules."""

from __future__ import annotations

from typing import Any

import pytest

from scaler.contract import MetricSpec, Sample
from scaler.decide import DecisionInput, TriggerView, decide
from scaler.modifiers import COMPOSITE_METRIC, composite_for, hpa_metric_specs
from scaler.object_parser import parse_scaled_object
from scaler.objects import ScaledObject
from scaler.store import MetricStore, MetricUnavailableError

NOW = 1_700_000_000.0
A, B = "s0-redis-a", "s1-redis-b"


def so(**modifiers: str) -> ScaledObject:
    spec: dict[str, Any] = {
        "scaleTargetRef": {"name": "worker"},
        "minReplicaCount": 0,
        "cooldownPeriod": 0,
        "triggers": [
            {"type": "redis", "name": "queue_a", "metadata": {"listName": "a"}},
            {"type": "redis", "name": "queue_b", "metadata": {"listName": "b"}},
        ],
        "advanced": {
            "scalingModifiers": {"formula": "queue_a + queue_b", "target": "5", **modifiers}
        },
    }
    return parse_scaled_object(
        {
            "metadata": {
                "name": "jobs",
                "namespace": "ns",
                "creationTimestamp": "2023-01-01T00:00:00Z",
            },
            "spec": spec,
        }
    )


def view(metric: str, value: float | None, *, error: str | None = None) -> TriggerView:
    sample = None if value is None else Sample(value, value > 0, NOW - 1)
    return TriggerView(metric, "redis", sample, error, 1 if error else 0, True)


def test_the_hpa_reads_one_composite_metric_with_the_modifiers_target() -> None:
    specs = [
        MetricSpec(A, 10, "AverageValue"),
        MetricSpec(B, 20, "AverageValue"),
        MetricSpec("cpu", 50, "Utilization", "Resource"),
    ]
    got = hpa_metric_specs(so(metricType="Value"), specs)
    assert [(s.name, s.target, s.target_type, s.kind) for s in got] == [
        (COMPOSITE_METRIC, 5.0, "Value", "External"),
        ("cpu", 50, "Utilization", "Resource"),
    ]


@pytest.mark.parametrize(
    ("a", "b", "activation", "current", "branch", "target"),
    [
        # a + b = 1 > activationTarget 0: active although each alone would be small.
        pytest.param(1, 0, "0", 0, "activate", 1, id="sum-above-activation"),
        # each trigger is active on its own (> 0), the composite 3 is not above 4: inactive.
        pytest.param(1, 2, "4", 1, "deactivate", 0, id="composite-below-activation"),
        pytest.param(3, 2, "4", 0, "activate", 1, id="composite-above-activation"),
    ],
)
def test_activity_is_the_composites(
    a: float, b: float, activation: str, current: int, branch: str, target: int
) -> None:
    d = decide(
        DecisionInput(
            so(activationTarget=activation), current, (view(A, a), view(B, b)), NOW - 600, NOW
        )
    )
    assert (d.branch, d.target_replicas) == (branch, target)


def test_a_formula_without_a_finite_value_holds_like_a_failing_trigger() -> None:
    s = parse_scaled_object(
        {
            "metadata": {
                "name": "jobs",
                "namespace": "ns",
                "creationTimestamp": "2023-01-01T00:00:00Z",
            },
            "spec": {
                "scaleTargetRef": {"name": "worker"},
                "minReplicaCount": 0,
                "cooldownPeriod": 0,
                "triggers": [
                    {"type": "redis", "name": "queue_a", "metadata": {"listName": "a"}},
                    {"type": "redis", "name": "queue_b", "metadata": {"listName": "b"}},
                ],
                "advanced": {"scalingModifiers": {"formula": "queue_a / queue_b", "target": "5"}},
            },
        }
    )
    d = decide(DecisionInput(s, 1, (view(A, 0), view(B, 0)), NOW - 600, NOW))
    assert d.branch == "hold-error"  # 0 / 0: never a scale to zero on it
    assert d.target_replicas is None


def test_a_failing_trigger_holds_and_the_composite_is_unavailable() -> None:
    d = decide(DecisionInput(so(), 1, (view(A, 0), view(B, None, error="refused")), NOW - 600, NOW))
    assert (d.branch, d.target_replicas) == ("hold-error", None)
    store = _store()
    store.record_sample("ns", "jobs", A, Sample(1, True, NOW))
    store.record_error("ns", "jobs", B, "refused", NOW)
    with pytest.raises(MetricUnavailableError, match="s1-redis-b encountered error"):
        store.metric_value_for_hpa("ns", COMPOSITE_METRIC, "jobs", NOW)


def _store(**modifiers: str) -> MetricStore:
    s = so(**modifiers)
    store = MetricStore()
    specs = [MetricSpec(A, 10, "AverageValue"), MetricSpec(B, 10, "AverageValue")]
    store.register("ns", "jobs", specs, composite=composite_for(s, [A, B]))
    return store


def test_the_store_serves_the_formula_over_the_latest_values() -> None:
    store = _store()
    store.record_sample("ns", "jobs", A, Sample(2, True, NOW - 3))
    store.record_sample("ns", "jobs", B, Sample(5, True, NOW - 1))
    reading = store.metric_value_for_hpa("ns", "Composite-Metric", "jobs", NOW)
    assert (reading.value, reading.observed_at) == (7, NOW - 3)  # stamped with the oldest input


def test_no_composite_before_every_input_has_a_value() -> None:
    store = _store()
    store.record_sample("ns", "jobs", A, Sample(2, True, NOW))
    with pytest.raises(MetricUnavailableError, match="s1-redis-b has no value yet"):
        store.metric_value_for_hpa("ns", COMPOSITE_METRIC, "jobs", NOW)


def test_a_trigger_the_formula_does_not_read_cannot_make_the_composite_unavailable() -> None:
    s = parse_scaled_object(
        {
            "metadata": {"name": "jobs", "namespace": "ns"},
            "spec": {
                "scaleTargetRef": {"name": "worker"},
                "triggers": [
                    {"type": "redis", "name": "queue_a", "metadata": {"listName": "a"}},
                    {"type": "redis", "name": "queue_b", "metadata": {"listName": "b"}},
                ],
                "advanced": {"scalingModifiers": {"formula": "queue_a * 2", "target": "5"}},
            },
        }
    )
    store = MetricStore()
    specs = [MetricSpec(A, 10, "AverageValue"), MetricSpec(B, 10, "AverageValue")]
    store.register("ns", "jobs", specs, composite=composite_for(s, [A, B]))
    store.record_sample("ns", "jobs", A, Sample(3, True, NOW))
    store.record_error("ns", "jobs", B, "refused", NOW)
    assert store.metric_value_for_hpa("ns", COMPOSITE_METRIC, "jobs", NOW).value == 6
