"""A model of the HorizontalPodAutoscaler controller for External metrics, on a simulated clock.

Written from kubernetes pkg/controller/podautoscaler (``horizontal.go``: reconcileAutoscaler,
the legacy ``normalizeDesiredReplicas`` and ``normalizeDesiredReplicasWithBehaviors``;
``replica_calculator.go``: ``GetExternalPerPodMetricReplicas`` and ``GetExternalMetricReplicas``)
and the API defaults of autoscaling/v2 (``pkg/apis/autoscaling/v2/defaults.go``):

* one `sync` per sync period; ``spec.replicas == 0`` with ``minReplicas > 0`` is "scaling
  disabled" (nothing happens, nothing is recorded but the first recommendation);
* current above ``maxReplicas`` / below ``minReplicas`` → straight to the bound;
* per metric, in milli-units like ``Quantity.MilliValue()``: AverageValue →
  ``ceil(usage / target)`` unless ``|1 - usage / (target x statusReplicas)| ≤ tolerance``;
  Value → ``ceil(usage / target x readyPods)`` unless ``|1 - usage / target| ≤ tolerance``;
  the desired count is the highest proposal; a metric the HPA cannot read makes the sync fail
  when every metric failed, or when some did and the rest would scale in;
* without ``behavior``: the highest recommendation of the last
  ``--horizontal-pod-autoscaler-downscale-stabilization`` (5 min), then at most
  ``max(2 x current, 4)``;
* with ``behavior``: recommendations within ``scaleUp`` / ``scaleDown`` stabilization windows
  bound the count from below / above, then the policies bound the change over each policy's
  period (``selectPolicy`` Max, Min or Disabled); an unset ``scaleDown`` window is the
  controller's flag (the API defaults it to nothing), an unset ``scaleUp`` one is 0.

Time is the caller's ``now`` (seconds); nothing here reads a clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, Literal

TargetType = Literal["AverageValue", "Value"]
PolicyType = Literal["Pods", "Percent"]
SelectPolicy = Literal["Max", "Min", "Disabled"]

DEFAULT_TOLERANCE: Final = 0.1
DEFAULT_DOWNSCALE_STABILIZATION: Final = 300.0
DEFAULT_SYNC_PERIOD: Final = 15.0


class BehaviorError(ValueError):
    """A ``behavior`` the API server would refuse (or that this model cannot read)."""


@dataclass(frozen=True, slots=True)
class MetricTarget:
    name: str
    target: float
    target_type: TargetType = "AverageValue"


@dataclass(frozen=True, slots=True)
class ScalingPolicy:
    type: PolicyType
    value: int
    period_seconds: int

    def describe(self) -> str:
        unit = "%" if self.type == "Percent" else " pods"
        return f"{self.value}{unit} per {self.period_seconds}s"


@dataclass(frozen=True, slots=True)
class ScalingRules:
    stabilization_window: float | None  # None: the controller's downscale flag (scaleDown only)
    select_policy: SelectPolicy
    policies: tuple[ScalingPolicy, ...]


DEFAULT_SCALE_UP: Final = ScalingRules(
    0.0, "Max", (ScalingPolicy("Pods", 4, 15), ScalingPolicy("Percent", 100, 15))
)
DEFAULT_SCALE_DOWN: Final = ScalingRules(None, "Max", (ScalingPolicy("Percent", 100, 15),))


@dataclass(frozen=True, slots=True)
class Behavior:
    scale_up: ScalingRules = DEFAULT_SCALE_UP
    scale_down: ScalingRules = DEFAULT_SCALE_DOWN


@dataclass(frozen=True, slots=True)
class HpaConfig:
    """The HPA Tidal creates, plus the controller's flags and what the cluster offers."""

    min_replicas: int
    max_replicas: int
    metrics: tuple[MetricTarget, ...]
    behavior: Behavior | None = None
    tolerance: float = DEFAULT_TOLERANCE
    downscale_stabilization: float = DEFAULT_DOWNSCALE_STABILIZATION
    ready_pods: bool = True  # False: no kubelet, no Ready pod (Value targets then see 0 pods)


@dataclass(frozen=True, slots=True)
class Proposal:
    metric: MetricTarget
    usage: float | None  # None: the metric could not be read
    replicas: int | None

    def describe(self) -> str:
        m = self.metric
        if self.usage is None:
            return f"{m.name} unreadable"
        per = " per pod" if m.target_type == "AverageValue" else " (Value)"
        return f"{m.name}={self.usage:g} / {m.target:g}{per} -> {self.replicas}"


@dataclass(frozen=True, slots=True)
class SyncResult:
    """One sync: the count to write (None: none), the rule that decided, the metric proposals."""

    replicas: int | None
    rule: str
    proposals: tuple[Proposal, ...] = ()


# --------------------------------------------------------------------------- behavior parsing


def _rules(raw: Any, default: ScalingRules, side: str) -> ScalingRules:
    if raw is None:
        return default
    if not isinstance(raw, Mapping):
        raise BehaviorError(f"behavior.{side} must be an object")
    window = raw.get("stabilizationWindowSeconds")
    if window is not None and (not isinstance(window, int) or not 0 <= window <= 3600):
        raise BehaviorError(f"behavior.{side}.stabilizationWindowSeconds must be 0..3600")
    select = raw.get("selectPolicy", default.select_policy)
    if select not in ("Max", "Min", "Disabled"):
        raise BehaviorError(f"behavior.{side}.selectPolicy must be Max, Min or Disabled")
    policies = default.policies
    if raw.get("policies") is not None:
        policies = tuple(
            _policy(p, f"behavior.{side}.policies[{i}]") for i, p in enumerate(raw["policies"])
        )
    return ScalingRules(
        default.stabilization_window if window is None else float(window), select, policies
    )


def _policy(raw: Any, where: str) -> ScalingPolicy:
    if not isinstance(raw, Mapping) or raw.get("type") not in ("Pods", "Percent"):
        raise BehaviorError(f"{where}.type must be Pods or Percent")
    value, period = raw.get("value"), raw.get("periodSeconds")
    if not isinstance(value, int) or value <= 0:
        raise BehaviorError(f"{where}.value must be a positive integer")
    if not isinstance(period, int) or not 0 < period <= 1800:
        raise BehaviorError(f"{where}.periodSeconds must be 1..1800")
    return ScalingPolicy(raw["type"], value, period)


def parse_behavior(raw: Mapping[str, Any] | None) -> Behavior | None:
    """``spec.behavior`` as the API server stores it (unset fields take the v2 defaults)."""
    if raw is None:
        return None
    return Behavior(
        _rules(raw.get("scaleUp"), DEFAULT_SCALE_UP, "scaleUp"),
        _rules(raw.get("scaleDown"), DEFAULT_SCALE_DOWN, "scaleDown"),
    )


# --------------------------------------------------------------------------- replica calculator


def milli(value: float) -> int:
    """``Quantity.MilliValue()`` of the quantity Tidal serves (rounded to milli, never < 0)."""
    if math.isnan(value) or math.isinf(value) or value <= 0:
        return 0
    return int(Decimal(f"{value:.3f}").scaleb(3))


def external_proposal(
    metric: MetricTarget, usage: float, status_replicas: int, ready_pods: int, tolerance: float
) -> int:
    """The replica count one External metric asks for (replica_calculator.go)."""
    used, target = milli(usage), milli(metric.target)
    if metric.target_type == "AverageValue":
        ratio = used / (target * status_replicas) if status_replicas else math.inf
        if status_replicas and used == 0:
            ratio = 0.0
        if status_replicas == 0 and used == 0:
            return status_replicas  # Go: 0/0 is NaN, never beyond the tolerance
        if abs(1.0 - ratio) > tolerance:
            return math.ceil(used / target)
        return status_replicas
    ratio = used / target
    if status_replicas == 0:
        return math.ceil(ratio)
    if abs(1.0 - ratio) <= tolerance:
        return status_replicas
    return math.ceil(ratio * ready_pods)


# --------------------------------------------------------------------------- the controller


@dataclass(slots=True)
class _Event:
    change: int
    at: float
    outdated: bool = False


@dataclass(slots=True)
class _State:
    recommendations: list[tuple[int, float]] = field(default_factory=list)
    ups: list[_Event] = field(default_factory=list)
    downs: list[_Event] = field(default_factory=list)


def _change_in_period(events: list[_Event], period: float, now: float) -> int:
    return sum(e.change for e in events if e.at > now - period)


def _policy_limit(
    current: int, state: _State, rules: ScalingRules, now: float, up: bool
) -> tuple[int, str]:
    """The furthest count the policies allow from the count at each period's start
    (calculateScaleUpLimitWithScalingRules / calculateScaleDownLimitWithBehaviors): Max picks
    the biggest change, Min the smallest."""
    biggest = (max if up else min) if rules.select_policy != "Min" else (min if up else max)
    best: tuple[int, str] | None = None
    for p in rules.policies:
        start = (
            current
            - _change_in_period(state.ups, p.period_seconds, now)
            + _change_in_period(state.downs, p.period_seconds, now)
        )
        if up:
            proposed = (
                start + p.value if p.type == "Pods" else math.ceil(start * (1 + p.value / 100))
            )
        else:
            proposed = start - p.value if p.type == "Pods" else int(start * (1 - p.value / 100))
        if best is None or biggest(best[0], proposed) != best[0]:
            best = (proposed, p.describe())
    assert best is not None
    return best


def _and(rule: str, limit: str) -> str:
    return f"{rule}; {limit}" if rule else limit


class HpaController:
    """The controller's memory for one HPA (recommendations, scale events) and its `sync`."""

    def __init__(self, config: HpaConfig) -> None:
        if not config.metrics:
            raise ValueError("an HPA needs at least one metric")
        self.config = config
        self._state = _State()

    def sync(self, now: float, current: int, usages: Mapping[str, float | None]) -> SyncResult:
        """One reconcile: `current` is the workload's spec.replicas (pods are created at once, so
        status.replicas is the same); `usages` the value served per metric (None: an error)."""
        cfg = self.config
        state = self._state
        if not state.recommendations:
            # recordInitialRecommendation: read from the clock just before the stabilization
            # reads it again, so a window of 0 s already leaves it out.
            state.recommendations.append((current, now - 1e-6))
        if current == 0 and cfg.min_replicas != 0:
            return SyncResult(None, "ScalingDisabled: the target is at 0 replicas")
        if current > cfg.max_replicas:
            return self._write(now, current, cfg.max_replicas, "above maxReplicas")
        if current < cfg.min_replicas:
            return self._write(now, current, cfg.min_replicas, "below minReplicas")
        ready = current if cfg.ready_pods else 0
        proposals = tuple(
            Proposal(
                m,
                usages.get(m.name),
                None
                if usages.get(m.name) is None
                else external_proposal(m, usages[m.name] or 0.0, current, ready, cfg.tolerance),
            )
            for m in cfg.metrics
        )
        valid = [p.replicas for p in proposals if p.replicas is not None]
        invalid = len(proposals) - len(valid)
        desired = max(valid, default=0)
        if invalid == len(proposals) or (invalid and desired < current):
            return SyncResult(None, "FailedGetExternalMetric: no scaling", proposals)
        if cfg.behavior is None:
            final, rule = self._legacy(now, current, desired)
        else:
            final, rule = self._with_behavior(now, current, desired, cfg.behavior)
        if final == current:
            return SyncResult(None, rule, proposals)
        result = self._write(now, current, final, rule)
        return SyncResult(result.replicas, result.rule, proposals)

    def _write(self, now: float, current: int, desired: int, rule: str) -> SyncResult:
        behavior = self.config.behavior
        if behavior is not None and desired != current:  # storeScaleEvent
            rules = behavior.scale_up if desired > current else behavior.scale_down
            events = self._state.ups if desired > current else self._state.downs
            longest = max((p.period_seconds for p in rules.policies), default=0)
            for e in events:  # markScaleEventsOutdated; the first outdated slot is reused
                e.outdated = e.outdated or e.at < now - longest
            slot = next((i for i, e in enumerate(events) if e.outdated), None)
            event = _Event(abs(desired - current), now)
            if slot is None:
                events.append(event)
            else:
                events[slot] = event
        return SyncResult(desired, rule)

    def _record(self, now: float, desired: int, keep_after: float) -> None:
        """Replace one recommendation older than every window, or append (like the controller)."""
        recs = self._state.recommendations
        old = [i for i, (_, at) in enumerate(recs) if at < keep_after]
        if old:
            recs[old[-1]] = (desired, now)
        else:
            recs.append((desired, now))

    def _legacy(self, now: float, current: int, desired: int) -> tuple[int, str]:
        cfg = self.config
        window = cfg.downscale_stabilization
        cutoff = now - window
        recent = [r for r, at in self._state.recommendations if not at < cutoff]
        stabilized = max([desired, *recent])
        self._record(now, desired, cutoff)
        rule = ""
        if stabilized != desired:
            rule = f"held at {stabilized}: highest of the last {window:g}s"
        limit = max(2 * current, 4)
        if stabilized < cfg.min_replicas:
            return cfg.min_replicas, _and(rule, f"TooFewReplicas: minReplicas {cfg.min_replicas}")
        if cfg.max_replicas > limit and stabilized > limit:
            return limit, _and(rule, f"ScaleUpLimit: max(2 x {current}, 4) = {limit}")
        if stabilized > cfg.max_replicas:
            return cfg.max_replicas, _and(rule, f"TooManyReplicas: maxReplicas {cfg.max_replicas}")
        return stabilized, rule

    def _with_behavior(
        self, now: float, current: int, desired: int, behavior: Behavior
    ) -> tuple[int, str]:
        cfg = self.config
        up_window = behavior.scale_up.stabilization_window or 0.0
        down_window = behavior.scale_down.stabilization_window
        if down_window is None:
            down_window = cfg.downscale_stabilization
        up_cut, down_cut = now - up_window, now - down_window
        up_rec = min([desired, *(r for r, at in self._state.recommendations if at > up_cut)])
        down_rec = max([desired, *(r for r, at in self._state.recommendations if at > down_cut)])
        stabilized = min(max(current, up_rec), down_rec)
        self._record(now, desired, min(up_cut, down_cut))
        rule = ""
        if stabilized != desired:
            if desired >= current:
                rule = f"held at {stabilized}: lowest of the last {up_window:g}s (scaleUp)"
            else:
                rule = f"held at {stabilized}: highest of the last {down_window:g}s (scaleDown)"
        if stabilized > current:
            rules = behavior.scale_up
            if rules.select_policy == "Disabled":
                limit, why = current, "scaleUp selectPolicy Disabled"
            else:
                limit, why = _policy_limit(current, self._state, rules, now, up=True)
                limit = max(limit, current)
                why = f"ScaleUpLimit: {why}"
            if cfg.max_replicas > limit:
                if stabilized > limit:
                    return limit, _and(rule, why)
            elif stabilized > cfg.max_replicas:
                return cfg.max_replicas, _and(
                    rule, f"TooManyReplicas: maxReplicas {cfg.max_replicas}"
                )
        elif stabilized < current:
            rules = behavior.scale_down
            if rules.select_policy == "Disabled":
                limit, why = current, "scaleDown selectPolicy Disabled"
            else:
                limit, why = _policy_limit(current, self._state, rules, now, up=False)
                limit = min(limit, current)
                why = f"ScaleDownLimit: {why}"
            if cfg.min_replicas < limit:
                if stabilized < limit:
                    return limit, _and(rule, why)
            elif stabilized < cfg.min_replicas:
                return cfg.min_replicas, _and(
                    rule, f"TooFewReplicas: minReplicas {cfg.min_replicas}"
                )
        return stabilized, rule
