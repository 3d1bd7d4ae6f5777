"""The daemon's side of the interceptors' push streams: every replica's counts, summed per target.

One feed per interceptor address list is shared (through the ClientPool) by every `http`
trigger using it. Each address is ``host:port`` of an interceptor admin port; the host is
resolved to all its addresses (a headless Service gives one per interceptor replica) when the
feed starts and again every `RESOLVE_EVERY` seconds, so replicas added later are found. Each
replica gets one long-lived ``GET /v1/stream``; its lines replace that replica's in-flight count
of a target and add its arrivals, and wake the triggers of that target at once (no interval).

A replica whose stream ends has its in-flight counts dropped (its requests are gone with it) and
is reconnected with backoff; a replica that no longer resolves and cannot be reached is
forgotten. Arrivals are kept in one-second buckets for `MAX_WINDOW` seconds for request rates.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections import deque
from collections.abc import Iterable

import aiohttp

from scaler.errors import ScalerError

log = logging.getLogger(__name__)

RESOLVE_EVERY = 10.0
MAX_WINDOW = 900  # seconds of arrival buckets kept
READ_TIMEOUT = 60.0  # the interceptor sends a keepalive line every 15 s
RETRY_BASE, RETRY_CAP = 0.2, 5.0
Endpoint = tuple[str, int]


def parse_addresses(entries: Iterable[str]) -> list[tuple[str, int]]:
    """``host:port`` entries (``[v6]:port`` too); ValueError names a bad one."""
    out = []
    for entry in entries:
        host, sep, port = entry.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"interceptor address '{entry}' is not host:port")
        out.append((host.strip("[]"), int(port)))
    return out


class InterceptorFeed:
    """Push streams of every interceptor replica behind `addresses`."""

    def __init__(self, addresses: Iterable[tuple[str, int]], timeout: float) -> None:
        self._addresses = list(addresses)
        self._timeout = timeout
        self._inflight: dict[str, dict[Endpoint, int]] = {}
        self._arrivals: dict[str, int] = {}
        self._buckets: dict[str, deque[list[int]]] = {}  # key -> [[epoch second, count], ...]
        self._flags: dict[str, set[asyncio.Event]] = {}
        self._readers: dict[Endpoint, asyncio.Task[None]] = {}
        self._connected: set[Endpoint] = set()
        self._first: dict[Endpoint, asyncio.Event] = {}
        self._session: aiohttp.ClientSession | None = None
        self._resolver: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to every resolved replica; returns once each has sent its first line or
        failed; raises ScalerError when none is reachable."""
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._timeout)
        )
        endpoints = await self._resolve()
        for ep in endpoints:
            self._spawn(ep)
        if self._first:
            waits = [asyncio.ensure_future(e.wait()) for e in self._first.values()]
            try:
                await asyncio.wait(waits, timeout=self._timeout)
            finally:
                for wait in waits:
                    wait.cancel()
        if not self._connected:
            await self.aclose()
            where = ", ".join(f"{h}:{p}" for h, p in self._addresses)
            raise ScalerError(f"no interceptor reachable at {where}")
        self._resolver = asyncio.create_task(self._resolve_loop(), name="http-feed-resolve")

    async def aclose(self) -> None:
        tasks = [*self._readers.values(), *([self._resolver] if self._resolver else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._readers.clear()
        if self._session is not None:
            await self._session.close()

    @property
    def connected(self) -> int:
        return len(self._connected)

    # -- reading ---------------------------------------------------------------------------------

    def in_flight(self, key: str) -> int:
        return sum(self._inflight.get(key, {}).values())

    def arrivals(self, key: str) -> int:
        return self._arrivals.get(key, 0)

    def arrivals_within(self, key: str, window: float, now: float) -> int:
        since = now - window
        return sum(c for second, c in self._buckets.get(key, ()) if second >= since)

    def subscribe(self, key: str, flag: asyncio.Event) -> None:
        self._flags.setdefault(key, set()).add(flag)

    def unsubscribe(self, key: str, flag: asyncio.Event) -> None:
        flags = self._flags.get(key)
        if flags is not None:
            flags.discard(flag)
            if not flags:
                del self._flags[key]

    # -- internals --------------------------------------------------------------------------------

    async def _resolve(self) -> list[Endpoint]:
        loop = asyncio.get_running_loop()
        found: list[Endpoint] = []
        for host, port in self._addresses:
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError:
                continue
            for info in infos:
                ep = (str(info[4][0]), port)
                if ep not in found:
                    found.append(ep)
        return found

    async def _resolve_loop(self) -> None:
        while True:
            await asyncio.sleep(RESOLVE_EVERY)
            for ep in await self._resolve():
                if ep not in self._readers:
                    self._spawn(ep)

    def _spawn(self, ep: Endpoint) -> None:
        self._first[ep] = asyncio.Event()
        self._readers[ep] = asyncio.create_task(self._read(ep), name=f"http-feed-{ep[0]}")

    async def _read(self, ep: Endpoint) -> None:
        delay = RETRY_BASE
        host = f"[{ep[0]}]" if ":" in ep[0] else ep[0]
        url = f"http://{host}:{ep[1]}/v1/stream"
        assert self._session is not None
        while True:
            try:
                async with self._session.get(
                    url, timeout=aiohttp.ClientTimeout(sock_read=READ_TIMEOUT)
                ) as resp:
                    if resp.status != 200:
                        raise ScalerError(f"interceptor {url}: HTTP {resp.status}")
                    buffer = b""
                    async for chunk in resp.content.iter_any():
                        buffer += chunk
                        *lines, buffer = buffer.split(b"\n")
                        self._apply(ep, lines)
                        delay = RETRY_BASE
            except asyncio.CancelledError:
                self._drop(ep)
                raise
            except (aiohttp.ClientError, TimeoutError, OSError, ScalerError, ValueError) as exc:
                log.info("interceptor stream down", extra={"endpoint": url, "error": repr(exc)})
            self._drop(ep)
            self._first[ep].set()  # tried: start() does not wait for it any longer
            if ep not in await self._resolve():  # a replica that is gone for good
                self._readers.pop(ep, None)
                return
            await asyncio.sleep(delay)
            delay = min(RETRY_CAP, delay * 2)

    def _apply(self, ep: Endpoint, lines: list[bytes]) -> None:
        touched: set[str] = set()
        now = int(time.time())
        for raw in lines:
            if not raw.strip():
                continue
            line = json.loads(raw)
            if "hello" in line:
                touched |= self._drop(ep, wake=False)
                self._connected.add(ep)
                self._first[ep].set()
                continue
            key = line.get("k")
            if not key:
                continue  # keepalive
            inflight = int(line.get("i", 0))
            per_replica = self._inflight.setdefault(key, {})
            if inflight:
                per_replica[ep] = inflight
            else:
                per_replica.pop(ep, None)
                if not per_replica:
                    del self._inflight[key]
            arrived = int(line.get("a", 0))
            if arrived:
                self._arrivals[key] = self._arrivals.get(key, 0) + arrived
                self._bucket(key, now, arrived)
            touched.add(key)
        self._wake(touched)

    def _bucket(self, key: str, second: int, count: int) -> None:
        buckets = self._buckets.setdefault(key, deque())
        if buckets and buckets[-1][0] == second:
            buckets[-1][1] += count
        else:
            buckets.append([second, count])
        while buckets and buckets[0][0] < second - MAX_WINDOW:
            buckets.popleft()

    def _drop(self, ep: Endpoint, wake: bool = True) -> set[str]:
        """Forget `ep`'s in-flight counts (its stream ended or restarted)."""
        self._connected.discard(ep)
        touched = {k for k, per in self._inflight.items() if ep in per}
        for key in touched:
            del self._inflight[key][ep]
            if not self._inflight[key]:
                del self._inflight[key]
        if wake:
            self._wake(touched)
        return touched

    def _wake(self, keys: Iterable[str]) -> None:
        for key in keys:
            for flag in self._flags.get(key, ()):
                flag.set()
