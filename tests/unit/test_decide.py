"""decide(): KEDA's RequestScale table plus Tidal's safety rules, one row per branch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaler.contract import Sample
from scaler.decide import (
    Decision,
    DecisionInput,
    HealthStatus,
    TriggerView,
    cooldown_elapsed,
    decide,
    fallback_replicas,
)
from scaler.object_parser import parse_scaled_object
from scaler.objects import Fallback, ScaledObject

NOW = 1_700_000_000.0
CREATED = NOW - 10_000.0
LONG_AGO = NOW - 5_000.0  # older than any cooldown used here
CREATED_TS = "2023-11-14T19:26:40Z"  # == CREATED


def so_with(annotations: dict[str, str] | None = None, **spec: Any) -> ScaledObject:
    body: dict[str, Any] = {
        "scaleTargetRef": {"name": "worker"},
        "triggers": [{"type": "redis", "metadata": {"listName": "jobs"}}],
    }
    body.update(spec)
    return parse_scaled_object(
        {
            "metadata": {
                "name": "jobs",
                "namespace": "ns",
                "creationTimestamp": CREATED_TS,
                "annotations": annotations or {},
            },
            "spec": body,
        }
    )


def ok(value: float, *, metric: str = "s0-redis-jobs", fresh: bool = True) -> TriggerView:
    return TriggerView(metric, "redis", Sample(value, value > 0, NOW - 1), None, 0, fresh)


def err(
    failures: int = 1, *, metric: str = "s0-redis-jobs", last: float | None = None
) -> TriggerView:
    sample = None if last is None else Sample(last, last > 0, NOW - 100)
    return TriggerView(metric, "redis", sample, "connection refused", failures, True)


def never(metric: str = "s0-redis-jobs") -> TriggerView:
    return TriggerView(metric, "redis", None, None, 0, True)


def cpu() -> TriggerView:
    return TriggerView("cpu", "cpu")


CPU_ONLY = [{"type": "cpu", "metadata": {"value": "60"}}]

Cond = tuple[str, str, str]


@dataclass(frozen=True)
class Case:
    so: ScaledObject
    current: int
    triggers: tuple[TriggerView, ...]
    target: int | None
    branch: str
    last_active: float | None = LONG_AGO
    conds: frozenset[Cond] = frozenset()
    new_last_active: Literal["now", "kept"] = "kept"
    event: str | None = None
    fallback: int | None = None
    scale_to_zero: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def case(
    id_: str,
    so: ScaledObject,
    current: int,
    triggers: tuple[TriggerView, ...] | TriggerView,
    target: int | None,
    branch: str,
    **kw: Any,
) -> Any:
    if isinstance(triggers, TriggerView):
        triggers = (triggers,)
    conds = kw.pop("conds", ())
    return pytest.param(
        Case(so, current, triggers, target, branch, conds=frozenset(conds), **kw), id=id_
    )


READY = ("Ready", "True", "ScaledObjectReady")
PARTIAL = ("Ready", "Unknown", "PartialTriggerError")
TRIGGER_ERROR = ("Ready", "False", "TriggerError")
ACTIVE = ("Active", "True", "ScalerActive")
NOT_ACTIVE = ("Active", "False", "ScalerNotActive")
COOLDOWN = ("Active", "False", "ScalerCooldown")
NOT_SAMPLED = ("Active", "Unknown", "TriggersNotSampled")
FALLBACK_ON = ("Fallback", "True", "FallbackExists")
FALLBACK_OFF = ("Fallback", "False", "NoFallbackFound")
PAUSED = ("Paused", "True", "ScaledObjectPaused")
UNPAUSED = ("Paused", "False", "ScaledObjectUnpaused")

ACTIVATED = "KEDAScaleTargetActivated"
DEACTIVATED = "KEDAScaleTargetDeactivated"

PAUSE = {"autoscaling.keda.sh/paused": "true"}
SCALE_IN = {"autoscaling.keda.sh/paused-scale-in": "true"}
SCALE_OUT = {"autoscaling.keda.sh/paused-scale-out": "true"}
FORCE = {"autoscaling.keda.sh/force-activation": "true"}


def paused_replicas(n: int) -> dict[str, str]:
    return {"autoscaling.keda.sh/paused-replicas": str(n)}


def fb(behavior: str = "static", replicas: int = 5, threshold: int = 3) -> ScaledObject:
    return so_with(
        fallback={"failureThreshold": threshold, "replicas": replicas, "behavior": behavior}
    )


TABLE = [
    # ---- activation (0 → hpa_min)
    case("activate-from-zero", so_with(), 0, ok(5), 1, "activate",
         conds={READY, ACTIVE, FALLBACK_OFF, UNPAUSED}, new_last_active="now", event=ACTIVATED),
    case("activate-to-min", so_with(minReplicaCount=3), 0, ok(5), 3, "activate",
         new_last_active="now", event=ACTIVATED),
    case("activate-from-idle", so_with(minReplicaCount=2, idleReplicaCount=0), 0, ok(5), 2,
         "activate", new_last_active="now", event=ACTIVATED),
    case("activate-from-nonzero-idle", so_with(minReplicaCount=3, idleReplicaCount=1), 1, ok(5),
         3, "activate", new_last_active="now", event=ACTIVATED),
    case("multiple-triggers-or", so_with(), 0,
         (ok(0), ok(7, metric="s1-kafka-orders")), 1, "activate", event=ACTIVATED,
         new_last_active="now", extra={"event_has": "triggered by s1-kafka-orders=7"}),
    case("stale-active-sample-still-activates", so_with(), 0, ok(5, fresh=False), 1,
         "activate", new_last_active="now", event=ACTIVATED),
    case("cpu-only-is-always-active", so_with(triggers=CPU_ONLY), 0, cpu(), 1, "activate",
         event=ACTIVATED, new_last_active="now", extra={"event_has": "triggered by cpu"}),
    # ---- active, ≥ 1 replica: the HPA owns the count
    case("active-refreshes-last-active", so_with(), 2, ok(5), None, "active",
         conds={READY, ACTIVE}, new_last_active="now"),
    case("active-below-min-left-to-hpa", so_with(minReplicaCount=3), 1, ok(5), None, "active",
         new_last_active="now"),
    case("cpu-active-at-min", so_with(minReplicaCount=1, triggers=CPU_ONLY), 1, cpu(), None,
         "active", new_last_active="now"),
    # ---- cooldown and scale to zero / idle
    case("cooldown-not-elapsed", so_with(), 1, ok(0), None, "cooldown",
         last_active=NOW - 100, conds={READY, COOLDOWN}),
    case("cooldown-exactly-at-boundary-waits", so_with(), 1, ok(0), None, "cooldown",
         last_active=NOW - 300),
    case("cooldown-just-after-scales-to-zero", so_with(), 1, ok(0), 0, "deactivate",
         last_active=NOW - 300.001, conds={READY, NOT_ACTIVE}, event=DEACTIVATED,
         scale_to_zero=True),
    case("custom-cooldown", so_with(cooldownPeriod=30), 1, ok(0), 0, "deactivate",
         last_active=NOW - 31, event=DEACTIVATED, scale_to_zero=True),
    case("initial-cooldown-waits", so_with(initialCooldownPeriod=20_000), 1, ok(0), None,
         "cooldown", last_active=None),
    case("initial-cooldown-elapsed", so_with(initialCooldownPeriod=9_999), 1, ok(0), 0,
         "deactivate", last_active=None, event=DEACTIVATED, scale_to_zero=True),
    case("initial-cooldown-exactly-at-boundary", so_with(initialCooldownPeriod=10_000), 1, ok(0),
         None, "cooldown", last_active=None),
    case("no-last-active-default-initial-cooldown", so_with(), 1, ok(0), 0, "deactivate",
         last_active=None, event=DEACTIVATED, scale_to_zero=True),
    case("idle-from-min", so_with(minReplicaCount=2, idleReplicaCount=0), 2, ok(0), 0,
         "deactivate", event=DEACTIVATED, scale_to_zero=True),
    case("nonzero-idle", so_with(minReplicaCount=3, idleReplicaCount=1), 3, ok(0), 1,
         "deactivate", event=DEACTIVATED, scale_to_zero=True),
    case("idle-cooldown", so_with(minReplicaCount=2, idleReplicaCount=0), 2, ok(0), None,
         "cooldown", last_active=NOW - 10),
    case("never-n-to-zero-hpa-scales-in-first", so_with(), 4, ok(0), None, "hpa-owns",
         conds={NOT_ACTIVE}),
    case("never-n-to-idle", so_with(minReplicaCount=2, idleReplicaCount=0), 5, ok(0), None,
         "hpa-owns"),
    case("stale-inactive-sample-holds", so_with(), 1, ok(0, fresh=False), None, "hold-stale"),
    # ---- minReplicaCount
    case("inactive-scales-up-to-min", so_with(minReplicaCount=2), 0, ok(0), 2, "to-min"),
    case("inactive-at-min-no-change", so_with(minReplicaCount=2), 2, ok(0), None, "inactive"),
    case("inactive-at-zero-no-change", so_with(), 0, ok(0), None, "inactive",
         conds={READY, NOT_ACTIVE}),
    case("idle-at-idle-no-change", so_with(minReplicaCount=2, idleReplicaCount=0), 0, ok(0),
         None, "inactive"),
    # ---- errors: never a zero
    case("error-during-cooldown-no-scale-down", so_with(), 1, err(), None, "hold-error",
         conds={TRIGGER_ERROR, NOT_ACTIVE}),
    case("error-after-cooldown-no-scale-down", so_with(), 1, err(last=0), None, "hold-error"),
    case("error-with-other-trigger-inactive", so_with(), 1,
         (ok(0), err(metric="s1-kafka-orders")), None, "hold-error", conds={TRIGGER_ERROR}),
    case("error-last-good-active-is-not-active", so_with(), 0, err(last=9), None, "hold-error"),
    case("error-at-idle-no-change", so_with(minReplicaCount=2, idleReplicaCount=0), 2, err(),
         None, "hold-error"),
    case("partial-error-while-active", so_with(), 2,
         (ok(5), err(metric="s1-kafka-orders")), None, "active-partial-error",
         conds={PARTIAL, ACTIVE}),
    case("partial-error-activates-from-zero", so_with(), 0,
         (ok(5), err(metric="s1-kafka-orders")), 1, "activate", conds={PARTIAL, ACTIVE},
         new_last_active="now", event=ACTIVATED),
    case("no-samples-yet-holds", so_with(), 1, never(), None, "hold-unknown",
         conds={READY, NOT_SAMPLED}),
    case("no-samples-yet-one-of-two", so_with(), 1, (ok(0), never("s1-kafka-orders")), None,
         "hold-unknown"),
    case("no-trigger-views-holds", so_with(), 1, (), None, "hold-unknown"),
    # ---- pause annotations
    case("paused-no-write", so_with(PAUSE), 0, ok(5), None, "paused",
         conds={PAUSED, READY, FALLBACK_OFF, ACTIVE}),
    case("paused-keeps-replicas-when-inactive", so_with(PAUSE), 3, ok(0), None, "paused",
         conds={PAUSED, NOT_ACTIVE}),
    case("paused-replicas-scales-to-count", so_with(paused_replicas(3)), 1, ok(0), 3,
         "paused-replicas", conds={PAUSED}),
    case("paused-replicas-already-there", so_with(paused_replicas(3)), 3, ok(5), None, "paused"),
    case("paused-replicas-zero", so_with(paused_replicas(0)), 4, err(), 0, "paused-replicas"),
    case("paused-scale-in-blocks-zero", so_with(SCALE_IN), 1, ok(0), None, "scale-in-paused",
         conds={PAUSED}),
    case("paused-scale-in-allows-activation", so_with(SCALE_IN), 0, ok(5), 1, "activate",
         new_last_active="now", event=ACTIVATED),
    case("paused-scale-out-blocks-activation", so_with(SCALE_OUT), 0, ok(5), None,
         "scale-out-paused", conds={PAUSED, ACTIVE}),
    case("paused-scale-out-blocks-to-min", so_with(SCALE_OUT, minReplicaCount=2), 0, ok(0),
         None, "scale-out-paused"),
    case("paused-scale-out-allows-deactivation", so_with(SCALE_OUT), 1, ok(0), 0, "deactivate",
         event=DEACTIVATED, scale_to_zero=True),
    case("force-activation-from-zero", so_with(FORCE), 0, ok(0), 1, "activate",
         new_last_active="now", event=ACTIVATED,
         extra={"event_has": "caused by forced activation annotation",
                "active_message": "activation is being forced by annotation"}),
    case("force-activation-keeps-from-zero", so_with(FORCE), 1, ok(0), None, "active",
         new_last_active="now", conds={ACTIVE}),
    case("force-activation-with-errors", so_with(FORCE), 0, err(), 1, "activate",
         new_last_active="now", conds={PARTIAL}, event=ACTIVATED),
    # ---- fallback: fires strictly above failureThreshold
    case("fallback-at-threshold-holds", fb(), 1, err(3), None, "hold-error",
         conds={READY, NOT_ACTIVE, FALLBACK_OFF}),
    case("fallback-static-from-zero", fb(), 0, err(4), 1, "activate", fallback=5,
         conds={FALLBACK_ON, ACTIVE, PARTIAL}, new_last_active="now", event=ACTIVATED,
         extra={"event_has": "fallback for s0-redis-jobs (4 failures)",
                "active_message": "fallback is active"}),
    case("fallback-static-running", fb(), 2, err(4), None, "active-partial-error", fallback=5,
         conds={FALLBACK_ON, ACTIVE}),
    case("fallback-current-replicas", fb("currentReplicas"), 4, err(4), None,
         "active-partial-error", fallback=4),
    case("fallback-current-replicas-at-zero", fb("currentReplicas"), 0, err(4), None,
         "inactive", fallback=0, conds={FALLBACK_ON, NOT_ACTIVE}),
    case("fallback-if-higher-keeps-more", fb("currentReplicasIfHigher"), 7, err(4), None,
         "active-partial-error", fallback=7),
    case("fallback-if-higher-raises", fb("currentReplicasIfHigher"), 2, err(4), None,
         "active-partial-error", fallback=5),
    case("fallback-if-higher-at-zero", fb("currentReplicasIfHigher"), 0, err(4), 1, "activate",
         fallback=5, new_last_active="now", event=ACTIVATED),
    case("fallback-if-lower-caps", fb("currentReplicasIfLower"), 7, err(4), None,
         "active-partial-error", fallback=5),
    case("fallback-if-lower-keeps-fewer", fb("currentReplicasIfLower"), 2, err(4), None,
         "active-partial-error", fallback=2),
    case("fallback-if-lower-at-zero", fb("currentReplicasIfLower"), 0, err(4), None, "inactive",
         fallback=0),
    case("fallback-to-zero-allows-scale-down", fb(replicas=0), 1, err(4), 0, "deactivate",
         fallback=0, event=DEACTIVATED, scale_to_zero=True, conds={FALLBACK_ON}),
    case("fallback-to-zero-respects-cooldown", fb(replicas=0), 1, err(4), None, "cooldown",
         last_active=NOW - 10, fallback=0),
    case("fallback-to-zero-other-trigger-below-threshold", fb(replicas=0), 1,
         (err(4), err(2, metric="s1-kafka-orders")), None, "hold-error", fallback=0),
    case("fallback-threshold-zero-first-failure", fb(threshold=0), 0, err(1), 1, "activate",
         fallback=5, new_last_active="now", event=ACTIVATED),
]  # fmt: skip


@pytest.mark.parametrize("c", TABLE)
def test_decision_table(c: Case) -> None:
    d = decide(DecisionInput(c.so, c.current, c.triggers, c.last_active, NOW))
    assert (d.target_replicas, d.branch) == (c.target, c.branch)
    got = {(x.type, x.status, x.reason) for x in d.conditions}
    assert c.conds <= got, got
    assert {x.type for x in d.conditions} >= {"Ready", "Fallback", "Paused"}
    assert d.last_active_time == (NOW if c.new_last_active == "now" else c.last_active)
    assert (d.event.reason if d.event else None) == c.event
    assert d.fallback_replicas == c.fallback
    assert d.fallback_active is (c.fallback is not None)
    assert d.scale_to_zero is c.scale_to_zero
    if "event_has" in c.extra:
        assert d.event is not None
        assert c.extra["event_has"] in d.event.message
    if "active_message" in c.extra:
        active = d.condition("Active")
        assert active is not None
        assert c.extra["active_message"] in active.message


def test_table_covers_every_branch() -> None:
    branches = {p.values[0].branch for p in TABLE}
    assert branches == {
        "activate", "active", "active-partial-error", "cooldown", "deactivate", "hpa-owns",
        "hold-stale", "to-min", "inactive", "hold-error", "hold-unknown", "paused",
        "paused-replicas", "scale-in-paused", "scale-out-paused",
    }  # fmt: skip


def test_activation_event_message_matches_keda() -> None:
    d = decide(DecisionInput(so_with(), 0, (ok(5),), None, NOW))
    assert d.event is not None
    assert d.event.type == "Normal"
    assert d.event.message == (
        "Scaled apps/v1.Deployment ns/worker from 0 to 1, triggered by s0-redis-jobs=5"
    )


def test_deactivation_event_message_matches_keda() -> None:
    d = decide(DecisionInput(so_with(), 1, (ok(0),), LONG_AGO, NOW))
    assert d.event is not None
    assert d.event.message == "Deactivated apps/v1.Deployment ns/worker from 1 to 0"


def test_condition_messages_are_kedas() -> None:
    d = decide(DecisionInput(so_with(), 1, (ok(0),), NOW - 10, NOW))
    assert d.condition("Ready") is not None
    assert d.condition("Ready").message == (  # type: ignore[union-attr]
        "ScaledObject is defined correctly and is ready for scaling"
    )
    assert d.condition("Active").message == (  # type: ignore[union-attr]
        "Scaler cooling down because triggers are not active"
    )
    e = decide(DecisionInput(so_with(), 1, (err(),), NOW - 10, NOW))
    assert e.condition("Ready").message == (  # type: ignore[union-attr]
        "Triggers defined in ScaledObject are not working correctly"
    )


def test_health_is_reported_only_with_fallback() -> None:
    views = (ok(5), err(2, metric="s1-kafka-orders"), never("s2-nats-x"), cpu())
    without = decide(DecisionInput(so_with(), 1, views, NOW, NOW))
    assert dict(without.health) == {}
    with_fb = decide(DecisionInput(fb(), 1, views, NOW, NOW))
    assert dict(with_fb.health) == {
        "s0-redis-jobs": HealthStatus(0, "Happy"),
        "s1-kafka-orders": HealthStatus(2, "Failing"),
    }


def test_triggers_activity() -> None:
    views = (ok(5), ok(0, metric="s1-a"), err(metric="s2-b", last=3), cpu())
    d = decide(DecisionInput(so_with(), 1, views, NOW, NOW))
    assert dict(d.triggers_activity) == {
        "s0-redis-jobs": True,
        "s1-a": False,
        "s2-b": False,
        "cpu": True,
    }


@pytest.mark.parametrize(
    ("behavior", "current", "expected"),
    [
        pytest.param("static", 0, 5, id="static-0"),
        pytest.param("static", 9, 5, id="static-9"),
        pytest.param("currentReplicas", 9, 9, id="current-9"),
        pytest.param("currentReplicasIfHigher", 3, 5, id="higher-3"),
        pytest.param("currentReplicasIfHigher", 9, 9, id="higher-9"),
        pytest.param("currentReplicasIfLower", 3, 3, id="lower-3"),
        pytest.param("currentReplicasIfLower", 9, 5, id="lower-9"),
    ],
)
def test_fallback_replicas(behavior: Any, current: int, expected: int) -> None:
    assert fallback_replicas(Fallback(3, 5, behavior), current) == expected


def test_cooldown_without_creation_timestamp() -> None:
    so = parse_scaled_object(
        {
            "metadata": {"name": "a", "namespace": "b"},
            "spec": {"scaleTargetRef": {"name": "t"}, "triggers": [{"type": "x", "metadata": {}}]},
        }
    )
    assert cooldown_elapsed(so, None, NOW) is True
    delayed = parse_scaled_object(
        {
            "metadata": {"name": "a", "namespace": "b"},
            "spec": {
                "scaleTargetRef": {"name": "t"},
                "initialCooldownPeriod": 10,
                "triggers": [{"type": "x", "metadata": {}}],
            },
        }
    )
    assert cooldown_elapsed(delayed, None, NOW) is False


def test_decide_is_pure() -> None:
    inp = DecisionInput(so_with(), 1, (ok(0),), LONG_AGO, NOW)
    assert decide(inp) == decide(inp)


# --------------------------------------------------------------------------- properties

ANNOTATION_SETS = st.sampled_from([{}, PAUSE, SCALE_IN, SCALE_OUT, FORCE, {**SCALE_IN, **FORCE}])


@st.composite
def scaled_objects(draw: st.DrawFn, with_fallback: bool) -> ScaledObject:
    min_ = draw(st.integers(0, 4))
    spec: dict[str, Any] = {
        "minReplicaCount": min_,
        "maxReplicaCount": draw(st.integers(max(min_, 1), 10)),
        "cooldownPeriod": draw(st.integers(0, 600)),
        "initialCooldownPeriod": draw(st.integers(0, 600)),
    }
    if min_ > 1 and draw(st.booleans()):
        spec["idleReplicaCount"] = draw(st.integers(0, min_ - 1))
    if with_fallback:
        spec["fallback"] = {
            "failureThreshold": draw(st.integers(0, 5)),
            "replicas": draw(st.integers(0, 8)),
            "behavior": draw(
                st.sampled_from(
                    [
                        "static",
                        "currentReplicas",
                        "currentReplicasIfHigher",
                        "currentReplicasIfLower",
                    ]
                )
            ),
        }
    return so_with(draw(ANNOTATION_SETS), **spec)


@st.composite
def trigger_views(draw: st.DrawFn, index: int) -> TriggerView:
    metric = f"s{index}-redis-q{index}"
    kind = draw(st.sampled_from(["ok", "err", "never", "cpu"]))
    if kind == "cpu":
        return TriggerView(f"cpu{index}", "cpu")
    if kind == "never":
        return never(metric)
    value = draw(st.floats(0, 100, allow_nan=False))
    sample = Sample(value, draw(st.booleans()), NOW - draw(st.floats(0, 1000)))
    fresh = draw(st.booleans())
    if kind == "ok":
        return TriggerView(metric, "redis", sample, None, 0, fresh)
    return TriggerView(
        metric,
        "redis",
        draw(st.none() | st.just(sample)),
        "timeout",
        draw(st.integers(1, 10)),
        fresh,
    )


@st.composite
def inputs(draw: st.DrawFn, with_fallback: bool, force_error: bool) -> DecisionInput:
    so = draw(scaled_objects(with_fallback))
    n = draw(st.integers(1, 3))
    views = [draw(trigger_views(i)) for i in range(n)]
    if force_error:
        views[0] = err(draw(st.integers(1, 10)), metric="s0-redis-q0")
    last_active = draw(st.none() | st.floats(NOW - 2000, NOW))
    return DecisionInput(so, draw(st.integers(0, 12)), tuple(views), last_active, NOW)


@settings(max_examples=400, deadline=None)
@given(inputs(with_fallback=False, force_error=True))
def test_an_error_never_lowers_replicas(inp: DecisionInput) -> None:
    """Safety rule 1: with any trigger failing and no fallback, never scale down."""
    d = decide(inp)
    assert d.target_replicas is None or d.target_replicas >= inp.current_replicas
    assert not d.scale_to_zero


@settings(max_examples=400, deadline=None)
@given(inputs(with_fallback=True, force_error=False))
def test_never_fights_the_hpa(inp: DecisionInput) -> None:
    """Safety rule 3: writes only 0/idle ↔ hpa_min, min, or the paused count."""
    d = decide(inp)
    so = inp.so
    hpa_min = max(1, so.min_replica_count)
    if d.target_replicas is None:
        return
    assert d.target_replicas != inp.current_replicas
    if so.flags.paused:
        pytest.fail("paused objects are never written without paused-replicas")
    allowed_down = {so.idle_replica_count if so.idle_replica_count is not None else 0}
    if d.target_replicas < inp.current_replicas:
        assert d.target_replicas in allowed_down
        assert inp.current_replicas <= hpa_min
        assert d.scale_to_zero
        assert not so.flags.pause_scale_in
    else:
        assert d.target_replicas in {hpa_min, so.min_replica_count}
        assert not so.flags.pause_scale_out


@settings(max_examples=300, deadline=None)
@given(inputs(with_fallback=True, force_error=False))
def test_scale_down_only_after_cooldown_with_all_triggers_healthy(inp: DecisionInput) -> None:
    """Safety rule 2."""
    d = decide(inp)
    if d.target_replicas is not None and d.target_replicas < inp.current_replicas:
        assert cooldown_elapsed(inp.so, inp.last_active_time, inp.now)
        for v in inp.triggers:
            assert not v.active
            assert v.sample is not None or v.failing
            if not v.failing:
                assert v.fresh


def test_decision_is_frozen() -> None:
    d: Decision = decide(DecisionInput(so_with(), 0, (ok(1),), None, NOW))
    with pytest.raises(AttributeError):
        d.target_replicas = 3  # type: ignore[misc]


def test_fixture_creation_time() -> None:
    assert so_with().creation_timestamp == CREATED
