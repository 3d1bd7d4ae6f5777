"""Helpers for the serving-certificate and metrics-authorization e2e tests: what certificate a
port serves, the managed Secret's contents, an APIService without a caBundle, a client
certificate for a user of the test's choosing."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from localenv.certs import CertKey, issue
from localenv.controlplane import ControlPlane

GROUP, VERSION = "external.metrics.k8s.io", "v1beta1"
APISERVICE = f"{VERSION}.{GROUP}"
SERVICE_NS, SERVICE = "tidal-system", "tidal-metrics"  # ExternalName -> localhost


async def served_cert(port: int) -> bytes:
    """The DER certificate a TLS server on 127.0.0.1:`port` presents to a new connection."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    try:
        return bytes(writer.get_extra_info("ssl_object").getpeercert(binary_form=True))
    finally:
        writer.close()


def secret_data(plane: ControlPlane, namespace: str, name: str) -> dict[str, str]:
    body = plane.request("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")
    return {k: base64.b64decode(v).decode() for k, v in (body.get("data") or {}).items()}


def pem_to_der(pem: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem)


def loopback_service(plane: ControlPlane, namespace: str, name: str) -> None:
    """A Service `type: ExternalName, externalName: localhost` (and its namespace): how
    kube-apiserver reaches Tidal on loopback, for an APIService or a webhook."""
    plane.apply(
        f"/api/v1/namespaces/{namespace}",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
    )
    plane.apply(
        f"/api/v1/namespaces/{namespace}/services/{name}",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"type": "ExternalName", "externalName": "localhost"},
        },
    )


def create_apiservice_without_ca(plane: ControlPlane, port: int) -> None:
    """The chart's APIService as installed: pointing at the Service, no caBundle (Tidal fills
    it in), no insecureSkipTLSVerify."""
    loopback_service(plane, SERVICE_NS, SERVICE)
    plane.delete(f"/apis/apiregistration.k8s.io/v1/apiservices/{APISERVICE}")
    plane.request(
        "POST",
        "/apis/apiregistration.k8s.io/v1/apiservices",
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": APISERVICE},
            "spec": {
                "group": GROUP,
                "version": VERSION,
                "service": {"name": SERVICE, "namespace": SERVICE_NS, "port": port},
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        },
    )


def apiservice(plane: ControlPlane) -> dict[str, Any]:
    return dict(plane.request("GET", f"/apis/apiregistration.k8s.io/v1/apiservices/{APISERVICE}"))


def user_context(
    plane: ControlPlane, tmp: Path, name: str, groups: tuple[str, ...] = ()
) -> ssl.SSLContext:
    """A client TLS context that authenticates to kube-apiserver as `name` in `groups` (no
    system:masters: what RBAC grants it is what it gets)."""
    assert plane.certs is not None
    ca = CertKey(plane.certs.ca_crt.read_bytes(), plane.certs.ca_key.read_bytes())
    crt, key = issue(ca, name, organizations=groups, client=True).write(tmp, f"user-{name}")
    ctx = ssl.create_default_context(cafile=str(plane.ca_path))
    ctx.load_cert_chain(crt, key)
    return ctx


def get_as(plane: ControlPlane, ctx: ssl.SSLContext, path: str) -> tuple[int, dict[str, Any]]:
    """GET `path` from kube-apiserver with the client context; (status, decoded body)."""
    req = urllib.request.Request(plane.server + path, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30, context=ctx) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
