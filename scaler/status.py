"""The ScaledObject status Tidal writes, built from the spec, the decision and the runtime.

Pure: the same inputs give the same dict, so the daemon writes only when the dict changed (no
API write when nothing changed). KEDA's field names and condition reasons.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

from scaler.decide import Condition, Decision
from scaler.kube.paths import GVKR
from scaler.modifiers import COMPOSITE_METRIC
from scaler.objects import ScaledObject, hpa_name, parse_timestamp

CONDITION_ORDER = ("Ready", "Active", "Fallback", "Paused")


def rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def stored_last_active_time(status: Mapping[str, Any], now: float) -> float | None:
    """When the object was last active, as a process that just loaded it must assume.

    ``lastActiveTime`` is written when activity ends (the Active condition turns False), not on
    every active poll (that would be a write per poll). So a stored ``Active=True`` means the
    object was still active when the last writer stopped — a restart or a failover — and its
    cooldown starts no earlier than now: no restart ever shortens a cooldown.
    """
    stored = parse_timestamp(status.get("lastActiveTime"))
    for condition in status.get("conditions") or ():
        if (
            isinstance(condition, Mapping)
            and condition.get("type") == "Active"
            and condition.get("status") == "True"
        ):
            return now if stored is None else max(stored, now)
    return stored


def conditions_json(conditions: Iterable[Condition]) -> list[dict[str, str]]:
    by_type = {c.type: c for c in conditions}
    out = []
    for t in CONDITION_ORDER:
        c = by_type.get(t)  # type: ignore[call-overload]
        if c is not None:
            out.append(
                {"type": c.type, "status": c.status, "reason": c.reason, "message": c.message}
            )
    return out


def check_failed_conditions(message: str, paused: bool) -> list[dict[str, str]]:
    """Ready=False for a ScaledObject that cannot be run (bad spec, missing auth, ...)."""
    return [
        {
            "type": "Ready",
            "status": "False",
            "reason": "ScaledObjectCheckFailed",
            "message": message,
        },
        {"type": "Active", "status": "Unknown", "reason": "UnknownState", "message": ""},
        {"type": "Fallback", "status": "False", "reason": "NoFallbackFound", "message": ""},
        {
            "type": "Paused",
            "status": "True" if paused else "False",
            "reason": "ScaledObjectPaused" if paused else "ScaledObjectUnpaused",
            "message": "",
        },
    ]


def base_status(so: ScaledObject, target: GVKR | None, metric_names: list[str]) -> dict[str, Any]:
    status: dict[str, Any] = {
        "hpaName": hpa_name(so),
        "externalMetricNames": metric_names or None,
        "triggersTypes": ",".join(dict.fromkeys(t.type for t in so.triggers)) or None,
        "authenticationsTypes": ",".join(
            dict.fromkeys(t.authentication_ref.name for t in so.triggers if t.authentication_ref)
        )
        or None,
        # KEDA's name of the composite metric the HPA reads with scalingModifiers.
        "compositeScalerName": COMPOSITE_METRIC if so.advanced.scaling_modifiers else None,
    }
    if target is not None:
        status["scaleTargetKind"] = target.gvk_string
        status["scaleTargetGVKR"] = {
            "group": target.group,
            "version": target.version,
            "kind": target.kind,
            "resource": target.resource,
        }
    return status


def decision_status(
    so: ScaledObject,
    target: GVKR | None,
    metric_names: list[str],
    decision: Decision,
    original_replicas: int | None,
) -> dict[str, Any]:
    status = base_status(so, target, metric_names)
    status["conditions"] = conditions_json(decision.conditions)
    if decision.last_active_time is not None:
        # Rounded up to the second it is written in: a cooldown counted from it is never short.
        status["lastActiveTime"] = rfc3339(math.ceil(decision.last_active_time))
    if original_replicas is not None:
        status["originalReplicaCount"] = original_replicas
    if decision.health:
        status["health"] = {
            name: {"numberOfFailures": h.number_of_failures, "status": h.status}
            for name, h in decision.health.items()
        }
    if decision.triggers_activity:
        status["triggersActivity"] = {
            name: {"isActive": active} for name, active in decision.triggers_activity.items()
        }
    paused = so.flags.paused_replicas
    status["pausedReplicaCount"] = paused
    return status


def status_changed(want: Mapping[str, Any], have: Mapping[str, Any] | None) -> bool:
    """Whether writing `want` would change anything (lastActiveTime alone doesn't count)."""
    if have is None:
        return True
    for key, value in want.items():
        if key == "lastActiveTime":
            continue
        if value != have.get(key):
            return True
    return False


def merge_patch_for(want: Mapping[str, Any], have: Mapping[str, Any] | None) -> dict[str, Any]:
    """A merge patch turning `have` into `want` for the keys Tidal owns (None deletes)."""
    return {k: v for k, v in want.items() if (have or {}).get(k) != v}
