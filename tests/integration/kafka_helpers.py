"""Test-side Kafka work shared by the Kafka scaler and push tests: topics, messages, commits."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Cluster:
    """Topics, produced messages and committed offsets through aiokafka's own clients."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)

    async def start(self) -> Cluster:
        await self.admin.start()
        await self.producer.start()
        return self

    async def stop(self) -> None:
        await self.producer.stop()
        await self.admin.close()

    async def topic(self, partitions: int, produced: Mapping[int, int] | None = None) -> str:
        name = uid("topic")
        await self.admin.create_topics([NewTopic(name, partitions, 1)])
        await self.produce(name, produced or {})
        return name

    async def produce(self, topic: str, counts: Mapping[int, int]) -> None:
        sent = [
            await self.producer.send(topic, b"m", partition=partition)
            for partition, count in counts.items()
            for _ in range(count)
        ]
        await asyncio.gather(*sent)

    async def commit(self, group: str, topic: str, offsets: Mapping[int, int]) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=group, enable_auto_commit=False
        )
        tps = {p: TopicPartition(topic, p) for p in offsets}
        consumer.assign(list(tps.values()))
        await consumer.start()
        try:
            await consumer.commit({tps[p]: offset for p, offset in offsets.items()})
        finally:
            await consumer.stop()
