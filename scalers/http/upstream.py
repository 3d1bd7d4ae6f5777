"""The proxy's HTTP/1.1 client to backends: kept-alive connections per backend, no per-request
objects beyond the connection's own state.

Why not aiohttp's ClientSession: per forwarded request it builds a URL, a ClientRequest, a
ClientResponse, trace and cookie plumbing and timers -- a third of the interceptor's CPU per
request (benchmarks/http_intercept.py, warm leg). A proxy needs none of that: it writes the
request line and headers it already has and reads back a status line, headers and a body
framed by ``Content-Length``, ``Transfer-Encoding: chunked`` or the connection's end.

Bodies stream both ways: `send` writes the request body as it arrives (with the transport's
flow control), `Exchange.chunks` yields the answer as it arrives and pauses reading from the
backend while the caller is behind. A connection returns to its backend's idle list only when
its answer was read to the end and neither side asked to close it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from scaler.errors import ScalerError

Address = tuple[str, int]
IDLE_TIMEOUT = 15.0  # s a kept-alive connection may sit idle before it is not reused
MAX_HEAD = 65536  # bytes of status line + headers
HIGH_WATER = 256 * 1024  # buffered answer bytes before reading from the backend pauses


class BackendError(ScalerError):
    """A backend request failed after it may have been sent (not safe to repeat)."""


class ConnectFailed(BackendError):
    """No connection to the backend (refused, unreachable, timed out): nothing was sent."""


class _Connection(asyncio.Protocol):
    __slots__ = ("_drain", "_wake", "address", "buffer", "eof", "idle_since", "paused", "transport")

    def __init__(self, address: Address) -> None:
        self.address = address
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.paused = False
        self.idle_since = 0.0
        self._wake: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None

    # -- protocol callbacks ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()
            self.paused = True
        self._set(self._wake)

    def eof_received(self) -> bool:
        self.eof = True
        self._set(self._wake)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self._set(self._wake)
        self._set(self._drain)

    def pause_writing(self) -> None:
        self._drain = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self._set(self._drain)
        self._drain = None

    @staticmethod
    def _set(future: asyncio.Future[None] | None) -> None:
        if future is not None and not future.done():
            future.set_result(None)

    # -- used by Exchange --------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return not self.eof and self.transport is not None and not self.transport.is_closing()

    async def more(self, timeout: float | None) -> None:
        """Wait for more bytes (or the end) from the backend."""
        if self.eof:
            raise BackendError("backend closed the connection")
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        self._wake = asyncio.get_running_loop().create_future()
        try:
            if timeout is None:
                await self._wake
            else:
                await asyncio.wait_for(self._wake, timeout)
        except TimeoutError:
            raise BackendError("backend answer timed out") from None
        finally:
            self._wake = None

    async def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise BackendError("backend connection closed while sending")
        self.transport.write(data)
        if self._drain is not None:
            await self._drain

    def take(self, n: int) -> bytes:
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    def close(self) -> None:
        self.eof = True
        if self.transport is not None:
            self.transport.close()


class Pool:
    """Kept-alive connections per backend address (at most `per_backend` open at once)."""

    def __init__(self, per_backend: int, connect_timeout: float) -> None:
        self.per_backend = per_backend
        self.connect_timeout = connect_timeout
        self._idle: dict[Address, list[_Connection]] = {}
        self._open: dict[Address, int] = {}
        self._waiters: dict[Address, list[asyncio.Future[_Connection | None]]] = {}

    async def acquire(self, address: Address) -> tuple[_Connection, bool]:
        """A connection to `address`, and whether it was reused (a reused one may have been
        closed by the backend just now)."""
        idle = self._idle.get(address)
        while idle:
            conn = idle.pop()
            if conn.alive and time.monotonic() - conn.idle_since < IDLE_TIMEOUT:
                return conn, True
            self._discard(conn)
        if self._open.get(address, 0) >= self.per_backend:
            waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(address, []).append(waiter)
            handed = await waiter
            if handed is not None:
                return handed, True
        self._open[address] = self._open.get(address, 0) + 1
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await asyncio.get_running_loop().create_connection(
                    lambda: _Connection(address), *address
                )
        except (OSError, TimeoutError) as exc:
            self._closed(address)
            raise ConnectFailed(f"cannot connect to {address[0]}:{address[1]}: {exc!r}") from exc
        return conn, False

    def release(self, conn: _Connection, reusable: bool) -> None:
        if not reusable or not conn.alive or conn.buffer:
            self._discard(conn)
            return
        waiters = self._waiters.get(conn.address)
        while waiters:
            waiter = waiters.pop(0)
            if not waiter.done():
                waiter.set_result(conn)
                return
        conn.idle_since = time.monotonic()
        self._idle.setdefault(conn.address, []).append(conn)

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        self._closed(conn.address)

    def _closed(self, address: Address) -> None:
        self._open[address] = self._open.get(address, 1) - 1
        waiters = self._waiters.get(address)
        while waiters:  # a slot is free: the first waiter opens its own connection
            waiter = waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                break

    def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()


@dataclass(slots=True)
class Head:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    length: int | None  # Content-Length; None: chunked or until the connection ends
    chunked: bool
    keep_alive: bool


class Exchange:
    """One request on one connection: `send` it, read its `head`, then its body."""

    __slots__ = ("_done", "_left", "conn", "head", "timeout")

    def __init__(self, conn: _Connection, timeout: float | None) -> None:
        self.conn = conn
        self.timeout = timeout
        self._done = False
        self._left = 0

    @property
    def complete(self) -> bool:
        """The answer was read to its end and the connection may carry another request."""
        return self._done and self.head.keep_alive

    async def send(self, head: bytes, body: AsyncIterator[bytes] | bytes | None) -> None:
        """Write the request (`head` ends with the blank line; a streamed `body` is sent
        chunked by the caller's framing: see `chunk`)."""
        if body is None or isinstance(body, bytes):
            await self.conn.write(head + body if body else head)
            return
        await self.conn.write(head)
        async for piece in body:
            await self.conn.write(piece)

    async def read_head(self, method: str) -> Head:
        conn = self.conn
        while True:
            end = conn.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(conn.buffer) > MAX_HEAD:
                    raise BackendError("backend answer head too large")
                await conn.more(self.timeout)
                continue
            raw = conn.take(end + 4)
            head = _parse_head(raw, method)
            if 100 <= head.status < 200 and head.status != 101:
                continue  # 100 Continue, 103 Early Hints: the final answer follows
            self.head = head
            if head.length is not None:
                self._left = head.length
            self._done = not head.chunked and head.length == 0
            return head

    async def read_all(self) -> bytes:
        """The whole body of an answer with a Content-Length."""
        conn = self.conn
        while len(conn.buffer) < self._left:
            await conn.more(self.timeout)
        self._done = True
        return conn.take(self._left)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body (de-chunked) as it arrives."""
        conn = self.conn
        head = self.head
        if head.chunked:
            async for piece in self._dechunk():
                yield piece
        elif head.length is not None:
            while self._left:
                if not conn.buffer:
                    await conn.more(self.timeout)
                piece = conn.take(min(self._left, len(conn.buffer)))
                self._left -= len(piece)
                yield piece
        else:  # until the connection ends
            while True:
                if conn.buffer:
                    yield conn.take(len(conn.buffer))
                elif conn.eof:
                    break
                else:
                    await conn.more(self.timeout)
        self._done = True

    async def _dechunk(self) -> AsyncIterator[bytes]:
        conn = self.conn
        while True:
            end = conn.buffer.find(b"\r\n")
            while end < 0:
                await conn.more(self.timeout)
                end = conn.buffer.find(b"\r\n")
            size_line = conn.take(end + 2)
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BackendError("bad chunk size from backend") from None
            if size == 0:  # trailers (dropped), then the blank line
                while True:
                    end = conn.buffer.find(b"\r\n")
                    while end < 0:
                        await conn.more(self.timeout)
                        end = conn.buffer.find(b"\r\n")
                    if not conn.take(end + 2).strip():
                        return
            left = size
            while left:
                if not conn.buffer:
                    await conn.more(self.timeout)
                piece = conn.take(min(left, len(conn.buffer)))
                left -= len(piece)
                yield piece
            while len(conn.buffer) < 2:
                await conn.more(self.timeout)
            conn.take(2)


def _parse_head(raw: bytes, method: str) -> Head:
    lines = raw[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise BackendError("malformed status line from backend")
    status = int(parts[1])
    keep_alive = parts[0] == "HTTP/1.1"
    headers: list[tuple[str, str]] = []
    length: int | None = None
    chunked = False
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise BackendError("malformed header line from backend")
        value = value.strip()
        lower = name.lower()
        if lower == "content-length":
            if not value.isdigit():
                raise BackendError("bad Content-Length from backend")
            length = int(value)
        elif lower == "transfer-encoding":
            chunked = value.lower().endswith("chunked")
        elif lower == "connection":
            tokens = value.lower()
            if "close" in tokens:
                keep_alive = False
            elif "keep-alive" in tokens:
                keep_alive = True
        headers.append((name, value))
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        length, chunked = 0, False
    elif chunked:
        length = None
    elif length is None:
        keep_alive = False  # the body ends with the connection
    return Head(status, parts[2] if len(parts) > 2 else "", headers, length, chunked, keep_alive)


def request_head(method: str, target: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """The request line and headers, ending with the blank line."""
    lines = [f"{method} {target} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


def chunk(data: bytes) -> bytes:
    """`data` framed as one chunk of ``Transfer-Encoding: chunked`` (b"" ends the body)."""
    return b"%x\r\n%s\r\n" % (len(data), data)
