"""The daemon's own HTTP port: Prometheus /metrics, /healthz and /readyz.

* /healthz — the process is alive and its event loop is not stuck: the loop's heartbeat task ran
  within the last 10 s (a stuck loop can't answer at all, so a probe timeout means the same).
* /readyz — the ScaledObject watch has synced and leadership is known (leader or hot standby);
  503 with the reason otherwise.

The caller may add read-only routes (`routes`): the service adds /debug/objects (scaler.debug).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from metrics_api.server import split_address
from scaler.exposition import render_latest


class Heartbeat:
    def __init__(self, loop_time: Callable[[], float], period: float = 1.0) -> None:
        self._time = loop_time
        self.period = period
        self.last = loop_time()

    async def run(self) -> None:
        while True:
            self.last = self._time()
            await asyncio.sleep(self.period)

    def alive(self, limit: float = 10.0) -> bool:
        return self._time() - self.last < limit


@contextlib.asynccontextmanager
async def serve_health(
    address: str,
    registry: CollectorRegistry,
    ready: Callable[[], bool],
    routes: Iterable[web.RouteDef] = (),
) -> AsyncIterator[int]:
    loop = asyncio.get_running_loop()
    beat = Heartbeat(loop.time)

    async def metrics(_: web.Request) -> web.Response:
        # Rendering ~10k samples takes tens of ms: in a thread, so polls due meanwhile are not
        # held back (prometheus_client is thread-safe; the collectors copy what they read).
        body = await asyncio.to_thread(render_latest, registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        if beat.alive():
            return web.Response(text="ok")
        return web.Response(status=503, text="event loop heartbeat is late")

    async def readyz(_: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ok")
        return web.Response(status=503, text="not ready: watches not synced or leadership unknown")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_routes(list(routes))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    host, port = split_address(address)
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = int(runner.addresses[0][1]) if runner.addresses else port
    task = asyncio.create_task(beat.run(), name="heartbeat")
    try:
        yield bound
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await runner.cleanup()
