"""Reads of Secrets, ConfigMaps and the aggregator's trust ConfigMap."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Literal

from scaler.errors import KubeError
from scaler.kube.client import KubeClient
from scaler.kube.paths import namespaced

EXTENSION_AUTH = namespaced(
    "", "v1", "configmaps", "kube-system", "extension-apiserver-authentication"
)


async def fetch_data(
    kube: KubeClient, kind: Literal["Secret", "ConfigMap"], namespace: str, name: str
) -> dict[str, str] | None:
    """The decoded `data` of a Secret or ConfigMap, or None when it does not exist."""
    resource = "secrets" if kind == "Secret" else "configmaps"
    body = await kube.get_or_none(namespaced("", "v1", resource, namespace, name))
    if body is None:
        return None
    data: dict[str, Any] = dict(body.get("data") or {})
    if kind == "ConfigMap":
        return {str(k): str(v) for k, v in data.items()}
    out: dict[str, str] = {}
    for k, v in data.items():
        try:
            out[str(k)] = base64.b64decode(str(v)).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise KubeError(f"Secret {namespace}/{name} key {k} is not valid base64 text") from exc
    for k, v in dict(body.get("stringData") or {}).items():
        out[str(k)] = str(v)
    return out


async def fetch_requestheader_trust(kube: KubeClient) -> tuple[str, frozenset[str]] | None:
    """(requestheader CA PEM, allowed CNs) published by kube-apiserver for extension servers."""
    body = await kube.get_or_none(EXTENSION_AUTH)
    if body is None:
        return None
    data = body.get("data") or {}
    ca = str(data.get("requestheader-client-ca-file", ""))
    if not ca:
        return None
    try:
        names = frozenset(str(n) for n in json.loads(data.get("requestheader-allowed-names", "[]")))
    except ValueError:
        names = frozenset()
    return ca, names
