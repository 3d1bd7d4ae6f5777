"""The metrics API server on a real TLS socket: answers, errors and client-certificate trust.

The store is replaced by a small in-memory MetricSource: these tests are about the HTTP and TLS
boundary; the daemon's store is exercised by the e2e tests through the real aggregator.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from localenv.certs import CertKey, extension_server_certs, issue, new_ca
from metrics_api.server import serve_metrics_api
from metrics_api.source import MetricNotFound, MetricReading, MetricUnavailable
from metrics_api.tls import ClientTrust, TlsManager

PREFIX = "/apis/external.metrics.k8s.io/v1beta1"
SEL = "labelSelector=scaledobject.keda.sh/name%3Dweb"


class FixedSource:
    def __init__(self) -> None:
        self.values = {("ns", "s0-redis-jobs", "web"): MetricReading(2.5, 1_700_000_000.0)}
        self.failing = {("ns", "s1-kafka-orders", "web")}

    def read(self, namespace: str, metric: str, scaled_object: str) -> MetricReading:
        key = (namespace, metric, scaled_object)
        if key in self.failing:
            raise MetricUnavailable("broker down: password=hunter2")
        if key not in self.values:
            raise MetricNotFound(metric)
        return self.values[key]

    def ready(self) -> bool:
        return True


@dataclass
class Server:
    port: int
    server_ca: bytes
    client_ca: CertKey
    tls: TlsManager
    registry: CollectorRegistry
    tmp: Path

    def client_ctx(self, cn: str | None, ca: CertKey | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cadata=self.server_ca.decode())
        if cn is not None:
            cert = issue(ca or self.client_ca, cn, client=True)
            crt, key = self.tmp / f"{cn}.crt", self.tmp / f"{cn}.key"
            crt.write_bytes(cert.cert_pem)
            key.write_bytes(cert.key_pem)
            ctx.load_cert_chain(crt, key)
        return ctx


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    certs = extension_server_certs(["tidal-metrics.tidal-system.svc"])
    crt, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    crt.write_bytes(certs.serving.cert_pem)
    key.write_bytes(certs.serving.key_pem)
    client_ca = new_ca("front-proxy-ca")
    registry = CollectorRegistry()
    trust = ClientTrust(client_ca.cert_pem.decode(), frozenset({"front-proxy-client"}))
    async with serve_metrics_api(
        FixedSource(), registry, "127.0.0.1:0", cert_file=str(crt), key_file=str(key), trust=trust
    ) as (tls, port):
        yield Server(port, certs.ca.cert_pem, client_ca, tls, registry, tmp_path)


async def _get(srv: Server, path: str, ctx: ssl.SSLContext) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"https://localhost:{srv.port}{path}", ssl=ctx) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def test_value_is_served_as_milli_quantity_with_observed_time(server: Server) -> None:
    status, body = await _get(
        server,
        f"{PREFIX}/namespaces/ns/s0-redis-jobs?{SEL}",
        server.client_ctx("front-proxy-client"),
    )
    assert status == 200
    assert body["items"] == [
        {
            "metricName": "s0-redis-jobs",
            "metricLabels": {},
            "timestamp": "2023-11-14T22:13:20Z",
            "value": "2500m",
        }
    ]


@pytest.mark.parametrize(
    ("path", "code", "reason"),
    [
        pytest.param(f"{PREFIX}/namespaces/ns/s9-nope?{SEL}", 404, "NotFound", id="unknown-metric"),
        pytest.param(
            f"{PREFIX}/namespaces/ns/s0-redis-jobs?labelSelector=a%3D(",
            400,
            "BadRequest",
            id="bad-selector",
        ),
        pytest.param(
            f"{PREFIX}/namespaces/ns/s0-redis-jobs", 400, "BadRequest", id="no-object-in-selector"
        ),
        pytest.param(
            f"{PREFIX}/namespaces/ns/s1-kafka-orders?{SEL}",
            500,
            "InternalError",
            id="failing-trigger",
        ),
    ],
)
async def test_errors_are_metav1_status(server: Server, path: str, code: int, reason: str) -> None:
    status, body = await _get(server, path, server.client_ctx("front-proxy-client"))
    assert status == code
    assert body["kind"] == "Status"
    assert body["code"] == code
    assert body["reason"] == reason
    assert "hunter2" not in str(body)  # details only in logs, never in the answer


@pytest.mark.parametrize(
    ("cn", "code"),
    [
        pytest.param("front-proxy-client", 200, id="aggregator-cert"),
        pytest.param("someone-else", 401, id="cn-not-allowed"),
        pytest.param(None, 401, id="no-client-cert"),
    ],
)
async def test_only_the_aggregator_may_call(server: Server, cn: str | None, code: int) -> None:
    status, _ = await _get(server, PREFIX, server.client_ctx(cn))
    assert status == code


async def test_cert_from_another_ca_is_rejected_in_the_handshake(server: Server) -> None:
    ctx = server.client_ctx("front-proxy-client", ca=new_ca("rogue"))
    with pytest.raises(aiohttp.ClientError):
        await _get(server, PREFIX, ctx)


async def test_client_ca_reload_takes_effect_for_new_connections(server: Server) -> None:
    new = new_ca("rotated-front-proxy-ca")
    server.tls.set_trust(ClientTrust(new.cert_pem.decode(), frozenset({"front-proxy-client"})))
    status, _ = await _get(server, PREFIX, server.client_ctx("front-proxy-client", ca=new))
    assert status == 200
    with pytest.raises(aiohttp.ClientError):
        await _get(server, PREFIX, server.client_ctx("front-proxy-client"))


async def test_health_is_open_and_requests_are_counted(server: Server) -> None:
    status, _ = await _get(
        server,
        f"{PREFIX}/namespaces/ns/s0-redis-jobs?{SEL}",
        server.client_ctx("front-proxy-client"),
    )
    assert status == 200
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"https://localhost:{server.port}/healthz", ssl=server.client_ctx(None)) as resp,
    ):
        assert resp.status == 200
    count = server.registry.get_sample_value("tidal_metrics_api_requests_total", {"code": "200"})
    assert count is not None
    assert count >= 2
