"""Push wake-ups for Redis triggers from keyspace notifications.

One pub/sub connection per Redis server (and credentials) is shared by every object watching a
key on it, through the ClientPool. Each subscriber gets a coalescing flag, not a queue: a burst
of 10,000 LPUSHes sets the flag 10,000 times and wakes the object once. The server must have
keyspace notifications for lists enabled (``notify-keyspace-events`` containing ``K`` and ``l``
or ``A``); when it does not, `wakeups()` raises ScalerError saying so and the object is polled.
A subscriber may name the keyspace events it wakes on: the aws-s3 trigger's bucket events
(`scalers.s3_events`) share the hub and wake only on pushes to their list.

`key_wakeups` yields first once the subscription is live: when the hub's reader has seen the
server's reply to the channel's SUBSCRIBE (at once when another subscriber's already came), as
Redis publishes to a channel only after that; then once per burst of changes. The channels
asked for in one event-loop iteration go out as ONE ``SUBSCRIBE ch1 ch2 ...``: 1000 objects
starting together cost a few round trips, not 1000 one after another (~2 min at 1000 on a
loaded machine, measured by benchmarks/daemon_scale.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Collection
from typing import Any

from redis import exceptions as redis_errors

from scaler.clients import ClientKey, ClientPool, Lease
from scaler.errors import ScalerError, UnsupportedError
from scalers.redis_common import RedisTarget, close_client, create_client

log = logging.getLogger(__name__)

# Servers found with keyspace notifications off: every object on them polls. The answer is
# remembered for RECHECK_OFF_AFTER seconds, so objects starting together ask the server once;
# the core re-checks each object far less often (PollSettings.push_recheck), so turning the
# notifications on later brings push back within one re-check.
RECHECK_OFF_AFTER = 5.0
_NOTIFICATIONS_OFF: dict[tuple[str, str], float] = {}


def keyspace_enabled(flags: str, type_flag: str = "l") -> bool:
    """Whether `notify-keyspace-events` flags publish keyspace events for a key type's commands
    (``l`` lists, ``t`` streams, ``z`` sorted sets, ``s`` sets, ``h`` hashes; ``A`` = all)."""
    return "K" in flags and (type_flag in flags or "A" in flags)


class _Pending:
    """A channel's SUBSCRIBE on its way: `done` is set by the reader (the reply came) or by the
    sender (`error` when the command failed)."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.error: str | None = None


class KeyspaceHub:
    """A shared pub/sub connection fanning keyspace events out to per-subscriber flags; a
    subscriber may name the events (commands, e.g. ``rpush``) it wakes on, else any event."""

    def __init__(self, target: RedisTarget, client: Any, type_flag: str = "l") -> None:
        self._target = target
        self._type_flag = type_flag
        self._client = client
        self._pubsub = client.pubsub()
        self._subscribers: dict[str, dict[asyncio.Event, Collection[str] | None]] = {}
        self._confirming: dict[str, _Pending] = {}  # SUBSCRIBE asked, reply not read yet
        self._live: set[str] = set()  # channels whose SUBSCRIBE reply was read
        self._to_send: list[str] = []  # channels to SUBSCRIBE in this loop iteration
        self._sends: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()  # orders SUBSCRIBE / UNSUBSCRIBE commands on the wire
        self._reader: asyncio.Task[None] | None = None
        self.error: str | None = None
        self.closed = asyncio.Event()

    async def start(self) -> None:
        try:
            flags = ""
            with contextlib.suppress(redis_errors.ResponseError):  # CONFIG may be disabled
                flags = str(
                    (await self._client.config_get("notify-keyspace-events")).get(
                        "notify-keyspace-events", "KA"
                    )
                )
                if not keyspace_enabled(flags, self._type_flag):
                    _NOTIFICATIONS_OFF[(self._target.endpoint, self._type_flag)] = (
                        time.monotonic() + RECHECK_OFF_AFTER
                    )
                    raise UnsupportedError(
                        f"redis {self._target.endpoint}: keyspace notifications are off "
                        f"(notify-keyspace-events={flags!r}); include 'K' and "
                        f"'{self._type_flag}' for push wake-ups; polling meanwhile"
                    )
            # A placeholder subscription so the connection is in pub/sub mode before the reader.
            await self._pubsub.subscribe("__tidal__:hello")
        except (redis_errors.RedisError, OSError) as exc:
            raise ScalerError(
                f"redis {self._target.endpoint}: push connection failed: {type(exc).__name__}"
            ) from exc
        self._reader = asyncio.create_task(self._read(), name="redis-keyspace-reader")

    async def _read(self) -> None:
        try:
            while True:
                msg = await self._pubsub.get_message(timeout=5.0)
                if msg is None:
                    continue
                channel, event = msg.get("channel"), msg.get("data")
                if isinstance(channel, bytes):
                    channel = channel.decode()
                if msg.get("type") == "subscribe":  # the server's reply: the channel is live
                    self._live.add(str(channel))
                    pending = self._confirming.pop(str(channel), None)
                    if pending is not None:
                        pending.done.set()
                    continue
                if msg.get("type") != "message":
                    continue
                if isinstance(event, bytes):
                    event = event.decode()
                for flag, wanted in self._subscribers.get(str(channel), {}).items():
                    if wanted is None or event in wanted:
                        flag.set()
        except asyncio.CancelledError:
            raise
        except (redis_errors.RedisError, OSError) as exc:
            self.error = (
                f"redis {self._target.endpoint}: push connection lost: {type(exc).__name__}"
            )
        except Exception as exc:  # anything else also ends the subscription; logged by the core
            self.error = f"redis {self._target.endpoint}: push reader failed: {type(exc).__name__}"
        self.closed.set()
        for flags in self._subscribers.values():
            for flag in flags:
                flag.set()

    async def subscribe(
        self, channel: str, flag: asyncio.Event, events: Collection[str] | None = None
    ) -> None:
        """Add `flag` to `channel`'s subscribers; returns once the server has confirmed the
        channel's SUBSCRIBE (at once when an earlier subscriber's was), so that every event
        the server publishes afterwards sets `flag`. Returns early if the connection is lost
        meanwhile (`closed`); raises ScalerError when the reply does not come in time."""
        self._subscribers.setdefault(channel, {})[flag] = events
        if channel in self._live:
            return
        pending = self._confirming.get(channel)
        if pending is None:  # the first subscriber: SUBSCRIBE it with this iteration's others
            pending = self._confirming[channel] = _Pending()
            self._to_send.append(channel)
            if len(self._to_send) == 1:
                asyncio.get_running_loop().call_soon(self._send_subscribes)
        await self._confirmed(channel, pending)

    def _send_subscribes(self) -> None:
        channels, self._to_send = self._to_send, []
        task = asyncio.create_task(self._subscribe_all(channels), name="redis-keyspace-subscribe")
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _subscribe_all(self, channels: list[str]) -> None:
        async with self._lock:
            # A channel whose subscribers all left meanwhile is not subscribed any more.
            wanted = [c for c in channels if c in self._subscribers]
            error: str | None = None
            try:
                if wanted:
                    await self._pubsub.subscribe(*wanted)
                    return
            except (redis_errors.RedisError, OSError) as exc:
                error = f"redis {self._target.endpoint}: subscribe failed: {type(exc).__name__}"
            for channel in channels:  # failed, or not wanted: release the waiters
                pending = self._confirming.pop(channel, None)
                if pending is not None:
                    pending.error = error
                    pending.done.set()

    async def _confirmed(self, channel: str, pending: _Pending) -> None:
        """Wait for the reader to see the SUBSCRIBE reply of `channel` (or the link's end)."""
        waits = [asyncio.ensure_future(e.wait()) for e in (pending.done, self.closed)]
        try:
            done, _ = await asyncio.wait(
                waits, timeout=self._target.timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for wait in waits:
                wait.cancel()
        if pending.error is not None:
            raise ScalerError(pending.error)
        if not done:
            if self._confirming.get(channel) is pending:
                del self._confirming[channel]  # the next subscriber asks again
            raise ScalerError(
                f"redis {self._target.endpoint}: subscribe not confirmed within "
                f"{self._target.timeout:g} s"
            )

    async def unsubscribe(self, channel: str, flag: asyncio.Event) -> None:
        async with self._lock:
            flags = self._subscribers.get(channel)
            if flags is None:
                return
            flags.pop(flag, None)
            if not flags:
                del self._subscribers[channel]
                self._live.discard(channel)
                if not self.closed.is_set():
                    with contextlib.suppress(redis_errors.RedisError, OSError):
                        await self._pubsub.unsubscribe(channel)

    async def aclose(self) -> None:
        for task in list(self._sends):
            task.cancel()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()
        with contextlib.suppress(Exception):
            await close_client(self._client)


async def _close_hub(hub: KeyspaceHub) -> None:
    await hub.aclose()


async def key_wakeups(
    target: RedisTarget,
    key: str,
    clients: ClientPool,
    type_flag: str = "l",
    events: Collection[str] | None = None,
) -> AsyncGenerator[None, None]:
    """Yields once when the server has confirmed the subscription to `key`'s keyspace channel,
    then once per burst of changes to `key` (of the keyspace `events` only, when given); raises
    ScalerError when the connection ends."""
    if target.mode != "single":
        raise UnsupportedError(
            f"push wake-ups need a single Redis server; {target.mode} triggers are polled"
        )

    async def create() -> KeyspaceHub:
        hub = KeyspaceHub(target, await create_client(target), type_flag)
        try:
            await hub.start()
        except BaseException:
            await hub.aclose()
            raise
        return hub

    off_until = _NOTIFICATIONS_OFF.get((target.endpoint, type_flag))
    if off_until is not None and time.monotonic() < off_until:
        raise UnsupportedError(
            f"redis {target.endpoint}: keyspace notifications are off; objects are polled"
        )
    base = target.key()
    pool_key = ClientKey(f"redis-keyspace-{type_flag}", base.endpoint, base.fingerprint)
    lease: Lease[KeyspaceHub] = await clients.acquire(pool_key, create, _close_hub)
    hub = lease.client
    channel = f"__keyspace@{target.db}__:{key}"
    flag = asyncio.Event()
    try:
        await hub.subscribe(channel, flag, events)
        if hub.closed.is_set():  # acquired a hub whose connection had just died
            raise ScalerError(hub.error or "redis push connection closed")
        yield None  # subscribed: every change from now on sets `flag`
        while True:
            await flag.wait()
            flag.clear()
            if hub.closed.is_set():
                raise ScalerError(hub.error or "redis push connection closed")
            yield None
    finally:
        # Shielded: a second cancellation (the core re-cancels a task that did not stop) must
        # not cut the clean-up short and leave the shared hub leased forever.
        await asyncio.shield(_leave(hub, channel, flag, lease))


async def _leave(hub: KeyspaceHub, channel: str, flag: asyncio.Event, lease: Lease[Any]) -> None:
    try:
        await hub.unsubscribe(channel, flag)
    finally:
        await lease.release()
