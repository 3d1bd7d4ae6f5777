"""The interceptor process: the proxy port, the admin port, and the hooks its watches feed.

Proxy port: every request is routed by `Proxy` (over TLS when given certificate files, reloaded
when they change: `tls`). Admin port: ``GET /v1/stream`` (the daemon's
push stream, see `stats`), ``/metrics`` (Prometheus), ``/healthz`` and ``/readyz`` (ready once
the caller says its watches have synced).

Shutdown (`drain`): the proxy's listener closes first (with ``SO_REUSEPORT`` a new replica may
already be bound to the same port and takes the new connections), every request already accepted
is finished -- held ones included: the admin port and the push stream stay up, so the daemon
still sees them in flight and wakes the workload -- and only then does the process stop. A
restart therefore loses no request the old process had accepted (bounded by `drain_timeout`).

`tidal intercept` (scaler/commands/intercept.py) runs the Kubernetes watches and calls
`on_route`, `on_service`, `on_pod` and `on_slice`; this module never talks to the API itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from scalers.http.backends import BackendIndex
from scalers.http.metrics import ProxyMetrics
from scalers.http.proxy import Proxy, ProxySettings
from scalers.http.routes import RouteTable, parse_route
from scalers.http.stats import RequestStats
from scalers.http.tls import ServerCert, TlsFiles

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 5.0  # s for handlers still running after the drain (streams end at once)
EventType = Literal["ADDED", "MODIFIED", "DELETED"]


@dataclass(frozen=True, slots=True)
class Listen:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Listen:
        host, _, port = text.rpartition(":")
        return cls(host.strip("[]") or "0.0.0.0", int(port))


class Interceptor:
    """Routes, backends, counts and the two aiohttp servers of one interceptor replica."""

    def __init__(
        self, replica: str, settings: ProxySettings | None = None, tls: TlsFiles | None = None
    ) -> None:
        self.routes = RouteTable()
        self.stats = RequestStats(replica)
        self.metrics = ProxyMetrics()
        self.metrics.in_flight.set_function(self.stats.total_inflight)
        self.backends = BackendIndex(changed=self._changed)
        self.proxy = Proxy(
            self.routes, self.backends, self.stats, self.metrics, settings or ProxySettings()
        )
        self.cert = ServerCert(tls) if tls is not None else None  # TLS on the proxy port
        self._cert_watch: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()
        self.draining = False
        self._proxy_runner: web.BaseRunner | None = None
        self._proxy_site: web.TCPSite | None = None
        self._admin_runner: web.AppRunner | None = None
        self.proxy_port = 0
        self.admin_port = 0

    def _changed(self, namespace: str) -> None:
        self.proxy.changed(namespace)

    # -- hooks for the watches ------------------------------------------------------------------

    async def on_route(self, kind: EventType, obj: Mapping[str, Any]) -> None:
        route = parse_route(obj)
        if kind == "DELETED":
            self.routes.delete(route.key)
        else:
            if route.problems:
                log.warning(
                    "HTTPScaledObject cannot route",
                    extra={"object": route.name, "problems": list(route.problems)},
                )
            self.routes.put(route)

    async def on_service(self, kind: EventType, obj: Mapping[str, Any]) -> None:
        self.backends.set_service(obj, deleted=kind == "DELETED")

    async def on_pod(self, kind: EventType, obj: Mapping[str, Any]) -> None:
        self.backends.set_pod(obj, deleted=kind == "DELETED")

    async def on_config_map(self, kind: EventType, obj: Mapping[str, Any]) -> None:
        """ConfigMaps whose keys may be placeholder pages (``contentConfigMap``)."""
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        data = obj.get("data") or {}
        if kind == "DELETED" or not data:
            self.proxy.config_maps.pop(key, None)
        else:
            self.proxy.config_maps[key] = {str(k): str(v) for k, v in data.items()}

    async def on_slice(self, kind: EventType, obj: Mapping[str, Any]) -> None:
        self.backends.set_slice(obj, deleted=kind == "DELETED")

    # -- servers ----------------------------------------------------------------------------------

    async def start(self, proxy: Listen, admin: Listen) -> None:
        # The low-level server: every request goes to the proxy, so no router, no middlewares.
        server = web.Server(self.proxy.handle, access_log=None, max_field_size=65536)
        self._proxy_runner = web.ServerRunner(
            server, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        await self._proxy_runner.setup()
        self._proxy_site = web.TCPSite(
            self._proxy_runner,
            proxy.host,
            proxy.port,
            reuse_port=True,
            backlog=4096,
            ssl_context=self.cert.context if self.cert is not None else None,
        )
        await self._proxy_site.start()
        if self.cert is not None:
            self._cert_watch = asyncio.create_task(self.cert.watch(), name="tls-reload")
        self.proxy_port = _bound_port(self._proxy_runner)

        admin_app = web.Application()
        admin_app.router.add_get("/v1/stream", self._stream)
        admin_app.router.add_get("/metrics", self._metrics)
        admin_app.router.add_get("/healthz", self._healthz)
        admin_app.router.add_get("/readyz", self._readyz)
        self._admin_runner = web.AppRunner(
            admin_app, handle_signals=False, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        await self._admin_runner.setup()
        await web.TCPSite(self._admin_runner, admin.host, admin.port, reuse_port=True).start()
        self.admin_port = _bound_port(self._admin_runner)
        log.info(
            "interceptor listening",
            extra={"proxy_port": self.proxy_port, "admin_port": self.admin_port},
        )

    async def drain(self, timeout: float) -> int:
        """Stop accepting connections, then wait (up to `timeout`) until no request is in
        flight; returns how many were still in flight at the end. /readyz answers 503 from
        now on, so a Service stops sending here."""
        self.draining = True
        if self._proxy_site is not None:
            await self._proxy_site.stop()
            self._proxy_site = None
        log.info("draining", extra={"in_flight": self.stats.total_inflight()})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stats.idle.wait(), timeout)
        left = self.stats.total_inflight()
        log.info("drained", extra={"in_flight_left": left})
        return left

    async def aclose(self) -> None:
        if self._cert_watch is not None:
            self._cert_watch.cancel()
        self.stats.close()
        if self._proxy_runner is not None:
            await self._proxy_runner.cleanup()
        await self.proxy.aclose()
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()

    # -- admin handlers ---------------------------------------------------------------------------

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        self.metrics.stream_subscribers.inc()
        try:
            async for chunk in self.stats.stream():
                await response.write(chunk)
        except (ConnectionError, RuntimeError):
            pass  # the daemon went away (RuntimeError: aiohttp's "transport closed")
        finally:
            self.metrics.stream_subscribers.dec()
        return response

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self.draining:
            return web.Response(status=503, text="draining\n")
        if not self.ready.is_set():
            return web.Response(status=503, text="watches not synced\n")
        return web.Response(text=f"ok {len(self.routes)} routes\n")


def _bound_port(runner: web.BaseRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    return 0
