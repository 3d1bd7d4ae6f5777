"""The `kafka` trigger: a consumer group's lag, with KEDA's parameters and arithmetic.

Parameters and their checks live in `scalers.kafka.config`; the lag arithmetic in
`scalers.kafka.lag` (pure); the reads go through the cluster's shared
`scalers.kafka.cluster.KafkaCluster`, which answers every trigger of a tick with one OffsetFetch
per group coordinator and one ListOffsets per partition leader.

Metric ``s<index>-kafka-<topic>`` (or ``s<index>-kafka-<consumerGroup>-topics`` without a topic),
target ``lagThreshold``; active when the lag including persistent lag, before the partition cap,
is strictly greater than ``activationLagThreshold``.

Push: ``wakeups()`` subscribes to the cluster's shared end-offset watcher
(`KafkaCluster.watch`) for the trigger's topic (and ``partitionLimitation``): it yields once
when the watcher has read the partitions' end offsets (subscribed: later messages are seen),
then when a message is appended to a watched partition, so a produce wakes the object's sample
within about one watcher interval (``pushInterval``, a Tidal extension, 100 ms by default).
Triggers without ``topic`` are polled (UnsupportedError: their partitions depend on the group's
commits).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Iterable, Mapping
from typing import ClassVar

from scaler.clients import ClientPool
from scaler.contract import MetricSpec, Sample, TriggerContext, metric_name
from scaler.errors import QueryError, UnsupportedError
from scaler.lease_slot import LeaseSlot
from scaler.params import Config, Param
from scalers.kafka.cluster import KafkaCluster
from scalers.kafka.config import PARAMS, cluster_settings, problems
from scalers.kafka.lag import LagPolicy, PartitionKey, parse_partition_list, total_lag
from scalers.kafka.settings import KafkaSettings


class KafkaScaler:
    PARAMS: ClassVar[tuple[Param, ...]] = PARAMS
    SAMPLED = True

    @staticmethod
    def validate(config: Config, trigger: TriggerContext) -> Iterable[str]:
        return problems(config, trigger)

    def __init__(self, config: Config, trigger: TriggerContext, clients: ClientPool) -> None:
        self._group = config.get_str("consumerGroup")
        self._topic = config.opt_str("topic")
        limitation = config.get_list("partitionLimitation") if self._topic else ()
        self._only: frozenset[int] | None = (
            frozenset(parse_partition_list(limitation)) if limitation else None
        )
        reset = config.get_str("offsetResetPolicy")
        self._policy = LagPolicy(
            lag_threshold=config.get_int("lagThreshold"),
            activation_lag_threshold=config.get_int("activationLagThreshold"),
            offset_reset_policy="earliest" if reset == "earliest" else "latest",
            allow_idle_consumers=config.get_bool("allowIdleConsumers"),
            exclude_persistent_lag=config.get_bool("excludePersistentLag"),
            scale_to_zero_on_invalid_offset=config.get_bool("scaleToZeroOnInvalidOffset"),
            limit_to_partitions_with_lag=config.get_bool("limitToPartitionsWithLag"),
            ensure_even_distribution_of_partitions=config.get_bool(
                "ensureEvenDistributionOfPartitions"
            ),
        )
        detail = f"kafka-{self._topic}" if self._topic else f"kafka-{self._group}-topics"
        self._spec = MetricSpec(
            metric_name(trigger.index, detail),
            float(self._policy.lag_threshold),
            trigger.metric_type,
        )
        self._settings = cluster_settings(config, trigger)
        settings = self._settings

        async def create() -> KafkaCluster:
            return KafkaCluster(settings)

        self._cluster: LeaseSlot[KafkaCluster] = LeaseSlot(
            clients, f"kafka group '{self._group}'", settings.key(), create, _close_cluster
        )
        self._seen: Mapping[PartitionKey, int] = {}  # excludePersistentLag memory
        self._push_interval = config.get_duration("pushInterval")

    @property
    def settings(self) -> KafkaSettings:
        return self._settings

    @property
    def policy(self) -> LagPolicy:
        return self._policy

    @property
    def group(self) -> str:
        return self._group

    @property
    def topic(self) -> str | None:
        return self._topic

    @property
    def push_interval(self) -> float:
        """Seconds between the push watcher's end-offset reads this trigger asks for."""
        return self._push_interval

    @property
    def partitions(self) -> frozenset[int] | None:
        """The partitionLimitation in force (None: every partition)."""
        return self._only

    def metric_spec(self) -> MetricSpec:
        return self._spec

    async def cluster(self) -> KafkaCluster:
        """The shared cluster client (acquired on first use)."""
        return await self._cluster.take()

    async def sample(self, now: float) -> Sample:
        cluster = await self.cluster()
        partitions = await cluster.offsets(self._group, self._topic)
        if self._only is not None:
            partitions = tuple(p for p in partitions if p.partition in self._only)
            if not partitions:
                raise QueryError(
                    f"expected at least one active partition within the topic '{self._topic}'"
                )
        result = total_lag(partitions, self._policy, self._seen)
        if self._policy.exclude_persistent_lag:
            self._seen = result.seen
        return Sample(float(result.value), result.active, now)

    def wakeups(self) -> AsyncGenerator[None, None]:
        """A new iterator yielding once subscribed (the watcher has the partitions' baseline),
        then when a watched partition of `topic` receives messages.

        Raises UnsupportedError for a trigger without `topic`; the iterator raises ScalerError /
        QueryError when the cluster's end offsets cannot be read (the core then polls and
        subscribes again later).
        """
        if self._topic is None:
            raise UnsupportedError(
                "kafka push needs `topic` (a topic-less trigger's partitions follow the group's"
                " commits); the trigger is polled"
            )
        return self._wakeups(self._topic)

    async def _wakeups(self, topic: str) -> AsyncGenerator[None, None]:
        cluster = await self.cluster()
        async with contextlib.aclosing(
            cluster.watch(topic, self._only, self._push_interval)
        ) as changes:
            async for _ in changes:
                yield None

    async def aclose(self) -> None:
        await self._cluster.release()


async def _close_cluster(cluster: KafkaCluster) -> None:
    await cluster.aclose()
