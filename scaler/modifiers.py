"""`advanced.scalingModifiers`: the composite metric, as KEDA serves it (PURE).

With scalingModifiers the HPA gets one External metric, `composite-metric` (plus any cpu/memory
Resource metric), whose value is the formula over the triggers' latest values, by trigger
name, and whose target is `scalingModifiers.target` of `metricType`. The object is active when
that value exceeds `activationTarget`. The triggers are still polled and reported one by one
(status health, telemetry); only the HPA's view and the activity are the composite's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scaler.contract import MetricSpec
from scaler.formula import FormulaError
from scaler.objects import ScaledObject, ScalingModifiers

COMPOSITE_METRIC = "composite-metric"


def hpa_metric_specs(so: ScaledObject, specs: Sequence[MetricSpec]) -> list[MetricSpec]:
    """The metrics of the object's HPA: the triggers' own, or the composite one in place of
    every External metric."""
    m = so.advanced.scaling_modifiers
    if m is None:
        return list(specs)
    composite = MetricSpec(COMPOSITE_METRIC, m.target, m.metric_type)
    return [composite, *(s for s in specs if s.kind != "External")]


@dataclass(frozen=True, slots=True)
class Composite:
    """The formula with the map from each External metric's name to its trigger's name."""

    modifiers: ScalingModifiers
    names: Mapping[str, str]  # metric name -> trigger name (the formula's variable)

    def evaluate(self, values: Mapping[str, float]) -> float:
        """The composite value from the values by metric name; FormulaError when a variable
        has no value or the result is not a finite number."""
        env = {self.names[metric]: v for metric, v in values.items() if metric in self.names}
        return self.modifiers.formula.evaluate(env)


def composite_for(so: ScaledObject, metric_names: Sequence[str]) -> Composite | None:
    """The composite of an object whose built triggers have these metric names, in trigger
    order (None without scalingModifiers)."""
    m = so.advanced.scaling_modifiers
    if m is None:
        return None
    names = {
        metric: t.name
        for t, metric in zip(so.triggers, metric_names, strict=False)
        if t.name and not t.is_resource
    }
    return Composite(m, names)


def composite_value(
    composite: Composite, values: Mapping[str, float | None]
) -> tuple[float | None, str | None]:
    """(value, None), or (None, why) when a trigger the formula reads has no value or the
    formula gives no finite number."""
    missing = [
        name
        for metric, name in composite.names.items()
        if name in composite.modifiers.formula.variables and values.get(metric) is None
    ]
    if missing:
        return None, f"no value for trigger(s) {', '.join(sorted(missing))}"
    try:
        present = {k: v for k, v in values.items() if v is not None}
        return composite.evaluate(present), None
    except FormulaError as exc:
        return None, f"scalingModifiers formula: {exc}"
