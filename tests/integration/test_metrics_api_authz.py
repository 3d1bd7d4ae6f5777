"""The metrics API on a real TLS socket with an authorizer (delegated authorization) and with
its serving certificate swapped at run time (the managed certificate's and cert-manager's path).

The authorizer is a small fake that records what it was asked: the SubjectAccessReview itself is
exercised against the real apiserver in tests/e2e/test_metrics_authz_e2e.py.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from localenv.certs import CertKey, extension_server_certs, issue, new_ca
from metrics_api.authz import Attributes, AuthorizationUnavailable, CachingAuthorizer, Decision
from metrics_api.pemfiles import PemDir
from metrics_api.server import serve_metrics_api
from metrics_api.source import MetricNotFound, MetricReading
from metrics_api.tls import ClientTrust, TlsManager

PREFIX = "/apis/external.metrics.k8s.io/v1beta1"
METRIC = f"{PREFIX}/namespaces/ns/s0-redis-jobs?labelSelector=scaledobject.keda.sh/name%3Dweb"


class OneValue:
    def read(self, namespace: str, metric: str, scaled_object: str) -> MetricReading:
        if (namespace, metric, scaled_object) != ("ns", "s0-redis-jobs", "web"):
            raise MetricNotFound(metric)
        return MetricReading(3.0, 1_700_000_000.0)

    def ready(self) -> bool:
        return True


class RecordingAuthorizer:
    def __init__(self) -> None:
        self.allowed = {"system:serviceaccount:kube-system:horizontal-pod-autoscaler"}
        self.asked: list[Attributes] = []
        self.down = False

    async def authorize(self, attributes: Attributes) -> Decision:
        self.asked.append(attributes)
        if self.down:
            raise AuthorizationUnavailable("connection refused")
        return Decision(attributes.user.name in self.allowed, "no RBAC rule")


@dataclass
class Api:
    port: int
    tls: TlsManager
    authorizer: RecordingAuthorizer
    server_ca: bytes
    client: ssl.SSLContext
    pem: PemDir


def _client_ctx(server_ca: bytes, client_ca: CertKey, tmp: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=server_ca.decode())
    cert = issue(client_ca, "front-proxy-client", client=True)
    crt, key = tmp / "fp.crt", tmp / "fp.key"
    crt.write_bytes(cert.cert_pem)
    key.write_bytes(cert.key_pem)
    ctx.load_cert_chain(crt, key)
    return ctx


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    certs = extension_server_certs(["tidal-metrics.tidal-system.svc"])
    pem = PemDir(tmp_path)
    crt, key = pem.write_pair(certs.serving.cert_pem.decode(), certs.serving.key_pem.decode())
    client_ca = new_ca("front-proxy-ca")
    trust = ClientTrust(client_ca.cert_pem.decode(), frozenset({"front-proxy-client"}))
    authorizer = RecordingAuthorizer()
    async with serve_metrics_api(
        OneValue(),
        CollectorRegistry(),
        "127.0.0.1:0",
        cert_file=str(crt),
        key_file=str(key),
        trust=trust,
        authorizer=CachingAuthorizer(authorizer, allow_ttl=0, deny_ttl=0),
    ) as (tls, port):
        ctx = _client_ctx(certs.ca.cert_pem, client_ca, tmp_path)
        yield Api(port, tls, authorizer, certs.ca.cert_pem, ctx, pem)


async def _get(
    api: Api, path: str, headers: dict[str, str], ctx: ssl.SSLContext | None = None
) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"https://localhost:{api.port}{path}",
            headers=headers,
            ssl=ctx or api.client,
            server_hostname="tidal-metrics.tidal-system.svc",
        ) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


HPA = {
    "X-Remote-User": "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
    "X-Remote-Group": "system:serviceaccounts",
}


async def test_an_allowed_user_gets_the_value_and_the_review_names_the_metric(api: Api) -> None:
    status, body = await _get(api, METRIC, HPA)
    assert status == 200
    assert body["items"][0]["value"] == "3"  # type: ignore[index]
    (asked,) = api.authorizer.asked
    assert (asked.verb, asked.group, asked.namespace, asked.resource) == (
        "list",
        "external.metrics.k8s.io",
        "ns",
        "s0-redis-jobs",
    )
    assert asked.user.groups == ("system:serviceaccounts",)


async def test_a_user_without_rbac_gets_403_as_a_kubernetes_status(api: Api) -> None:
    status, body = await _get(api, METRIC, {"X-Remote-User": "eve"})
    assert status == 403
    assert body["kind"] == "Status"
    assert body["reason"] == "Forbidden"
    assert body["code"] == 403
    assert 'User "eve" cannot list resource "s0-redis-jobs"' in str(body["message"])
    assert body["details"] == {"group": "external.metrics.k8s.io", "kind": "s0-redis-jobs"}


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/apis/external.metrics.k8s.io", id="group"),
        pytest.param(PREFIX, id="group-version"),
    ],
)
async def test_discovery_is_served_to_the_aggregator_without_a_review(api: Api, path: str) -> None:
    """kube-aggregator discovers the group as `system:kube-aggregator` with no groups: a denial
    makes discovery stale and every namespace deletion hangs."""
    status, body = await _get(api, path, {"X-Remote-User": "system:kube-aggregator"})
    assert status == 200
    assert body["kind"] in ("APIGroup", "APIResourceList")
    assert api.authorizer.asked == []


async def test_no_asserted_user_is_unauthorized(api: Api) -> None:
    status, body = await _get(api, METRIC, {})
    assert status == 401
    assert body["reason"] == "Unauthorized"
    assert api.authorizer.asked == []


async def test_an_authorizer_failure_is_a_500_never_an_allow(api: Api) -> None:
    api.authorizer.down = True
    status, body = await _get(api, METRIC, HPA)
    assert status == 500
    assert body["reason"] == "InternalError"
    assert "items" not in body


async def test_health_needs_no_authorization(api: Api) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"https://localhost:{api.port}/healthz",
            ssl=ssl.create_default_context(cadata=api.server_ca.decode()),
            server_hostname="tidal-metrics.tidal-system.svc",
        ) as resp,
    ):
        assert resp.status == 200
    assert api.authorizer.asked == []


async def _served_cert(api: Api) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    _, writer = await asyncio.open_connection("127.0.0.1", api.port, ssl=ctx)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
    return bytes(der)


async def test_a_new_serving_certificate_is_used_by_new_connections_at_once(api: Api) -> None:
    before = await _served_cert(api)
    certs = extension_server_certs(["tidal-metrics.tidal-system.svc"])
    crt, key = api.pem.write_pair(certs.serving.cert_pem.decode(), certs.serving.key_pem.decode())
    api.tls.use_files(crt, key)
    after = await _served_cert(api)
    assert after != before
    assert after == ssl.PEM_cert_to_DER_cert(certs.serving.cert_pem.decode())
    ctx = ssl.create_default_context(cadata=certs.ca.cert_pem.decode())
    ctx.load_cert_chain(*_client_files(api))
    status, _ = await _get(api, METRIC, HPA, ctx)
    assert status == 200


def _client_files(api: Api) -> tuple[Path, Path]:
    base = api.pem.path.parent
    return base / "fp.crt", base / "fp.key"


async def test_a_pair_that_does_not_load_keeps_the_current_certificate(api: Api) -> None:
    before = await _served_cert(api)
    other = extension_server_certs(["x"])
    crt, key = api.pem.write_pair(other.serving.cert_pem.decode(), "not a key")
    with pytest.raises(ssl.SSLError):
        api.tls.use_files(crt, key)
    assert await _served_cert(api) == before


async def test_files_renewed_in_place_are_reloaded(api: Api) -> None:
    """cert-manager's path (--tls-cert-file): the mounted files change; the reloader notices."""
    before = await _served_cert(api)
    certs = extension_server_certs(["tidal-metrics.tidal-system.svc"])
    api.pem.write(api.tls.cert_file.name, certs.serving.cert_pem.decode())
    api.pem.write(api.tls.key_file.name, certs.serving.key_pem.decode())
    assert api.tls.reload_if_changed()
    assert await _served_cert(api) != before
    assert not api.tls.reload_if_changed()
