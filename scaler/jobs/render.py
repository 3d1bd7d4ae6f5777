"""What the ScaledJob controller writes, built pure from the spec: the Job body (KEDA's
generateJobs) and the ScaledJob status (KEDA's conditions, reasons and messages)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Literal

from scaler.jobs.spec import (
    API_VERSION,
    EXCLUDED_LABELS_ANNOTATION,
    GENERATION_ANNOTATION,
    NAME_LABEL,
    ScaledJob,
)
from scaler.objects import thaw

MANAGED_BY = "tidal"
VERSION = "0.1.0"

Status = Literal["True", "False", "Unknown"]

READY_MSG = "ScaledJob is defined correctly and is ready for scaling"
PARTIAL_MSG = "Some triggers defined in ScaledJob are not working correctly"
TRIGGER_ERROR_MSG = "Triggers defined in ScaledJob are not working correctly"
ACTIVE_MSG = "Scaling is performed because triggers are active"
INACTIVE_MSG = "Scaling is not performed because triggers are not active"
PAUSED_MSG = "ScaledJob is paused"
UNPAUSED_MSG = "ScaledJob is unpaused"


def job_body(sj: ScaledJob) -> dict[str, Any]:
    """One Job of `sj` (generateName ``<name>-``), owned and controlled by it."""
    excluded = {
        s.strip() for s in sj.annotations.get(EXCLUDED_LABELS_ANNOTATION, "").split(",") if s
    }
    labels = {
        "app.kubernetes.io/name": sj.name,
        "app.kubernetes.io/version": VERSION,
        "app.kubernetes.io/part-of": sj.name,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        NAME_LABEL: sj.name,
    }
    labels.update({k: v for k, v in sj.labels.items() if k not in excluded})
    annotations = {GENERATION_ANNOTATION: str(sj.generation), **sj.annotations}
    spec: dict[str, Any] = thaw(sj.job_spec)
    template = spec.setdefault("template", {})
    template_meta = template.setdefault("metadata", {})
    template_meta.setdefault("labels", {})[NAME_LABEL] = sj.name
    pod = template.setdefault("spec", {})
    if not pod.get("restartPolicy"):
        pod["restartPolicy"] = "OnFailure"  # a Job refuses the client default "Always"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "generateName": f"{sj.name}-",
            "namespace": sj.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "ScaledJob",
                    "name": sj.name,
                    "uid": sj.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }


def condition(type_: str, status: Status, reason: str, message: str) -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def paused_condition(sj: ScaledJob) -> dict[str, str]:
    if sj.paused:
        return condition("Paused", "True", "ScaledJobPaused", PAUSED_MSG)
    if _stored(sj, "Paused") == "True":
        return condition("Paused", "False", "ScaledJobUnpaused", UNPAUSED_MSG)
    stored = _stored_condition(sj, "Paused")
    if stored is not None:
        return stored
    return condition("Paused", "Unknown", "", "")


def check_failed(sj: ScaledJob, message: str) -> list[dict[str, str]]:
    """Ready=False ScaledJobCheckFailed (a bad spec, a missing TriggerAuthentication, ...)."""
    return [
        condition("Ready", "False", "ScaledJobCheckFailed", message),
        condition("Active", "Unknown", "UnknownState", "ScaledJob check failed"),
        paused_condition(sj),
    ]


def poll_conditions(sj: ScaledJob, active: bool, error: bool) -> list[dict[str, str]]:
    """RequestJobScale's conditions after a poll."""
    if error and active:
        ready = condition("Ready", "Unknown", "PartialTriggerError", PARTIAL_MSG)
    elif error:
        ready = condition("Ready", "False", "TriggerError", TRIGGER_ERROR_MSG)
    else:
        ready = condition("Ready", "True", "ScaledJobReady", READY_MSG)
    if active:
        act = condition("Active", "True", "ScalerActive", ACTIVE_MSG)
    else:
        act = condition("Active", "False", "ScalerNotActive", INACTIVE_MSG)
    return [ready, act, paused_condition(sj)]


def paused_conditions(sj: ScaledJob) -> list[dict[str, str]]:
    """A paused ScaledJob: no poll; Ready and Active stay as they were."""
    kept = [c for t in ("Ready", "Active") if (c := _stored_condition(sj, t)) is not None]
    return [*kept, paused_condition(sj)]


def status_patch(
    sj: ScaledJob,
    conditions: list[dict[str, str]],
    last_active: float | None,
    *,
    force: bool = False,
) -> dict[str, Any] | None:
    """The merge patch of `status`, or None when it would change nothing but lastActiveTime
    (no write when nothing changed; `force`: write lastActiveTime anyway, e.g. with Jobs
    created in this poll)."""
    have = thaw(sj.status)
    want: dict[str, Any] = {"conditions": conditions}
    if last_active is not None:
        want["lastActiveTime"] = rfc3339(last_active)
    changed = have.get("conditions") != conditions
    changed |= last_active is not None and "lastActiveTime" not in have
    if not (changed or force):
        return None
    return {"status": want}


def rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _stored_condition(sj: ScaledJob, type_: str) -> dict[str, str] | None:
    for c in sj.status.get("conditions") or ():
        if isinstance(c, Mapping) and c.get("type") == type_:
            return {k: str(c.get(k) or "") for k in ("type", "status", "reason", "message")}
    return None


def _stored(sj: ScaledJob, type_: str) -> str:
    c = _stored_condition(sj, type_)
    return "" if c is None else c["status"]
