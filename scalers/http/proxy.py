"""The interceptor's request path: route, hold while no backend is ready, forward, stream back.

A request whose route has a ready backend is forwarded at once (round robin over the backends,
kept-alive connections from one pool). One that has none is held: it counts as in flight from
its arrival, so the daemon hears of it at once through the push stream (`stats`), and it waits on
its namespace's change signal, which the backend watches fire the moment a pod or endpoint turns
ready. At most `max_held` requests wait per target (beyond that: 503 with ``Retry-After``); one
that waited its route's `wait` without a backend goes to the route's failover Service when it has
one, else gets 503 with ``Retry-After``. Forwarded answers of held requests carry
``X-Tidal-Cold-Start-Ms`` (milliseconds held).

Bodies stream both ways (a large upload is never buffered); WebSocket upgrades are proxied
frame by frame. A connection refused by a backend that just turned ready (its process not yet
listening) is retried on the next backend until the request's deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from scalers.http.backends import Address, BackendIndex
from scalers.http.metrics import ProxyMetrics
from scalers.http.routes import Key, Route, RouteTable, ServiceRef
from scalers.http.stats import RequestStats

log = logging.getLogger(__name__)

COLD_START_HEADER = "X-Tidal-Cold-Start-Ms"
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
    )
)
CONNECT_RETRY_DELAY = 0.05
SMALL_BODY = 64 * 1024  # answers up to this size (with a Content-Length) go out in one write


@dataclass(frozen=True, slots=True)
class ProxySettings:
    max_held: int = 20_000  # held requests per target before 503
    retry_after: int = 5  # seconds, in 503 answers
    connect_timeout: float = 5.0
    connections_per_backend: int = 256


class Proxy:
    """The aiohttp handler of the proxy port."""

    def __init__(
        self,
        routes: RouteTable,
        backends: BackendIndex,
        stats: RequestStats,
        metrics: ProxyMetrics,
        settings: ProxySettings = ProxySettings(),
    ) -> None:
        self.routes = routes
        self.backends = backends
        self.stats = stats
        self.metrics = metrics
        self.settings = settings
        self.held: dict[Key, int] = {}
        self._signals: dict[str, asyncio.Event] = {}
        self._rr = itertools.count()
        self._session: aiohttp.ClientSession | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=0, limit_per_host=self.settings.connections_per_backend, ttl_dns_cache=None
            )
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",)
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    def changed(self, namespace: str) -> None:
        """Backends of `namespace` changed: wake the requests held there to look again."""
        signal = self._signals.pop(namespace, None)
        if signal is not None:
            signal.set()

    # -- the request path -------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        route = self.routes.match(request.host, request.path, request.headers)
        if route is None:
            return web.Response(status=404, text="no HTTPScaledObject routes this host and path\n")
        if route.problems:
            return web.Response(status=502, text="; ".join(route.problems) + "\n")
        key = route.key
        start = time.monotonic()
        self.metrics.concurrency(key, self.stats.started(key))
        code = 502
        try:
            response = await self._serve(request, route, start)
            code = response.status
            return response
        finally:
            self.stats.finished(key)
            self.metrics.request(key, code, time.monotonic() - start)

    async def _serve(self, request: web.Request, route: Route, start: float) -> web.StreamResponse:
        addresses = self.backends.addresses(route.service)
        waited: float | None = None
        if not addresses and route.placeholder is not None:
            self.metrics.cold_start(route.key, "placeholder", 0.0)
            return placeholder_page(route, request.headers.get("X-Request-ID", ""))
        if not addresses:
            held = self.held.get(route.key, 0)
            if held >= self.settings.max_held:
                self.metrics.cold_start(route.key, "queue_full", 0.0)
                return self._unavailable("too many requests are waiting for this workload")
            self.held[route.key] = held + 1
            try:
                addresses = await self.wait_for(route.service, start + route.wait)
            finally:
                self.held[route.key] -= 1
                if not self.held[route.key]:
                    del self.held[route.key]
            waited = time.monotonic() - start
            if not addresses and route.failover is not None:
                addresses = self.backends.addresses(route.failover)
                self.metrics.cold_start(route.key, "failover", waited)
                if addresses:
                    return await self._forward(request, route, route.failover, addresses, waited)
            if not addresses:
                self.metrics.cold_start(route.key, "timeout", waited)
                return self._unavailable("no backend became ready in time")
            self.metrics.cold_start(route.key, "forwarded", waited)
        return await self._forward(request, route, route.service, addresses, waited)

    async def wait_for(self, ref: ServiceRef, deadline: float) -> tuple[Address, ...]:
        """The backends of `ref` as soon as there are some, or () at `deadline`."""
        while True:
            addresses = self.backends.addresses(ref)
            left = deadline - time.monotonic()
            if addresses or left <= 0:
                return addresses
            signal = self._signals.setdefault(ref.namespace, asyncio.Event())
            try:
                await asyncio.wait_for(signal.wait(), left)
            except TimeoutError:
                return self.backends.addresses(ref)

    def _unavailable(self, why: str) -> web.Response:
        return web.Response(
            status=503, text=why + "\n", headers={"Retry-After": str(self.settings.retry_after)}
        )

    def _pick(self, addresses: tuple[Address, ...]) -> Address:
        return addresses[next(self._rr) % len(addresses)]

    async def _forward(
        self,
        request: web.Request,
        route: Route,
        ref: ServiceRef,
        addresses: tuple[Address, ...],
        waited: float | None,
    ) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request, route, ref, addresses)
        headers = _forward_headers(request)
        data = request.content if request.body_exists else None
        deadline = time.monotonic() + max(route.wait, self.settings.connect_timeout)
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=self.settings.connect_timeout,
            sock_read=route.response_header_timeout,
        )
        while True:
            ip, port = self._pick(addresses)
            url = f"http://{_host(ip)}:{port}{request.rel_url}"
            try:
                upstream = await self.session().request(
                    request.method,
                    url,
                    headers=headers,
                    data=data,
                    allow_redirects=False,
                    timeout=timeout,
                )
                break
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError):
                # Nothing was sent (refused, or not connected within sock_connect): safe to
                # retry on another (or the same, restarted) backend.
                if time.monotonic() > deadline:
                    return web.Response(status=502, text="backend refused the connection\n")
                await asyncio.sleep(CONNECT_RETRY_DELAY)
                addresses = self.backends.addresses(ref) or addresses
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.info(
                    "backend request failed",
                    extra={"route": route.name, "backend": f"{ip}:{port}", "error": repr(exc)},
                )
                return web.Response(status=502, text="backend request failed\n")
        async with upstream:
            out: CIMultiDict[str] = CIMultiDict()
            for name, value in upstream.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    out.add(name, value)
            if waited is not None:
                out[COLD_START_HEADER] = str(round(waited * 1000))
            length = upstream.content_length
            if length is not None and length <= SMALL_BODY:
                # A small answer of known length: read it, send it with its headers in one
                # write (a third fewer send() calls per request than streaming it).
                try:
                    body = await upstream.read()
                except (aiohttp.ClientError, TimeoutError):
                    return web.Response(status=502, text="backend answer broke off\n")
                out.popall("Content-Length", None)
                return web.Response(
                    status=upstream.status, reason=upstream.reason, body=body, headers=out
                )
            response = web.StreamResponse(
                status=upstream.status, reason=upstream.reason, headers=out
            )
            try:
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except (aiohttp.ClientError, TimeoutError, ConnectionError):
                # The backend broke off mid-body (the client sees a short body), or the client
                # went away: nothing more to do for this request.
                return response
        return response

    async def _websocket(
        self, request: web.Request, route: Route, ref: ServiceRef, addresses: tuple[Address, ...]
    ) -> web.StreamResponse:
        ip, port = self._pick(addresses)
        url = f"http://{_host(ip)}:{port}{request.rel_url}"
        headers = {
            k: v
            for k, v in _forward_headers(request).items()
            if not k.lower().startswith("sec-websocket")
        }
        protocols = [
            p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
        ]
        try:
            upstream = await self.session().ws_connect(
                url, headers=headers, protocols=[p for p in protocols if p], autoping=False
            )
        except (aiohttp.ClientError, TimeoutError):
            return web.Response(status=502, text="backend refused the WebSocket\n")
        client = web.WebSocketResponse(protocols=[upstream.protocol] if upstream.protocol else ())
        await client.prepare(request)
        async with upstream:
            await asyncio.gather(_pump(client, upstream), _pump(upstream, client))
        await client.close()
        return client


async def _pump(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> None:
    async for msg in source:
        if msg.type == aiohttp.WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif msg.type == aiohttp.WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
        elif msg.type == aiohttp.WSMsgType.PING:
            await sink.ping(msg.data)
        elif msg.type == aiohttp.WSMsgType.PONG:
            await sink.pong(msg.data)
        else:
            break
    await sink.close()


_TEMPLATE_FIELD = re.compile(r"\{\{\s*\.(\w+)\s*\}\}")
DEFAULT_PLACEHOLDER = (
    "<!DOCTYPE html>\n<html><head><title>{{.ServiceName}} is starting</title>"
    '<meta http-equiv="refresh" content="{{.RefreshInterval}}"></head>'
    "<body><h1>{{.ServiceName}} is starting...</h1></body></html>\n"
)


def placeholder_page(route: Route, request_id: str) -> web.Response:
    """``placeholderConfig``: the page served at once while the workload has no backend; the
    add-on's template fields (ServiceName, Namespace, RefreshInterval, RequestID, Timestamp)."""
    page = route.placeholder
    assert page is not None
    values = {
        "ServiceName": route.service.name,
        "Namespace": route.key[0],
        "RefreshInterval": str(page.refresh),
        "RequestID": request_id,
        "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    body = _TEMPLATE_FIELD.sub(
        lambda m: values.get(m.group(1), m.group(0)), page.content or DEFAULT_PLACEHOLDER
    )
    headers: CIMultiDict[str] = CIMultiDict(page.headers)
    headers.setdefault("Content-Type", "text/html; charset=utf-8")
    return web.Response(status=page.status, body=body.encode(), headers=headers)


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def _forward_headers(request: web.Request) -> CIMultiDict[str]:
    connection_listed = {
        h.strip().lower() for h in request.headers.get("Connection", "").split(",") if h.strip()
    }
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in request.headers.items():
        lower = name.lower()
        if lower not in HOP_BY_HOP and lower not in connection_listed:
            headers.add(name, value)
    peer = request.remote or ""
    prior = request.headers.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    headers.setdefault("X-Forwarded-Host", request.host)
    headers.setdefault("X-Forwarded-Proto", request.scheme)
    return headers
