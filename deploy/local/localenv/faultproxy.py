"""A loopback TCP proxy that injects faults between a client and a real server (test fixture).

`FaultProxy(upstream)` listens on 127.0.0.1 (a free port) and forwards every connection to
`upstream`. It runs its own event loop on a thread, so its timing does not depend on the loop of
the code under test, and it can be driven from sync or async code alike. Modes:

* ``pass``      forward both ways, untouched.
* ``delay``     forward, but hold every chunk the server sends for `seconds` first (responses
                slower than the client's timeout); client → server traffic is untouched. Applies
                to open connections too; switching back to ``pass`` releases held chunks at once.
* ``blackhole`` accept connections and read what the client sends, never connect upstream and
                never answer (a server that hangs).
* ``refuse``    close the listening socket: new connections are refused.
* ``tls``       terminate TLS with the given server context and forward plain text upstream:
                a server that now speaks TLS (or presents a certificate from another CA).

With ``record=True`` it also keeps every byte it forwarded upstream (all connections, in
arrival order): `sent()` returns them, for a test that checks what a client wrote and in which
order.

A mode change closes the open connections when `drop` is true (the default for ``blackhole``,
``refuse`` and ``tls``: a server restarted with a new configuration) and leaves them open
otherwise (``pass`` and ``delay``: the same server, now slow or fast again).

Loopback only: the proxy binds 127.0.0.1 and its upstream must be a loopback address.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import socket
import ssl
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

HOST = "127.0.0.1"
CHUNK = 65536
Mode = Literal["pass", "delay", "blackhole", "refuse", "tls"]
T = TypeVar("T")


REBIND_ATTEMPTS = 25  # x 0.2 s


@dataclass(frozen=True, slots=True)
class _State:
    mode: Mode = "pass"
    seconds: float = 0.0
    tls: ssl.SSLContext | None = None


class _Conn:
    """One proxied connection: the client's streams, the upstream's (when connected)."""

    __slots__ = ("client", "tasks", "upstream")

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []

    def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        for w in (self.client, self.upstream):
            if w is not None:
                with contextlib.suppress(Exception):
                    w.transport.abort()


class FaultProxy:
    """See the module docstring. `start()` before use, `stop()` at the end (or `with`)."""

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        name: str = "proxy",
        port: int = 0,
        record: bool = False,
    ) -> None:
        host, up_port = upstream
        if not ipaddress.ip_address(socket.gethostbyname(host)).is_loopback:
            raise ValueError(f"{name}: upstream {host} is not a loopback address")
        self.name = name
        self.upstream = (host, up_port)
        self.port = port
        self.accepted = 0  # connections accepted since start (all modes)
        self._state = _State()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()
        self._changed: asyncio.Event | None = None
        self._listen_tls: ssl.SSLContext | None = None
        self._record = record
        self._sent = bytearray()
        self._sent_lock = threading.Lock()

    # -- public API (any thread) ------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def mode(self) -> Mode:
        return self._state.mode

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    def sent(self) -> bytes:
        """Every byte forwarded upstream so far (only with ``record=True``)."""
        with self._sent_lock:
            return bytes(self._sent)

    def start(self) -> FaultProxy:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name=self.name, daemon=True)
        self._thread.start()
        self._call(self._init())
        return self

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        loop.close()

    def set_mode(
        self,
        mode: Mode,
        *,
        seconds: float = 0.0,
        tls: ssl.SSLContext | None = None,
        drop: bool | None = None,
    ) -> None:
        """Switch mode (see the module docstring); blocks until the listener is in that state."""
        if mode == "delay" and seconds <= 0:
            raise ValueError("delay mode needs seconds > 0")
        if mode == "tls" and tls is None:
            raise ValueError("tls mode needs a server SSLContext")
        if drop is None:
            drop = mode in ("blackhole", "refuse", "tls")
        self._call(self._apply(_State(mode, seconds, tls), drop))

    def pass_through(self) -> None:
        self.set_mode("pass")

    def delay(self, seconds: float) -> None:
        self.set_mode("delay", seconds=seconds)

    def blackhole(self) -> None:
        self.set_mode("blackhole")

    def refuse(self) -> None:
        self.set_mode("refuse")

    def terminate_tls(self, context: ssl.SSLContext) -> None:
        self.set_mode("tls", tls=context)

    def drop_connections(self) -> None:
        self._call(self._drop())

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"FaultProxy({self.name} {self.address} -> {self.upstream[0]}:{self.upstream[1]})"

    # -- loop side --------------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError(f"{self.name} is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    async def _init(self) -> None:
        self._changed = asyncio.Event()
        await self._listen()

    async def _listen(self, tls: ssl.SSLContext | None = None) -> None:
        """Listen (TLS-terminating with `tls`); re-binds the same port when that changes."""
        if self._server is not None:
            if self._listen_tls is tls:
                return
            await self._unlisten()
        self._listen_tls = tls
        # Re-binding the same port can fail for a moment (a connection of the old listener still
        # closing holds it): retry for a few seconds before giving up (seen once in a CI run).
        for attempt in range(REBIND_ATTEMPTS):
            try:
                self._server = await asyncio.start_server(
                    self._accept,
                    HOST,
                    self.port,
                    reuse_address=True,
                    limit=CHUNK,
                    ssl=tls,
                    ssl_handshake_timeout=10.0 if tls is not None else None,
                )
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or attempt == REBIND_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.2)
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])

    async def _unlisten(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            # Server.wait_closed() also waits for the handlers of open connections: don't.

    async def _drop(self) -> None:
        conns, self._conns = self._conns, set()
        for c in conns:
            c.close()

    async def _apply(self, state: _State, drop: bool) -> None:
        self._state = state
        assert self._changed is not None
        self._changed.set()
        self._changed = asyncio.Event()
        if drop:
            await self._drop()
        if state.mode == "refuse":
            await self._unlisten()
        else:
            await self._listen(state.tls if state.mode == "tls" else None)

    async def _shutdown(self) -> None:
        await self._unlisten()
        await self._drop()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        conn = _Conn(writer)
        self._conns.add(conn)
        state = self._state
        try:
            if state.mode == "blackhole":
                while await reader.read(CHUNK):
                    pass
                return
            up_reader, up_writer = await asyncio.open_connection(*self.upstream, limit=CHUNK)
            conn.upstream = up_writer
            down = asyncio.create_task(self._pump(up_reader, writer, slow=True))
            conn.tasks.append(down)
            await self._pump(reader, up_writer, slow=False)
            await down
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._conns.discard(conn)
            conn.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, slow: bool
    ) -> None:
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                if slow:
                    await self._hold()
                elif self._record:
                    with self._sent_lock:
                        self._sent += data
                writer.write(data)
                await writer.drain()
        except (OSError, ssl.SSLError, ConnectionError):
            pass
        finally:
            with contextlib.suppress(Exception):
                if writer.can_write_eof():
                    writer.write_eof()

    async def _hold(self) -> None:
        """In delay mode, wait `seconds` (or until the mode changes) before forwarding."""
        state, changed = self._state, self._changed
        if state.mode != "delay" or changed is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(state.seconds):
                await changed.wait()
