"""KubeClient's connections to the real kube-apiserver: watches on a pool of their own, requests
on a bounded one, Lease traffic on a small one of its own.

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
from scaler.errors import NotLeaderError
from scaler.kube.client import REQUEST_CONNECTIONS, KubeClient
from scaler.kube.lease import LeaderElector, LeaseSettings

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


@contextlib.asynccontextmanager
async def held_requests(kube: KubeClient, port: int, path: str) -> AsyncIterator[None]:
    """Every request connection of `kube` busy with a request the API server answers only
    after 60 s (a burst of writes at a takeover of thousands of objects looks the same to the
    pool); checked: one more request must wait. Cancelled (connections freed) on exit."""
    before = connections_to(port)
    slow = {"watch": "1", "timeoutSeconds": 60}  # an ordinary request held for 60 s
    held = [
        asyncio.create_task(kube.request("GET", path, query=slow, timeout=90))
        for _ in range(REQUEST_CONNECTIONS)
    ]
    try:
        for _ in range(300):  # until the API server holds them all (at most 30 s)
            # The namespace's POST left one idle connection, which a held request reuses.
            if connections_to(port) - before >= REQUEST_CONNECTIONS - 1:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the held requests never opened their connections")
        with pytest.raises(TimeoutError):  # the request pool is full: a request must wait
            async with asyncio.timeout(2):
                await kube.get(path)
        yield
    finally:
        for task in held:
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)


@contextlib.asynccontextmanager
async def in_new_namespace(
    control_plane: ControlPlane, prefix: str
) -> AsyncIterator[tuple[KubeClient, int, str]]:
    """A fresh client, the API server's port and the ConfigMaps path of a new namespace
    (deleted on exit)."""
    port = urlsplit(control_plane.server).port
    assert port is not None
    ns = f"{prefix}-{uuid.uuid4().hex[:8]}"
    kube = await KubeClient.from_kubeconfig(str(control_plane.kubeconfig))
    try:
        await kube.create("/api/v1/namespaces", {"metadata": {"name": ns}})
        yield kube, port, f"/api/v1/namespaces/{ns}/configmaps"
    finally:
        kube.write_window = None
        with contextlib.suppress(Exception):
            await kube.delete(f"/api/v1/namespaces/{ns}")
        await kube.aclose()


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


async def test_lease_renewals_do_not_wait_for_a_request_connection(
    control_plane: ControlPlane,
) -> None:
    """Every request connection is busy (requests the API server answers only after 60 s: a
    burst of writes at a takeover of thousands of objects looks the same to the pool), yet the
    leader elector acquires and renews its Lease at once: Lease traffic has a pool of its own.
    Before, the renewal queued behind the requests and could miss its 10 s renew deadline."""
    async with (
        in_new_namespace(control_plane, "t-lease") as (kube, port, path),
        held_requests(kube, port, path),
    ):
        ns = path.split("/")[4]
        settings = LeaseSettings(ns, "tidal-leader", "replica-a", 15.0, 10.0, 2.0)
        elector = LeaderElector(kube.for_leases(), settings)
        async with asyncio.timeout(9):  # a hang guard; on the request pool it waits ~60 s
            assert await elector.attempt()  # acquired: created the Lease
            assert await elector.attempt()  # renewed it
        assert elector.may_write()


async def test_a_write_waits_for_a_connection_no_longer_than_its_lease_lets_it_write(
    control_plane: ControlPlane,
) -> None:
    """The write check passed (1 s of lease left) but every request connection is busy: the
    write waits for one at most that 1 s, then fails NotLeaderError and never reaches the API
    server, although connections come free at 2.5 s (when, with the lease lapsed, another
    replica may own the object). Before, it waited for a connection up to its 10 s timeout and
    went out at 2.5 s. With time left and a free connection, a write goes through."""
    loop = asyncio.get_running_loop()
    async with in_new_namespace(control_plane, "t-fence") as (kube, port, path):
        async with held_requests(kube, port, path):
            lapses = loop.time() + 1.0
            kube.write_window = lambda: lapses - loop.time()
            late = asyncio.create_task(kube.create(path, {"metadata": {"name": "late.cfg"}}))
            await asyncio.sleep(2.5)
        async with asyncio.timeout(10):  # a hang guard
            with pytest.raises(NotLeaderError, match="lease lapsed while waiting"):
                await late
        lapses = loop.time() + 5.0
        await kube.create(path, {"metadata": {"name": "in-time.cfg"}})
        kube.write_window = None
        body = await kube.get(path)
        assert sorted(i["metadata"]["name"] for i in body["items"]) == ["in-time.cfg"]
