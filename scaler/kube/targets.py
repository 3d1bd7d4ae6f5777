"""Replica counts of scale targets, kept current by watches (no GET per poll).

Deployments and StatefulSets are watched (raw JSON reduced to replicas and the containers' env
references); any other kind with a /scale subresource is read through /scale when polled.
"""

from __future__ import annotations

from scaler.errors import KubeError
from scaler.kube.client import JSON, KubeClient
from scaler.kube.paths import GVKR
from scaler.kube.scale import get_scale
from scaler.kube.watch import EventType, Watcher

WATCHED = (("apps", "deployments"), ("apps", "statefulsets"))


def _keep(obj: JSON) -> JSON:
    meta = obj.get("metadata", {})
    pod = obj.get("spec", {}).get("template", {}).get("spec", {})
    containers = [
        {"name": c.get("name"), "env": c.get("env", []), "envFrom": c.get("envFrom", [])}
        for c in pod.get("containers", [])
    ]
    replicas = obj.get("spec", {}).get("replicas")
    return {
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "replicas": 1 if replicas is None else int(replicas),
        "containers": containers,
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

    async def replicas(self, target: GVKR, namespace: str, name: str) -> int | None:
        """Current spec.replicas, or None when the target does not exist."""
        watcher = self.watchers.get((target.group, target.resource))
        if watcher is not None and watcher.synced.is_set():
            obj = watcher.objects.get((namespace, name))
            return None if obj is None else int(obj["replicas"])
        try:
            return (await get_scale(self._kube, target, namespace, name)).replicas
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def note_written(self, target: GVKR, namespace: str, name: str, replicas: int) -> None:
        """Record our own write at once, so the next poll doesn't act on a stale count."""
        watcher = self.watchers.get((target.group, target.resource))
        if watcher is not None:
            obj = watcher.objects.get((namespace, name))
            if obj is not None:
                watcher.objects[(namespace, name)] = {**obj, "replicas": replicas}

    def containers(self, target: GVKR, namespace: str, name: str) -> list[JSON] | None:
        """The target's containers (name, env, envFrom) for *FromEnv resolution, when watched."""
        watcher = self.watchers.get((target.group, target.resource))
        obj = None if watcher is None else watcher.objects.get((namespace, name))
        return None if obj is None else list(obj["containers"])
