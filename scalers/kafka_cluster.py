"""One shared Kafka client per (bootstrap servers, credentials), answering many scalers at once.

Every `kafka` trigger of every ScaledObject that names the same bootstrap servers with the same
credentials shares one `KafkaCluster` through the ClientPool. A scaler's ``sample()`` calls
`KafkaCluster.offsets(group, topic)`; calls arriving within one short window (``window``, 5 ms by
default, plus the loop iteration they arrive in) are answered by ONE round:

1. Metadata for the watched topics only (cached; refreshed every ``metadata_max_age`` seconds,
   after an error, or when a new topic is asked for) and group coordinators (cached; unknown ones
   found with one batched FindCoordinator v4 request, or one v1 request per group on old brokers).
2. Committed offsets: ONE OffsetFetch per group coordinator covering every group of the round
   (OffsetFetch v8, KIP-709); on brokers without v8, one OffsetFetch per group.
3. Latest offsets: ONE ListOffsets per partition leader covering every watched partition.

In the steady state a round costs one OffsetFetch per coordinator plus one ListOffsets per
leader: O(brokers), whatever the number of objects. Committed offsets are read before latest
offsets, so a race makes lag look larger, never negative. Each broker gets one connection.

Errors are never zeros: an unreachable broker, a timeout, a moved coordinator, an unknown group
(``GROUP_ID_NOT_FOUND``), a missing topic or a partition-level error fail the scalers that need
that piece with `ScalerError` / `QueryError`, and mark the cached metadata or coordinator stale.

Push: `KafkaCluster.watch(topic, partitions)` is a group-less watcher of end offsets. ONE watcher
task per cluster (started by the first subscriber, ended by the last) sends, every ``interval``
(``KafkaSettings.watch_interval``, 100 ms by default; a subscriber may ask for a shorter one),
ONE ListOffsets per partition leader for the union of the subscribed partitions, over the same
connections and ListOffsets code as the rounds above, and wakes each subscriber whose partitions'
end offsets moved since the previous round. A subscriber's flag is an `asyncio.Event`, so a
burst between two reads is one wake-up. When its partitions cannot be read (broker down, topic
deleted...) the subscriber's iterator raises `ScalerError` / `QueryError` and is dropped; the
caller subscribes again later. The watcher's requests are counted apart (``watch_requests``).

Transport: aiokafka's connection class (`aiokafka.conn.create_conn`: ApiVersions negotiation,
SASL PLAIN / SCRAM, TLS) with aiokafka's protocol structs; OffsetFetch v8 and FindCoordinator v4,
which aiokafka 0.14 lacks, are declared here with aiokafka's own schema types.
"""

from __future__ import annotations

import asyncio
import contextvars
import ssl
import struct
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

import aiokafka.errors as kafka_errors
from aiokafka.conn import AIOKafkaConnection, CloseReason, create_conn
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.commit import OffsetFetchRequest
from aiokafka.protocol.coordination import FindCoordinatorRequest
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.protocol.offset import OffsetRequest
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int8,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)

from scaler.clients import ClientKey, TlsSettings, fingerprint
from scaler.errors import QueryError, ScalerError
from scaler.params import redact
from scalers.kafka_lag import NO_COMMIT, PartitionKey, PartitionOffsets

CLIENT_ID = "tidal"
LATEST = -1  # ListOffsets timestamp meaning "the log end offset"
_API_OFFSET_FETCH, _API_FIND_COORDINATOR = 9, 10
_COORDINATOR_GONE = frozenset({14, 15, 16})  # LOAD_IN_PROGRESS, NOT_AVAILABLE, NOT_COORDINATOR
_GROUP_ID_NOT_FOUND = 69
# Seconds (loop time) a subscriber's partitions may keep answering with retriable errors (a
# leader election, topics just created) before its subscription ends.
WATCH_RETRIABLE_FOR = 30.0
# Set in the push watcher's task (and inherited by the tasks it gathers): where `_send` counts.
_WATCH_ROUND: contextvars.ContextVar[Counter[str] | None] = contextvars.ContextVar(
    "kafka_watch_round", default=None
)


# -- wire structs aiokafka 0.14 does not have ---------------------------------------------------


# -- fast codecs for the one large message --------------------------------------------------------
# A tick's OffsetFetch carries every watched partition of every group (10 000 entries for 100
# groups x 100 partitions); aiokafka's generic schema walk spends ~1 ms per 100 entries on it.
# These hand-written codecs produce the same bytes and the same nested tuples as the schemas
# above (tests/unit/test_kafka_lag.py checks both against aiokafka's), several times faster.

_I16, _I32, _I64 = struct.Struct(">h"), struct.Struct(">i"), struct.Struct(">q")
_PARTITION_FIXED = struct.Struct(">iqi")  # partition_index, committed_offset, leader_epoch


def _put_uvarint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _put_compact_string(out: bytearray, value: str | None) -> None:
    if value is None:
        out.append(0)
        return
    raw = value.encode()
    _put_uvarint(out, len(raw) + 1)
    out += raw


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def uvarint(self) -> int:
        buf, pos = self.buf, self.pos
        byte = buf[pos]
        pos += 1
        if byte < 0x80:
            self.pos = pos
            return byte
        value, shift = byte & 0x7F, 7
        while True:
            byte = buf[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                self.pos = pos
                return value
            shift += 7
            if shift > 28:
                raise ValueError("unsigned varint is too long")

    def compact_string(self) -> str | None:
        size = self.uvarint() - 1
        if size < 0:
            return None
        start = self.pos
        self.pos = start + size
        if self.pos > len(self.buf):
            raise ValueError("buffer underrun decoding a string")
        return self.buf[start : self.pos].decode()

    def unpack(self, fmt: struct.Struct) -> tuple[Any, ...]:
        values = fmt.unpack_from(self.buf, self.pos)
        self.pos += fmt.size
        return values

    def tags(self) -> dict[int, bytes]:
        count = self.uvarint()
        found: dict[int, bytes] = {}
        for _ in range(count):
            tag, size = self.uvarint(), self.uvarint()
            found[tag] = self.buf[self.pos : self.pos + size]
            self.pos += size
        return found


def encode_offset_fetch_v8(groups: Any, require_stable: bool) -> bytes:
    out = bytearray()
    _put_uvarint(out, len(groups) + 1)
    for group_id, topics, _tags in groups:
        _put_compact_string(out, group_id)
        if topics is None:
            out.append(0)
        else:
            _put_uvarint(out, len(topics) + 1)
            for name, partitions, _topic_tags in topics:
                _put_compact_string(out, name)
                _put_uvarint(out, len(partitions) + 1)
                for partition in partitions:
                    out += _I32.pack(partition)
                out.append(0)  # no tagged fields
        out.append(0)
    out.append(1 if require_stable else 0)
    out.append(0)
    return bytes(out)


def decode_offset_fetch_v8(data: BytesIO | bytes) -> tuple[Any, ...]:
    buf = data if isinstance(data, bytes) else data.read()
    r = _Reader(buf)
    (throttle,) = r.unpack(_I32)
    groups: list[Any] = []
    for _ in range(r.uvarint() - 1):
        group_id = r.compact_string()
        topic_count = r.uvarint() - 1
        topics: list[Any] | None = None if topic_count < 0 else []
        for _ in range(max(topic_count, 0)):
            name = r.compact_string()
            partitions: list[Any] = []
            for _ in range(r.uvarint() - 1):
                index, offset, epoch = r.unpack(_PARTITION_FIXED)
                metadata = r.compact_string()
                (code,) = r.unpack(_I16)
                partitions.append((index, offset, epoch, metadata, code, r.tags()))
            assert topics is not None
            topics.append((name, partitions, r.tags()))
        (code,) = r.unpack(_I16)
        groups.append((group_id, topics, code, r.tags()))
    return throttle, groups, r.tags()


class OffsetFetchGroupsResponseV8(Response):  # type: ignore[misc]
    API_KEY = _API_OFFSET_FETCH
    API_VERSION = 8
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "groups",
            CompactArray(
                ("group_id", CompactString("utf-8")),
                (
                    "topics",
                    CompactArray(
                        ("name", CompactString("utf-8")),
                        (
                            "partitions",
                            CompactArray(
                                ("partition_index", Int32),
                                ("committed_offset", Int64),
                                ("committed_leader_epoch", Int32),
                                ("metadata", CompactString("utf-8")),
                                ("error_code", Int16),
                                ("tags", TaggedFields),
                            ),
                        ),
                        ("tags", TaggedFields),
                    ),
                ),
                ("error_code", Int16),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )

    @classmethod
    def decode(cls, data: BytesIO | bytes) -> OffsetFetchGroupsResponseV8:
        return cls(*decode_offset_fetch_v8(data))


class OffsetFetchGroupsRequestV8(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = _API_OFFSET_FETCH
    API_VERSION = 8
    RESPONSE_TYPE = OffsetFetchGroupsResponseV8
    SCHEMA = Schema(
        (
            "groups",
            CompactArray(
                ("group_id", CompactString("utf-8")),
                (
                    "topics",
                    CompactArray(
                        ("name", CompactString("utf-8")),
                        ("partition_indexes", CompactArray(Int32)),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("require_stable", Boolean),
        ("tags", TaggedFields),
    )

    def encode(self) -> bytes:
        return encode_offset_fetch_v8(self.groups, bool(self.require_stable))


class OffsetFetchGroups(Request[OffsetFetchGroupsRequestV8]):  # type: ignore[misc]
    """OffsetFetch for several groups in one request; ``None`` topics = all the group's commits."""

    API_KEY = _API_OFFSET_FETCH

    def __init__(self, groups: Mapping[str, list[tuple[str, list[int]]] | None]) -> None:
        self._groups = dict(groups)

    def build(self, request_struct_class: type[Any]) -> Any:
        groups: list[tuple[str, list[tuple[str, list[int], dict[int, bytes]]] | None, Any]] = [
            (group, None if spec is None else [(t, parts, {}) for t, parts in spec], {})
            for group, spec in self._groups.items()
        ]
        return request_struct_class(groups, False, {})


class FindCoordinatorsResponseV4(Response):  # type: ignore[misc]
    API_KEY = _API_FIND_COORDINATOR
    API_VERSION = 4
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "coordinators",
            CompactArray(
                ("key", CompactString("utf-8")),
                ("node_id", Int32),
                ("host", CompactString("utf-8")),
                ("port", Int32),
                ("error_code", Int16),
                ("error_message", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class FindCoordinatorsRequestV4(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = _API_FIND_COORDINATOR
    API_VERSION = 4
    RESPONSE_TYPE = FindCoordinatorsResponseV4
    SCHEMA = Schema(
        ("key_type", Int8),
        ("coordinator_keys", CompactArray(CompactString("utf-8"))),
        ("tags", TaggedFields),
    )


class FindCoordinators(Request[FindCoordinatorsRequestV4]):  # type: ignore[misc]
    """FindCoordinator for several consumer groups in one request (KIP-699)."""

    API_KEY = _API_FIND_COORDINATOR

    def __init__(self, groups: list[str]) -> None:
        self._groups = groups

    def build(self, request_struct_class: type[Any]) -> Any:
        return request_struct_class(0, self._groups, {})


def supports(conn: AIOKafkaConnection, api_key: int, version: int) -> bool:
    """Whether the broker behind `conn` serves `version` of `api_key` (from ApiVersions)."""
    versions: Mapping[int, tuple[int, int]] = getattr(conn, "_versions", {})
    low, high = versions.get(api_key, (0, -1))
    return bool(low <= version <= high)


# -- settings and failures ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """How to reach one Kafka cluster; the repr and the ClientKey hold no secret."""

    bootstrap: tuple[tuple[str, int], ...]
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    sasl_mechanism: str | None = None  # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TlsSettings | None = field(default=None, repr=False)  # contexts come from the cache
    timeout: float = 3.0  # seconds per request (and per connect)
    window: float = 0.005  # seconds a round waits for more samples to join
    metadata_max_age: float = 60.0  # seconds before watched topics' metadata is re-read
    watch_interval: float = 0.1  # seconds between the push watcher's end-offset reads

    @property
    def endpoint(self) -> str:
        return ",".join(sorted(f"{host}:{port}" for host, port in self.bootstrap))

    @property
    def tls_fingerprint(self) -> str:
        """Digest of the TLS material (for the ClientKey); "" without TLS."""
        return "" if self.tls is None else self.tls.fingerprint

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The shared TLS context, built on this thread if missing (connections use
        ``await tls.context()``, which builds off the event loop)."""
        return None if self.tls is None else self.tls.context_now()

    def key(self) -> ClientKey:
        return ClientKey(
            "kafka",
            self.endpoint,
            fingerprint(
                self.security_protocol,
                self.sasl_mechanism,
                self.username,
                self.password,
                self.tls_fingerprint,
                self.timeout,
                self.window,
                self.metadata_max_age,
            ),
        )

    def secrets(self) -> tuple[str, ...]:
        return (self.password,) if self.password else ()


@dataclass(frozen=True, slots=True)
class Failure:
    """Why one piece of a round is missing; `error()` makes a fresh exception per waiter."""

    message: str
    query: bool = False  # the source answered, unusably (QueryError) vs could not be read
    retriable: bool = False  # a broker's transient answer (no leader yet...): the watcher waits

    def error(self) -> ScalerError:
        return QueryError(self.message) if self.query else ScalerError(self.message)


class _RoundFailed(Exception):
    """A round could not proceed at all (no broker reachable, metadata unreadable)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


@dataclass(eq=False, slots=True)
class _Subscriber:
    """One `watch()` iterator: what it watches and its coalescing flag."""

    topic: str
    partitions: frozenset[int] | None  # None: every partition of the topic
    interval: float
    event: asyncio.Event = field(default_factory=asyncio.Event)
    failure: Failure | None = None
    troubled_since: float | None = None  # loop time of the first of consecutive retriable errors
    checked: bool = False  # a round has found its partitions

    def fail(self, failure: Failure) -> None:
        if self.failure is None:
            self.failure = failure
        self.event.set()


@dataclass(slots=True)
class _Waiter:
    group: str
    topic: str | None
    future: asyncio.Future[tuple[PartitionOffsets, ...]]


def _broker_error(code: int) -> str:
    error = kafka_errors.for_code(code)
    return f"{getattr(error, 'message', error.__name__)} ({code})"


# -- the shared client --------------------------------------------------------------------------


class KafkaCluster:
    """A cluster's shared connections, metadata cache and coalesced offset queries.

    ``requests`` counts every Kafka request the sample rounds send (``requests_by_api`` per API
    name) and ``rounds`` the coalesced rounds, so a benchmark can report requests per tick. The
    push watcher's requests are counted apart: ``watch_requests`` / ``watch_requests_by_api``,
    ``watch_rounds`` (completed reads) and ``last_watch_round`` (the requests of the last one).
    """

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self.requests = 0
        self.requests_by_api: Counter[str] = Counter()
        self.rounds = 0
        self._conns: dict[int, AIOKafkaConnection] = {}
        self._conn_locks: dict[int, asyncio.Lock] = {}
        self._bootstrap_conn: AIOKafkaConnection | None = None
        self._any_lock = asyncio.Lock()
        self._brokers: dict[int, tuple[str, int]] = {}
        self._topics: dict[str, dict[int, int]] = {}  # topic -> partition -> leader node
        self._used: set[str] = set()  # topics asked for since the last full metadata refresh
        self._metadata_at: float | None = None
        self._metadata_stale = False
        self._coordinators: dict[str, int] = {}
        self._pending: list[_Waiter] = []
        self._runner: asyncio.Task[None] | None = None
        self._closed = False
        self.watch_requests = 0
        self.watch_requests_by_api: Counter[str] = Counter()
        self.watch_rounds = 0
        self.last_watch_round: Counter[str] = Counter()
        self._subscribers: list[_Subscriber] = []
        self._watcher: asyncio.Task[None] | None = None
        self._watch_offsets: dict[PartitionKey, int] = {}  # end offsets read by the last round

    def __repr__(self) -> str:
        return f"KafkaCluster({self.settings.endpoint})"

    @property
    def connections(self) -> int:
        """Open broker connections."""
        open_conns = sum(1 for conn in self._conns.values() if conn.connected())
        bootstrap = self._bootstrap_conn
        return open_conns + (1 if bootstrap is not None and bootstrap.connected() else 0)

    @property
    def watched_topics(self) -> frozenset[str]:
        return frozenset(self._topics)

    @property
    def subscribers(self) -> int:
        """Live `watch()` iterators."""
        return len(self._subscribers)

    @property
    def watching(self) -> bool:
        """Whether the push watcher task is running."""
        return self._watcher is not None

    # -- the one public query --------------------------------------------------------------------

    async def offsets(self, group: str, topic: str | None) -> tuple[PartitionOffsets, ...]:
        """Committed and latest offsets of every partition of `topic` for `group`.

        `topic` None: every topic the group has committed offsets for (KEDA's topic-less mode).
        Raises ScalerError / QueryError; the answer comes from the round this call joins.
        """
        if self._closed:
            raise ScalerError("kafka client is closed")
        future: asyncio.Future[tuple[PartitionOffsets, ...]] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending.append(_Waiter(group, topic, future))
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name=f"kafka-rounds {self!r}")
        return await future

    async def watch(
        self, topic: str, partitions: frozenset[int] | None = None, interval: float | None = None
    ) -> AsyncGenerator[None, None]:
        """Yield once whenever the end offset of a watched partition of `topic` moved.

        `partitions` None: every partition. Wake-ups between two reads of the shared watcher
        coalesce into one. The first read only takes the baseline (unless another subscriber
        already watches the partition). Raises ScalerError / QueryError when the partitions
        cannot be read; the subscription is then over.
        """
        if self._closed:
            raise ScalerError("kafka client is closed")
        sub = _Subscriber(topic, partitions, interval or self.settings.watch_interval)
        self._subscribers.append(sub)
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name=f"kafka-watch {self!r}")
        try:
            while True:
                await sub.event.wait()
                if sub.failure is not None:
                    raise sub.failure.error()
                sub.event.clear()
                yield None
        finally:
            self._unsubscribe(sub)

    def _unsubscribe(self, sub: _Subscriber) -> None:
        if sub in self._subscribers:
            self._subscribers.remove(sub)

    async def aclose(self) -> None:
        self._closed = True
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        subscribers, self._subscribers = self._subscribers, []
        for sub in subscribers:
            sub.fail(Failure("kafka client is closed"))
        pending, self._pending = self._pending, []
        for waiter in pending:
            if not waiter.future.done():
                waiter.future.set_exception(ScalerError("kafka client is closed"))
        conns = list(self._conns.values())
        if self._bootstrap_conn is not None:
            conns.append(self._bootstrap_conn)
        self._conns.clear()
        self._bootstrap_conn = None
        closing = [conn.close(reason=CloseReason.SHUTDOWN) for conn in conns]
        await asyncio.gather(*(c for c in closing if c is not None), return_exceptions=True)

    # -- rounds ----------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while self._pending:
                await asyncio.sleep(self.settings.window)  # let the tick's other samples join
                batch, self._pending = self._pending, []
                await self._round(batch)
        finally:
            if self._runner is asyncio.current_task():
                self._runner = None

    # -- push watcher ----------------------------------------------------------------------------

    async def _watch(self) -> None:
        """Read the subscribed partitions' end offsets until the last subscriber leaves."""
        try:
            loop = asyncio.get_running_loop()
            while self._subscribers:
                started = loop.time()
                round_requests: Counter[str] = Counter()
                _WATCH_ROUND.set(round_requests)
                await self._watch_round(list(self._subscribers))
                self.watch_rounds += 1
                self.last_watch_round = round_requests
                if not self._subscribers:
                    break
                interval = min(sub.interval for sub in self._subscribers)
                await asyncio.sleep(max(0.0, started + interval - loop.time()))
        finally:
            if self._watcher is asyncio.current_task():
                self._watcher = None
            if not self._subscribers:
                self._watch_offsets = {}

    async def _watch_round(self, subs: list[_Subscriber]) -> None:
        wanted: dict[str, set[int] | None] = {}
        for sub in subs:
            if sub.partitions is None:
                wanted[sub.topic] = None
            elif sub.topic not in wanted:
                wanted[sub.topic] = set(sub.partitions)
            else:
                known = wanted[sub.topic]
                if known is not None:
                    known.update(sub.partitions)
        try:
            meta_failures = await self._ensure_metadata(set(wanted))
            latest, latest_failures = await self._fetch_latest(
                {t for t in wanted if t in self._topics and t not in meta_failures},
                {t: frozenset(p) for t, p in wanted.items() if p is not None},
            )
        except _RoundFailed as exc:
            self._watch_offsets = {}
            for sub in subs:
                self._drop(sub, exc.failure)
            return
        except Exception as exc:  # a bug must end the subscriptions, never hang them
            self._watch_offsets = {}
            failure = Failure(f"kafka end-offset watch failed: {type(exc).__name__}: {exc}")
            for sub in subs:
                self._drop(sub, failure)
            return
        now = asyncio.get_running_loop().time()
        previous = self._watch_offsets
        current = dict(latest)
        for key, failure in latest_failures.items():
            if failure.retriable and key in previous:
                current[key] = previous[key]  # keep the baseline across a leader election
        self._watch_offsets = current
        # Most rounds nothing moved and nothing failed: skip those subscribers in O(1) each.
        moved = {k for k, offset in latest.items() if previous.get(k, offset) != offset}
        busy = {t for t, _ in moved} | meta_failures.keys() | {t for t, _ in latest_failures}
        for sub in subs:
            if sub.checked and sub.troubled_since is None and sub.topic not in busy:
                continue
            trouble = meta_failures.get(sub.topic)
            keys: list[PartitionKey] = []
            if trouble is None:
                keys = [
                    (sub.topic, p)
                    for p in sorted(self._topics.get(sub.topic, ()))
                    if sub.partitions is None or p in sub.partitions
                ]
                trouble = next((latest_failures[k] for k in keys if k in latest_failures), None)
                if trouble is None and not keys:
                    trouble = Failure(
                        f"expected at least one active partition within the topic '{sub.topic}'",
                        query=True,
                    )
            if trouble is not None:
                if sub.troubled_since is None:
                    sub.troubled_since = now
                if not trouble.retriable or now - sub.troubled_since > WATCH_RETRIABLE_FOR:
                    self._drop(sub, trouble)
                    continue
            else:
                sub.troubled_since = None
            sub.checked = sub.checked or bool(keys)
            if any(k in moved for k in keys):
                sub.event.set()

    def _drop(self, sub: _Subscriber, failure: Failure) -> None:
        sub.fail(failure)
        self._unsubscribe(sub)

    async def _round(self, batch: list[_Waiter]) -> None:
        self.rounds += 1
        try:
            answers = await self._collect(batch)
        except _RoundFailed as exc:
            for waiter in batch:
                if not waiter.future.done():
                    waiter.future.set_exception(exc.failure.error())
            return
        except Exception as exc:  # a bug must fail the samples, never hang them
            failure = Failure(f"kafka query failed: {type(exc).__name__}: {exc}")
            for waiter in batch:
                if not waiter.future.done():
                    waiter.future.set_exception(failure.error())
            return
        for waiter, answer in zip(batch, answers, strict=True):
            if waiter.future.done():
                continue  # the sample gave up (timeout) meanwhile
            if isinstance(answer, Failure):
                waiter.future.set_exception(answer.error())
            else:
                waiter.future.set_result(answer)

    async def _collect(self, batch: list[_Waiter]) -> list[tuple[PartitionOffsets, ...] | Failure]:
        named = {w.topic for w in batch if w.topic is not None}
        groups: dict[str, set[str] | None] = {}
        for w in batch:
            if w.topic is None:
                groups[w.group] = None
            elif w.group not in groups:
                groups[w.group] = {w.topic}
            else:
                wanted = groups[w.group]
                if wanted is not None:
                    wanted.add(w.topic)
        # Sequential: the first round's metadata answer decides which connection is whose.
        meta_failures = await self._ensure_metadata(named)
        coordinator_failures = await self._ensure_coordinators(set(groups))
        specs: dict[str, list[tuple[str, list[int]]] | None] = {}
        for group, wanted in groups.items():
            if group in coordinator_failures:
                continue
            if wanted is None:
                specs[group] = None
                continue
            spec = [(t, sorted(self._topics[t])) for t in sorted(wanted) if t in self._topics]
            if spec:
                specs[group] = spec
        committed: dict[str, dict[PartitionKey, int] | Failure] = dict(coordinator_failures)
        committed.update(await self._fetch_committed(specs))
        discovered = {
            topic
            for group, wanted in groups.items()
            if wanted is None
            for topic, _ in _keys(committed.get(group))
        }
        if discovered:
            meta_failures = {**meta_failures, **await self._ensure_metadata(discovered)}
        latest, latest_failures = await self._fetch_latest(
            {t for t in named | discovered if t in self._topics and t not in meta_failures}
        )
        return [
            self._answer(w, committed.get(w.group), meta_failures, latest, latest_failures)
            for w in batch
        ]

    def _answer(
        self,
        waiter: _Waiter,
        committed: dict[PartitionKey, int] | Failure | None,
        meta_failures: Mapping[str, Failure],
        latest: Mapping[PartitionKey, int],
        latest_failures: Mapping[PartitionKey, Failure],
    ) -> tuple[PartitionOffsets, ...] | Failure:
        if waiter.topic is not None and waiter.topic in meta_failures:
            return meta_failures[waiter.topic]
        if committed is None:
            return Failure(f"no committed offsets were read for group '{waiter.group}'")
        if isinstance(committed, Failure):
            return committed
        if waiter.topic is not None:
            topics = [waiter.topic]
        else:
            topics = sorted({topic for topic, _ in committed})
            if not topics:
                return Failure(
                    f"consumer group '{waiter.group}' has no committed offsets and no topic is"
                    " set: its topics cannot be discovered (set `topic`)",
                    query=True,
                )
        out: list[PartitionOffsets] = []
        for topic in topics:
            if topic in meta_failures:
                return meta_failures[topic]
            partitions = self._topics.get(topic)
            if partitions is None:
                return Failure(f"no metadata for topic '{topic}'")
            for partition in sorted(partitions):
                key = (topic, partition)
                if key in latest_failures:
                    return latest_failures[key]
                out.append(
                    PartitionOffsets(
                        topic, partition, committed.get(key, NO_COMMIT), latest.get(key)
                    )
                )
        return tuple(out)

    # -- connections -----------------------------------------------------------------------------

    def _error(self, message: str, exc: BaseException | None = None) -> Failure:
        if exc is not None:
            detail = str(exc) or type(exc).__name__
            message = f"{message}: {type(exc).__name__}: {detail}"
        return Failure(redact(message, self.settings.secrets()))

    async def _connect(self, host: str, port: int) -> AIOKafkaConnection:
        s = self.settings
        try:
            context = None if s.tls is None else await s.tls.context()
        except ValueError as exc:
            raise _RoundFailed(self._error("invalid TLS settings", exc)) from None
        try:
            conn = await create_conn(
                host,
                port,
                client_id=CLIENT_ID,
                request_timeout_ms=max(1, int(s.timeout * 1000)),
                ssl_context=context,
                security_protocol=s.security_protocol,
                max_idle_ms=None,
                sasl_mechanism=s.sasl_mechanism or "PLAIN",
                sasl_plain_username=s.username,
                sasl_plain_password=s.password,
            )
        except (OSError, TimeoutError, kafka_errors.KafkaError) as exc:
            failure = self._error(f"cannot connect to kafka broker {host}:{port}", exc)
            raise _RoundFailed(failure) from exc
        return conn

    async def _node_conn(self, node_id: int) -> AIOKafkaConnection:
        conn = self._conns.get(node_id)
        if conn is not None and conn.connected():
            return conn
        lock = self._conn_locks.setdefault(node_id, asyncio.Lock())
        async with lock:
            conn = self._conns.get(node_id)
            if conn is not None and conn.connected():
                return conn
            self._conns.pop(node_id, None)
            address = self._brokers.get(node_id)
            if address is None:
                self._metadata_stale = True
                raise _RoundFailed(Failure(f"kafka broker {node_id} is not in the metadata"))
            try:
                conn = await self._connect(*address)
            except _RoundFailed:
                self._metadata_stale = True
                raise
            self._conns[node_id] = conn
            return conn

    async def _any_conn(self) -> AIOKafkaConnection:
        """A connection to any broker, for metadata and coordinator lookups."""
        async with self._any_lock:
            return await self._any_conn_locked()

    async def _any_conn_locked(self) -> AIOKafkaConnection:
        for conn in self._conns.values():
            if conn.connected():
                return conn
        if self._bootstrap_conn is not None and self._bootstrap_conn.connected():
            return self._bootstrap_conn
        failures: list[str] = []
        for node_id in list(self._brokers):
            try:
                return await self._node_conn(node_id)
            except _RoundFailed as exc:
                failures.append(exc.failure.message)
        for host, port in self.settings.bootstrap:
            try:
                conn = await self._connect(host, port)
            except _RoundFailed as exc:
                failures.append(exc.failure.message)
                continue
            self._bootstrap_conn = conn
            return conn
        raise _RoundFailed(Failure("no kafka broker is reachable: " + "; ".join(failures)))

    async def _send(self, conn: AIOKafkaConnection, request: Any, api: str) -> Any:
        watch_round = _WATCH_ROUND.get()
        if watch_round is None:
            self.requests += 1
            self.requests_by_api[api] += 1
        else:
            watch_round[api] += 1
            self.watch_requests += 1
            self.watch_requests_by_api[api] += 1
        try:
            return await conn.send(request)
        except (TimeoutError, kafka_errors.KafkaError, OSError) as exc:
            conn.close(reason=CloseReason.CONNECTION_BROKEN)
            self._metadata_stale = True
            raise _RoundFailed(
                self._error(f"kafka {api} request to {conn.host}:{conn.port} failed", exc)
            ) from exc

    def _adopt_brokers(self, brokers: Iterable[Any]) -> None:
        self._brokers = {int(b[0]): (str(b[1]), int(b[2])) for b in brokers}
        for node_id in [n for n in self._conns if n not in self._brokers]:
            self._conns.pop(node_id).close(reason=CloseReason.SHUTDOWN)
        boot, self._bootstrap_conn = self._bootstrap_conn, None
        if boot is None:
            return
        for node_id, (host, port) in self._brokers.items():
            if (host, port) == (boot.host, boot.port) and node_id not in self._conns:
                self._conns[node_id] = boot  # the bootstrap connection is this broker's
                return
        boot.close(reason=CloseReason.SHUTDOWN)

    # -- metadata --------------------------------------------------------------------------------

    async def _ensure_metadata(self, topics: set[str]) -> dict[str, Failure]:
        """Make `topics` known; one Metadata request at most. Returns per-topic failures."""
        now = asyncio.get_running_loop().time()
        self._used |= topics
        fresh = (
            self._metadata_at is not None
            and now - self._metadata_at < self.settings.metadata_max_age
            and not self._metadata_stale
            and self._brokers
        )
        if not fresh:
            ask, self._used = set(self._used), set(topics)
            self._topics = {t: p for t, p in self._topics.items() if t in ask}
            failures = await self._read_metadata(ask)
            self._metadata_at, self._metadata_stale = now, False
            return {t: f for t, f in failures.items() if t in topics}
        missing = topics - self._topics.keys()
        if not missing:
            return {}
        return await self._read_metadata(missing)

    async def _read_metadata(self, topics: set[str]) -> dict[str, Failure]:
        conn = await self._any_conn()
        request = MetadataRequest(sorted(topics), allow_auto_topic_creation=False)
        response = await self._send(conn, request, "Metadata")
        self._adopt_brokers(response.brokers)
        failures: dict[str, Failure] = {}
        for entry in response.topics:
            code, name, partitions = entry[0], entry[1], entry[-1]
            if code:
                self._topics.pop(name, None)
                failures[name] = _topic_failure(name, code)
                continue
            self._topics[name] = {int(p[1]): int(p[2]) for p in partitions}
        for name in topics - self._topics.keys() - failures.keys():
            failures[name] = Failure(f"kafka metadata has no topic '{name}'", query=True)
        return failures

    # -- coordinators ----------------------------------------------------------------------------

    async def _ensure_coordinators(self, groups: set[str]) -> dict[str, Failure]:
        unknown = sorted(g for g in groups if g not in self._coordinators)
        if not unknown:
            return {}
        conn = await self._any_conn()
        found: list[tuple[str, int, str, int, int]] = []  # group, node, host, port, error
        if supports(conn, _API_FIND_COORDINATOR, 4):
            response = await self._send(conn, FindCoordinators(unknown), "FindCoordinator")
            found = [(c[0], c[1], c[2], c[3], c[4]) for c in response.coordinators]
        else:
            responses = await asyncio.gather(
                *(
                    self._send(conn, FindCoordinatorRequest(g, 0), "FindCoordinator")
                    for g in unknown
                )
            )
            found = [
                (g, r.coordinator_id, r.host, r.port, r.error_code)
                for g, r in zip(unknown, responses, strict=True)
            ]
        failures: dict[str, Failure] = {}
        for group, node_id, host, port, code in found:
            if code:
                failures[group] = Failure(
                    f"no coordinator for consumer group '{group}': {_broker_error(code)}",
                    query=code not in _COORDINATOR_GONE,
                )
                continue
            self._coordinators[group] = int(node_id)
            if self._brokers.get(int(node_id)) != (host, int(port)):
                self._brokers[int(node_id)] = (str(host), int(port))
        for group in unknown:
            if group not in self._coordinators and group not in failures:
                failures[group] = Failure(f"no coordinator returned for group '{group}'")
        return failures

    # -- committed offsets -----------------------------------------------------------------------

    async def _fetch_committed(
        self, specs: Mapping[str, list[tuple[str, list[int]]] | None]
    ) -> dict[str, dict[PartitionKey, int] | Failure]:
        by_node: dict[int, dict[str, list[tuple[str, list[int]]] | None]] = {}
        for group, spec in specs.items():
            by_node.setdefault(self._coordinators[group], {})[group] = spec
        results = await asyncio.gather(
            *(self._committed_from(node, node_specs) for node, node_specs in by_node.items())
        )
        out: dict[str, dict[PartitionKey, int] | Failure] = {}
        for result in results:
            out.update(result)
        return out

    async def _committed_from(
        self, node_id: int, specs: Mapping[str, list[tuple[str, list[int]]] | None]
    ) -> dict[str, dict[PartitionKey, int] | Failure]:
        try:
            conn = await self._node_conn(node_id)
            if supports(conn, _API_OFFSET_FETCH, 8):
                response = await self._send(conn, OffsetFetchGroups(specs), "OffsetFetch")
                parsed = {
                    g[0]: self._group_offsets(g[0], g[2], g[1], lambda p: (p[1], p[4]))
                    for g in response.groups
                }
            else:
                responses = await asyncio.gather(
                    *(
                        self._send(conn, OffsetFetchRequest(group, spec), "OffsetFetch")
                        for group, spec in specs.items()
                    )
                )
                parsed = {
                    group: self._group_offsets(
                        group, getattr(r, "error_code", 0), r.topics, lambda p: (p[1], p[3])
                    )
                    for group, r in zip(specs, responses, strict=True)
                }
        except _RoundFailed as exc:
            for group in specs:
                self._coordinators.pop(group, None)  # it may have moved: look it up again
            return dict.fromkeys(specs, exc.failure)
        for group in specs:
            if group not in parsed:
                parsed[group] = Failure(f"the coordinator did not answer for group '{group}'")
        return parsed

    def _group_offsets(
        self,
        group: str,
        code: int,
        topics: Iterable[Any] | None,
        offset_and_error: Callable[[Any], tuple[int, int]],
    ) -> dict[PartitionKey, int] | Failure:
        if code in _COORDINATOR_GONE:
            self._coordinators.pop(group, None)
            return Failure(f"consumer group '{group}': coordinator moved: {_broker_error(code)}")
        if code == _GROUP_ID_NOT_FOUND:
            return Failure(f"consumer group '{group}' does not exist", query=True)
        if code:
            return Failure(f"consumer group '{group}': {_broker_error(code)}", query=True)
        offsets: dict[PartitionKey, int] = {}
        for topic in topics or ():
            name, partitions = topic[0], topic[1]
            for partition in partitions:
                offset, error = offset_and_error(partition)
                if error:
                    return Failure(
                        f"consumer group '{group}', topic '{name}' partition {partition[0]}:"
                        f" {_broker_error(error)}",
                        query=error not in _COORDINATOR_GONE,
                    )
                offsets[(str(name), int(partition[0]))] = int(offset)
        return offsets

    # -- latest offsets --------------------------------------------------------------------------

    async def _fetch_latest(
        self, topics: set[str], only: Mapping[str, frozenset[int]] | None = None
    ) -> tuple[dict[PartitionKey, int], dict[PartitionKey, Failure]]:
        """End offsets of `topics` (of `only[topic]`'s partitions where given): one ListOffsets
        per partition leader."""
        by_leader: dict[int, dict[str, list[int]]] = {}
        failures: dict[PartitionKey, Failure] = {}
        for topic in sorted(topics):
            subset = only.get(topic) if only is not None else None
            for partition, leader in sorted(self._topics[topic].items()):
                if subset is not None and partition not in subset:
                    continue
                if leader < 0:
                    self._metadata_stale = True
                    failures[(topic, partition)] = Failure(
                        f"topic '{topic}' partition {partition} has no leader", retriable=True
                    )
                    continue
                by_leader.setdefault(leader, {}).setdefault(topic, []).append(partition)
        results = await asyncio.gather(
            *(self._latest_from(leader, wanted) for leader, wanted in by_leader.items())
        )
        latest: dict[PartitionKey, int] = {}
        for found, failed in results:
            latest.update(found)
            failures.update(failed)
        return latest, failures

    async def _latest_from(
        self, leader: int, wanted: Mapping[str, list[int]]
    ) -> tuple[dict[PartitionKey, int], dict[PartitionKey, Failure]]:
        keys = [(t, p) for t, parts in wanted.items() for p in parts]
        request = OffsetRequest(
            -1, 0, [(t, [(p, LATEST) for p in parts]) for t, parts in wanted.items()]
        )
        try:
            conn = await self._node_conn(leader)
            response = await self._send(conn, request, "ListOffsets")
        except _RoundFailed as exc:
            return {}, dict.fromkeys(keys, exc.failure)
        latest: dict[PartitionKey, int] = {}
        failures: dict[PartitionKey, Failure] = {}
        legacy = response.API_VERSION == 0
        for topic, partitions in response.topics:
            for entry in partitions:
                partition, code = int(entry[0]), int(entry[1])
                key = (str(topic), partition)
                if code:
                    self._metadata_stale = True
                    failures[key] = Failure(
                        f"latest offset of topic '{topic}' partition {partition}:"
                        f" {_broker_error(code)}",
                        query=code == 3,
                        retriable=code != 3 and kafka_errors.for_code(code).retriable,
                    )
                elif legacy:
                    latest[key] = int(entry[2][0]) if entry[2] else 0
                else:
                    latest[key] = int(entry[3])
        return latest, failures


def _keys(committed: dict[PartitionKey, int] | Failure | None) -> Iterable[PartitionKey]:
    return committed if isinstance(committed, dict) else ()


def _topic_failure(topic: str, code: int) -> Failure:
    if code == 3:
        return Failure(f"topic '{topic}' does not exist", query=True)
    transient = kafka_errors.for_code(code).retriable
    return Failure(
        f"kafka metadata for topic '{topic}': {_broker_error(code)}",
        query=not transient,
        retriable=transient,
    )
