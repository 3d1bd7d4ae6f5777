"""One shared Kafka client per (bootstrap servers, credentials), answering many scalers at once.

Every `kafka` trigger of every ScaledObject that names the same bootstrap servers with the same
credentials shares one `KafkaCluster` through the ClientPool. `KafkaCluster` only wires the
pieces, each in its own module:

* `scalers.kafka.connections`: one connection per broker (requests counted in `Counters`);
* `scalers.kafka.caches`: the watched topics' metadata and the group coordinators;
* `scalers.kafka.offsets`: committed offsets (one OffsetFetch per coordinator) and latest offsets
  (one ListOffsets per partition leader);
* `scalers.kafka.rounds`: `offsets(group, topic)` calls of a short window answered by ONE round;
* `scalers.kafka.watcher`: the end-offset watcher behind `watch(topic, partitions)` (push).

Errors are never zeros: an unreachable broker, a timeout, a moved coordinator, an unknown group
(``GROUP_ID_NOT_FOUND``), a missing topic or a partition-level error fail the scalers that need
that piece with `ScalerError` / `QueryError`, and mark the cached metadata or coordinator stale.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from scaler.errors import ScalerError
from scalers.kafka.caches import Coordinators, Metadata
from scalers.kafka.connections import Connections
from scalers.kafka.counters import Counters
from scalers.kafka.failures import Failure
from scalers.kafka.lag import PartitionOffsets
from scalers.kafka.offsets import OffsetReader
from scalers.kafka.rounds import Rounds
from scalers.kafka.settings import KafkaSettings
from scalers.kafka.watcher import EndOffsetWatcher


class KafkaCluster(Counters):
    """A cluster's shared connections, metadata cache and coalesced offset queries.

    Its `Counters` (``requests``, ``rounds``, ``watch_requests``...) say what it has sent.
    """

    def __init__(self, settings: KafkaSettings) -> None:
        super().__init__()
        self.settings = settings
        self._closed = False
        self._conns = Connections(settings, self)
        self._metadata = Metadata(self._conns)
        coordinators = Coordinators(self._conns)
        reader = OffsetReader(self._conns, self._metadata, coordinators)
        name = repr(self)
        self._rounds = Rounds(self, settings.window, self._metadata, coordinators, reader, name)
        self._watch = EndOffsetWatcher(self, self._metadata, reader, settings.watch_interval, name)

    def __repr__(self) -> str:
        return f"KafkaCluster({self.settings.endpoint})"

    @property
    def connections(self) -> int:
        """Open broker connections."""
        return self._conns.open

    @property
    def watched_topics(self) -> frozenset[str]:
        return frozenset(self._metadata.topics)

    @property
    def subscribers(self) -> int:
        """Live `watch()` iterators."""
        return self._watch.subscribers

    @property
    def watching(self) -> bool:
        """Whether the push watcher task is running."""
        return self._watch.watching

    # -- the public queries ----------------------------------------------------------------------

    async def offsets(self, group: str, topic: str | None) -> tuple[PartitionOffsets, ...]:
        """Committed and latest offsets of every partition of `topic` for `group`.

        `topic` None: every topic the group has committed offsets for (KEDA's topic-less mode).
        Raises ScalerError / QueryError; the answer comes from the round this call joins.
        """
        if self._closed:
            raise ScalerError("kafka client is closed")
        return await self._rounds.offsets(group, topic)

    def watch(
        self, topic: str, partitions: frozenset[int] | None = None, interval: float | None = None
    ) -> AsyncGenerator[None, None]:
        """Yield once whenever the end offset of a watched partition of `topic` moved.

        `partitions` None: every partition. Wake-ups between two reads of the shared watcher
        coalesce into one. The first read only takes the baseline (unless another subscriber
        already watches the partition). Raises ScalerError / QueryError when the partitions
        cannot be read (or the client is closed); the subscription is then over.
        """
        return self._watch.watch(topic, partitions, interval)

    async def aclose(self) -> None:
        self._closed = self._watch.closed = True
        for detach in (self._rounds.detach, self._watch.detach):
            task = detach()
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._watch.fail_all(Failure("kafka client is closed"))
        self._rounds.fail_pending("kafka client is closed")
        await self._conns.aclose()
