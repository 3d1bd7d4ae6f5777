"""The writes of the leader: /scale (conditional on the state decided from), the HPA, status,
Events and the finalizer — each only when something changed, each checked against leadership
right before it is made.

It applies a `Decision` to the cluster; it decides nothing (decide() does) and reads nothing
but what a write needs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from scaler.decide import Decision
from scaler.errors import ConfigError, KubeError, NotLeaderError, TidalError
from scaler.finalizers import Finalizers, involved
from scaler.kube.client import JSON, KubeClient
from scaler.kube.events import EventRecorder, InvolvedObject
from scaler.kube.hpa import HpaRequest, delete_hpa, desired_hpa, ensure_hpa, hpa_drifted
from scaler.kube.paths import GVKR, scaled_objects
from scaler.kube.scale import get_scale, set_replicas
from scaler.kube.targets import TargetCache, TargetState
from scaler.kube.watch import object_key
from scaler.modifiers import hpa_metric_specs
from scaler.objects import hpa_max_replicas, hpa_min_replicas, hpa_name
from scaler.runtime import ObjectRuntime, ScaleAction
from scaler.status import (
    base_status,
    check_failed_conditions,
    decision_status,
    merge_patch_for,
    status_changed,
)
from scaler.telemetry import Telemetry

log = logging.getLogger(__name__)


def hpa_fingerprint(obj: JSON) -> tuple[Any, ...]:
    """What changes when someone edits an HPA (HPAs carry no metadata.generation, so the spec
    itself; status updates by the HPA controller leave all of this alone)."""
    meta = obj.get("metadata", {})
    return (
        repr(obj.get("spec")),
        repr(sorted((meta.get("labels") or {}).items())),
        repr(sorted((meta.get("annotations") or {}).items())),
        repr([o.get("uid") for o in meta.get("ownerReferences") or []]),
    )


class Actuator:
    def __init__(
        self,
        kube: KubeClient,
        targets: TargetCache,
        events: EventRecorder,
        telemetry: Telemetry,
        finalizers: Finalizers,
        *,
        may_write: Callable[[], bool],
        failing_log_every: int,
        clock: Callable[[], float] = time.time,
        hpa_absent: Callable[[str, str], bool] = lambda namespace, name: False,
    ) -> None:
        self._kube = kube
        self._targets = targets
        self._events = events
        self._telemetry = telemetry
        self._finalizers = finalizers
        self._may_write = may_write
        self._failing_log_every = failing_log_every
        self._clock = clock  # wall time of a scale action (`ScaleAction.at`)
        # Whether the HPA watch (synced) holds no HPA of this name: created without a read.
        self._hpa_absent = hpa_absent

    def hpa_request(self, rt: ObjectRuntime, target: GVKR) -> HpaRequest:
        so = rt.so
        excluded = set(so.flags.hpa_excluded_labels)
        return HpaRequest(
            name=hpa_name(so),
            namespace=so.namespace,
            so_name=so.name,
            so_uid=so.uid,
            target=target,
            target_name=so.scale_target_ref.name,
            min_replicas=hpa_min_replicas(so),
            max_replicas=hpa_max_replicas(so),
            metrics=hpa_metric_specs(so, rt.specs),
            labels={k: v for k, v in so.labels.items() if k not in excluded},
            annotations=dict(so.annotations),  # KEDA copies the ScaledObject's annotations
            behavior=so.advanced.hpa.behavior_json(),
            pause_scale_in=so.flags.pause_scale_in,
            pause_scale_out=so.flags.pause_scale_out,
        )

    def hpa_needs_write(self, rt: ObjectRuntime, target: GVKR, live: JSON) -> bool:
        """Whether our HPA as a watch event shows it differs from the one `rt` wants (someone
        edited it); remembers an HPA seen in step, so its status updates cost nothing."""
        written = rt.written
        seen = hpa_fingerprint(live)
        if seen == written.hpa_seen:
            return False  # a status update by the HPA controller (every sync period)
        written.hpa_dirty = hpa_drifted(desired_hpa(self.hpa_request(rt, target)), live)
        if not written.hpa_dirty:
            written.hpa_seen = seen
        return written.hpa_dirty

    async def report_trigger_failing(self, rt: ObjectRuntime, metric: str, error: str) -> None:
        """KEDA's Warning Event for a failing scaler (users alert on it)."""
        if self._may_write():
            await self._events.emit(
                involved(rt.so), "Warning", "KEDAScalerFailed", f"{metric}: {error}"
            )

    async def _patch_status(self, namespace: str, name: str, status: JSON) -> None:
        """Merge-PATCH of the ScaledObject's status subresource."""
        await self._kube.merge_patch(
            scaled_objects(namespace, name) + "/status", {"status": status}
        )

    async def write_replicas(
        self, rt: ObjectRuntime, target: GVKR, state: TargetState, want: int
    ) -> bool:
        """The /scale write, conditional on the resourceVersion the decision was made from: if
        the HPA or a person changed the count meanwhile it fails (409) and nothing is written;
        the next poll decides again from the new count. A 409 from a change that left the
        count alone (a status update) is retried once with the fresh resourceVersion."""
        so = rt.so
        name = so.scale_target_ref.name
        rv = state.resource_version or None
        for attempt in (1, 2):
            if not self._may_write():
                return False
            try:
                written = await set_replicas(
                    self._kube, target, so.namespace, name, want, resource_version=rv
                )
            except KubeError as exc:
                if exc.status != 409 or attempt == 2:
                    raise
                fresh = await get_scale(self._kube, target, so.namespace, name)
                if fresh.replicas != state.replicas:
                    self._telemetry.scale_conflicts.inc()
                    log.info(
                        "scale target changed since the decision; not written",
                        extra={
                            "object": f"{so.namespace}/{so.name}",
                            "decided_from": state.replicas,
                            "now": fresh.replicas,
                            "to": want,
                        },
                    )
                    return False
                rv = fresh.resource_version
                continue
            self._targets.note_written(target, so.namespace, name, written)
            return True
        return False

    async def actuate(
        self, rt: ObjectRuntime, target: GVKR, state: TargetState, decision: Decision
    ) -> None:
        so, written = rt.so, rt.written
        started = time.perf_counter()
        current = state.replicas
        # 1. The scale write first: a 0 -> 1 must not wait behind any other write.
        want = decision.target_replicas
        if want is not None and want != current:
            try:
                written_ok = await self.write_replicas(rt, target, state, want)
            except NotLeaderError:
                raise
            except KubeError as exc:
                rt.last_scale = ScaleAction(
                    self._clock(), current, want, decision.branch, "failed", str(exc)
                )
                raise
            if not written_ok:
                if self._may_write():  # the count moved since the decision (not leadership)
                    rt.last_scale = ScaleAction(
                        self._clock(), current, want, decision.branch, "conflict"
                    )
                return
            rt.last_scale = ScaleAction(self._clock(), current, want, decision.branch, "scaled")
            self._telemetry.api_writes.labels("scale").inc()
            self._telemetry.decision_to_write.observe(time.perf_counter() - started)
            direction = "up" if want > current else "down"
            if not rt.is_retired():  # a deleted object's series are gone and stay gone
                self._telemetry.scale_actions.labels(
                    so.namespace, so.name, direction, decision.branch or "decision"
                ).inc()
            log.info(
                "scaled",
                extra={
                    "object": f"{so.namespace}/{so.name}",
                    "from": current,
                    "to": want,
                    "reason": decision.branch,
                },
            )
        if not self._may_write():
            return  # leadership lost while writing: the new leader writes the rest
        if decision.event is not None:
            await self._events.emit(
                involved(so),
                decision.event.type,
                decision.event.reason,
                decision.event.message,
            )
        if not written.finalizer_added:
            await self._finalizers.add(so, written.seen_finalizers)
            written.finalizer_added = True
        # 2. The HPA (deleted while paused).
        if not self._may_write():
            return
        if so.flags.paused:
            if written.hpa_present:
                await delete_hpa(self._kube, so.namespace, hpa_name(so))
                self._telemetry.api_writes.labels("hpa").inc()
                written.hpa_present = False
        elif written.hpa_dirty:
            req = self.hpa_request(rt, target)
            absent = self._hpa_absent(req.namespace, req.name)
            outcome, live = await ensure_hpa(self._kube, req, absent=absent)
            written.hpa_seen = hpa_fingerprint(live)
            written.hpa_dirty = False
            written.hpa_present = True
            if outcome != "unchanged":
                self._telemetry.api_writes.labels("hpa").inc()
                log.info(
                    "hpa written", extra={"object": f"{so.namespace}/{so.name}", "outcome": outcome}
                )
            await self.delete_renamed_hpa(rt)
        # 3. Status, only when it changed.
        # The status is a function of these; when none changed since the last check (and no
        # watch event brought a foreign status in), building and comparing it is skipped.
        key = (
            decision.conditions,
            tuple(decision.health.items()),
            tuple(decision.triggers_activity.items()),
            rt.original_replicas,
            target,
        )
        if key == written.status_key:
            return
        names = [s.name for s in rt.specs if s.kind == "External"]
        status = decision_status(so, target, names, decision, rt.original_replicas)
        if not self._may_write():
            return
        await self.write_status(rt, status)
        written.status_key = key

    async def delete_renamed_hpa(self, rt: ObjectRuntime) -> None:
        old = (rt.written.last_status or {}).get("hpaName")
        if old and old != hpa_name(rt.so):
            await delete_hpa(self._kube, rt.so.namespace, str(old))

    async def write_status(self, rt: ObjectRuntime, status: dict[str, Any]) -> None:
        so, written = rt.so, rt.written
        if not status_changed(status, written.last_status):
            return
        patch = merge_patch_for(status, written.last_status)
        await self._patch_status(so.namespace, so.name, patch)
        self._telemetry.api_writes.labels("status").inc()
        written.last_status = {**(written.last_status or {}), **status}

    async def report_invalid(self, raw: JSON, problem: ConfigError) -> None:
        """A ScaledObject that does not parse: Ready=False + a Warning Event; nothing scales."""
        ns, name = object_key(raw)
        log.warning("invalid ScaledObject", extra={"object": f"{ns}/{name}", "error": str(problem)})
        if not self._may_write():
            return
        message = f"ScaledObject doesn't have correct spec: {problem}"
        status = raw.get("status") or {}
        conditions = check_failed_conditions(message, paused=False)
        if status.get("conditions") == conditions:
            return
        uid = str(raw.get("metadata", {}).get("uid", ""))
        try:
            await self._patch_status(ns, name, {"conditions": conditions})
            self._telemetry.api_writes.labels("status").inc()
        except KubeError as exc:
            log.warning("status not written", extra={"object": f"{ns}/{name}", "error": str(exc)})
        await self._events.emit(
            InvolvedObject("keda.sh/v1alpha1", "ScaledObject", ns, name, uid),
            "Warning",
            "ScaledObjectCheckFailed",
            message,
        )

    async def report_invalid_runtime(self, rt: ObjectRuntime, problem: TidalError) -> None:
        so = rt.so
        if rt.polls == 1 or rt.polls % self._failing_log_every == 0:
            log.warning(
                "ScaledObject not ready",
                extra={"object": f"{so.namespace}/{so.name}", "error": str(problem)},
            )
        if not self._may_write():
            return
        message = f"ScaledObject doesn't have correct spec: {problem}"
        status = base_status(so, rt.target, [])
        status["conditions"] = check_failed_conditions(message, so.flags.paused)
        if status_changed(status, rt.written.last_status):
            try:
                await self.write_status(rt, status)
            except KubeError as exc:
                log.warning(
                    "status not written",
                    extra={"object": f"{so.namespace}/{so.name}", "error": str(exc)},
                )
            await self._events.emit(involved(so), "Warning", "ScaledObjectCheckFailed", message)
