"""One shared nats-py connection per (server, credential fingerprint), for client-protocol mode.

Client mode asks JetStream itself: ``$JS.API.CONSUMER.INFO.<stream>.<consumer>``, which the
consumer's leader answers, so it is exact in a cluster without any node discovery. Every scaler
naming the same ``natsServer`` with the same credentials shares one connection through the
ClientPool; nats-py reconnects it in the background when the server comes back.

Credentials (TriggerAuthentication params only; all but ``username`` are secret):
``username`` + ``password``, or ``token``, or ``nkeySeed`` (an ``SU...`` seed), or ``creds``
(the TEXT of a ``.creds`` file: user JWT and seed). Never a file path. NKey and creds need the
``nkeys`` package (nats-py's ``nkeys`` extra).

Push: `NatsConnection.messages` subscribes (core NATS, no consumer, no ack) to a stream's
subjects, yields once when the server has them (the SUBs, then a PING written behind them: the
server answers it after processing the SUBs), then once per message; it raises ScalerError when
the connection drops.
`subject_wakeups` does the same for a lease held only while the iterator runs (the aws-s3
trigger's bucket events). `nats_url` normalizes a ``nats://host[:port]`` or bare ``host:port``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client, RawCredentials
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from scaler.clients import ClientKey, ClientPool, TlsSettings, fingerprint
from scaler.errors import QueryError, ScalerError
from scaler.lease_slot import LeaseSlot
from scaler.params import redact

log = logging.getLogger(__name__)

_WAKEUP_QUEUE = 64  # pending wake-ups per subscriber; more are redundant (the core coalesces)
_DEFAULT_TLS = TlsSettings()  # the system CAs: what nats-py itself would use for tls://


@dataclass(frozen=True, slots=True, repr=False)
class NatsTarget:
    """A server URL and the credentials to use on it; repr shows no secret."""

    server: str
    username: str | None = None
    password: str | None = None
    token: str | None = None
    nkey_seed: str | None = None
    creds: str | None = None
    timeout: float = 3.0

    def __repr__(self) -> str:
        return f"NatsTarget({self.server!r})"

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.password, self.token, self.nkey_seed, self.creds) if s)

    @property
    def key(self) -> ClientKey:
        material = (self.username, self.password, self.token, self.nkey_seed, self.creds)
        return ClientKey("nats", self.server, fingerprint(*material))


class SharedNats:
    """The pooled client: one nats-py connection plus the subscribers to tell of a drop."""

    def __init__(self, target: NatsTarget) -> None:
        self.target = target
        self.client = Client()
        self.js: JetStreamContext = self.client.jetstream(timeout=target.timeout)
        self._drop_listeners: set[asyncio.Queue[BaseException | None]] = set()
        self.last_error: str = ""

    async def connect(self) -> SharedNats:
        """Connect, or raise ScalerError after `timeout` (nats-py itself would retry forever,
        as it must once connected: reconnecting is what recovers a restarted server)."""
        t = self.target
        options: dict[str, Any] = {
            "servers": [t.server],
            "connect_timeout": t.timeout,
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.5,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnect,
            "name": "tidal",
            # nats-py would build a new default context (~25 ms on the loop) on every
            # (re)connect to a server requiring TLS; it is used only when the server does.
            "tls": await _DEFAULT_TLS.context(),
        }
        if t.username is not None:
            options["user"] = t.username
            options["password"] = t.password or ""
        if t.token is not None:
            options["token"] = t.token
        if t.nkey_seed is not None:
            options["nkeys_seed_str"] = t.nkey_seed
        if t.creds is not None:
            options["user_credentials"] = RawCredentials(t.creds)
        try:
            async with asyncio.timeout(t.timeout):
                await self.client.connect(**options)
        except TimeoutError:
            why = f" (last error: {self.last_error})" if self.last_error else ""
            raise ScalerError(
                f"nats {t.server}: connection failed: no connection within {t.timeout:g} s{why}"
            ) from None
        return self

    async def _on_error(self, exc: Exception) -> None:
        self.last_error = self._redact(f"{type(exc).__name__}: {exc}")
        log.debug(
            "nats connection error", extra={"server": self.target.server, "error": self.last_error}
        )

    async def _on_disconnect(self) -> None:
        for queue in list(self._drop_listeners):
            _offer(queue, ScalerError(f"nats {self.target.server}: connection lost"))

    def listen_for_drop(self, queue: asyncio.Queue[BaseException | None]) -> None:
        self._drop_listeners.add(queue)

    def unlisten(self, queue: asyncio.Queue[BaseException | None]) -> None:
        self._drop_listeners.discard(queue)

    def _redact(self, text: str) -> str:
        return redact(text, self.target.secrets())

    async def close(self) -> None:
        self._drop_listeners.clear()
        if not self.client.is_closed:
            await self.client.close()


def _offer(queue: asyncio.Queue[BaseException | None], item: BaseException | None) -> None:
    if not queue.full():
        queue.put_nowait(item)
    elif item is not None:  # a drop must get through: replace a queued wake-up
        queue.get_nowait()
        queue.put_nowait(item)


async def _connect(target: NatsTarget) -> SharedNats:
    shared = SharedNats(target)
    try:
        return await shared.connect()
    except BaseException:
        await shared.close()
        raise


async def _close(shared: SharedNats) -> None:
    await shared.close()


class NatsConnection:
    """One scaler's handle on the shared connection for `target` (acquired on first use)."""

    def __init__(self, target: NatsTarget, clients: ClientPool) -> None:
        self.target = target
        self._shared_slot: LeaseSlot[SharedNats] = LeaseSlot(
            clients, f"nats {target.server}", target.key, lambda: _connect(target), _close
        )

    async def _shared(self) -> SharedNats:
        try:
            return await self._shared_slot.take()
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise ScalerError(self._message("cannot connect", exc)) from exc

    async def consumer_lag(self, stream: str, consumer: str) -> tuple[int, int]:
        """(num_pending, num_ack_pending) from ``$JS.API.CONSUMER.INFO`` (the leader answers)."""
        shared = await self._shared()
        try:
            info = await shared.js.consumer_info(stream, consumer, timeout=self.target.timeout)
        except NotFoundError as exc:
            raise QueryError(
                f"nats-jetstream: consumer '{consumer}' of stream '{stream}' not found"
                f" at {self.target.server} ({exc.description or 'not found'})"
            ) from exc
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise ScalerError(self._message("consumer info failed", exc)) from exc
        return int(info.num_pending or 0), int(info.num_ack_pending or 0)

    async def stream_subjects(self, stream: str) -> Sequence[str]:
        shared = await self._shared()
        try:
            info = await shared.js.stream_info(stream)
        except NotFoundError as exc:
            raise QueryError(
                f"nats-jetstream: stream '{stream}' not found at {self.target.server}"
            ) from exc
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise ScalerError(self._message("stream info failed", exc)) from exc
        return tuple(info.config.subjects or ())

    async def messages(self, subjects: Sequence[str]) -> AsyncIterator[None]:
        """Yield once subscribed to `subjects`, then once per message published on them;
        ScalerError when the link drops."""
        shared = await self._shared()
        async with contextlib.aclosing(_subscribed(shared, subjects, self._message)) as wakeups:
            async for _ in wakeups:
                yield None

    def _message(self, what: str, exc: BaseException) -> str:
        return _failure("nats-jetstream", self.target, what, exc)

    async def aclose(self) -> None:
        await self._shared_slot.release()


async def subject_wakeups(
    target: NatsTarget, subjects: Sequence[str], clients: ClientPool
) -> AsyncGenerator[None, None]:
    """`NatsConnection.messages` on a lease of the shared connection held while iterating."""

    def message(what: str, exc: BaseException) -> str:
        return _failure("nats", target, what, exc)

    try:
        lease = await clients.acquire(target.key, lambda: _connect(target), _close)
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        raise ScalerError(message("connection failed", exc)) from exc
    try:
        async with contextlib.aclosing(_subscribed(lease.client, subjects, message)) as wakeups:
            async for _ in wakeups:
                yield None
    finally:
        await asyncio.shield(lease.release())


async def _subscribed(
    shared: SharedNats, subjects: Sequence[str], message: Callable[[str, BaseException], str]
) -> AsyncGenerator[None, None]:
    """Subscribe `subjects` on `shared`, yield once the server has the subscriptions, then once
    per message; ScalerError on a drop."""
    queue: asyncio.Queue[BaseException | None] = asyncio.Queue(_WAKEUP_QUEUE)

    async def on_message(_msg: Msg) -> None:
        _offer(queue, None)

    subs = []
    shared.listen_for_drop(queue)
    try:
        try:
            _check_connected(shared)
            for subject in subjects:
                subs.append(await shared.client.subscribe(subject, cb=on_message))
            await _flushed_behind_pending(shared)
            _check_connected(shared)
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise ScalerError(message("subscribe failed", exc)) from exc
        yield None  # subscribed: a PONG came after the server processed every SUB
        while True:
            item = await queue.get()
            if item is not None:
                raise item
            yield None
    finally:
        shared.unlisten(queue)
        # Shielded: a second cancellation must not leave subscriptions on the shared link.
        await asyncio.shield(_unsubscribe_all(subs))


def _check_connected(shared: SharedNats) -> None:
    """While nats-py reconnects, subscribe() and flush() return at once with no server behind
    them: no subscription may be reported then (the drop was told before this subscriber
    listened)."""
    if not shared.client.is_connected:
        raise ConnectionError("not connected (the shared connection is reconnecting)")


async def _flushed_behind_pending(shared: SharedNats) -> None:
    """Return once the server has processed everything written before this call.

    nats-py's `flush` writes its PING straight to the socket, while a SUB just sent still waits in
    nats-py's buffer for its flusher task: on the wire the PING can precede the SUB, and its PONG
    then proves nothing. The flusher was woken before that PING was written, so it has written
    the buffer before the first PONG can be read; a second PING goes out behind it.
    """
    timeout = max(1, round(shared.target.timeout))
    await shared.client.flush(timeout=timeout)
    await shared.client.flush(timeout=timeout)


def _failure(label: str, target: NatsTarget, what: str, exc: BaseException) -> str:
    detail = redact(f"{type(exc).__name__}: {exc}", target.secrets())
    return f"{label} {target.server}: {what}: {detail}"


def nats_url(server: str, schemes: tuple[str, ...] = ("nats",)) -> str | None:
    """``scheme://host:port`` for ``scheme://host[:port]`` or ``host:port`` (port 4222 by
    default), `scheme` one of `schemes` (``tls`` is nats-py's TLS scheme); None for another
    scheme, credentials, a path or a query."""
    text = server if "://" in server else f"{schemes[0]}://{server}"
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in schemes or not parts.hostname or parts.username or parts.password:
        return None
    try:
        port = parts.port or 4222
    except ValueError:
        return None
    if parts.path not in ("", "/") or parts.query:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port}"


async def _unsubscribe_all(subs: list[Any]) -> None:
    for sub in subs:
        with contextlib.suppress(nats.errors.Error, OSError):  # gone with the link
            await sub.unsubscribe()
