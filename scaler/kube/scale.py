"""The /scale subresource: read replicas, write them with one conditional merge-PATCH."""

from __future__ import annotations

from dataclasses import dataclass

from scaler.kube.client import KubeClient
from scaler.kube.paths import GVKR, namespaced


@dataclass(frozen=True, slots=True)
class ScaleState:
    replicas: int  # spec.replicas
    status_replicas: int
    selector: str
    resource_version: str


def scale_path(target: GVKR, namespace: str, name: str) -> str:
    return namespaced(target.group, target.version, target.resource, namespace, name) + "/scale"


async def get_scale(kube: KubeClient, target: GVKR, namespace: str, name: str) -> ScaleState:
    body = await kube.get(scale_path(target, namespace, name))
    return ScaleState(
        replicas=int(body.get("spec", {}).get("replicas", 0) or 0),
        status_replicas=int(body.get("status", {}).get("replicas", 0) or 0),
        selector=str(body.get("status", {}).get("selector", "")),
        resource_version=str(body.get("metadata", {}).get("resourceVersion", "")),
    )


async def set_replicas(
    kube: KubeClient,
    target: GVKR,
    namespace: str,
    name: str,
    replicas: int,
    *,
    resource_version: str | None = None,
) -> ScaleState:
    """One merge-PATCH; with `resource_version` the write fails (409) if the scale moved."""
    body: dict[str, object] = {"spec": {"replicas": replicas}}
    if resource_version:
        body["metadata"] = {"resourceVersion": resource_version}
    out = await kube.merge_patch(scale_path(target, namespace, name), body)
    return ScaleState(
        replicas=int(out.get("spec", {}).get("replicas", 0) or 0),
        status_replicas=int(out.get("status", {}).get("replicas", 0) or 0),
        selector=str(out.get("status", {}).get("selector", "")),
        resource_version=str(out.get("metadata", {}).get("resourceVersion", "")),
    )
