"""KEDA's finalizer on ScaledObjects: added on the first actuation, and on deletion the
`restoreToOriginalReplicaCount` restore, the finalizer's removal and a `ScaledObjectDeleted`
Event. Both list edits are conditional, so another controller's finalizer is never lost."""

from __future__ import annotations

import asyncio
import logging

from scaler.errors import KubeError
from scaler.kube.client import JSON, KubeClient
from scaler.kube.events import EventRecorder, InvolvedObject
from scaler.kube.paths import GVKR, scaled_objects
from scaler.kube.scale import set_replicas
from scaler.objects import ScaledObject
from scaler.telemetry import Telemetry

log = logging.getLogger(__name__)

FINALIZER = "finalizer.keda.sh"
Key = tuple[str, str]


def involved(so: ScaledObject) -> InvolvedObject:
    """The ScaledObject as the subject of an Event."""
    return InvolvedObject("keda.sh/v1alpha1", "ScaledObject", so.namespace, so.name, so.uid)


class Finalizers:
    def __init__(self, kube: KubeClient, telemetry: Telemetry, events: EventRecorder) -> None:
        self._kube = kube
        self._telemetry = telemetry
        self._events = events

    async def add(self, so: ScaledObject, seen: tuple[str, ...] | None = None) -> None:
        """Add ours, conditional on the resourceVersion (a concurrent edit → 409). With `seen`,
        the finalizers of the watch event `so` was parsed from: patched from them and
        `so.resource_version` without a read first; when the object changed since (409), read
        it and patch again."""
        if seen is not None and so.resource_version:
            try:
                await self._patch(so, list(seen), so.resource_version)
                return
            except KubeError as exc:
                if exc.status != 409:
                    raise
        body = await self._kube.get(scaled_objects(so.namespace, so.name))
        finalizers = list(body.get("metadata", {}).get("finalizers") or [])
        if FINALIZER in finalizers:
            return
        await self._patch(so, finalizers, body["metadata"]["resourceVersion"])

    async def _patch(self, so: ScaledObject, finalizers: list[str], rv: str) -> None:
        await self._kube.merge_patch(
            scaled_objects(so.namespace, so.name),
            {"metadata": {"finalizers": [*finalizers, FINALIZER], "resourceVersion": rv}},
        )
        self._telemetry.api_writes.labels("scaledobject").inc()

    async def finalize(self, key: Key, raw: JSON, so: ScaledObject | None) -> None:
        """A ScaledObject being deleted (the leader only): restore the original replica count
        when asked, drop our finalizer, say so in an Event. A failure is logged; the next change
        of the object retries."""
        meta = raw.get("metadata", {})
        if FINALIZER not in list(meta.get("finalizers") or []):
            return
        try:
            spec = raw.get("spec", {})
            status = raw.get("status") or {}
            restore = (spec.get("advanced") or {}).get("restoreToOriginalReplicaCount") is True
            original = status.get("originalReplicaCount")
            gvkr = status.get("scaleTargetGVKR") or {}
            if restore and isinstance(original, int) and gvkr.get("resource"):
                target = GVKR(
                    gvkr.get("group", ""), gvkr["version"], gvkr["kind"], gvkr["resource"]
                )
                name = (spec.get("scaleTargetRef") or {}).get("name", "")
                await set_replicas(self._kube, target, key[0], name, original)
                log.info(
                    "restored original replicas",
                    extra={"object": f"{key[0]}/{key[1]}", "replicas": original},
                )
            await self.remove(key)
            if so is not None:
                await self._events.emit(
                    involved(so), "Normal", "ScaledObjectDeleted", "ScaledObject was deleted"
                )
        except KubeError as exc:
            log.warning(
                "finalizer not removed; retried on the next change of the object",
                extra={"object": f"{key[0]}/{key[1]}", "error": str(exc)},
            )

    async def remove(self, key: Key, attempts: int = 5) -> None:
        """Drop our finalizer with a JSON patch that first tests its position, so a concurrent
        change to the list (another controller's finalizer) is never overwritten; re-read and
        retry on conflict."""
        path = scaled_objects(*key)
        for attempt in range(attempts):
            body = await self._kube.get_or_none(path)
            if body is None:
                return
            finalizers = list(body.get("metadata", {}).get("finalizers") or [])
            if FINALIZER not in finalizers:
                return
            i = finalizers.index(FINALIZER)
            try:
                await self._kube.json_patch(
                    path,
                    [
                        {"op": "test", "path": f"/metadata/finalizers/{i}", "value": FINALIZER},
                        {"op": "remove", "path": f"/metadata/finalizers/{i}"},
                    ],
                )
                self._telemetry.api_writes.labels("scaledobject").inc()
                return
            except KubeError as exc:
                if exc.status not in (409, 422) or attempt == attempts - 1:
                    raise
            await asyncio.sleep(0.1 * (attempt + 1))
