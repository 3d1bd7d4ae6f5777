"""The end-offset watcher behind push: `KafkaCluster.watch(topic, partitions)`.

A group-less watcher of end offsets. ONE watcher task per cluster (started by the first
subscriber, ended by the last) sends, every ``interval`` (``KafkaSettings.watch_interval``,
100 ms by default; a subscriber may ask for a shorter one), ONE ListOffsets per partition leader
for the union of the subscribed partitions, over the same connections and ListOffsets code as the
rounds, and wakes each subscriber whose partitions' end offsets moved since the previous round.
A subscriber's flag is an `asyncio.Event`, so a burst between two reads is one wake-up. When its
partitions cannot be read (broker down, topic deleted...) the subscriber's iterator raises
`ScalerError` / `QueryError` and is dropped; the caller subscribes again later. The watcher's
requests are counted apart (`Counters.watch_requests`).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from scaler.errors import ScalerError
from scalers.kafka.caches import Metadata
from scalers.kafka.connections import WATCH_ROUND
from scalers.kafka.counters import Counters
from scalers.kafka.failures import Failure, RoundFailed
from scalers.kafka.lag import PartitionKey
from scalers.kafka.offsets import OffsetReader

# Seconds (loop time) a subscriber's partitions may keep answering with retriable errors (a
# leader election, topics just created) before its subscription ends.
WATCH_RETRIABLE_FOR = 30.0


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
    live: bool = False  # a round has read every one of them: its baseline is taken

    def fail(self, failure: Failure) -> None:
        if self.failure is None:
            self.failure = failure
        self.event.set()


class EndOffsetWatcher:
    """The subscribers of one cluster and the task reading their end offsets.

    Completed reads are counted in `Counters.watch_rounds`, the requests of the last one in
    `Counters.last_watch_round`.
    """

    def __init__(
        self,
        counters: Counters,
        metadata: Metadata,
        reader: OffsetReader,
        default_interval: float,
        name: str,
    ) -> None:
        self.closed = False  # set by the cluster's aclose(): no new subscription
        self._counters = counters
        self._metadata = metadata
        self._reader = reader
        self._default_interval = default_interval
        self._name = name
        self._subscribers: list[_Subscriber] = []
        self._task: asyncio.Task[None] | None = None
        self._watch_offsets: dict[PartitionKey, int] = {}  # end offsets read by the last round

    @property
    def subscribers(self) -> int:
        """Live `watch()` iterators."""
        return len(self._subscribers)

    @property
    def watching(self) -> bool:
        """Whether the push watcher task is running."""
        return self._task is not None

    async def watch(
        self, topic: str, partitions: frozenset[int] | None = None, interval: float | None = None
    ) -> AsyncGenerator[None, None]:
        """Yield once when subscribed, then whenever the end offset of a watched partition of
        `topic` moved.

        `partitions` None: every partition. The first item comes after the first watcher round
        that read every watched partition: it took their baseline (unless another subscriber
        already watched the partition), so any message appended after that item is seen by a
        later round. Wake-ups between two reads of the shared watcher coalesce into one. Raises
        ScalerError / QueryError when the partitions cannot be read; the subscription is then
        over.
        """
        if self.closed:
            raise ScalerError("kafka client is closed")
        sub = _Subscriber(topic, partitions, interval or self._default_interval)
        self._subscribers.append(sub)
        if self._task is None:
            self._task = asyncio.create_task(self._watch(), name=f"kafka-watch {self._name}")
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

    def detach(self) -> asyncio.Task[None] | None:
        """The watcher task, for the caller to cancel (then `fail_all`)."""
        watcher, self._task = self._task, None
        return watcher

    def fail_all(self, failure: Failure) -> None:
        subscribers, self._subscribers = self._subscribers, []
        for sub in subscribers:
            sub.fail(failure)

    async def _watch(self) -> None:
        """Read the subscribed partitions' end offsets until the last subscriber leaves."""
        try:
            loop = asyncio.get_running_loop()
            while self._subscribers:
                started = loop.time()
                round_requests: Counter[str] = Counter()
                WATCH_ROUND.set(round_requests)
                await self._watch_round(list(self._subscribers))
                self._counters.watch_rounds += 1
                self._counters.last_watch_round = round_requests
                if not self._subscribers:
                    break
                interval = min(sub.interval for sub in self._subscribers)
                await asyncio.sleep(max(0.0, started + interval - loop.time()))
        finally:
            if self._task is asyncio.current_task():
                self._task = None
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
            meta_failures = await self._metadata.ensure(set(wanted))
            latest, latest_failures = await self._reader.latest(
                {t for t in wanted if t in self._metadata.topics and t not in meta_failures},
                {t: frozenset(p) for t, p in wanted.items() if p is not None},
            )
        except RoundFailed as exc:
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
                    for p in sorted(self._metadata.topics.get(sub.topic, ()))
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
                if keys and not sub.live:  # every partition read: the baseline is taken
                    sub.live = True
                    sub.event.set()  # its first item: "subscribed"
            sub.checked = sub.checked or bool(keys)
            if sub.live and any(k in moved for k in keys):
                sub.event.set()

    def _drop(self, sub: _Subscriber, failure: Failure) -> None:
        sub.fail(failure)
        self._unsubscribe(sub)
