"""One-trip Redis reads, and the base of the scalers that make them.

Each read is ONE ``EVALSHA`` of a small Lua script; reads issued by many scalers in the same
event-loop tick against the same client go out as one pipeline (one round trip per server and
tick; for a cluster, one per node and tick). A ``NOSCRIPT`` answer (server restarted, script
cache flushed) is retried once with ``EVAL`` and the script's source, which caches it again.

A pipeline's answers are handed out `DELIVER_CHUNK` at a time, yielding to the event loop in
between: each answer resumes a poll (decide, record, maybe write), and hundreds resumed in one
loop iteration (a pipeline that grew while the loop was busy) would make every poll due
meanwhile start that much late.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import RedisCluster

from scaler.clients import ClientPool
from scaler.contract import MetricSpec, TriggerContext
from scaler.errors import QueryError, ScalerError
from scaler.lease_slot import LeaseSlot
from scaler.params import Config, redact
from scalers.redis_common import RedisTarget, close_client, create_client, validate_connection

DELIVER_CHUNK = 16  # answers handed out per event-loop iteration


@dataclass(frozen=True, slots=True)
class LuaScript:
    source: str

    @property
    def sha(self) -> str:
        return hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()


@dataclass(slots=True)
class _Call:
    script: LuaScript
    keys: tuple[str, ...]
    args: tuple[str, ...]
    future: asyncio.Future[Any]


class ScriptRunner:
    """Runs Lua scripts on one client; calls made in the same loop tick share one pipeline."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._pending: list[_Call] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.round_trips = 0  # pipelines sent (for tests and benchmarks)

    async def run(self, script: LuaScript, keys: Sequence[str], args: Sequence[str] = ()) -> Any:
        loop = asyncio.get_running_loop()
        call = _Call(script, tuple(keys), tuple(args), loop.create_future())
        self._pending.append(call)
        if len(self._pending) == 1:
            loop.call_soon(self._flush)
        return await call.future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        batch = [c for c in batch if not c.future.done()]
        if batch:
            task = asyncio.ensure_future(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Call]) -> None:
        try:
            results = await self._execute_isolated(batch)
            missing = [c for c, r in zip(batch, results, strict=True) if _noscript(r)]
            if missing:
                # EVAL with the source runs the script and caches it on the very server that
                # lacked it (a SCRIPT LOAD on a cluster would go to every primary and fail
                # while any one of them is down).
                retried = await self._execute_isolated(missing, with_source=True)
                outcome = dict(zip((id(c) for c in missing), retried, strict=True))
                results = [outcome.get(id(c), r) for c, r in zip(batch, results, strict=True)]
        except Exception as exc:  # delivered to every caller, who maps it
            for call in batch:
                if not call.future.done():
                    call.future.set_exception(exc)
            return
        except BaseException:
            for call in batch:
                call.future.cancel()
            raise
        for i, (call, result) in enumerate(zip(batch, results, strict=True)):
            if i and i % DELIVER_CHUNK == 0:
                try:
                    await asyncio.sleep(0)  # the polls resumed so far run, then due ones start
                except BaseException:
                    for rest in batch[i:]:
                        rest.future.cancel()
                    raise
            if call.future.done():
                continue
            if isinstance(result, Exception):
                call.future.set_exception(result)
            else:
                call.future.set_result(result)

    async def _execute_isolated(
        self, batch: list[_Call], *, with_source: bool = False
    ) -> list[Any]:
        """One pipeline for the batch. When a cluster pipeline fails as a whole (redis-py raises
        for every command when one node is unreachable), each node's calls are sent again on
        their own, one node after the other, so a dead node fails only the keys it owns."""
        try:
            return await self._execute(batch, with_source=with_source)
        except Exception:
            groups = await self._node_groups(batch)
            if len(groups) < 2:
                raise
        outcome: dict[int, Any] = {}
        for group in groups:
            try:
                answers: list[Any] = await self._execute(group, with_source=with_source)
            except Exception as exc:
                answers = [exc] * len(group)
            outcome.update(zip((id(c) for c in group), answers, strict=True))
        return [outcome[id(c)] for c in batch]

    async def _node_groups(self, batch: list[_Call]) -> list[list[_Call]]:
        """The batch split by the cluster node owning each call's first key ([batch] when the
        client is not a cluster client or the slot map is unavailable)."""
        if not isinstance(self.client, RedisCluster) or len(batch) < 2:
            return [batch]
        groups: dict[str, list[_Call]] = {}
        try:
            await self.client.initialize()
            for call in batch:
                node = self.client.get_node_from_key(call.keys[0]) if call.keys else None
                groups.setdefault("" if node is None else node.name, []).append(call)
        except Exception:
            return [batch]
        return list(groups.values())

    async def _execute(self, batch: list[_Call], *, with_source: bool = False) -> list[Any]:
        self.round_trips += 1
        pipe = self.client.pipeline(transaction=False)
        for call in batch:
            # execute_command, not pipe.evalsha(): redis-py's cluster pipeline refuses its
            # evalsha() method, but routes an EVALSHA/EVAL by its key like any keyed command
            # (one sub-pipeline per node).
            head = ("EVAL", call.script.source) if with_source else ("EVALSHA", call.script.sha)
            pipe.execute_command(*head, len(call.keys), *call.keys, *call.args)
        return list(await pipe.execute(raise_on_error=False))

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await close_client(self.client)


def _noscript(result: object) -> bool:
    return isinstance(result, redis_errors.NoScriptError) or (
        isinstance(result, redis_errors.ResponseError) and str(result).startswith("NOSCRIPT")
    )


class RedisConnection:
    """A scaler's handle on its shared ScriptRunner (acquired lazily, released on close)."""

    def __init__(self, target: RedisTarget, clients: ClientPool) -> None:
        self.target = target
        self._runner: LeaseSlot[ScriptRunner] = LeaseSlot(
            clients, f"redis {target.endpoint}", target.key(), self._create, _close_runner
        )

    async def run(self, script: LuaScript, keys: Sequence[str], args: Sequence[str] = ()) -> Any:
        try:
            runner = await self._runner.take()
            return await runner.run(script, keys, args)
        except redis_errors.ResponseError as exc:
            if _is_auth_problem(exc):
                raise ScalerError(self._message("authentication failed", exc)) from exc
            raise QueryError(self._message("query failed", exc)) from exc
        except redis_errors.AuthenticationError as exc:
            raise ScalerError(self._message("authentication failed", exc)) from exc
        except (redis_errors.RedisError, redis_errors.RedisClusterException, OSError) as exc:
            raise ScalerError(self._message("connection failed", exc)) from exc
        except TimeoutError as exc:
            raise ScalerError(self._message("timed out", exc)) from exc

    async def _create(self) -> ScriptRunner:
        return ScriptRunner(await create_client(self.target))

    def _message(self, what: str, exc: BaseException) -> str:
        detail = redact(f"{type(exc).__name__}: {exc}", self.target.secrets())
        return f"redis {self.target.endpoint}: {what}: {detail}"

    async def aclose(self) -> None:
        await self._runner.release()


async def _close_runner(runner: ScriptRunner) -> None:
    await runner.aclose()


def _is_auth_problem(exc: redis_errors.ResponseError) -> bool:
    text = str(exc)
    return text.startswith(("NOAUTH", "WRONGPASS", "NOPERM")) or "AUTH" in text.split(" ", 1)[0]


def as_count(value: object, what: str) -> int:
    """A script's integer answer, or QueryError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise QueryError(f"{what}: expected an integer from Redis, got {type(value).__name__}")
    return value


class RedisScaler:
    """What every Redis-reading scaler has: its connection (one shared client per server and
    credential), its metric spec, the connection checks; a subclass reads in `sample()`."""

    _spec: MetricSpec
    _conn: RedisConnection

    def __init__(
        self, spec: MetricSpec, config: Config, trigger: TriggerContext, clients: ClientPool
    ) -> None:
        self._spec = spec
        self._conn = RedisConnection(RedisTarget.from_config(config, trigger), clients)
        self._clients = clients

    @staticmethod
    def validate(config: Config, trigger: TriggerContext) -> Iterable[str]:
        return validate_connection(config, trigger.type)

    @property
    def target(self) -> RedisTarget:
        return self._conn.target

    def metric_spec(self) -> MetricSpec:
        return self._spec

    async def aclose(self) -> None:
        await self._conn.aclose()
