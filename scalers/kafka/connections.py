"""One connection per broker of a cluster, the broker map, and the request counters.

Transport: aiokafka's connection class (`aiokafka.conn.create_conn`: ApiVersions negotiation,
SASL PLAIN / SCRAM, TLS). Every request goes through `Connections.send`, which counts it in the
cluster's `Counters`: the push watcher's apart (its task sets `WATCH_ROUND` to its round's
counter).
A failed send closes the connection and marks the metadata stale (``metadata_stale``: the cache
re-reads it on the next round).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import Counter
from collections.abc import Iterable
from typing import Any

import aiokafka.errors as kafka_errors
from aiokafka.conn import AIOKafkaConnection, CloseReason, create_conn

from scaler.params import redact
from scalers.kafka.counters import Counters
from scalers.kafka.failures import Failure, RoundFailed
from scalers.kafka.settings import KafkaSettings

CLIENT_ID = "tidal"
# Set in the push watcher's task (and inherited by the tasks it gathers): where `send` counts.
WATCH_ROUND: contextvars.ContextVar[Counter[str] | None] = contextvars.ContextVar(
    "kafka_watch_round", default=None
)


class Connections:
    """A cluster's broker connections (one per broker) and where each broker lives."""

    def __init__(self, settings: KafkaSettings, counters: Counters) -> None:
        self.settings = settings
        self._counters = counters
        self.brokers: dict[int, tuple[str, int]] = {}
        self.metadata_stale = False
        self._conns: dict[int, AIOKafkaConnection] = {}
        self._conn_locks: dict[int, asyncio.Lock] = {}
        self._bootstrap_conn: AIOKafkaConnection | None = None
        self._any_lock = asyncio.Lock()

    @property
    def open(self) -> int:
        """Open broker connections."""
        open_conns = sum(1 for conn in self._conns.values() if conn.connected())
        bootstrap = self._bootstrap_conn
        return open_conns + (1 if bootstrap is not None and bootstrap.connected() else 0)

    def error(self, message: str, exc: BaseException | None = None) -> Failure:
        if exc is not None:
            detail = str(exc) or type(exc).__name__
            message = f"{message}: {type(exc).__name__}: {detail}"
        return Failure(redact(message, self.settings.secrets()))

    async def connect(self, host: str, port: int) -> AIOKafkaConnection:
        s = self.settings
        try:
            context = None if s.tls is None else await s.tls.context()
        except ValueError as exc:
            raise RoundFailed(self.error("invalid TLS settings", exc)) from None
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
            failure = self.error(f"cannot connect to kafka broker {host}:{port}", exc)
            raise RoundFailed(failure) from exc
        return conn

    async def node(self, node_id: int) -> AIOKafkaConnection:
        """The connection to broker `node_id` (opened on first use)."""
        conn = self._conns.get(node_id)
        if conn is not None and conn.connected():
            return conn
        lock = self._conn_locks.setdefault(node_id, asyncio.Lock())
        async with lock:
            conn = self._conns.get(node_id)
            if conn is not None and conn.connected():
                return conn
            self._conns.pop(node_id, None)
            address = self.brokers.get(node_id)
            if address is None:
                self.metadata_stale = True
                raise RoundFailed(Failure(f"kafka broker {node_id} is not in the metadata"))
            try:
                conn = await self.connect(*address)
            except RoundFailed:
                self.metadata_stale = True
                raise
            self._conns[node_id] = conn
            return conn

    async def any(self) -> AIOKafkaConnection:
        """A connection to any broker, for metadata and coordinator lookups."""
        async with self._any_lock:
            return await self._any_locked()

    async def _any_locked(self) -> AIOKafkaConnection:
        for conn in self._conns.values():
            if conn.connected():
                return conn
        if self._bootstrap_conn is not None and self._bootstrap_conn.connected():
            return self._bootstrap_conn
        failures: list[str] = []
        for node_id in list(self.brokers):
            try:
                return await self.node(node_id)
            except RoundFailed as exc:
                failures.append(exc.failure.message)
        for host, port in self.settings.bootstrap:
            try:
                conn = await self.connect(host, port)
            except RoundFailed as exc:
                failures.append(exc.failure.message)
                continue
            self._bootstrap_conn = conn
            return conn
        raise RoundFailed(Failure("no kafka broker is reachable: " + "; ".join(failures)))

    async def send(self, conn: AIOKafkaConnection, request: Any, api: str) -> Any:
        counters, watch_round = self._counters, WATCH_ROUND.get()
        if watch_round is None:
            counters.requests += 1
            counters.requests_by_api[api] += 1
        else:
            watch_round[api] += 1
            counters.watch_requests += 1
            counters.watch_requests_by_api[api] += 1
        try:
            return await conn.send(request)
        except (TimeoutError, kafka_errors.KafkaError, OSError) as exc:
            conn.close(reason=CloseReason.CONNECTION_BROKEN)
            self.metadata_stale = True
            raise RoundFailed(
                self.error(f"kafka {api} request to {conn.host}:{conn.port} failed", exc)
            ) from exc

    def adopt_brokers(self, brokers: Iterable[Any]) -> None:
        """Take a Metadata answer's broker list; close connections to brokers no longer in it."""
        self.brokers = {int(b[0]): (str(b[1]), int(b[2])) for b in brokers}
        for node_id in [n for n in self._conns if n not in self.brokers]:
            self._conns.pop(node_id).close(reason=CloseReason.SHUTDOWN)
        boot, self._bootstrap_conn = self._bootstrap_conn, None
        if boot is None:
            return
        for node_id, (host, port) in self.brokers.items():
            if (host, port) == (boot.host, boot.port) and node_id not in self._conns:
                self._conns[node_id] = boot  # the bootstrap connection is this broker's
                return
        boot.close(reason=CloseReason.SHUTDOWN)

    async def aclose(self) -> None:
        conns = list(self._conns.values())
        if self._bootstrap_conn is not None:
            conns.append(self._bootstrap_conn)
        self._conns.clear()
        self._bootstrap_conn = None
        closing = [conn.close(reason=CloseReason.SHUTDOWN) for conn in conns]
        await asyncio.gather(*(c for c in closing if c is not None), return_exceptions=True)
