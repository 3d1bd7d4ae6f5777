"""The managed serving certificate's Kubernetes objects: its Secret and the APIService's caBundle.

The Secret is the source of truth every replica shares: a create that loses the race (409) and
an update with a stale resourceVersion (409) both answer None, and the caller re-reads what the
other replica wrote. `watch_changes` yields whenever the Secret may have changed; callers GET it
then, so a missed or reordered event only costs a re-read.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from scaler.errors import KubeError
from scaler.kube.client import JSON, KubeClient
from scaler.kube.paths import namespaced

APISERVICES = "/apis/apiregistration.k8s.io/v1/apiservices"
WEBHOOK_CONFIGURATIONS = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
MANAGED_BY = {"app.kubernetes.io/managed-by": "tidal"}


@dataclass(frozen=True, slots=True, repr=False)
class StoredSecret:
    """The Secret's decoded data and resourceVersion ("" when it does not exist)."""

    data: dict[str, str]
    resource_version: str
    body: JSON = field(default_factory=dict)  # as read: an update keeps its metadata and type

    @property
    def exists(self) -> bool:
        return bool(self.resource_version)


def _path(namespace: str, name: str = "") -> str:
    return namespaced("", "v1", "secrets", namespace, name)


def _decode(body: JSON) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in dict(body.get("data") or {}).items():
        try:
            out[str(key)] = base64.b64decode(str(value)).decode()
        except (binascii.Error, UnicodeDecodeError):
            out[str(key)] = ""  # unusable: the planner treats the material as invalid
    return out


def _encode(data: dict[str, str]) -> dict[str, str]:
    return {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}


def _stored(body: JSON) -> StoredSecret:
    return StoredSecret(_decode(body), str(body["metadata"]["resourceVersion"]), body)


async def read_secret(kube: KubeClient, namespace: str, name: str) -> StoredSecret:
    body = await kube.get_or_none(_path(namespace, name))
    return StoredSecret({}, "") if body is None else _stored(body)


async def create_secret(
    kube: KubeClient, namespace: str, name: str, data: dict[str, str]
) -> StoredSecret | None:
    """Creates the Secret; None when another replica created it first."""
    body: JSON = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(MANAGED_BY)},
        "type": "kubernetes.io/tls",
        "data": _encode(data),
    }
    try:
        return _stored(await kube.create(_path(namespace), body))
    except KubeError as exc:
        if exc.status == 409:
            return None
        raise


async def update_secret(
    kube: KubeClient, current: StoredSecret, data: dict[str, str]
) -> StoredSecret | None:
    """Replaces the data of the Secret as read in `current` (its resourceVersion guards the
    write); None when someone changed it since."""
    body: dict[str, Any] = dict(current.body)
    body["data"] = _encode(data)
    body.pop("stringData", None)
    meta = body["metadata"]
    try:
        return _stored(await kube.replace(_path(meta["namespace"], meta["name"]), body))
    except KubeError as exc:
        if exc.status in (404, 409):
            return None
        raise


async def watch_changes(
    kube: KubeClient, namespace: str, name: str, resource_version: str, *, timeout: int = 300
) -> AsyncIterator[str]:
    """Yields a resourceVersion each time the Secret is added, modified or deleted, until the
    server ends the watch (after `timeout` s); raises KubeError (410 when too old)."""
    query: dict[str, str | int] = {
        "watch": "1",
        "fieldSelector": f"metadata.name={name}",
        "timeoutSeconds": timeout,
        "allowWatchBookmarks": "true",
    }
    if resource_version:
        query["resourceVersion"] = resource_version
    async for event in kube.watch_lines(_path(namespace), query, timeout=timeout + 30):
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            raise KubeError(
                f"watch of Secret {namespace}/{name}: {obj.get('message', '')}",
                int(obj.get("code") or 0) or None,
            )
        rv = str((obj.get("metadata") or {}).get("resourceVersion", ""))
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            yield rv


async def sync_ca_bundle(kube: KubeClient, apiservice: str, bundle_pem: str) -> bool:
    """Sets the APIService's spec.caBundle to `bundle_pem` (and drops insecureSkipTLSVerify,
    which the apiserver refuses alongside a caBundle); True when it had to change. Raises
    KubeError (404 when the APIService does not exist yet)."""
    path = f"{APISERVICES}/{apiservice}"
    body = await kube.get(path)
    spec = body.get("spec") or {}
    want = base64.b64encode(bundle_pem.encode()).decode()
    if spec.get("caBundle") == want and not spec.get("insecureSkipTLSVerify"):
        return False
    patch: JSON = {"spec": {"caBundle": want, "insecureSkipTLSVerify": None}}
    patch["metadata"] = {"resourceVersion": body["metadata"]["resourceVersion"]}
    await kube.merge_patch(path, patch)
    return True


async def sync_webhook_ca_bundle(kube: KubeClient, configuration: str, bundle_pem: str) -> bool:
    """Sets every webhook's clientConfig.caBundle of the ValidatingWebhookConfiguration to
    `bundle_pem`; True when it had to change. A PUT with the resourceVersion read (a list can't
    be merge-patched per element): a 409 means someone changed it meanwhile, and the next pass
    tries again. Raises KubeError (404 when it does not exist yet)."""
    path = f"{WEBHOOK_CONFIGURATIONS}/{configuration}"
    body = await kube.get(path)
    want = base64.b64encode(bundle_pem.encode()).decode()
    webhooks = body.get("webhooks") or []
    if all((w.get("clientConfig") or {}).get("caBundle") == want for w in webhooks):
        return False
    for w in webhooks:
        w.setdefault("clientConfig", {})["caBundle"] = want
    await kube.replace(path, body)
    return True
