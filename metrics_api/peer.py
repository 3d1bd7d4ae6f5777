"""Replicas reading each other's metrics (`--shards auto`), over mutual TLS with Tidal's own CA.

The aggregator sends a metrics API request to any replica. The one that owns the object answers
from its store; any other forwards the read to the owner's peer listener (`PeerClient`) and
relays the answer, so no replica polls a broker for an object it does not own. The peer
listener is its own HTTPS port, separate from the metrics API: it accepts only client
certificates signed by the CA in Tidal's certificate Secret with the common name `PEER_CN`
(each replica issues itself one at start and whenever the CA changes), and it answers only
for objects its replica owns (421 otherwise: ownership moved while the request travelled; the
HPA asks again at its next sync).
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from metrics_api.source import (
    MetricElsewhere,
    MetricNotFound,
    MetricReading,
    MetricSource,
    MetricUnavailable,
)
from metrics_api.tls import peer_common_name

log = logging.getLogger(__name__)

PEER_CN = "tidal-peer"
PREFIX = "/peer/v1"
TIMEOUT = 2.0  # seconds for one forwarded read (the aggregator gives the whole request ~30 s)
SOURCE_KEY = web.AppKey("peer-source", MetricSource)


@dataclass(frozen=True, slots=True)
class PeerCredentials:
    ca_bundle: str  # PEM: the CA(s) that sign every replica's certificates
    server_cert: Path
    server_key: Path
    client_cert: Path  # common name PEER_CN
    client_key: Path
    server_name: str  # a DNS name in the serving certificate: what a client checks


class PeerTls:
    """The peer listener's and the peer client's TLS contexts, replaced on `update` (a new
    serving certificate or CA); open connections keep theirs, new handshakes use the new."""

    def __init__(self, credentials: PeerCredentials) -> None:
        self.credentials = credentials
        self.server, self.client = self._build(credentials)
        self.outer = self._server_context(credentials)
        self.outer.sni_callback = self._select

    @staticmethod
    def _server_context(c: PeerCredentials) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(c.server_cert, c.server_key)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=c.ca_bundle)
        return ctx

    def _build(self, c: PeerCredentials) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.minimum_version = ssl.TLSVersion.TLSv1_2
        client.load_verify_locations(cadata=c.ca_bundle)
        client.load_cert_chain(c.client_cert, c.client_key)
        return self._server_context(c), client

    def _select(self, sslobj: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        sslobj.context = self.server

    def update(self, credentials: PeerCredentials) -> None:
        if credentials != self.credentials:
            self.server, self.client = self._build(credentials)
            self.credentials = credentials
            log.info("peer certificates reloaded")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def only_peers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The CA check happened in the handshake; the name tells a peer from the serving cert."""
    peercert = request.transport.get_extra_info("peercert") if request.transport else None
    if peer_common_name(peercert) != PEER_CN:
        return web.json_response({"reason": "Unauthorized"}, status=401)
    return await handler(request)


async def peer_metric(request: web.Request) -> web.Response:
    m = request.match_info
    try:
        r = request.app[SOURCE_KEY].read(m["namespace"], m["metric"], m["name"])
    except MetricElsewhere as exc:
        return web.json_response({"reason": "NotOwner", "message": str(exc)}, status=421)
    except MetricNotFound as exc:
        return web.json_response({"reason": "NotFound", "message": str(exc)}, status=404)
    except MetricUnavailable as exc:
        return web.json_response({"reason": "Unavailable", "message": str(exc)}, status=503)
    return web.json_response({"value": r.value, "observedAt": r.observed_at})


def make_peer_app(source: MetricSource) -> web.Application:
    app = web.Application(middlewares=[only_peers])
    app[SOURCE_KEY] = source
    app.router.add_get(
        PREFIX + "/namespaces/{namespace}/scaledobjects/{name}/metrics/{metric:[^/]+}",
        peer_metric,
    )
    return app


@contextlib.asynccontextmanager
async def serve_peers(source: MetricSource, address: str, tls: PeerTls) -> AsyncIterator[int]:
    """The peer listener until the context exits; yields the bound port."""
    runner = web.AppRunner(make_peer_app(source), access_log=None, handle_signals=False)
    await runner.setup()
    host, _, port = address.rpartition(":")
    site = web.TCPSite(runner, host.strip("[]") or "0.0.0.0", int(port), ssl_context=tls.outer)
    await site.start()
    bound = int(runner.addresses[0][1]) if runner.addresses else int(port)
    log.info("peer listener started", extra={"address": f"{host}:{bound}"})
    try:
        yield bound
    finally:
        await runner.cleanup()


class PeerClient:
    """Reads a metric from the replica that owns the object (metrics_api.source.PeerReader)."""

    def __init__(
        self, tls: PeerTls, registry: CollectorRegistry, *, timeout: float = TIMEOUT
    ) -> None:
        self._tls = tls
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self.forwarded = Counter(
            "tidal_metrics_api_forwarded_total",
            "Metrics API reads forwarded to the replica that owns the object, by result",
            ["result"],
            registry=registry,
        )

    async def read_from(
        self, owner: MetricElsewhere, namespace: str, metric: str, scaled_object: str
    ) -> MetricReading:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit_per_host=16, keepalive_timeout=60)
            )
        url = (
            f"https://{owner.address}{PREFIX}/namespaces/{quote(namespace, safe='')}"
            f"/scaledobjects/{quote(scaled_object, safe='')}/metrics/{quote(metric, safe='')}"
        )
        try:
            async with self._session.get(
                url,
                ssl=self._tls.client,
                server_hostname=self._tls.credentials.server_name,
                timeout=self._timeout,
            ) as resp:
                body = await resp.json(content_type=None)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.forwarded.labels("unreachable").inc()
            raise MetricUnavailable(
                f"replica {owner.identity} at {owner.address}, which owns the object, did not "
                f"answer: {exc.__class__.__name__}: {exc}"
            ) from exc
        if status == 200:
            self.forwarded.labels("ok").inc()
            return MetricReading(float(body["value"]), float(body["observedAt"]))
        self.forwarded.labels(str(status)).inc()
        message = str(body.get("message") or body.get("reason") or status)
        if status == 404:
            raise MetricNotFound(message)
        raise MetricUnavailable(f"replica {owner.identity}: {message}")

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
