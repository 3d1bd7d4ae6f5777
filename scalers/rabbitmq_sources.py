"""How the `rabbitmq` trigger reads a broker: shared hubs, coalesced reads, bounded by a timeout.

A hub is shared through the ClientPool by every scaler reading one broker with one credential
(the key holds a fingerprint of the credentials, never the secret):

* `AmqpHub`: one AMQP connection per (server, vhost, user, TLS material), opened on first need
  and again after it broke; up to `MAX_CHANNELS` channels, each running one passive
  ``queue.declare`` at a time (the broker answers ``declare-ok`` with the ready-message count,
  or closes the channel with 404 when the queue does not exist: that channel is dropped, the
  others go on). A declare that failed on a reused connection for a connection reason is tried
  once more on a new connection (the broker restarted while the connection sat idle).
* `ManagementHub`: one aiohttp session per (management endpoint, credential, TLS material)
  through `scalers.http_common.HttpSource`; GETs of the management API.

Both coalesce: a read of a key (queue, or URL and query) already waiting or running joins it,
and a new round waits `WINDOW` for the other samples of the same scheduler tick, so N objects
reading one queue of one broker cost one declare or one GET per tick (`requests` counts what
was sent, `connects` the AMQP connections opened). Every read is bounded by the trigger's
timeout: a broker that accepts connections and never answers fails the sample with a
ScalerError within it, and scalers of other brokers never wait for it (each has its own hub).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar
from urllib.parse import quote

import aiormq
import aiormq.abc
from aiormq import exceptions as amqp_errors
from yarl import URL

from scaler.clients import ClientKey, ClientPool, TlsSettings, fingerprint
from scaler.errors import QueryError, ScalerError
from scaler.lease_slot import LeaseSlot
from scaler.params import redact
from scalers.http_common import HttpAuth, HttpSource

WINDOW = 0.005  # seconds a round waits for the same tick's other samples
MAX_CHANNELS = 4  # per AMQP connection: distinct queues are declared side by side
CLOSE_WAIT = 2.0  # seconds closing a connection may take
CONNECTION_NAME = "tidal"  # shown in the broker's connection list

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Rounds(Generic[K, V]):
    """Coalesced reads by key: callers of one key within `WINDOW` (or while it runs) share one
    call of `read(key)`; each caller waits at most `timeout` seconds for it."""

    def __init__(self, read: Callable[[K], Awaitable[V]], timeout: float, what: str) -> None:
        self._read = read
        self._timeout = timeout
        self._what = what
        self._running: dict[K, asyncio.Task[V]] = {}
        self._tasks: set[asyncio.Task[V]] = set()

    async def get(self, key: K) -> V:
        task = self._running.get(key)
        if task is None or task.done():
            task = asyncio.create_task(self._round(key), name=f"rabbitmq {self._what}")
            self._running[key] = task
            self._tasks.add(task)
            task.add_done_callback(lambda done: self._finished(key, done))
        try:
            return await asyncio.wait_for(asyncio.shield(task), self._timeout)
        except TimeoutError:
            if self._running.get(key) is task:
                del self._running[key]  # the next sample starts a new round
            raise ScalerError(
                f"rabbitmq {self._what}: no answer within {self._timeout:g} s"
            ) from None

    async def _round(self, key: K) -> V:
        await asyncio.sleep(WINDOW)
        async with asyncio.timeout(self._timeout):
            return await self._read(key)

    def _finished(self, key: K, task: asyncio.Task[V]) -> None:
        self._tasks.discard(task)
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # retrieved: a round nobody awaits any more is not "never retrieved"

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_WAIT)


@dataclass(frozen=True, slots=True, repr=False)
class AmqpTarget:
    """One broker, vhost and credential over AMQP 0-9-1; repr and `endpoint` show no secret."""

    tls: bool  # amqps
    host: str
    port: int
    vhost: str
    username: str
    password: str
    tls_settings: TlsSettings | None
    timeout: float
    secrets: tuple[str, ...] = field(default=())

    @property
    def endpoint(self) -> str:
        scheme = "amqps" if self.tls else "amqp"
        return f"{scheme}://{self.host}:{self.port} vhost '{self.vhost}'"

    def __repr__(self) -> str:
        return f"AmqpTarget({self.endpoint}, user={self.username!r})"

    def key(self) -> ClientKey:
        material = (
            self.username,
            self.password,
            self.tls_settings and self.tls_settings.fingerprint,
        )
        return ClientKey(
            "rabbitmq-amqp", f"{self.endpoint} {self.timeout:g}", fingerprint(*material)
        )

    def url(self) -> URL:
        return URL.build(
            scheme="amqps" if self.tls else "amqp",
            user=quote(self.username, safe=""),
            password=quote(self.password, safe=""),
            host=self.host,
            port=self.port,
            path="/" + quote(self.vhost, safe=""),
            query_string=f"name={CONNECTION_NAME}",
            encoded=True,
        )


def _amqp_failure(exc: BaseException) -> str:
    """What an aiormq failure means, without the URL (which holds the password)."""
    if isinstance(exc, amqp_errors.ProbableAuthenticationError | amqp_errors.AuthenticationError):
        return f"authentication failed ({exc.args[0] if exc.args else 'ACCESS_REFUSED'})"
    if isinstance(exc, amqp_errors.ConnectionNotAllowed):
        return f"connection refused by the broker ({exc.args[-1] if exc.args else exc})"
    if isinstance(exc, amqp_errors.ChannelNotFoundEntity):
        return f"queue not found ({exc.args[0] if exc.args else exc})"
    if isinstance(exc, amqp_errors.ChannelAccessRefused):
        return f"access refused ({exc.args[0] if exc.args else exc})"
    return f"{type(exc).__name__}: {exc}"


class _Reconnect(ScalerError):
    """A reused connection turned out to be broken (tried once more on a new one)."""


class AmqpHub:
    """Passive queue declarations on one shared connection; see the module docstring."""

    def __init__(self, target: AmqpTarget) -> None:
        self.target = target
        self._conn: aiormq.abc.AbstractConnection | None = None
        self._connecting = asyncio.Lock()
        self._slots = asyncio.Semaphore(MAX_CHANNELS)
        self._idle: list[aiormq.abc.AbstractChannel] = []
        self._rounds: Rounds[str, int] = Rounds(
            self._declare, target.timeout, f"AMQP {target.endpoint}"
        )
        self._closing: set[asyncio.Task[None]] = set()
        self.requests = 0  # passive declares sent
        self.connects = 0  # connections opened

    async def message_count(self, queue: str) -> int:
        """The ready messages in `queue` (coalesced with a read of it already pending)."""
        return await self._rounds.get(queue)

    async def _declare(self, queue: str) -> int:
        async with self._slots:
            try:
                return await self._declare_once(queue, reuse=True)
            except _Reconnect:
                return await self._declare_once(queue, reuse=False)

    async def _declare_once(self, queue: str, *, reuse: bool) -> int:
        reused = reuse and self._conn is not None and not self._conn.is_closed
        conn = await self._connection(fresh=not reuse)
        channel = self._idle.pop() if self._idle else None
        try:
            if channel is None or channel.is_closed:
                channel = await conn.channel(publisher_confirms=False)
            self.requests += 1
            ok = await channel.queue_declare(queue, passive=True)
        except amqp_errors.AMQPChannelError as exc:
            raise QueryError(self._message(f"queue '{queue}': {_amqp_failure(exc)}")) from None
        except (amqp_errors.AMQPError, ConnectionError, OSError, RuntimeError) as exc:
            await self._drop(conn)
            message = self._message(_amqp_failure(exc))
            raise (_Reconnect(message) if reused else ScalerError(message)) from None
        except asyncio.CancelledError:
            # Timed out: the channel may still get its answer later; close it (bounded) rather
            # than leave one open channel per timed-out read until the heartbeat ends it all.
            if channel is not None:
                self._close_later(channel)
            raise
        self._idle.append(channel)
        count = ok.message_count
        if not isinstance(count, int):
            raise QueryError(self._message(f"queue '{queue}': declare-ok without a count"))
        return count

    async def _connection(self, *, fresh: bool) -> aiormq.abc.AbstractConnection:
        async with self._connecting:
            conn = self._conn
            if conn is not None and not conn.is_closed and not fresh:
                return conn
            if conn is not None:
                await self._drop(conn)
            context: ssl.SSLContext | None = None
            if self.target.tls_settings is not None:
                try:
                    context = await self.target.tls_settings.context()
                except ValueError as exc:
                    raise ScalerError(self._message(f"invalid TLS settings: {exc}")) from None
            new = aiormq.Connection(self.target.url(), context=context)
            self.connects += 1
            try:
                await new.connect()
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(new.close(), CLOSE_WAIT)
                if isinstance(exc, Exception) and not isinstance(exc, asyncio.CancelledError):
                    raise ScalerError(self._message(_amqp_failure(exc))) from None
                raise
            self._conn = new
            return new

    def _close_later(self, channel: aiormq.abc.AbstractChannel) -> None:
        task = asyncio.ensure_future(_close_quietly(channel))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _drop(self, conn: aiormq.abc.AbstractConnection) -> None:
        if self._conn is conn:
            self._conn = None
            self._idle.clear()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.close(), CLOSE_WAIT)

    def _message(self, what: str) -> str:
        return redact(f"rabbitmq {self.target.endpoint}: {what}", self.target.secrets)

    async def aclose(self) -> None:
        await self._rounds.aclose()
        if self._closing:
            await asyncio.wait(set(self._closing), timeout=CLOSE_WAIT)
        conn, self._conn = self._conn, None
        self._idle.clear()
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), CLOSE_WAIT)


async def _close_quietly(closable: aiormq.abc.AbstractChannel) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(closable.close(), CLOSE_WAIT)


@dataclass(frozen=True, slots=True)
class HttpRead:
    """One GET of the management API: URL (encoded) and query parameters."""

    url: str
    params: tuple[tuple[str, str], ...] = ()


class ManagementHub:
    """GETs of one management endpoint with one credential, coalesced by URL and query."""

    def __init__(self, base: str, auth: HttpAuth, timeout: float, clients: ClientPool) -> None:
        self.base = base
        self._source = HttpSource("rabbitmq", base + "/", auth, timeout, clients)
        self._rounds: Rounds[HttpRead, bytes] = Rounds(self._get, timeout, f"GET {base}")
        self.requests = 0  # GETs sent

    async def get(self, read: HttpRead) -> bytes:
        return await self._rounds.get(read)

    async def _get(self, read: HttpRead) -> bytes:
        self.requests += 1
        return await self._source.get(read.url, dict(read.params) or None)

    async def aclose(self) -> None:
        await self._rounds.aclose()
        await self._source.aclose()


class _Hub(Protocol):
    async def aclose(self) -> None: ...


H = TypeVar("H", bound=_Hub)


class HubLease(Generic[H]):
    """One scaler's lease on a shared hub, taken on first use and released by `aclose()`."""

    def __init__(self, key: ClientKey, create: Callable[[], H], clients: ClientPool) -> None:
        self._create = create
        self._hub: LeaseSlot[H] = LeaseSlot(clients, "rabbitmq", key, self._make, self._close)

    async def hub(self) -> H:
        return await self._hub.take()

    async def _make(self) -> H:
        return self._create()

    @staticmethod
    async def _close(hub: H) -> None:
        await hub.aclose()

    async def aclose(self) -> None:
        await self._hub.release()


def query_pairs(params: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(params.items()))
