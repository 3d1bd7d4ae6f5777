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
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from scalers.http.backends import Address, BackendIndex
from scalers.http.metrics import ProxyMetrics
from scalers.http.routes import Key, Route, RouteTable, ServiceRef
from scalers.http.stats import RequestStats
from scalers.http.upstream import (
    BackendError,
    ConnectFailed,
    Exchange,
    Head,
    Pool,
    chunk,
    request_head,
)

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
        # ConfigMap data by (namespace, name), for placeholderConfig.contentConfigMap: kept
        # current by the interceptor's ConfigMap watch, never read per request from the API.
        self.config_maps: dict[tuple[str, str], Mapping[str, str]] = {}
        self._session: aiohttp.ClientSession | None = None  # WebSockets only
        self.pool = Pool(settings.connections_per_backend, settings.connect_timeout)

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
        self.pool.close()
        if self._session is not None:
            await self._session.close()

    def changed(self, namespace: str) -> None:
        """Backends of `namespace` changed: wake the requests held there to look again."""
        signal = self._signals.pop(namespace, None)
        if signal is not None:
            signal.set()

    # -- the request path -------------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        route = self.routes.match(request.host, request.path, request.headers)
        if route is None:
            return web.Response(status=404, text="no HTTPScaledObject routes this host and path\n")
        if route.problems:
            return web.Response(status=502, text="; ".join(route.problems) + "\n")
        if "Expect" in request.headers:
            refused = await _expect(request)
            if refused is not None:
                return refused
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

    async def _serve(
        self, request: web.BaseRequest, route: Route, start: float
    ) -> web.StreamResponse:
        addresses = self.backends.addresses(route.service)
        waited: float | None = None
        if not addresses and route.placeholder is not None:
            self.metrics.cold_start(route.key, "placeholder", 0.0)
            return placeholder_page(
                route, request.headers.get("X-Request-ID", ""), self.config_maps
            )
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
        request: web.BaseRequest,
        route: Route,
        ref: ServiceRef,
        addresses: tuple[Address, ...],
        waited: float | None,
    ) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request, route, ref, addresses)
        headers = _forward_headers(request)
        body: bytes | AsyncIterator[bytes] | None = None
        if request.body_exists:
            length = request.content_length
            if length is not None and length <= SMALL_BODY:
                body = await request.read()  # small: sent with the head in one write
            elif length is not None:
                body = request.content.iter_any()
            else:
                headers.append(("Transfer-Encoding", "chunked"))
                body = _chunked(request)
        head = request_head(request.method, request.raw_path, headers)
        deadline = time.monotonic() + max(route.wait, self.settings.connect_timeout)
        pool = self.pool
        while True:
            address = self._pick(addresses)
            try:
                conn, reused = await pool.acquire(address)
            except ConnectFailed:
                # Nothing was sent (refused, or not connected in time): safe to retry on
                # another (or the same, restarted) backend.
                if time.monotonic() > deadline:
                    return web.Response(status=502, text="backend refused the connection\n")
                await asyncio.sleep(CONNECT_RETRY_DELAY)
                addresses = self.backends.addresses(ref) or addresses
                continue
            exchange = Exchange(conn, route.response_header_timeout)
            try:
                await exchange.send(head, body)
                answer = await exchange.read_head(request.method)
                break
            except BackendError as exc:
                pool.release(conn, False)
                if reused and not conn.buffer and not isinstance(body, AsyncIterator):
                    continue  # a kept-alive connection the backend had closed: send again
                log.info(
                    "backend request failed",
                    extra={
                        "route": route.name,
                        "backend": f"{address[0]}:{address[1]}",
                        "error": str(exc),
                    },
                )
                return web.Response(status=502, text="backend request failed\n")
            except BaseException:
                pool.release(conn, False)
                raise
        try:
            return await self._answer(request, exchange, answer, waited)
        finally:
            pool.release(conn, exchange.complete)

    async def _answer(
        self, request: web.BaseRequest, exchange: Exchange, answer: Head, waited: float | None
    ) -> web.StreamResponse:
        listed = _connection_listed(answer.headers)
        out: CIMultiDict[str] = CIMultiDict(
            (name, value)
            for name, value in answer.headers
            if name.lower() not in HOP_BY_HOP and name.lower() not in listed
        )
        if waited is not None:
            out[COLD_START_HEADER] = str(round(waited * 1000))
        if answer.length is not None and answer.length <= SMALL_BODY:
            # A small answer of known length: read it, send it with its headers in one write.
            try:
                body = await exchange.read_all()
            except BackendError:
                return web.Response(status=502, text="backend answer broke off\n")
            out.popall("Content-Length", None)
            return web.Response(status=answer.status, reason=answer.reason, body=body, headers=out)
        response = web.StreamResponse(status=answer.status, reason=answer.reason, headers=out)
        try:
            await response.prepare(request)
            async for piece in exchange.chunks():
                await response.write(piece)
            await response.write_eof()
        except (BackendError, ConnectionError, RuntimeError):
            # The backend broke off mid-body (the client sees a short body), or the client
            # went away (RuntimeError: aiohttp's "transport closed"): nothing more to do.
            pass
        return response

    async def _websocket(
        self,
        request: web.BaseRequest,
        route: Route,
        ref: ServiceRef,
        addresses: tuple[Address, ...],
    ) -> web.StreamResponse:
        ip, port = self._pick(addresses)
        url = f"http://{_host(ip)}:{port}{request.rel_url}"
        headers = {
            k: v for k, v in _forward_headers(request) if not k.lower().startswith("sec-websocket")
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


def placeholder_page(
    route: Route, request_id: str, config_maps: Mapping[tuple[str, str], Mapping[str, str]]
) -> web.Response:
    """``placeholderConfig``: the page served at once while the workload has no backend; the
    add-on's template fields (ServiceName, Namespace, RefreshInterval, RequestID, Timestamp).
    The template is the ``contentConfigMap`` key when that ConfigMap has it, else ``content``,
    else a built-in page."""
    page = route.placeholder
    assert page is not None
    template = page.content or DEFAULT_PLACEHOLDER
    if page.config_map is not None:
        name, key = page.config_map
        template = (config_maps.get((route.key[0], name)) or {}).get(key) or template
    values = {
        "ServiceName": route.service.name,
        "Namespace": route.key[0],
        "RefreshInterval": str(page.refresh),
        "RequestID": request_id,
        "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    body = _TEMPLATE_FIELD.sub(lambda m: values.get(m.group(1), m.group(0)), template)
    headers: CIMultiDict[str] = CIMultiDict(page.headers)
    headers.setdefault("Content-Type", "text/html; charset=utf-8")
    return web.Response(status=page.status, body=body.encode(), headers=headers)


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def _connection_listed(headers: Iterable[tuple[str, str]]) -> set[str]:
    """Header names a ``Connection`` header lists (hop-by-hop for this one connection)."""
    listed: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            listed.update(h.strip().lower() for h in value.split(",") if h.strip())
    return listed


def _forward_headers(request: web.BaseRequest) -> list[tuple[str, str]]:
    """The client's headers for the backend: hop-by-hop ones dropped, X-Forwarded-* added."""
    items = request.headers.items()
    listed = _connection_listed(items) if "Connection" in request.headers else set()
    headers: list[tuple[str, str]] = []
    prior: str | None = None
    forwarded_host = forwarded_proto = has_host = False
    for name, value in items:
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in listed:
            continue
        if lower == "expect":  # answered here (`_expect`): the body is on its way
            continue
        if lower == "x-forwarded-for":
            prior = value if prior is None else f"{prior}, {value}"
            continue
        if lower == "x-forwarded-host":
            forwarded_host = True
        elif lower == "x-forwarded-proto":
            forwarded_proto = True
        elif lower == "host":
            has_host = True
        headers.append((name, value))
    peer = request.remote or ""
    headers.append(("X-Forwarded-For", f"{prior}, {peer}" if prior else peer))
    if not forwarded_host:
        headers.append(("X-Forwarded-Host", request.host))
    if not forwarded_proto:
        headers.append(("X-Forwarded-Proto", request.scheme))
    if not has_host:
        headers.append(("Host", request.host))
    return headers


async def _expect(request: web.BaseRequest) -> web.Response | None:
    """``Expect: 100-continue``: let the client send its body (aiohttp's router did this before
    the low-level server took its place); any other expectation: 417."""
    if request.headers["Expect"].lower() != "100-continue":
        return web.Response(status=417, text="unsupported Expect\n")
    if request.version >= (1, 1):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the answer's own size starts after the interim one
    return None


async def _chunked(request: web.BaseRequest) -> AsyncIterator[bytes]:
    """A request body of unknown length, re-framed as chunks for the backend."""
    async for data in request.content.iter_any():
        if data:
            yield chunk(data)
    yield chunk(b"")
