"""Replica counts of scale targets, kept current by watches (no GET per poll).

Deployments and StatefulSets are watched (raw JSON reduced to replicas, ready replicas, the
resourceVersion, the containers' env references and cpu/memory requests); any other kind with a
/scale subresource is read through /scale when polled. The resourceVersion is what a downward
/scale write is made conditional on: a count the watch has not caught up with yet makes that
write fail (409), never lower replicas someone else just raised.
"""

from __future__ import annotations

from dataclasses import dataclass

from scaler.errors import KubeError
from scaler.kube.client import JSON, KubeClient
from scaler.kube.paths import GVKR
from scaler.kube.scale import ScaleState, get_scale
from scaler.kube.watch import EventType, Watcher


@dataclass(frozen=True, slots=True)
class TargetState:
    """What a poll decides from: the target's spec.replicas, as of `resource_version`."""

    replicas: int
    resource_version: str
    ready_replicas: int | None = None  # status.readyReplicas (None: unknown for this kind)


WATCHED = (("apps", "deployments"), ("apps", "statefulsets"))


def _keep(obj: JSON) -> JSON:
    meta = obj.get("metadata", {})
    pod = obj.get("spec", {}).get("template", {}).get("spec", {})
    containers = [
        {
            "name": c.get("name"),
            "env": c.get("env", []),
            "envFrom": c.get("envFrom", []),
            "resources": _cpu_memory(c.get("resources")),
        }
        for c in pod.get("containers", [])
    ]
    replicas = obj.get("spec", {}).get("replicas")
    ready = obj.get("status", {}).get("readyReplicas")
    return {
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "replicas": 1 if replicas is None else int(replicas),
        "ready": int(ready or 0),
        "containers": containers,
    }


def _cpu_memory(resources: object) -> JSON:
    """The cpu and memory requests and limits (the admission check of cpu/memory triggers)."""
    if not isinstance(resources, dict):
        return {}
    return {
        part: {k: v for k, v in values.items() if k in ("cpu", "memory")}
        for part in ("requests", "limits")
        if isinstance(values := resources.get(part), dict)
    }


async def _ignore(kind: EventType, obj: JSON) -> None:
    return None


class TargetCache:
    def __init__(self, kube: KubeClient, namespace: str = "") -> None:
        self._kube = kube
        ns_part = f"/namespaces/{namespace}" if namespace else ""
        self.watchers = {
            (group, resource): Watcher(
                kube, f"/apis/{group}/v1{ns_part}/{resource}", _ignore, keep=_keep, name=resource
            )
            for group, resource in WATCHED
        }

    async def state(self, target: GVKR, namespace: str, name: str) -> TargetState | None:
        """Current spec.replicas (with its resourceVersion), or None when the target does not
        exist."""
        watcher = self.watchers.get((target.group, target.resource))
        if watcher is not None and watcher.synced.is_set():
            obj = watcher.objects.get((namespace, name))
            if obj is None:
                return None
            rv = str(obj["metadata"].get("resourceVersion") or "")
            return TargetState(int(obj["replicas"]), rv, int(obj.get("ready", 0)))
        try:
            scale = await get_scale(self._kube, target, namespace, name)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return TargetState(scale.replicas, scale.resource_version)

    def note_written(self, target: GVKR, namespace: str, name: str, written: ScaleState) -> None:
        """Record our own write at once, so the next poll doesn't act on a stale count."""
        watcher = self.watchers.get((target.group, target.resource))
        if watcher is not None:
            obj = watcher.objects.get((namespace, name))
            if obj is not None:
                meta = {**obj["metadata"], "resourceVersion": written.resource_version}
                watcher.objects[(namespace, name)] = {
                    **obj,
                    "metadata": meta,
                    "replicas": written.replicas,
                }

    def containers(self, target: GVKR, namespace: str, name: str) -> list[JSON] | None:
        """The target's containers (name, env, envFrom, cpu/memory resources) for *FromEnv
        resolution and the admission check, when watched."""
        watcher = self.watchers.get((target.group, target.resource))
        obj = None if watcher is None else watcher.objects.get((namespace, name))
        return None if obj is None else list(obj["containers"])
