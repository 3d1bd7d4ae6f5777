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

The connections are the brokers' shared push hubs: `scalers.redis_push` (one keyspace pub/sub
connection per Redis server and credentials, also serving the redis triggers) and
`scalers.nats_client` (one NATS connection per server and credentials). Each ``wakeups()``
iterator holds a `ClientPool` lease while it runs; it yields once subscribed (as those hubs'
iterators do), then per (coalesced) event. When the connection
breaks, every iterator on it raises `ScalerError`; the core falls back to polling and calls
``wakeups()`` again.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from scaler.clients import ClientKey, ClientPool
from scaler.errors import ScalerError, UnsupportedError
from scaler.params import Config, Param
from scalers.nats_client import NatsTarget, nats_url, subject_wakeups
from scalers.redis_common import RedisTarget
from scalers.redis_push import key_wakeups

# Keyspace events of commands that add to a list (RPUSHX / LPUSHX / LMOVE report these too).
PUSH_EVENTS = frozenset({"rpush", "lpush", "linsert"})
_REDIS_ADDRESS = re.compile(r"(?P<host>\[[0-9a-fA-F:]+\]|[^:\s/]+):(?P<port>\d{1,5})")

EVENT_PARAMS: tuple[Param, ...] = (
    Param("eventsRedisAddress", doc="host:port of the Redis the bucket notifies"),
    Param("eventsRedisList", sources=("metadata",), doc="the list key the events are RPUSHed to"),
    Param("eventsRedisUsername"),
    Param("eventsRedisPassword", sources=("auth", "env"), secret=True),
    Param("eventsRedisDatabaseIndex", "int", sources=("metadata",), default=0, minimum=0),
    Param("eventsNatsServer", doc="nats://host:port of the NATS server the bucket notifies"),
    Param("eventsNatsSubject", sources=("metadata",)),
    Param("eventsNatsUsername"),
    Param("eventsNatsPassword", sources=("auth", "env"), secret=True),
)


@dataclass(frozen=True, slots=True, repr=False)
class RedisEvents:
    """Bucket events RPUSHed to a Redis list (MinIO's Redis target, format `access`)."""

    host: str
    port: int
    db: int
    list_key: str
    username: str | None
    password: str | None
    timeout: float

    @property
    def endpoint(self) -> str:
        return f"redis://{self.host}:{self.port}/{self.db}"

    def redis_target(self) -> RedisTarget:
        """The single-server target whose keyspace hub (`scalers.redis_push`) is shared."""
        return RedisTarget(
            mode="single",
            addresses=((self.host, self.port),),
            db=self.db,
            username=self.username,
            password=self.password,
            sentinel_username=None,
            sentinel_password=None,
            sentinel_master=None,
            tls=None,
            timeout=self.timeout,
        )

    def key(self) -> ClientKey:
        return self.redis_target().key()

    def secrets(self) -> tuple[str, ...]:
        return (self.password,) if self.password else ()

    def __repr__(self) -> str:
        return f"RedisEvents({self.endpoint}, list={self.list_key})"


@dataclass(frozen=True, slots=True, repr=False)
class NatsEvents:
    """Bucket events published on a NATS subject (MinIO's NATS target, or a bridge)."""

    server: str  # nats://host:port
    subject: str
    username: str | None
    password: str | None
    timeout: float

    def nats_target(self) -> NatsTarget:
        """The target whose shared connection (`scalers.nats_client`) is used."""
        return NatsTarget(
            self.server, username=self.username, password=self.password, timeout=self.timeout
        )

    def key(self) -> ClientKey:
        return self.nats_target().key

    def secrets(self) -> tuple[str, ...]:
        return (self.password,) if self.password else ()

    def __repr__(self) -> str:
        return f"NatsEvents({self.server}, subject={self.subject})"


EventsTarget = RedisEvents | NatsEvents


def keyspace_channel(target: RedisEvents) -> str:
    return f"__keyspace@{target.db}__:{target.list_key}"


# -- parameters ----------------------------------------------------------------------------------


def events_problems(config: Config) -> list[str]:
    """Cross-field checks of the events parameters."""
    problems: list[str] = []
    redis_address = config.opt_str("eventsRedisAddress")
    redis_list = config.opt_str("eventsRedisList")
    nats_server = config.opt_str("eventsNatsServer")
    nats_subject = config.opt_str("eventsNatsSubject")
    if (redis_address is None) != (redis_list is None):
        problems.append("eventsRedisAddress and eventsRedisList must be given together")
    if (nats_server is None) != (nats_subject is None):
        problems.append("eventsNatsServer and eventsNatsSubject must be given together")
    if redis_address is not None and nats_server is not None:
        problems.append("give one events source: eventsRedisAddress or eventsNatsServer, not both")
    if redis_address is not None and not _REDIS_ADDRESS.fullmatch(redis_address):
        problems.append(
            f"invalid eventsRedisAddress '{redis_address}': should be in the format host:port"
        )
    if nats_server is not None and nats_url(nats_server) is None:
        problems.append(
            f"invalid eventsNatsServer '{nats_server}': expected nats://host:port or host:port"
        )
    if nats_subject is not None and any(c in nats_subject for c in " \t\r\n"):
        problems.append(f"invalid eventsNatsSubject '{nats_subject}': no whitespace allowed")
    return problems


def events_target(config: Config, timeout: float) -> EventsTarget | None:
    """The configured events source (of a validated config), or None."""
    address = config.opt_str("eventsRedisAddress")
    if address is not None:
        match = _REDIS_ADDRESS.fullmatch(address)
        assert match is not None  # validated
        return RedisEvents(
            host=match["host"].strip("[]"),
            port=int(match["port"]),
            db=config.get_int("eventsRedisDatabaseIndex"),
            list_key=config.get_str("eventsRedisList"),
            username=config.opt_str("eventsRedisUsername"),
            password=config.opt_str("eventsRedisPassword"),
            timeout=timeout,
        )
    server = config.opt_str("eventsNatsServer")
    if server is not None:
        url = nats_url(server)
        assert url is not None  # validated
        return NatsEvents(
            server=url,
            subject=config.get_str("eventsNatsSubject"),
            username=config.opt_str("eventsNatsUsername"),
            password=config.opt_str("eventsNatsPassword"),
            timeout=timeout,
        )
    return None


# -- wake-ups ------------------------------------------------------------------------------------


def event_wakeups(events: EventsTarget, clients: ClientPool) -> AsyncIterator[None]:
    """A new iterator yielding once subscribed, then once per (coalesced) bucket event."""
    if isinstance(events, RedisEvents):
        return _redis_wakeups(events, clients)
    return subject_wakeups(events.nats_target(), (events.subject,), clients)


async def _redis_wakeups(events: RedisEvents, clients: ClientPool) -> AsyncGenerator[None, None]:
    wakeups = key_wakeups(events.redis_target(), events.list_key, clients, "l", PUSH_EVENTS)
    try:
        async for _ in wakeups:
            yield None
    except UnsupportedError as exc:
        # Notifications off: an error of this trigger's source (retried with backoff), as ever.
        raise ScalerError(
            f"{exc}; bucket events need 'Kl' or 'KA' (CONFIG SET notify-keyspace-events Kl)"
        ) from exc
    finally:
        await wakeups.aclose()
