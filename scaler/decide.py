"""decide(): what one ScaledObject's replicas and status should be, now. PURE.

Everything comes in through `DecisionInput` (the object, the current replicas, a view of each
trigger's latest poll, the stored lastActiveTime, and `now` in wall-clock epoch seconds); the
result is a `Decision` the actuator applies. No clock, no I/O, no logging.

It follows KEDA's ``RequestScale`` (kedacore/keda pkg/scaling/executor/scale_scaledobjects.go)
with Tidal's safety rules on top (docs/design.md), which win where they disagree:

1. An error is never a zero. A trigger whose latest poll failed (or that never produced a sample)
   is *unknown*: neither active nor inactive. While any trigger is unknown the object is never
   scaled down, unless fallback is active and resolves to 0 replicas.
2. Scale to zero (or idle) only after ``cooldownPeriod`` since the last active observation, with
   every trigger healthy, inactive and sampled this round; `scale_to_zero` tells the actuator to
   re-sample and re-decide just before writing.
3. Don't fight the HPA: from ≥1 replica the only writes are ``hpa_min → 0/idle`` (never N→0),
   pause handling and the paused-replicas count; ``0/idle → max(1, min)`` upwards.

Table (not paused; ``min``/``idle`` from the spec; ``hpa_min = max(1, min)``):

=========================================  ===================================================
active (trigger OR force OR fallback>0)
  current == 0, or idle set and cur < min  paused-scale-out: no write; else → hpa_min, event
                                           KEDAScaleTargetActivated, lastActiveTime = now
  any trigger failing                      Ready Unknown PartialTriggerError, no write
  otherwise                                lastActiveTime = now, no write
inactive
  any trigger failing (not fallback→0)     no write; Ready False TriggerError without fallback
  any trigger never sampled / no triggers  no write; Active Unknown TriggersNotSampled
  idle < cur ≤ hpa_min (idle set) or
  cur == 1 (min 0, no idle)                paused-scale-in: no write; a trigger not sampled
                                           this round: no write; cooldown elapsed: → idle/0,
                                           event KEDAScaleTargetDeactivated; else Active False
                                           ScalerCooldown
  cur above that (the HPA's range)         no write (the HPA scales in first)
  idle unset and cur < min                 paused-scale-out: no write; else → min
=========================================  ===================================================

Paused (``paused`` / ``paused-replicas``): Paused True; only write is to the paused-replicas
count when it differs from the current count.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal

from scaler.contract import Sample
from scaler.modifiers import COMPOSITE_METRIC, composite_for, composite_value
from scaler.objects import Fallback, ScaledObject, hpa_min_replicas
from scaler.resource_trigger import is_resource_trigger

ConditionType = Literal["Ready", "Active", "Fallback", "Paused"]
ConditionStatus = Literal["True", "False", "Unknown"]
HealthState = Literal["Happy", "Failing"]

READY_MESSAGE: Final = "ScaledObject is defined correctly and is ready for scaling"
PARTIAL_ERROR_MESSAGE: Final = "Some triggers defined in ScaledObject are not working correctly"
TRIGGER_ERROR_MESSAGE: Final = "Triggers defined in ScaledObject are not working correctly"
ACTIVE_MESSAGE: Final = "Scaling is performed because triggers are active"
FORCED_MESSAGE: Final = "Scaling is performed because activation is being forced by annotation"
FALLBACK_ACTIVE_MESSAGE: Final = "Scaling is performed because fallback is active"
NOT_ACTIVE_MESSAGE: Final = "Scaling is not performed because triggers are not active"
COOLDOWN_MESSAGE: Final = "Scaler cooling down because triggers are not active"
NOT_SAMPLED_MESSAGE: Final = "Some triggers have not produced a value yet"
FALLBACK_MESSAGE: Final = "At least one trigger is falling back on this scaled object"
NO_FALLBACK_MESSAGE: Final = "No fallbacks are active on this scaled object"
PAUSED_MESSAGE: Final = "ScaledObject is paused"
UNPAUSED_MESSAGE: Final = "ScaledObject is unpaused"


@dataclass(frozen=True, slots=True)
class Condition:
    type: ConditionType
    status: ConditionStatus
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class EventSpec:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class HealthStatus:
    """One entry of ``status.health`` (kept only when a fallback is configured)."""

    number_of_failures: int
    status: HealthState


@dataclass(frozen=True, slots=True)
class TriggerView:
    """What the store knows about one trigger's metric after the latest poll."""

    metric_name: str
    trigger_type: str
    sample: Sample | None = None  # the last GOOD sample (held across errors)
    error: str | None = None  # error of the LATEST poll; None when it succeeded
    consecutive_failures: int = 0
    fresh: bool = True  # sampled in this round

    @property
    def is_resource(self) -> bool:
        return is_resource_trigger(self.trigger_type)

    @property
    def failing(self) -> bool:
        return not self.is_resource and self.error is not None

    @property
    def never_sampled(self) -> bool:
        return not self.is_resource and self.error is None and self.sample is None

    @property
    def active(self) -> bool:
        """Known active: cpu/memory always (KEDA); a sampled trigger when its latest poll
        succeeded and said so. A failing trigger is unknown, never active nor inactive."""
        if self.is_resource:
            return True
        return self.error is None and self.sample is not None and self.sample.active


@dataclass(frozen=True, slots=True)
class DecisionInput:
    so: ScaledObject
    current_replicas: int
    triggers: tuple[TriggerView, ...]
    last_active_time: float | None  # epoch seconds (status.lastActiveTime)
    now: float  # wall-clock epoch seconds


_EMPTY_HEALTH: Mapping[str, HealthStatus] = MappingProxyType({})
_EMPTY_ACTIVITY: Mapping[str, bool] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Decision:
    target_replicas: int | None  # None: do not write /scale
    active: bool
    conditions: frozenset[Condition]
    last_active_time: float | None  # the value to store (unchanged when not refreshed)
    fallback_active: bool = False
    fallback_replicas: int | None = None
    event: EventSpec | None = None
    scale_to_zero: bool = False  # lowers to 0/idle: re-sample and re-decide before the write
    health: Mapping[str, HealthStatus] = field(default_factory=lambda: _EMPTY_HEALTH)
    triggers_activity: Mapping[str, bool] = field(default_factory=lambda: _EMPTY_ACTIVITY)
    branch: str = ""  # which row of the table decided (for logs and tests)

    def condition(self, type_: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


# --------------------------------------------------------------------------- helpers


def fallback_replicas(fallback: Fallback, current_replicas: int) -> int:
    """KEDA's fallback replica count by behavior."""
    if fallback.behavior == "currentReplicas":
        return current_replicas
    if fallback.behavior == "currentReplicasIfHigher":
        return max(current_replicas, fallback.replicas)
    if fallback.behavior == "currentReplicasIfLower":
        return min(current_replicas, fallback.replicas)
    return fallback.replicas


def cooldown_elapsed(so: ScaledObject, last_active_time: float | None, now: float) -> bool:
    """KEDA: lastActiveTime + cooldownPeriod < now; without lastActiveTime,
    creationTimestamp + initialCooldownPeriod < now (strictly: exactly at the boundary waits)."""
    if last_active_time is not None:
        return last_active_time + so.cooldown_period < now
    if so.creation_timestamp is None:
        return so.initial_cooldown_period == 0
    return so.creation_timestamp + so.initial_cooldown_period < now


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _ready(status: ConditionStatus, reason: str, message: str) -> Condition:
    return Condition("Ready", status, reason, message)


_READY_OK: Final = _ready("True", "ScaledObjectReady", READY_MESSAGE)
_READY_PARTIAL: Final = _ready("Unknown", "PartialTriggerError", PARTIAL_ERROR_MESSAGE)
_READY_ERROR: Final = _ready("False", "TriggerError", TRIGGER_ERROR_MESSAGE)


@dataclass(frozen=True, slots=True)
class _Facts:
    """What the trigger views add up to (computed once per decision)."""

    failing: tuple[TriggerView, ...]
    falling_back: tuple[TriggerView, ...]  # failing more than fallback.failureThreshold
    blocking: tuple[TriggerView, ...]  # failing and not resolved by a fallback to 0
    never_sampled: bool
    stale: bool  # a healthy trigger was not sampled this round
    sampled_active: tuple[TriggerView, ...]
    resource_active: bool
    fallback_active: bool
    fallback_replicas: int | None


def _facts(inp: DecisionInput) -> _Facts:
    fb = inp.so.fallback
    views = inp.triggers
    failing = tuple(v for v in views if v.failing)
    falling_back = tuple(
        v for v in failing if fb is not None and v.consecutive_failures > fb.failure_threshold
    )
    replicas = (
        fallback_replicas(fb, inp.current_replicas) if fb is not None and falling_back else None
    )
    resolved_to_zero = replicas == 0
    blocking = tuple(v for v in failing if not (resolved_to_zero and v in falling_back))
    return _Facts(
        failing=failing,
        falling_back=falling_back,
        blocking=blocking,
        never_sampled=not views or any(v.never_sampled for v in views),
        stale=any(not v.is_resource and not v.failing and not v.fresh for v in views),
        sampled_active=tuple(v for v in views if v.active and not v.is_resource),
        resource_active=any(v.is_resource for v in views),
        fallback_active=replicas is not None,
        fallback_replicas=replicas,
    )


def _health(inp: DecisionInput) -> Mapping[str, HealthStatus]:
    if inp.so.fallback is None:
        return _EMPTY_HEALTH
    return MappingProxyType(
        {
            v.metric_name: HealthStatus(
                v.consecutive_failures if v.failing else 0, "Failing" if v.failing else "Happy"
            )
            for v in inp.triggers
            if not v.is_resource and (v.sample is not None or v.error is not None)
        }
    )


def _activation_event(inp: DecisionInput, facts: _Facts, target: int) -> EventSpec:
    so = inp.so
    head = (
        f"Scaled {so.scale_target_ref.gvk_string} {so.namespace}/{so.scale_target_ref.name} "
        f"from {inp.current_replicas} to {target}"
    )
    if so.flags.force_activation:
        return EventSpec(
            "Normal", "KEDAScaleTargetActivated", f"{head}, caused by forced activation annotation"
        )
    causes = [f"{v.metric_name}={_fmt(v.sample.value)}" for v in facts.sampled_active if v.sample]
    causes += [v.metric_name for v in inp.triggers if v.is_resource]
    if facts.fallback_active:
        causes += [
            f"fallback for {v.metric_name} ({v.consecutive_failures} failures)"
            for v in facts.falling_back
        ]
    return EventSpec(
        "Normal", "KEDAScaleTargetActivated", f"{head}, triggered by " + ";".join(causes)
    )


def _deactivation_event(inp: DecisionInput, target: int) -> EventSpec:
    so = inp.so
    return EventSpec(
        "Normal",
        "KEDAScaleTargetDeactivated",
        f"Deactivated {so.scale_target_ref.gvk_string} {so.namespace}/"
        f"{so.scale_target_ref.name} from {inp.current_replicas} to {target}",
    )


# --------------------------------------------------------------------------- decide


def decide(inp: DecisionInput) -> Decision:
    so = inp.so
    flags = so.flags
    current = inp.current_replicas
    min_ = so.min_replica_count
    idle = so.idle_replica_count
    facts = _facts(inp)
    triggers_active = bool(facts.sampled_active) or facts.resource_active
    modifiers = so.advanced.scaling_modifiers
    if modifiers is not None:  # the composite's activity replaces the triggers' (KEDA)
        composite = composite_for(so, [v.metric_name for v in inp.triggers])
        assert composite is not None
        value, why = composite_value(
            composite,
            {
                v.metric_name: None if v.failing or v.sample is None else v.sample.value
                for v in inp.triggers
                if not v.is_resource
            },
        )
        triggers_active = (value is not None and value > modifiers.activation_target) or (
            facts.resource_active
        )
        if why is not None and not facts.failing and not facts.never_sampled:
            # Every trigger has a value and the formula still gives none: unknown, like a
            # failing trigger (never scaled down on it).
            broken = TriggerView(COMPOSITE_METRIC, "composite", error=why)
            facts = dataclasses.replace(
                facts, failing=(*facts.failing, broken), blocking=(*facts.blocking, broken)
            )
    fallback_up = facts.fallback_active and (facts.fallback_replicas or 0) > 0
    active = triggers_active or flags.force_activation or fallback_up

    fallback_cond = (
        Condition("Fallback", "True", "FallbackExists", FALLBACK_MESSAGE)
        if facts.fallback_active
        else Condition("Fallback", "False", "NoFallbackFound", NO_FALLBACK_MESSAGE)
    )
    health = _health(inp)
    activity: Mapping[str, bool] = MappingProxyType({v.metric_name: v.active for v in inp.triggers})

    def ready() -> Condition:
        if not facts.failing:
            return _READY_OK
        if active:
            return _READY_PARTIAL
        return _READY_OK if so.fallback is not None else _READY_ERROR

    # ---- paused / paused-replicas: no scaling except to the paused count
    if flags.paused:
        want = flags.paused_replicas
        target = want if want is not None and want != current else None
        return Decision(
            target_replicas=target,
            active=active,
            conditions=frozenset(
                {
                    ready(),
                    # Tidal keeps sampling a paused object: Active says what it sees, so the
                    # condition is never dropped from status while paused.
                    Condition("Active", "True", "ScalerActive", ACTIVE_MESSAGE)
                    if active
                    else Condition("Active", "False", "ScalerNotActive", NOT_ACTIVE_MESSAGE),
                    fallback_cond,
                    Condition("Paused", "True", "ScaledObjectPaused", PAUSED_MESSAGE),
                }
            ),
            last_active_time=inp.last_active_time,
            fallback_active=facts.fallback_active,
            fallback_replicas=facts.fallback_replicas,
            health=health,
            triggers_activity=activity,
            branch="paused-replicas" if target is not None else "paused",
        )

    if flags.pause_scale_in or flags.pause_scale_out:
        which = " and ".join(
            w
            for w, on in (("scale-in", flags.pause_scale_in), ("scale-out", flags.pause_scale_out))
            if on
        )
        paused_cond = Condition(
            "Paused", "True", "ScaledObjectPaused", f"{PAUSED_MESSAGE} for {which}"
        )
    else:
        paused_cond = Condition("Paused", "False", "ScaledObjectUnpaused", UNPAUSED_MESSAGE)

    def result(
        branch: str,
        active_cond: Condition,
        target: int | None = None,
        last_active: float | None = inp.last_active_time,
        event: EventSpec | None = None,
        scale_to_zero: bool = False,
    ) -> Decision:
        return Decision(
            target_replicas=target,
            active=active,
            conditions=frozenset({ready(), active_cond, fallback_cond, paused_cond}),
            last_active_time=last_active,
            event=event,
            scale_to_zero=scale_to_zero,
            fallback_active=facts.fallback_active,
            fallback_replicas=facts.fallback_replicas,
            health=health,
            triggers_activity=activity,
            branch=branch,
        )

    hpa_min = hpa_min_replicas(so)

    # ---- active: 0/idle → hpa_min; otherwise the HPA owns the count
    if active:
        if flags.force_activation:
            message = FORCED_MESSAGE
        elif triggers_active:
            message = ACTIVE_MESSAGE
        else:
            message = FALLBACK_ACTIVE_MESSAGE
        active_cond = Condition("Active", "True", "ScalerActive", message)
        if current == 0 or (idle is not None and current < min_):
            if flags.pause_scale_out:
                return result("scale-out-paused", active_cond)
            return result(
                "activate",
                active_cond,
                target=hpa_min,
                last_active=inp.now,
                event=_activation_event(inp, facts, hpa_min),
            )
        if facts.failing:
            return result("active-partial-error", active_cond)
        return result("active", active_cond, last_active=inp.now)

    # ---- inactive
    not_active = Condition("Active", "False", "ScalerNotActive", NOT_ACTIVE_MESSAGE)
    if facts.blocking:
        return result("hold-error", not_active)
    if facts.never_sampled:
        return result(
            "hold-unknown",
            Condition("Active", "Unknown", "TriggersNotSampled", NOT_SAMPLED_MESSAGE),
        )
    floor = idle if idle is not None else min_
    if (idle is not None and current > idle) or (current > 0 and min_ == 0):
        if current > hpa_min:
            return result("hpa-owns", not_active)
        if flags.pause_scale_in:
            return result("scale-in-paused", not_active)
        if facts.stale:
            return result("hold-stale", not_active)
        if cooldown_elapsed(so, inp.last_active_time, inp.now):
            return result(
                "deactivate",
                not_active,
                target=floor,
                event=_deactivation_event(inp, floor),
                scale_to_zero=True,
            )
        return result("cooldown", Condition("Active", "False", "ScalerCooldown", COOLDOWN_MESSAGE))
    if idle is None and current < min_:
        if flags.pause_scale_out:
            return result("scale-out-paused", not_active)
        return result("to-min", not_active, target=min_)
    return result("inactive", not_active)
