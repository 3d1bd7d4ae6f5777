"""The per-tick rounds: every `offsets()` call of a short window answered by ONE round.

A scaler's ``sample()`` calls `KafkaCluster.offsets(group, topic)`; calls arriving within one
short window (``window``, 5 ms by default, plus the loop iteration they arrive in) are answered
by one round:

1. Metadata for the watched topics only and group coordinators (`scalers.kafka.caches`).
2. Committed offsets: ONE OffsetFetch per group coordinator covering every group of the round.
3. Latest offsets: ONE ListOffsets per partition leader covering every watched partition.

In the steady state a round costs one OffsetFetch per coordinator plus one ListOffsets per
leader: O(brokers), whatever the number of objects. Committed offsets are read before latest
offsets, so a race makes lag look larger, never negative.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from scaler.errors import ScalerError
from scalers.kafka.caches import Coordinators, Metadata
from scalers.kafka.counters import Counters
from scalers.kafka.failures import Failure, RoundFailed
from scalers.kafka.lag import NO_COMMIT, PartitionKey, PartitionOffsets
from scalers.kafka.offsets import GroupSpec, OffsetReader


@dataclass(slots=True)
class _Waiter:
    group: str
    topic: str | None
    future: asyncio.Future[tuple[PartitionOffsets, ...]]


class Rounds:
    """Coalesces `offsets()` calls into rounds (counted in `Counters.rounds`)."""

    def __init__(
        self,
        counters: Counters,
        window: float,
        metadata: Metadata,
        coordinators: Coordinators,
        reader: OffsetReader,
        name: str,
    ) -> None:
        self._counters = counters
        self._window = window
        self._metadata = metadata
        self._coordinators = coordinators
        self._reader = reader
        self._name = name
        self._pending: list[_Waiter] = []
        self._runner: asyncio.Task[None] | None = None

    async def offsets(self, group: str, topic: str | None) -> tuple[PartitionOffsets, ...]:
        """Join the next round; its answer for (`group`, `topic`)."""
        future: asyncio.Future[tuple[PartitionOffsets, ...]] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending.append(_Waiter(group, topic, future))
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name=f"kafka-rounds {self._name}")
        return await future

    def detach(self) -> asyncio.Task[None] | None:
        """The running rounds' task, for the caller to cancel (then `fail_pending`)."""
        runner, self._runner = self._runner, None
        return runner

    def fail_pending(self, message: str) -> None:
        pending, self._pending = self._pending, []
        for waiter in pending:
            if not waiter.future.done():
                waiter.future.set_exception(ScalerError(message))

    async def _run(self) -> None:
        try:
            while self._pending:
                await asyncio.sleep(self._window)  # let the tick's other samples join
                batch, self._pending = self._pending, []
                await self._round(batch)
        finally:
            if self._runner is asyncio.current_task():
                self._runner = None

    async def _round(self, batch: list[_Waiter]) -> None:
        self._counters.rounds += 1
        try:
            answers = await self._collect(batch)
        except RoundFailed as exc:
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
        meta_failures = await self._metadata.ensure(named)
        coordinator_failures = await self._coordinators.ensure(set(groups))
        specs: dict[str, GroupSpec] = {}
        for group, wanted in groups.items():
            if group in coordinator_failures:
                continue
            if wanted is None:
                specs[group] = None
                continue
            spec = [
                (t, sorted(self._metadata.topics[t]))
                for t in sorted(wanted)
                if t in self._metadata.topics
            ]
            if spec:
                specs[group] = spec
        committed: dict[str, dict[PartitionKey, int] | Failure] = dict(coordinator_failures)
        committed.update(await self._reader.committed(specs))
        discovered = {
            topic
            for group, wanted in groups.items()
            if wanted is None
            for topic, _ in _keys(committed.get(group))
        }
        if discovered:
            meta_failures = {**meta_failures, **await self._metadata.ensure(discovered)}
        latest, latest_failures = await self._reader.latest(
            {t for t in named | discovered if t in self._metadata.topics and t not in meta_failures}
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
            partitions = self._metadata.topics.get(topic)
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


def _keys(committed: dict[PartitionKey, int] | Failure | None) -> Iterable[PartitionKey]:
    return committed if isinstance(committed, dict) else ()
