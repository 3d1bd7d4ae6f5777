"""The simulation: Tidal's polls and the HPA's syncs on the series' clock, one replica count.

Tidal polls at 0, pollingInterval, 2 x pollingInterval, …: each poll samples every trigger (the
series' value in force, compared with the trigger's activation threshold like its scaler does),
runs the daemon's `decide()` and writes its target count, as the actuator does. The values it
stores are what the HPA is served (Tidal's metrics API never queries a source): the last sample,
an error while the latest poll failed, or ``target x fallback replicas`` once a fallback is
active. The HPA syncs every sync period from `Clock.hpa_offset` on (`hpa_model`). At one instant
Tidal's poll runs first. Nothing here reads the wall clock.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from scaler.contract import Sample
from scaler.decide import Decision, DecisionInput, TriggerView, decide
from scaler.errors import ConfigError
from scaler.simulate.hpa_model import DEFAULT_SYNC_PERIOD, HpaController, SyncResult
from scaler.simulate.objects import SimObject, TriggerModel
from scaler.simulate.series import ALL, Series

Who = Literal["tidal", "hpa"]


@dataclass(frozen=True, slots=True)
class Change:
    t: float
    before: int
    after: int
    who: Who
    why: str


@dataclass(frozen=True, slots=True)
class Poll:
    """One Tidal poll: the sampled values (None: failed), whether the object was active, the
    row of the decision table that decided."""

    t: float
    values: tuple[float | None, ...]
    active: bool
    branch: str


@dataclass(frozen=True, slots=True)
class Clock:
    hpa_sync_period: float = DEFAULT_SYNC_PERIOD
    hpa_offset: float = 0.0  # the first sync, seconds after the start
    until: float | None = None  # None: the series' end plus time to settle (`settle_time`)
    initial_replicas: int = 0


@dataclass(frozen=True, slots=True)
class Timeline:
    label: str
    obj: SimObject
    start_replicas: int
    end: float
    changes: tuple[Change, ...]
    polls: tuple[Poll, ...] = field(default=())

    def replicas_at(self, t: float) -> int:
        i = bisect_right([c.t for c in self.changes], t)
        return self.changes[i - 1].after if i else self.start_replicas

    def steps(self) -> list[tuple[float, int]]:
        """(time, replicas) from 0 to the end, one point per change."""
        out = [(0.0, self.start_replicas)]
        out += [(c.t, c.after) for c in self.changes]
        out.append((self.end, self.changes[-1].after if self.changes else self.start_replicas))
        return out


def clock(t: float) -> str:
    """Seconds from the start as ``1h02m03s`` / ``2m05s`` / ``45s`` (tenths when fractional)."""
    whole = int(t)
    frac = t - whole
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    sec = f"{s + frac:04.1f}" if frac else f"{s:02d}"
    if h:
        return f"{h}h{m:02d}m{sec}s"
    if m:
        return f"{m}m{sec}s"
    return f"{sec.lstrip('0') or '0'}s"


def settle_time(obj: SimObject) -> float:
    """How long after the last point the simulation goes on by default: long enough for the
    HPA's scale-down window and Tidal's cooldown to play out after the values' last change."""
    cfg = obj.hpa
    window = cfg.downscale_stabilization
    if cfg.behavior is not None and cfg.behavior.scale_down.stabilization_window is not None:
        window = cfg.behavior.scale_down.stabilization_window
    so = obj.so
    return float(max(window, so.cooldown_period) + 2 * so.polling_interval + 30)


def series_keys(obj: SimObject, series: Series) -> tuple[str, ...]:
    """The series key feeding each trigger; ConfigError when one has none, or a key fits none."""
    keys: list[str] = []
    used: set[str] = set()
    for trig in obj.triggers:
        own = next((k for k in trig.names() if k in series.points), None)
        key = own if own is not None else (ALL if ALL in series.points else None)
        if key is None:
            raise ConfigError(
                f"no series for trigger {trig.index} ({trig.label}); name it in the"
                f" trigger column as one of {', '.join(trig.names())}"
            )
        keys.append(key)
        used.add(key)
    unused = sorted(set(series.points) - used)
    if unused:
        raise ConfigError(f"series for no trigger of the object: {', '.join(unused)}")
    return tuple(keys)


def _served(
    trig: TriggerModel,
    value: float | None,
    failures: int,
    decision: Decision,
    replicas: int,
    obj: SimObject,
) -> float | None:
    """What Tidal's metrics API answers the HPA for this trigger (scaler.store)."""
    fb = obj.so.fallback
    if value is not None:
        return value
    if decision.fallback_active and fb is not None and failures > fb.failure_threshold:
        count = float(decision.fallback_replicas or 0)
        if trig.target_type == "Value":
            ready = replicas if obj.hpa.ready_pods else 0
            if not ready:
                return None
            count /= ready
        return trig.target * count
    return None


def _why(
    decision: Decision,
    obj: SimObject,
    views: tuple[TriggerView, ...],
    now: float,
    last_active: float | None,
) -> str:
    branch = decision.branch
    if branch == "activate":
        causes = [
            f"{t.label}={v.sample.value:g} > activation {t.activation:g}"
            for t, v in zip(obj.triggers, views, strict=True)
            if v.active and v.sample is not None
        ]
        return "activate: " + ("; ".join(causes) or "forced or fallback")
    if branch == "deactivate":
        since = (
            "creation" if last_active is None else f"the last active poll at {clock(last_active)}"
        )
        return (
            f"deactivate: every trigger inactive, cooldownPeriod {obj.so.cooldown_period}s"
            f" since {since}"
        )
    if branch == "to-min":
        return f"to-min: below minReplicaCount {obj.so.min_replica_count}"
    return branch


def run(obj: SimObject, series: Series, clock: Clock = Clock(), label: str = "") -> Timeline:
    keys = series_keys(obj, series)
    so = obj.so
    end = clock.until if clock.until is not None else series.end + settle_time(obj)
    hpa = HpaController(obj.hpa)
    replicas = clock.initial_replicas
    last_active: float | None = None
    failures = [0] * len(obj.triggers)
    last_good: list[Sample | None] = [None] * len(obj.triggers)
    served: Mapping[str, float | None] = {t.metric_name: None for t in obj.triggers}
    changes: list[Change] = []
    polls: list[Poll] = []
    poll_n, sync_n = 0, 0
    interval = float(so.polling_interval)
    while True:
        next_poll = poll_n * interval
        next_sync = clock.hpa_offset + sync_n * clock.hpa_sync_period
        now = min(next_poll, next_sync)
        if now > end:
            break
        if next_poll <= next_sync:
            poll_n += 1
            views = []
            values: list[float | None] = []
            for i, trig in enumerate(obj.triggers):
                value = series.value_at(keys[i], now)
                values.append(value)
                if value is None:
                    failures[i] += 1
                    views.append(
                        TriggerView(
                            trig.metric_name,
                            trig.type,
                            last_good[i],
                            "the poll failed",
                            failures[i],
                        )
                    )
                else:
                    failures[i] = 0
                    last_good[i] = Sample(value, value > trig.activation, now)
                    views.append(TriggerView(trig.metric_name, trig.type, last_good[i]))
            decision = decide(DecisionInput(so, replicas, tuple(views), last_active, now))
            target = decision.target_replicas
            if target is not None and target != replicas:
                why = _why(decision, obj, tuple(views), now, last_active)
                changes.append(Change(now, replicas, target, "tidal", why))
                replicas = target
            last_active = decision.last_active_time
            served = {
                t.metric_name: _served(t, values[i], failures[i], decision, replicas, obj)
                for i, t in enumerate(obj.triggers)
            }
            polls.append(Poll(now, tuple(values), decision.active, decision.branch))
        else:
            sync_n += 1
            result = hpa.sync(now, replicas, served)
            if result.replicas is not None and result.replicas != replicas:
                changes.append(Change(now, replicas, result.replicas, "hpa", _hpa_why(result)))
                replicas = result.replicas
    return Timeline(label, obj, clock.initial_replicas, end, tuple(changes), tuple(polls))


def _hpa_why(result: SyncResult) -> str:
    parts = [p.describe() for p in result.proposals]
    return "; ".join([*parts, result.rule] if result.rule else parts) or "the HPA's bounds"
