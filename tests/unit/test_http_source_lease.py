"""HttpSource (scalers/http_common.py) takes one shared session lease however many of its
first GETs run at once (metrics-api asks up to five endpoints of a Service concurrently): two
leases for one source left the pool entry held forever after aclose (found in review)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from scaler.clients import ClientKey, ClientPool
from scalers.http_common import HttpAuth, HttpSource


def test_concurrent_first_gets_take_one_lease() -> None:
    async def main() -> None:
        async def ok(_: web.Request) -> web.Response:
            await asyncio.sleep(0.05)
            return web.Response(text="1")

        app = web.Application()
        app.router.add_get("/v", ok)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        pool = ClientPool()
        url = f"http://127.0.0.1:{port}/v"
        auth = HttpAuth(headers={}, query={}, ssl=True, fingerprint="none", secrets=())
        source = HttpSource("test", url, auth, 2.0, pool)
        try:
            bodies = await asyncio.gather(*(source.get(url) for _ in range(5)))
            assert bodies == [b"1"] * 5
            key = ClientKey("http", f"http://127.0.0.1:{port}", "none")
            assert pool.refs(key) == 1
            await source.aclose()
            assert pool.refs(key) == 0
            assert len(pool) == 0
        finally:
            await pool.aclose()
            await runner.cleanup()

    asyncio.run(main())
