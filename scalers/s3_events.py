"""Bucket notifications as wake-ups for the `aws-s3` trigger (the push half of `scalers.s3`).

An S3 store announces object puts to a queue (AWS: S3 -> SQS; MinIO: a Redis list, a NATS
subject, Kafka, ...). Tidal listens to that queue WITHOUT consuming it and only uses an event
as a hint to list the bucket now instead of at the next poll: the listing decides activation.

* **Redis** (``eventsRedisAddress`` + ``eventsRedisList``): MinIO's Redis target in ``access``
  format RPUSHes each event to a list. Tidal subscribes to the list's keyspace channel
  (``__keyspace@<db>__:<list>``) and wakes on every push; the list is neither read nor popped.
  The server needs keyspace notifications for lists (``notify-keyspace-events`` with ``K`` and
  ``l`` or ``A``); when ``CONFIG GET`` shows they are off, ``wakeups()`` raises `ScalerError`
  saying so (when CONFIG is not allowed the check is skipped). No polling of the list.
* **NATS** (``eventsNatsServer`` + ``eventsNatsSubject``): a core-NATS subscription; every
  message wakes.

One connection per server and credentials serves every scaler (a `ClientPool` lease held by
each ``wakeups()`` iterator while it runs); one server-side subscription per channel or
subject, fanned out to the iterators. Wake-ups coalesce: many events before the consumer
resumes are one wake-up. When the connection breaks, every iterator on it raises
`ScalerError`; the core falls back to polling and calls ``wakeups()`` again, which connects
afresh once the last iterator of the broken connection has ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

import nats
from nats import errors as nats_errors
from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from scaler.clients import ClientKey, ClientPool
from scaler.contract import TriggerContext
from scaler.errors import ScalerError
from scaler.params import Config, redact
from scalers.s3 import NatsEvents, RedisEvents, S3Scaler

log = logging.getLogger(__name__)

# Keyspace events of commands that add to a list (RPUSHX / LPUSHX / LMOVE report these too).
PUSH_EVENTS = frozenset({"rpush", "lpush", "linsert"})


class Mailbox:
    """One iterator's inbox: a coalescing 'something happened' flag, or the error that ended it."""

    __slots__ = ("_error", "_event")

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._error: ScalerError | None = None

    def notify(self) -> None:
        self._event.set()

    def fail(self, error: ScalerError) -> None:
        if self._error is None:
            self._error = error
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event.clear()
        if self._error is not None:
            raise self._error


class Hub(Protocol):
    """A shared connection that fans one server-side subscription out to many mailboxes."""

    async def subscribe(self, channel: str) -> Mailbox: ...

    async def unsubscribe(self, channel: str, box: Mailbox) -> None: ...

    async def aclose(self) -> None: ...


H = TypeVar("H", bound=Hub)


class _Boxes:
    """Mailboxes by channel, and failing them all at once."""

    def __init__(self) -> None:
        self.by_channel: dict[str, set[Mailbox]] = {}
        self.broken: ScalerError | None = None

    def add(self, channel: str) -> tuple[Mailbox, bool]:
        """A new mailbox, and whether it is the channel's first."""
        box = Mailbox()
        boxes = self.by_channel.setdefault(channel, set())
        boxes.add(box)
        return box, len(boxes) == 1

    def remove(self, channel: str, box: Mailbox) -> bool:
        """Forget `box`; True when its channel has no mailbox left."""
        boxes = self.by_channel.get(channel)
        if boxes is None:
            return False
        boxes.discard(box)
        if boxes:
            return False
        del self.by_channel[channel]
        return True

    def notify(self, channel: str) -> None:
        for box in self.by_channel.get(channel, ()):
            box.notify()

    def fail_all(self, error: ScalerError) -> None:
        self.broken = error
        for boxes in self.by_channel.values():
            for box in boxes:
                box.fail(error)


# -- Redis: keyspace notifications of the events list --------------------------------------------


def keyspace_channel(target: RedisEvents) -> str:
    return f"__keyspace@{target.db}__:{target.list_key}"


def _notifies_lists(flags: str) -> bool:
    return "K" in flags and ("A" in flags or "l" in flags)


class RedisHub:
    """One pub/sub connection to one Redis, shared by every watcher of its lists."""

    def __init__(self, target: RedisEvents) -> None:
        self._target = target
        self._client = Redis(
            host=target.host,
            port=target.port,
            db=target.db,
            username=target.username,
            password=target.password,
            socket_timeout=target.timeout,  # pub/sub reads block without it (see _read)
            socket_connect_timeout=target.timeout,
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 1),
            decode_responses=True,
        )
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        self._boxes = _Boxes()
        self._checked = False
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def subscribe(self, channel: str) -> Mailbox:
        async with self._lock:
            if self._boxes.broken is not None:
                raise self._boxes.broken
            if not self._checked:
                try:
                    await self._check_notifications()
                except (redis_errors.RedisError, OSError, TimeoutError) as exc:
                    raise ScalerError(self._message("connection failed", exc)) from exc
                self._checked = True
            box, first = self._boxes.add(channel)
            if first:
                try:
                    await self._pubsub.subscribe(channel)
                except (redis_errors.RedisError, OSError, TimeoutError) as exc:
                    self._boxes.remove(channel, box)
                    raise ScalerError(self._message("subscribe failed", exc)) from exc
            if self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._read(), name="tidal-s3-events-redis")
            return box

    async def _check_notifications(self) -> None:
        try:
            answer = await self._client.config_get("notify-keyspace-events")
        except redis_errors.ResponseError:
            return  # CONFIG is not allowed (managed Redis, ACL): trust the operator
        flags = str(answer.get("notify-keyspace-events", ""))
        if not _notifies_lists(flags):
            raise ScalerError(
                f"redis {self._target.endpoint}: keyspace notifications for lists are off"
                f" (notify-keyspace-events is '{flags}'); bucket events need 'Kl' or 'KA'"
                " (CONFIG SET notify-keyspace-events Kl)"
            )

    async def _read(self) -> None:
        try:
            while self._boxes.by_channel:
                message = await self._pubsub.get_message(timeout=None)
                if message is not None and message.get("data") in PUSH_EVENTS:
                    self._boxes.notify(str(message.get("channel")))
        except (redis_errors.RedisError, OSError, TimeoutError) as exc:
            self._boxes.fail_all(ScalerError(self._message("subscription lost", exc)))

    async def unsubscribe(self, channel: str, box: Mailbox) -> None:
        async with self._lock:
            if self._boxes.remove(channel, box) and self._boxes.broken is None:
                try:
                    await self._pubsub.unsubscribe(channel)
                except (redis_errors.RedisError, OSError, TimeoutError) as exc:
                    self._boxes.fail_all(ScalerError(self._message("unsubscribe failed", exc)))

    def _message(self, what: str, exc: BaseException) -> str:
        detail = redact(f"{type(exc).__name__}: {exc}", self._target.secrets())
        return f"redis {self._target.endpoint}: {what}: {detail}"

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self._client.aclose()


# -- NATS: a core subscription to the events subject ---------------------------------------------


class NatsHub:
    """One NATS connection, shared by every watcher of its subjects; no reconnects (see module)."""

    def __init__(self, target: NatsEvents) -> None:
        self._target = target
        self._nc: Any = None
        self._boxes = _Boxes()
        self._subs: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    async def connect(self) -> NatsHub:
        try:
            self._nc = await nats.connect(
                self._target.server,
                user=self._target.username,
                password=self._target.password,
                name="tidal-s3-events",
                allow_reconnect=False,
                # Two tries of the first connect, then NoServersError (the default is 60 x 2 s).
                max_reconnect_attempts=1,
                reconnect_time_wait=1,
                connect_timeout=max(1, round(self._target.timeout)),
                ping_interval=20,
                closed_cb=self._closed,
                error_cb=self._error,
            )
        except (nats_errors.Error, OSError, TimeoutError) as exc:
            raise ScalerError(self._message("connection failed", exc)) from exc
        return self

    async def _closed(self) -> None:
        self._boxes.fail_all(ScalerError(f"nats {self._target.server}: connection closed"))

    async def _error(self, exc: Exception) -> None:
        # The connection reports its own errors; a broken one also closes (see _closed).
        log.debug(
            "s3 events nats connection error",
            extra={"server": self._target.server, "error": self._message("error", exc)},
        )

    async def subscribe(self, channel: str) -> Mailbox:
        async with self._lock:
            if self._boxes.broken is not None or self._nc.is_closed:
                raise self._boxes.broken or ScalerError(
                    f"nats {self._target.server}: connection closed"
                )
            box, first = self._boxes.add(channel)
            if first:
                try:
                    self._subs[channel] = await self._nc.subscribe(
                        channel, cb=self._callback(channel)
                    )
                    await self._nc.flush(timeout=self._target.timeout)
                except (nats_errors.Error, OSError, TimeoutError) as exc:
                    self._boxes.remove(channel, box)
                    self._subs.pop(channel, None)
                    raise ScalerError(self._message("subscribe failed", exc)) from exc
            return box

    def _callback(self, channel: str) -> Callable[[Any], Awaitable[None]]:
        async def on_message(_msg: Any) -> None:
            self._boxes.notify(channel)

        return on_message

    async def unsubscribe(self, channel: str, box: Mailbox) -> None:
        async with self._lock:
            if self._boxes.remove(channel, box):
                sub = self._subs.pop(channel, None)
                if sub is not None and not self._nc.is_closed:
                    try:
                        await sub.unsubscribe()
                    except (nats_errors.Error, OSError) as exc:
                        self._boxes.fail_all(ScalerError(self._message("unsubscribe failed", exc)))

    def _message(self, what: str, exc: BaseException) -> str:
        detail = redact(f"{type(exc).__name__}: {exc}", self._target.secrets())
        return f"nats {self._target.server}: {what}: {detail}"

    async def aclose(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()


# -- the push scaler -----------------------------------------------------------------------------


async def _new_redis_hub(target: RedisEvents) -> RedisHub:
    return RedisHub(target)


async def _new_nats_hub(target: NatsEvents) -> NatsHub:
    return await NatsHub(target).connect()


async def _close_hub(hub: Hub) -> None:
    await hub.aclose()


async def watch(
    clients: ClientPool, key: ClientKey, factory: Callable[[], Awaitable[H]], channel: str
) -> AsyncIterator[None]:
    """Yield once per (coalesced) event on `channel` of the shared hub for `key`."""
    lease = await clients.acquire(key, factory, _close_hub)
    try:
        box = await lease.client.subscribe(channel)
        try:
            while True:
                await box.wait()
                yield None
        finally:
            await lease.client.unsubscribe(channel, box)
    finally:
        await lease.release()


class S3EventsScaler(S3Scaler):
    """`S3Scaler` with ``wakeups()`` from the bucket's notifications (built by S3Scaler)."""

    def __init__(self, config: Config, trigger: TriggerContext, clients: ClientPool) -> None:
        super().__init__(config, trigger, clients)
        if self.events is None:
            raise ValueError("S3EventsScaler needs an events source")

    def wakeups(self) -> AsyncIterator[None]:
        events = self.events
        if isinstance(events, RedisEvents):
            redis_target = events
            return watch(
                self._clients,
                events.key(),
                lambda: _new_redis_hub(redis_target),
                keyspace_channel(events),
            )
        assert isinstance(events, NatsEvents)
        nats_target = events
        return watch(
            self._clients, events.key(), lambda: _new_nats_hub(nats_target), events.subject
        )
