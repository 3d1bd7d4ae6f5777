"""The read-only debug endpoint on the metrics port, for `tidal status` and `tidal explain`.

* ``GET /debug/objects[?namespace=NS]`` — every ScaledObject the daemon runs: phase, activity,
  per trigger the metric, last value, its age, error and failure streak; next poll; fallback;
  the last scale action; who leads.
* ``GET /debug/objects/{namespace}/{name}`` — one object with the last decision besides: its
  branch (the decision-table row), the inputs it was made from, cooldown remaining, the pause
  annotations and the HPA's name (404 when the daemon does not run that object).

Read-only: it reads the runtimes (scaler.runtime: `last_input`, `last_decision`, `last_scale`,
set by the poller and the actuator), the store, the scheduler and the lease; it writes nothing
and imports no write module (an import-linter contract). It never shows a trigger's metadata or
auth parameters (they may hold secrets): metric names, values, targets and the activation
threshold of a declared non-secret ``activation*`` parameter only.

Constant work per object, on the loop in chunks of `CHUNK` objects, each built and encoded
before yielding to the loop, so polls due meanwhile start on time (measured at 1000 objects by
tests/integration/test_debug_endpoint.py).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from scaler.annotations import (
    FORCE_ACTIVATION,
    PAUSED,
    PAUSED_REPLICAS,
    PAUSED_SCALE_IN,
    PAUSED_SCALE_OUT,
)
from scaler.decide import Decision, DecisionInput
from scaler.kube.lease import LeaderElector
from scaler.kube.members import MemberLeases
from scaler.objects import ScaledObject, hpa_max_replicas, hpa_min_replicas, hpa_name
from scaler.runtime import ObjectRuntime, Phase, TriggerRuntime
from scaler.store import MetricRecord, MetricStore
from scaler.table import ObjectTable

JSON = dict[str, Any]
Key = tuple[str, str]
CHUNK = 50  # objects built and encoded between two yields to the loop (~2 ms of work)
PAUSE_ANNOTATIONS = (PAUSED, PAUSED_REPLICAS, PAUSED_SCALE_IN, PAUSED_SCALE_OUT, FORCE_ACTIVATION)

_activation_params: dict[type, tuple[tuple[tuple[str, ...], object], ...]] = {}


def _num(value: float | None) -> float | int | None:
    """A JSON-safe number (integers stay integers)."""
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return int(value) if float(value).is_integer() else value


def _age(now: float, at: float | None) -> float | None:
    return None if at is None else round(max(0.0, now - at), 3)


def activation_threshold(t: TriggerRuntime) -> JSON | None:
    """The trigger's activation threshold when its scaler declares a non-secret numeric
    ``activation*`` parameter: its name and value (the metadata literal, else the default; no
    value when it comes from the container's env). Nothing else of the metadata is read."""
    if t.scaler is None:
        return None
    cls = type(t.scaler)
    declared = _activation_params.get(cls)
    if declared is None:
        declared = _activation_params[cls] = tuple(
            (p.names, p.default)
            for p in getattr(cls, "PARAMS", ())
            if p.name.startswith("activation") and not p.secret and p.type in ("int", "float")
        )
    metadata = t.trigger.metadata
    for names, default in declared:
        if any(f"{n}FromEnv" in metadata for n in names):
            return {"param": names[0], "value": None, "from_env": True}  # not read here
        raw = next((metadata[n] for n in names if n in metadata), default)
        try:
            value = float(str(raw))
        except ValueError:
            continue
        return {"param": names[0], "value": _num(value)}
    return None


def trigger_json(t: TriggerRuntime, record: MetricRecord | None, now: float) -> JSON:
    spec = t.spec
    out: JSON = {
        "metric": spec.name,
        "type": t.trigger.type,
        "index": t.trigger.index,
        "name": t.trigger.name or None,
        "kind": spec.kind,
        "target": _num(spec.target),
        "target_type": spec.target_type,
        "activation": activation_threshold(t),
    }
    if t.scaler is None:  # cpu/memory: the HPA reads it; always active
        out.update(active=True, value=None, age=None, error=None, failures=0, sampled=False)
        return out
    r = record
    failing = r is not None and r.failing
    out.update(
        sampled=True,
        value=None if r is None else _num(r.value),
        observed_at=None if r is None else r.observed_at,
        age=None if r is None else _age(now, r.observed_at),
        active=None if r is None or failing or r.value is None else r.active,
        error=None if r is None else r.error,
        error_since=None if r is None else r.error_since,
        failures=0 if r is None else r.consecutive_failures,
    )
    return out


def fallback_json(so: ScaledObject, decision: Decision | None) -> JSON | None:
    fb = so.fallback
    if fb is None:
        return None
    return {
        "failure_threshold": fb.failure_threshold,
        "replicas": fb.replicas,
        "behavior": fb.behavior,
        "active": decision is not None and decision.fallback_active,
        "active_replicas": None if decision is None else decision.fallback_replicas,
    }


def scale_json(rt: ObjectRuntime, now: float) -> JSON | None:
    s = rt.last_scale
    if s is None:
        return None
    return {
        "at": s.at,
        "age": _age(now, s.at),
        "from": s.from_replicas,
        "to": s.to_replicas,
        "branch": s.branch,
        "outcome": s.outcome,
        "error": s.error,
    }


def cooldown_json(so: ScaledObject, last_active_time: float | None, now: float) -> JSON:
    """When the cooldown ends (KEDA: lastActiveTime + cooldownPeriod; without one, creation +
    initialCooldownPeriod) and how much of it remains now."""
    if last_active_time is not None:
        ends: float | None = last_active_time + so.cooldown_period
        since = "lastActiveTime"
    elif so.creation_timestamp is not None:
        ends = so.creation_timestamp + so.initial_cooldown_period
        since = "creationTimestamp"
    else:
        ends, since = None, "none"
    return {
        "period": so.cooldown_period,
        "initial_period": so.initial_cooldown_period,
        "counted_from": since,
        "last_active_time": last_active_time,
        "ends_at": ends,
        "remaining": None if ends is None else round(max(0.0, ends - now), 3),
    }


def decision_json(inp: DecisionInput, decision: Decision) -> JSON:
    """The last decision and the inputs it was made from (metric names and values only)."""
    return {
        "branch": decision.branch,
        "target_replicas": decision.target_replicas,
        "active": decision.active,
        "scale_to_zero": decision.scale_to_zero,
        "last_active_time": decision.last_active_time,
        "fallback_active": decision.fallback_active,
        "fallback_replicas": decision.fallback_replicas,
        "conditions": sorted(
            (
                {"type": c.type, "status": c.status, "reason": c.reason, "message": c.message}
                for c in decision.conditions
            ),
            key=lambda c: c["type"],
        ),
        "event": None
        if decision.event is None
        else {"type": decision.event.type, "reason": decision.event.reason},
        "inputs": {
            "now": inp.now,
            "current_replicas": inp.current_replicas,
            "last_active_time": inp.last_active_time,
            "triggers": [
                {
                    "metric": v.metric_name,
                    "type": v.trigger_type,
                    "value": None if v.sample is None else _num(v.sample.value),
                    "observed_at": None if v.sample is None else v.sample.observed_at,
                    "active": v.active,
                    "failing": v.failing,
                    "never_sampled": v.never_sampled,
                    "fresh": v.fresh,
                    "error": v.error,
                    "failures": v.consecutive_failures,
                }
                for v in inp.triggers
            ],
        },
    }


def object_json(
    key: Key, rt: ObjectRuntime, store: MetricStore, due: float | None, now: float, loop_now: float
) -> JSON:
    """One row of /debug/objects: O(triggers) dictionary lookups, no I/O."""
    so = rt.so
    decision, inp = rt.last_decision, rt.last_input
    if rt.triggers:
        triggers = [trigger_json(t, store.get(*key, t.spec.name), now) for t in rt.triggers]
    else:  # not built (or blocked): what the spec says, no values
        triggers = [
            {"metric": None, "type": t.type, "index": t.index, "name": t.name or None}
            for t in so.triggers
        ]
    failure = rt.failure
    return {
        "namespace": so.namespace,
        "name": so.name,
        "phase": rt.phase.value,
        "error": str(failure.error) if rt.phase is Phase.BLOCKED and failure else None,
        "target": {
            "kind": so.scale_target_ref.kind,
            "name": so.scale_target_ref.name,
            "gvk": so.scale_target_ref.gvk_string,
        },
        "replicas": None if inp is None else inp.current_replicas,
        "min": so.min_replica_count,
        "max": so.max_replica_count,
        "idle": so.idle_replica_count,
        "active": None if decision is None else decision.active,
        "branch": None if decision is None else decision.branch,
        "decided_at": None if inp is None else inp.now,
        "polling_interval": so.polling_interval,
        "polling": rt.polling,
        "next_poll_in": None if due is None else round(max(0.0, due - loop_now), 3),
        "polls": rt.polls,
        "triggers": triggers,
        "fallback": fallback_json(so, decision),
        "paused": so.flags.paused,
        "last_scale": scale_json(rt, now),
    }


def detail_json(obj: JSON, rt: ObjectRuntime, now: float) -> JSON:
    """`object_json` plus the last decision, cooldown, pause annotations and the HPA."""
    so = rt.so
    inp, decision = rt.last_input, rt.last_decision
    obj["decision"] = None if inp is None or decision is None else decision_json(inp, decision)
    obj["cooldown"] = cooldown_json(so, rt.last_active_time, now)
    obj["annotations"] = {k: so.annotations[k] for k in PAUSE_ANNOTATIONS if k in so.annotations}
    obj["hpa"] = {"name": hpa_name(so), "min": hpa_min_replicas(so), "max": hpa_max_replicas(so)}
    return obj


class DebugView:
    """What the endpoint serves, built from the daemon's parts (never a write)."""

    def __init__(
        self,
        table: ObjectTable,
        store: MetricStore,
        *,
        leader: LeaderElector | None,
        identity: str,
        clock: Callable[[], float],
        members: MemberLeases | None = None,
    ) -> None:
        self._table = table
        self._store = store
        self._leader = leader
        self._members = members
        self._identity = identity
        self._clock = clock

    def leader_json(self) -> JSON:
        leader, members = self._leader, self._members
        if members is not None:
            return {
                "election": False,
                "identity": self._identity,
                "is_leader": members.may_write(),
                "shards": {
                    "members": list(members.ring.identities()),
                    "owned": len(self._table),
                    "may_write": members.may_write(),
                },
            }
        if leader is None:
            return {"election": False, "identity": self._identity, "is_leader": True}
        return {
            "election": True,
            "identity": self._identity,
            "is_leader": leader.is_leader,
            "holder": leader.holder or None,
        }

    def _row(self, key: Key, rt: ObjectRuntime, now: float, loop_now: float) -> JSON:
        due = self._table.scheduler.due_at(key)
        return object_json(key, rt, self._store, due, now, loop_now)

    async def objects(self, namespace: str | None = None) -> str:
        """Every object (of `namespace`) as a JSON document, built and encoded CHUNK objects
        per loop iteration: the encoder holds the GIL, so a thread would hold the loop too."""
        loop = asyncio.get_running_loop()
        items = [kv for kv in self._table.items() if namespace is None or kv[0][0] == namespace]
        parts: list[str] = []
        now = self._clock()
        for start in range(0, len(items), CHUNK):
            if start:
                await asyncio.sleep(0)  # let due polls start between chunks
            now, loop_now = self._clock(), loop.time()
            rows = [self._row(k, rt, now, loop_now) for k, rt in items[start : start + CHUNK]]
            parts.append(_dumps(rows)[1:-1])
        head = _dumps({"now": now, "leader": self.leader_json(), "count": len(items)})
        return head[:-1] + ',"objects":[' + ",".join(parts) + "]}"

    def one(self, namespace: str, name: str) -> JSON | None:
        key = (namespace, name)
        rt = self._table.get(key)
        if rt is None:
            return None
        now = self._clock()
        obj = self._row(key, rt, now, asyncio.get_running_loop().time())
        return {"now": now, "leader": self.leader_json(), **detail_json(obj, rt, now)}


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def _json_response(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="application/json")


def debug_routes(view: DebugView) -> Iterable[web.RouteDef]:
    """The GET routes to add to the metrics port's application."""

    async def objects(request: web.Request) -> web.Response:
        return _json_response(await view.objects(request.query.get("namespace") or None))

    async def one(request: web.Request) -> web.Response:
        ns, name = request.match_info["namespace"], request.match_info["name"]
        body = view.one(ns, name)
        if body is None:
            message = {"error": f"the daemon runs no ScaledObject {ns}/{name}"}
            return _json_response(_dumps(message), status=404)
        return _json_response(_dumps(body))

    return (
        web.get("/debug/objects", objects),
        web.get("/debug/objects/{namespace}/{name}", one),
    )
