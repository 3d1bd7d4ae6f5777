"""API paths of the resources Tidal reads and writes, and kind → resource discovery."""

from __future__ import annotations

from dataclasses import dataclass

from scaler.errors import ConfigError, KubeError
from scaler.kube.client import KubeClient
from scaler.values import group_version_string, gvk_string, parse_gvk

KEDA_GROUP = "keda.sh"
KEDA_VERSION = "v1alpha1"


@dataclass(frozen=True, slots=True)
class GVKR:
    """Group, version, kind and plural resource of a scale target."""

    group: str
    version: str
    kind: str
    resource: str

    @property
    def api_version(self) -> str:
        return group_version_string(self.group, self.version)

    @property
    def gvk_string(self) -> str:
        """KEDA's GVKString(): ``apps/v1.Deployment``."""
        return gvk_string(self.group, self.version, self.kind)


def api_prefix(group: str, version: str) -> str:
    return f"/apis/{group}/{version}" if group else f"/api/{version}"


def namespaced(group: str, version: str, resource: str, namespace: str, name: str = "") -> str:
    path = f"{api_prefix(group, version)}/namespaces/{namespace}/{resource}"
    return f"{path}/{name}" if name else path


def scaled_objects(namespace: str | None = None, name: str = "") -> str:
    if namespace is None:
        return f"{api_prefix(KEDA_GROUP, KEDA_VERSION)}/scaledobjects"
    return namespaced(KEDA_GROUP, KEDA_VERSION, "scaledobjects", namespace, name)


def hpa(namespace: str, name: str = "") -> str:
    return namespaced("autoscaling", "v2", "horizontalpodautoscalers", namespace, name)


def events(namespace: str) -> str:
    return namespaced("", "v1", "events", namespace)


_WELL_KNOWN = {
    ("apps", "Deployment"): "deployments",
    ("apps", "StatefulSet"): "statefulsets",
    ("apps", "ReplicaSet"): "replicasets",
}


class ResourceMapper:
    """Maps (group, version, kind) to the plural resource through API discovery, cached."""

    def __init__(self, kube: KubeClient) -> None:
        self._kube = kube
        self._cache: dict[tuple[str, str, str], str] = {}

    async def resolve(self, api_version: str, kind: str) -> GVKR:
        """KEDA's ParseGVKR: the defaults of `parse_gvk`, then the plural resource."""
        try:
            group, version, kind = parse_gvk(api_version, kind)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        known = _WELL_KNOWN.get((group, kind))
        if known:
            return GVKR(group, version, kind, known)
        key = (group, version, kind)
        if key not in self._cache:
            body = await self._kube.get(api_prefix(group, version))
            for res in body.get("resources", []):
                if res.get("kind") == kind and "/" not in str(res.get("name", "")):
                    self._cache[key] = str(res["name"])
                    break
            else:
                raise KubeError(f"no resource of kind {kind} in {api_version}", 404)
        return GVKR(group, version, kind, self._cache[key])
