"""KubeClient's connections to the real kube-apiserver: watches on a pool of their own, requests
on a bounded one.

Each TLS connection costs ~300 KiB resident; with one pool of 100 shared by everything, a burst
of first writes for 1000 new objects kept ~90 idle connections (~26 MiB) for 20 s after it. The
connections are counted from the operating system's socket table (this process's sockets whose
peer is the API server's port), not from aiohttp's internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest

from localenv.controlplane import ControlPlane
from localenv.process import connections_to
from scaler.kube.client import REQUEST_CONNECTIONS, KubeClient

pytestmark = pytest.mark.kube

WATCHES = REQUEST_CONNECTIONS + 8  # more watches than the request pool holds connections
BURST = 3 * REQUEST_CONNECTIONS


@contextlib.asynccontextmanager
async def held_watches(kube: KubeClient, path: str, n: int) -> AsyncIterator[None]:
    """`n` watch streams held open (each has received its first event)."""
    opened = asyncio.Semaphore(0)

    async def watch() -> None:
        async for _ in kube.watch_lines(path, {"watch": "1", "timeoutSeconds": 120}, timeout=150):
            opened.release()
            await asyncio.sleep(3600)

    tasks = [asyncio.create_task(watch()) for _ in range(n)]
    try:
        async with asyncio.timeout(60):
            for _ in range(n):
                await opened.acquire()
        yield
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_watches_do_not_hold_the_connections_requests_need(
    control_plane: ControlPlane,
) -> None:
    port = urlsplit(control_plane.server).port
    assert port is not None
    ns = f"t-pool-{uuid.uuid4().hex[:8]}"
    path = f"/api/v1/namespaces/{ns}/configmaps"
    setup = await KubeClient.from_kubeconfig(str(control_plane.kubeconfig))
    try:
        await setup.create("/api/v1/namespaces", {"metadata": {"name": ns}})
        await setup.create(path, {"metadata": {"name": "seed.cfg"}, "data": {}})
    finally:
        await setup.aclose()  # its connections are gone before the count starts
    # A fresh client: no idle request connection of its own can close while watches open.
    kube = await KubeClient.from_kubeconfig(str(control_plane.kubeconfig))
    try:
        before = connections_to(port)
        async with held_watches(kube, path, WATCHES):
            # `before` may count other clients' idle connections closing meanwhile: allow 1.
            assert connections_to(port) - before >= WATCHES - 1
            # More watches than the request pool's size are open: requests still go through.
            async with asyncio.timeout(30):
                body = await kube.get(path)
            assert [i["metadata"]["name"] for i in body["items"]] == ["seed.cfg"]

            # A burst of requests waits for the bounded pool instead of opening one each.
            during = connections_to(port)
            async with asyncio.timeout(60):
                answers = await asyncio.gather(*(kube.get(path) for _ in range(BURST)))
            assert all(len(a["items"]) == 1 for a in answers)
            assert connections_to(port) - during <= REQUEST_CONNECTIONS
    finally:
        with contextlib.suppress(Exception):
            await kube.delete(f"/api/v1/namespaces/{ns}")
        await kube.aclose()
