"""What the SQL scalers share: a hub per database target, coalesced queries, one number.

A *target* is one server, database and credential (`SqlTarget.key()`, a fingerprint of the
credentials, never the secret). Every scaler of that target shares one `SqlHub` through the
ClientPool. The hub:

* keeps up to `MAX_CONNECTIONS` connections open (autocommit; idle ones are reused); a
  connection that failed or timed out is closed, never reused;
* coalesces queries: a sample whose query text is already waiting or running on the hub joins
  it (calls arriving within `WINDOW` of each other, as samples of one scheduler tick do, form
  one round), so N objects reading the same query cost one query per round (`queries` counts
  what was sent);
* bounds every sample by the trigger's timeout (connect, wait for a connection and query
  together): a hung server fails the sample with a ScalerError within the timeout, and
  objects of other targets never wait for it (each target has its own hub and connections);
* retries once, on a new connection, a query that failed on a reused idle connection for a
  connection reason (the server closed it while idle), never a timeout or an SQL error.

`single_number()` reads a result as KEDA's scalers do (one value scanned into a float64), but
strictly: exactly one row of one non-NULL numeric column, else a QueryError that says what
came back. An error is never a zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import decimal
import logging
import math
from collections.abc import Sequence
from typing import Protocol

from scaler.clients import ClientKey, ClientPool
from scaler.contract import MetricSpec, Sample
from scaler.errors import QueryError, ScalerError
from scaler.lease_slot import LeaseSlot
from scaler.params import redact

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 4  # per target: distinct queries run side by side, a slow one blocks no other
WINDOW = 0.005  # seconds a round waits for the same tick's other samples
CLOSE_WAIT = 1.0  # seconds `aclose()` waits for running queries to give up

Rows = Sequence[Sequence[object]]


class SqlConnection(Protocol):
    """One open connection of a driver, mapping its errors to ScalerError / QueryError."""

    async def rows(self, sql: str) -> Rows:
        """Run `sql`; at most the first two rows (two say "more than one")."""
        ...

    async def close(self) -> None: ...


class SqlTarget(Protocol):
    """How to reach one database with one credential; repr shows no secret."""

    @property
    def kind(self) -> str: ...  # "postgresql", "mysql"

    @property
    def endpoint(self) -> str: ...  # host:port/db, for messages (no credentials)

    @property
    def timeout(self) -> float: ...

    def key(self) -> ClientKey: ...

    def secrets(self) -> tuple[str, ...]: ...

    async def connect(self) -> SqlConnection: ...


class ConnectionLost(ScalerError):
    """A reused connection turned out to be closed (retried once on a new one)."""


class SqlHub:
    """Shared by every scaler of one target; see the module docstring."""

    def __init__(self, target: SqlTarget, max_connections: int = MAX_CONNECTIONS) -> None:
        self.target = target
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[SqlConnection] = []
        self._rounds: dict[str, asyncio.Task[Rows]] = {}
        self._tasks: set[asyncio.Task[Rows]] = set()
        self._closed = False
        self.queries = 0  # queries sent to the server (tests and benchmarks read it)
        self.connects = 0  # connections opened

    async def rows(self, sql: str) -> Rows:
        """The rows of `sql`, joining a round of the same query already waiting or running."""
        if self._closed:
            raise ScalerError(self._message("the hub is closed"))
        task = self._rounds.get(sql)
        if task is None or task.done():
            task = asyncio.create_task(self._round(sql), name=f"sql {self.target.endpoint}")
            self._rounds[sql] = task
            self._tasks.add(task)
            task.add_done_callback(lambda done: self._finished(sql, done))
        try:
            return await asyncio.wait_for(asyncio.shield(task), self.target.timeout)
        except TimeoutError:
            if self._rounds.get(sql) is task:
                del self._rounds[sql]  # the next sample starts a new round
            raise ScalerError(
                self._message(f"no answer within {self.target.timeout:g} s")
            ) from None

    def _finished(self, sql: str, task: asyncio.Task[Rows]) -> None:
        self._tasks.discard(task)
        if self._rounds.get(sql) is task:
            del self._rounds[sql]
        if not task.cancelled():
            task.exception()  # retrieved: a round nobody awaited any more is not "never retrieved"

    async def _round(self, sql: str) -> Rows:
        await asyncio.sleep(WINDOW)
        async with asyncio.timeout(self.target.timeout), self._slots:
            try:
                return await self._query(sql, reuse=True)
            except ConnectionLost:
                return await self._query(sql, reuse=False)

    async def _query(self, sql: str, *, reuse: bool) -> Rows:
        reused = reuse and bool(self._idle)
        conn = self._idle.pop() if reused else await self._connect()
        ok = False
        try:
            self.queries += 1
            result = await conn.rows(sql)
            ok = True
            return result
        except QueryError:
            raise
        except ScalerError as exc:
            if reused:
                raise ConnectionLost(str(exc)) from exc
            raise
        finally:
            if ok and not self._closed:
                self._idle.append(conn)
            else:
                await _discard(conn)

    async def _connect(self) -> SqlConnection:
        self.connects += 1
        return await self.target.connect()

    def _message(self, what: str) -> str:
        return redact(f"{self.target.kind} {self.target.endpoint}: {what}", self.target.secrets())

    async def aclose(self) -> None:
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_WAIT)
        idle, self._idle = self._idle, []
        for conn in idle:
            await _discard(conn)


async def _discard(conn: SqlConnection) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(conn.close(), CLOSE_WAIT)


def single_number(rows: Rows, kind: str, *, numeric_text: bool = False) -> float:
    """The one value of a one-row, one-column result as a float, or a QueryError.

    `numeric_text`: a text value holding a number counts (MySQL sends DECIMAL and computed
    values as text, and KEDA's MySQL scaler scans text into a float64); PostgreSQL does not.
    """
    if not rows:
        raise QueryError(f"{kind} query returned no rows, expected one row with one number")
    if len(rows) > 1:
        raise QueryError(
            f"{kind} query returned more than one row, expected one row with one number"
        )
    row = rows[0]
    if len(row) != 1:
        raise QueryError(f"{kind} query returned {len(row)} columns, expected one number")
    value = row[0]
    if value is None:
        raise QueryError(
            f"{kind} query returned NULL, not a number (COALESCE(..., 0) gives a zero"
            " where that is what NULL means)"
        )
    number: float
    if isinstance(value, bool):
        raise QueryError(f"{kind} query returned a boolean, not a number")
    if isinstance(value, int | float | decimal.Decimal):
        number = float(value)
    elif numeric_text and isinstance(value, str | bytes):
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        try:
            number = float(text.strip())
        except ValueError:
            raise QueryError(f"{kind} query returned {text[:40]!r}, not a number") from None
    else:
        raise QueryError(f"{kind} query returned a {type(value).__name__} value, not a number")
    if math.isnan(number) or math.isinf(number):
        raise QueryError(f"{kind} query returned {number}, not a finite number")
    return number


class SqlScaler:
    """The sampling half of the SQL scalers: its hub lease, query, spec and activation."""

    NUMERIC_TEXT = False

    def __init__(
        self,
        target: SqlTarget,
        query: str,
        spec: MetricSpec,
        activation: float,
        clients: ClientPool,
    ) -> None:
        self._target = target
        self._query = query
        self._spec = spec
        self._activation = activation
        self._hub: LeaseSlot[SqlHub] = LeaseSlot(
            clients, f"{target.kind} {target.endpoint}", target.key(), self._create, _close
        )

    @property
    def target(self) -> SqlTarget:
        return self._target

    def metric_spec(self) -> MetricSpec:
        return self._spec

    async def hub(self) -> SqlHub:
        return await self._hub.take()

    async def _create(self) -> SqlHub:
        return SqlHub(self._target)

    async def sample(self, now: float) -> Sample:
        hub = await self.hub()
        value = single_number(
            await hub.rows(self._query), self._target.kind, numeric_text=self.NUMERIC_TEXT
        )
        return Sample(value, value > self._activation, now)

    async def aclose(self) -> None:
        await self._hub.release()


async def _close(hub: SqlHub) -> None:
    await hub.aclose()
