"""Lazily started watches (scaler.kube.lazywatch: kubernetes-workload's pod counts, a Service's
endpoints) run on a connection pool of their own: a hundred of them must not starve the
daemon's other API calls (writes, Lease renewals) of connections.

The server here is a small aiohttp stand-in that keeps every watch open forever: a real
kube-apiserver ends a watch after timeoutSeconds and cannot be told to hold a hundred streams
open on demand. (Found in review: a plain GET waited for a free connection.)
"""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from scaler.errors import QueryError
from scaler.kube import lazywatch
from scaler.kube.client import DirectTransport, KubeClient
from scaler.kube.connection import Connection
from scaler.kube.pods import PodCounter


def test_a_hundred_lazy_watches_leave_the_api_connections_to_the_rest() -> None:
    async def main() -> None:
        async def pods(request: web.Request) -> web.StreamResponse:
            if request.query.get("watch"):
                resp = web.StreamResponse()
                await resp.prepare(request)
                await asyncio.sleep(3600)  # a watch: open until timeoutSeconds
                return resp
            return web.json_response({"metadata": {"resourceVersion": "1"}, "items": []})

        async def lease(request: web.Request) -> web.Response:
            return web.json_response({"kind": "Lease"})

        app = web.Application()
        app.router.add_get("/api/v1/namespaces/{ns}/pods", pods)
        app.router.add_get("/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}", lease)
        runner = web.AppRunner(app, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        kube = KubeClient(DirectTransport(Connection(f"http://127.0.0.1:{port}", False)))
        counter = PodCounter(kube)
        try:
            # 100 ScaledObjects, each counting its own app's pods (podSelector: app=worker-N)
            for i in range(100):
                assert await counter.count("ns", f"app=worker-{i}") == 0
            await asyncio.sleep(0.5)  # every watch stream is open now
            # What a member Lease renewal / a /scale write would do next:
            try:
                async with asyncio.timeout(5):
                    await kube.unguarded().get("/apis/coordination.k8s.io/v1/namespaces/t/leases/x")
            except TimeoutError:
                raise AssertionError(
                    "a plain GET waited 5 s for a connection: 100 lazy watches hold the pool"
                ) from None
        finally:
            await counter.aclose()
            await kube.aclose()
            await runner.cleanup()

    asyncio.run(main())


def test_a_failing_watch_is_not_served_as_the_present(monkeypatch: pytest.MonkeyPatch) -> None:
    """After its first list the server refuses the watch (and every relist): the count read
    before is served while a reconnect may still succeed (STALE_AFTER), then it is an error —
    never an old 0 taken for the present (found in review)."""
    monkeypatch.setattr(lazywatch, "STALE_AFTER", 0.5)

    async def main() -> None:
        listed = {"n": 0}

        async def pods(request: web.Request) -> web.StreamResponse:
            if request.query.get("watch") or listed["n"] >= 1:
                return web.Response(status=500, text="etcd unavailable")
            listed["n"] += 1
            return web.json_response({"metadata": {"resourceVersion": "1"}, "items": []})

        app = web.Application()
        app.router.add_get("/api/v1/namespaces/{ns}/pods", pods)
        runner = web.AppRunner(app, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        kube = KubeClient(DirectTransport(Connection(f"http://127.0.0.1:{port}", False)))
        counter = PodCounter(kube)
        try:
            assert await counter.count("ns", "app=a") == 0
            await asyncio.sleep(1.5)  # the watch failed and keeps failing
            with pytest.raises(QueryError, match="the watch has been failing"):
                await counter.count("ns", "app=a")
        finally:
            await counter.aclose()
            await kube.aclose()
            await runner.cleanup()

    asyncio.run(main())
