"""Why a workload is at its replica count, in plain words: `tidal explain`'s text. PURE.

Input: one object as the debug endpoint serves it (scaler.debug `detail_json`: the last
decision, the inputs it was made from, cooldown, pause annotations, the HPA's name) and, when
the API could be read, the HPA itself (its status: current/desired replicas, conditions).

`EXPLANATIONS` has one sentence per branch of decide() (scaler/decide.py, `Decision.branch`):
a unit test fails when decide() grows a branch this module does not explain. States before any
decision (BLOCKED, not built yet) have their own sentences (`STATES`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from scaler.debug_client import clock, duration, number

JSON = dict[str, Any]
ERROR_IS_NEVER_A_ZERO = "holding: trigger failing, an error is never a zero"


@dataclass(frozen=True, slots=True)
class Facts:
    """What a sentence is made of, read once from the endpoint's JSON."""

    obj: JSON
    decision: JSON
    now: float

    @property
    def inputs(self) -> JSON:
        return dict(self.decision.get("inputs") or {})

    @property
    def current(self) -> int:
        return int(self.inputs.get("current_replicas") or 0)

    @property
    def target(self) -> int | None:
        t = self.decision.get("target_replicas")
        return None if t is None else int(t)

    @property
    def hpa_min(self) -> int:
        return int((self.obj.get("hpa") or {}).get("min") or 1)

    @property
    def floor(self) -> int:
        idle = self.obj.get("idle")
        return int(idle) if idle is not None else int(self.obj.get("min") or 0)

    def triggers(self) -> list[JSON]:
        """The decision's trigger views, with target and activation from the object's row."""
        row = {t.get("metric"): t for t in self.obj.get("triggers") or []}
        out = []
        for v in self.inputs.get("triggers") or []:
            extra = row.get(v.get("metric"), {})
            out.append({**extra, **v, "error_since": extra.get("error_since")})
        return out

    def since_active(self) -> str:
        t = self.inputs.get("last_active_time")
        return "" if t is None else f" since {clock(t)}"


def describe(t: JSON) -> str:
    """One trigger's state in the decision, with the numbers that made it."""
    metric = t.get("metric") or t.get("type")
    value = number(t.get("value"))
    act = t.get("activation") or {}
    threshold = act.get("value")
    if t.get("kind") in ("Resource", "ContainerResource") or t.get("type") in ("cpu", "memory"):
        return f"{metric} ({t.get('type')}) is always active: the HPA reads it itself"
    if t.get("failing"):
        since = f" since {clock(t['error_since'])}" if t.get("error_since") else ""
        held = f"; last good value {value} is held" if t.get("value") is not None else ""
        return (
            f"{metric} is failing ({t.get('failures', 0)} in a row{since}: {t.get('error')}){held}"
        )
    if t.get("never_sampled"):
        return f"{metric} has no value yet"
    if threshold is None:
        state = "active" if t.get("active") else "inactive"
        return f"{metric} is {state} (value {value})"
    if t.get("active"):
        return f"{metric} is active ({value} > activation {number(threshold)})"
    return f"{metric} is inactive ({value} ≤ activation {number(threshold)})"


def _list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else "; ".join(items)


def _which(f: Facts, keep: Callable[[JSON], bool], subject: str = "the trigger") -> str:
    chosen = [describe(t) for t in f.triggers() if keep(t)]
    if not chosen:
        return "no trigger"
    if len(chosen) == 1:
        return f"{subject} {chosen[0]}"
    return f"{subject}s: {_list(chosen)}"


def _active_cause(f: Facts) -> str:
    annotations = f.obj.get("annotations") or {}
    if "autoscaling.keda.sh/force-activation" in annotations:
        return "activation is forced by autoscaling.keda.sh/force-activation"
    if (f.obj.get("fallback") or {}).get("active") and not any(
        t.get("active") for t in f.triggers()
    ):
        fb = f.obj["fallback"]
        return (
            f"fallback is active (a trigger failed more than failureThreshold "
            f"{fb.get('failure_threshold')} times; fallback replicas {fb.get('active_replicas')})"
        )
    return _which(f, lambda t: bool(t.get("active")))


def _cooldown_end(f: Facts) -> str:
    c = f.obj.get("cooldown") or {}
    if c.get("counted_from") == "creationTimestamp":
        what = f"initialCooldownPeriod {c.get('initial_period')} s (counted from creation)"
    else:
        what = f"cooldownPeriod {c.get('period')} s"
    remaining = c.get("remaining")
    if remaining is None:
        return f"{what} has no start"
    if remaining <= 0:
        return f"{what} has elapsed"
    return f"{what} ends in {duration(remaining)}"


def _failing(t: JSON) -> bool:
    return bool(t.get("failing"))


def _inactive(t: JSON) -> bool:
    return not t.get("active") and not t.get("failing")


EXPLANATIONS: Mapping[str, Callable[[Facts], str]] = {
    "activate": lambda f: (
        f"Scaling {f.current} → {f.target}: activate — {_active_cause(f)}; at "
        f"{f.current} replicas the HPA cannot act, so Tidal writes {f.target} and the HPA scales "
        f"from there."
    ),
    "scale-out-paused": lambda f: (
        f"Held at {f.current}: scale-out paused — "
        + (
            f"{_active_cause(f)}, but autoscaling.keda.sh/paused-scale-out is set, so Tidal does "
            f"not raise it to {f.hpa_min}."
            if f.decision.get("active")
            else f"below minReplicaCount {f.obj.get('min')}, but "
            f"autoscaling.keda.sh/paused-scale-out is set, so Tidal does not raise it."
        )
    ),
    "active-partial-error": lambda f: (
        f"At {f.current}, the HPA owns the count: active — {_active_cause(f)}; but "
        f"{_which(f, _failing)} (Ready=Unknown PartialTriggerError). Tidal writes nothing; "
        f"the HPA scales between {f.hpa_min} and {f.obj.get('max')}."
    ),
    "active": lambda f: (
        f"At {f.current}, the HPA owns the count: active — {_active_cause(f)}. Tidal keeps it "
        f"at ≥ {f.hpa_min}; the HPA scales between {f.hpa_min} and {f.obj.get('max')}."
    ),
    "hold-error": lambda f: (
        f"Held at {f.current}: {ERROR_IS_NEVER_A_ZERO} — {_which(f, _failing)}. Tidal does not "
        f"scale down until every trigger answers (the HPA is served an error, so it keeps its "
        f"count too)."
    ),
    "hold-unknown": lambda f: (
        f"Held at {f.current}: holding — "
        + (
            "the object has no trigger that produces a value"
            if not f.triggers()
            else _which(f, lambda t: bool(t.get("never_sampled")))
        )
        + "; an unknown is never a zero (Active=Unknown TriggersNotSampled)."
    ),
    "hpa-owns": lambda f: (
        f"At {f.current}, the HPA owns the count: inactive — {_which(f, _inactive)}, but "
        f"{f.current} is above {f.hpa_min}: the HPA scales in first; Tidal takes over at "
        f"{f.hpa_min} (then cooldown, then {f.floor})."
    ),
    "scale-in-paused": lambda f: (
        f"Held at {f.current}: scale-in paused — {_which(f, _inactive)}, but "
        f"autoscaling.keda.sh/paused-scale-in is set, so Tidal does not lower it to {f.floor}."
    ),
    "hold-stale": lambda f: (
        f"Held at {f.current}: holding — "
        + _which(f, lambda t: not t.get("fresh", True))
        + " but was not sampled this round; scale to zero waits for a fresh inactive reading."
    ),
    "deactivate": lambda f: (
        f"Scaling {f.current} → {f.target}: deactivate — {_which(f, _inactive)}"
        f"{f.since_active()}; {_cooldown_end(f)}."
    ),
    "cooldown": lambda f: (
        f"Held at {f.current}: cooldown — {_which(f, _inactive)}{f.since_active()}; "
        f"{_cooldown_end(f)}; then {f.current} → {f.floor}."
    ),
    "to-min": lambda f: (
        f"Scaling {f.current} → {f.target}: below minReplicaCount — inactive and no "
        f"idleReplicaCount, so Tidal raises it to minReplicaCount {f.obj.get('min')}."
    ),
    "inactive": lambda f: (
        f"At {f.current}: inactive — {_which(f, _inactive)}; the count is at its floor "
        f"({f.floor}), nothing to do."
    ),
    "paused": lambda f: (
        f"Held at {f.current}: paused — autoscaling.keda.sh/paused is set: Tidal writes "
        f"nothing and the HPA is deleted while paused (its triggers still read "
        f"{'active' if f.decision.get('active') else 'inactive'})."
    ),
    "paused-replicas": lambda f: (
        f"Scaling {f.current} → {f.target}: paused at autoscaling.keda.sh/paused-replicas="
        f"{f.target}; the HPA is deleted while paused."
    ),
}

STATES: Mapping[str, Callable[[JSON], str]] = {
    "blocked": lambda o: (
        f"Not scaling: BLOCKED — the object could not be built: {o.get('error')}. Its metrics "
        f"are served as errors (the HPA keeps its count) and it reports Ready=False; it is built "
        f"again when what it reads changes."
    ),
    "undecided": lambda o: (
        f"Not decided yet: the object is {o.get('phase')} and has not been polled to a decision "
        f"(next poll in {duration(o.get('next_poll_in'))})."
    ),
}


def headline(obj: JSON, now: float) -> str:
    """The one sentence: what the count is and which row of the decision table holds it."""
    if obj.get("phase") == "blocked":
        return STATES["blocked"](obj)
    decision = obj.get("decision")
    if not decision:
        return STATES["undecided"](obj)
    branch = str(decision.get("branch") or "")
    sentence = EXPLANATIONS.get(branch)
    if sentence is None:
        return f"Decision branch {branch!r} (this version of tidal explain does not know it)."
    return sentence(Facts(obj, decision, now))


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)


def _hpa_lines(obj: JSON, hpa: JSON | None, hpa_error: str | None) -> list[str]:
    name = (obj.get("hpa") or {}).get("name")
    if hpa_error is not None:
        return [f"  HPA             {name}: not read ({hpa_error})"]
    if hpa is None:
        return [
            f"  HPA             {name}: absent"
            + (" (deleted while paused)" if obj.get("paused") else "")
        ]
    spec, status = hpa.get("spec") or {}, hpa.get("status") or {}
    lines = [
        f"  HPA             {name}: current {status.get('currentReplicas', '-')}, desired "
        f"{status.get('desiredReplicas', '-')}, min {spec.get('minReplicas', 1)}, "
        f"max {spec.get('maxReplicas', '-')}"
    ]
    for c in status.get("conditions") or []:
        lines.append(
            f"                  {c.get('type')}={c.get('status')} {c.get('reason', '')}: "
            f"{c.get('message', '')}"
        )
    return lines


def hpa_sentence(obj: JSON, hpa: JSON | None) -> str | None:
    """What the HPA (which owns 1..N) wants now, from its status; None when there is none."""
    if hpa is None or not obj.get("decision"):
        return None
    name = (obj.get("hpa") or {}).get("name")
    spec, status = hpa.get("spec") or {}, hpa.get("status") or {}
    conditions = {str(c.get("type")): c for c in status.get("conditions") or []}
    scaling = conditions.get("ScalingActive")
    if scaling is not None and scaling.get("status") == "False":
        return (
            f"The HPA {name} is not scaling ({scaling.get('reason')}): it keeps "
            f"{status.get('currentReplicas', '-')} replicas."
        )
    if status.get("desiredReplicas") is None:
        return f"The HPA {name} has not computed a replica count yet."
    sentence = (
        f"The HPA {name} wants {status.get('desiredReplicas')} (current "
        f"{status.get('currentReplicas', '-')}, bounds {spec.get('minReplicas', 1)}.."
        f"{spec.get('maxReplicas', '-')})"
    )
    limited = conditions.get("ScalingLimited")
    if limited is not None and limited.get("status") == "True":
        sentence += f", limited: {limited.get('reason')}"
    return sentence + "."


def render(obj: JSON, *, hpa: JSON | None = None, hpa_error: str | None = None) -> str:
    """The whole `tidal explain` text."""
    now = float(obj.get("now") or 0.0)
    target = obj.get("target") or {}
    leader = obj.get("leader") or {}
    role = (
        "leader" if leader.get("is_leader") else f"standby (leader: {leader.get('holder') or '?'})"
    )
    lines = [
        f"ScaledObject {obj.get('namespace')}/{obj.get('name')} → {target.get('gvk')} "
        f"{target.get('name')}   [daemon {leader.get('identity')}, {role}]",
        "",
        headline(obj, now),
        "",
    ]
    about_hpa = hpa_sentence(obj, hpa)
    if about_hpa is not None:
        lines[-1:-1] = [about_hpa]
    decision = obj.get("decision") or {}
    inputs = decision.get("inputs") or {}
    if decision:
        at = float(inputs.get("now") or now)
        lines.append(
            f"Inputs of the decision at {clock(at)} ({duration(now - at)} ago), "
            f"row {decision.get('branch')}:"
        )
    else:
        lines.append("Inputs:")
    idle = obj.get("idle")
    lines.append(
        f"  replicas        {_or_dash(inputs.get('current_replicas', obj.get('replicas')))}   "
        f"(min {obj.get('min')}, max {obj.get('max')}, idle {'-' if idle is None else idle})"
    )
    facts = Facts(obj, decision, now)
    for t in facts.triggers() if decision else obj.get("triggers") or []:
        if not t.get("metric"):  # not built: the spec's trigger, no value
            lines.append(f"  trigger {t.get('index')} ({t.get('type')}): not built")
            continue
        act = t.get("activation")
        lines.append(
            f"  {t.get('metric') or t.get('type')}: value {number(t.get('value'))}"
            + ("" if t.get("age") is None else f" ({duration(t.get('age'))} old)")
            + f", target {t.get('target_type', '-')} "
            f"{number(t.get('target'))}, activation "
            + (
                f"{act['param']} "
                + ("(from the container's env)" if act.get("from_env") else number(act["value"]))
                if act
                else "-"
            )
            + (f", failing x{t.get('failures')}: {t.get('error')}" if t.get("error") else "")
        )
    last_active = (obj.get("cooldown") or {}).get("last_active_time")
    lines.append(
        f"  lastActiveTime  {clock(last_active)}"
        + ("" if last_active is None else f" ({duration(now - last_active)} ago)")
    )
    if decision.get("active"):
        period = (obj.get("cooldown") or {}).get("period")
        lines.append(
            f"  cooldown        cooldownPeriod {period} s, counted once every trigger is inactive"
        )
    else:
        lines.append(f"  cooldown        {_cooldown_end(facts)}")
    annotations = obj.get("annotations") or {}
    lines.append(
        "  annotations     "
        + (", ".join(f"{k}={v}" for k, v in annotations.items()) if annotations else "no pause")
    )
    fb = obj.get("fallback")
    if fb:
        lines.append(
            f"  fallback        {'ACTIVE, ' if fb.get('active') else ''}failureThreshold "
            f"{fb.get('failure_threshold')}, replicas {fb.get('replicas')} ({fb.get('behavior')})"
        )
    lines.extend(_hpa_lines(obj, hpa, hpa_error))
    s = obj.get("last_scale")
    lines.append(
        "  last scale      "
        + (
            "none by this daemon"
            if not s
            else f"{s['from']} → {s['to']} ({s['branch']}, {s['outcome']}) at {clock(s['at'])}, "
            f"{duration(s.get('age'))} ago" + (f": {s['error']}" if s.get("error") else "")
        )
    )
    for c in decision.get("conditions") or []:
        lines.append(f"  condition       {c['type']}={c['status']} {c['reason']}")
    return "\n".join(lines)
