"""Kubernetes Events about ScaledObjects, KEDA-style, deduplicated like client-go's recorder."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Collection
from dataclasses import dataclass

from scaler.errors import KubeError
from scaler.kube.client import KubeClient
from scaler.kube.paths import events

log = logging.getLogger(__name__)

COMPONENT = "tidal"


@dataclass(frozen=True, slots=True)
class InvolvedObject:
    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str


def _now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class EventRecorder:
    """Creates Events; a repeat of the same (object, type, reason, message) bumps `count`."""

    def __init__(self, kube: KubeClient, instance: str) -> None:
        self._kube = kube
        self._instance = instance
        self._seen: dict[tuple[str, str, str, str], tuple[str, int]] = {}

    async def emit(self, obj: InvolvedObject, type_: str, reason: str, message: str) -> None:
        """Best effort: a failed Event is logged, never raised (it must not block scaling)."""
        key = (obj.uid, type_, reason, message)
        now = _now_rfc3339()
        try:
            seen = self._seen.get(key)
            if seen is not None:
                name, count = seen
                try:
                    await self._kube.merge_patch(
                        f"{events(obj.namespace)}/{name}",
                        {"count": count + 1, "lastTimestamp": now},
                    )
                    self._seen[key] = (name, count + 1)
                    return
                except KubeError as exc:
                    if exc.status != 404:
                        raise
            name = f"{obj.name}.{secrets.token_hex(8)}"
            await self._kube.create(
                events(obj.namespace),
                {
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": {"name": name, "namespace": obj.namespace},
                    "involvedObject": {
                        "apiVersion": obj.api_version,
                        "kind": obj.kind,
                        "namespace": obj.namespace,
                        "name": obj.name,
                        "uid": obj.uid,
                    },
                    "type": type_,
                    "reason": reason,
                    "message": message,
                    "count": 1,
                    "firstTimestamp": now,
                    "lastTimestamp": now,
                    "source": {"component": COMPONENT},
                    "reportingComponent": COMPONENT,
                    "reportingInstance": self._instance,
                },
            )
            if len(self._seen) > 10_000:
                self._seen.clear()
            self._seen[key] = (name, 1)
        except KubeError as exc:
            log.warning(
                "event not recorded",
                extra={
                    "object": f"{obj.namespace}/{obj.name}",
                    "reason": reason,
                    "error": str(exc),
                },
            )

    def forget(self, uids: Collection[str]) -> None:
        """Drop what was recorded for these objects (one pass, however many)."""
        for key in [k for k in self._seen if k[0] in uids]:
            del self._seen[key]
