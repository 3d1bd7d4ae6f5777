"""Kafka push wake-ups (`KafkaScaler.wakeups()`) against real brokers (3.9 and 4.1) on 127.0.0.1.

The shared per-cluster watcher reads end offsets every `pushInterval`; the tests wait on its round
counter (`KafkaCluster.watch_rounds`) rather than on time: "after the watcher's next rounds" is the
unit of waiting. `asyncio.timeout` values only guard against a hang; they assert no speed.

Every `wakeups()` iterator yields once when subscribed (the watcher has read its partitions'
baseline), then per change: the tests take that first item (`_armed`) before producing, and
count only the items after it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import pytest

from localenv.kafka import KafkaBroker
from scaler.clients import ClientPool
from scaler.contract import PushScaler, TriggerContext
from scaler.errors import ConfigError, QueryError, ScalerError, UnsupportedError
from scaler.registry import build_scaler
from scalers.kafka.cluster import KafkaCluster
from scalers.kafka.scaler import KafkaScaler
from tests.integration.kafka_helpers import Cluster, uid

GUARD = 30.0  # seconds: a deadlock guard for waits on the watcher, never a speed assertion


@pytest.fixture
async def kafka(any_kafka: KafkaBroker) -> AsyncIterator[Cluster]:
    producer = await Cluster(any_kafka.bootstrap).start()
    yield producer
    await producer.stop()


def _scaler(bootstrap: str, pool: ClientPool, **metadata: str) -> KafkaScaler:
    """A scaler built from a ScaledObject trigger's metadata, as the daemon builds it."""
    trigger = TriggerContext(
        "ns", "so", 0, "kafka", "", {"bootstrapServers": bootstrap, **metadata}
    )
    scaler = build_scaler(trigger, pool)
    assert isinstance(scaler, KafkaScaler)
    return scaler


async def _until(check: Callable[[], Any], what: str) -> None:
    try:
        async with asyncio.timeout(GUARD):
            while True:
                if check():
                    return
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


async def _rounds(cluster: KafkaCluster, count: int) -> None:
    """Wait until the watcher has completed `count` more rounds."""
    target = cluster.watch_rounds + count
    await _until(lambda: cluster.watch_rounds >= target, f"{count} watcher rounds")


async def _next(wakeups: AsyncIterator[None]) -> None:
    await anext(wakeups)


async def _armed(wakeups: AsyncIterator[None]) -> asyncio.Task[None]:
    """Take the iterator's first item -- "subscribed": the watcher has taken the baseline -- and
    return a task waiting for the next one (a change). Raises when it cannot subscribe."""
    async with asyncio.timeout(GUARD):
        await anext(wakeups)
    return asyncio.create_task(_next(wakeups))


async def _woken(task: asyncio.Task[None]) -> None:
    async with asyncio.timeout(GUARD):
        await task


async def _stopped(task: asyncio.Task[Any]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _sampled(scaler: KafkaScaler) -> None:
    """Sample until it succeeds (a new broker's group coordinator may still be loading)."""
    async with asyncio.timeout(GUARD):
        while True:
            try:
                await scaler.sample(0.0)
                return
            except ScalerError:
                await asyncio.sleep(0.2)


async def test_the_trigger_needs_no_extra_metadata_for_push(pool: ClientPool) -> None:
    scaler = _scaler("127.0.0.1:9092", pool, consumerGroup="g", topic="orders")
    assert isinstance(scaler, PushScaler)


async def test_the_first_item_means_subscribed(kafka: Cluster, pool: ClientPool) -> None:
    """`wakeups()` yields once when the watcher has read the partitions' end offsets (their
    baseline), before any message: one message produced right after that first item wakes the
    next. (Before, the first item was the first change's, and the core reported the
    subscription up before it existed.)"""
    topic = await kafka.topic(2)
    scaler = _scaler(kafka.bootstrap, pool, consumerGroup=uid("group"), topic=topic)
    async with contextlib.aclosing(scaler.wakeups()) as wakeups:
        async with asyncio.timeout(GUARD):
            await anext(wakeups)  # subscribed; nothing was produced
        assert (await scaler.cluster()).subscribers == 1
        await kafka.produce(topic, {1: 1})
        async with asyncio.timeout(GUARD):
            await anext(wakeups)
    await scaler.aclose()


async def test_one_message_wakes_the_iterator(kafka: Cluster, pool: ClientPool) -> None:
    topic = await kafka.topic(2)
    scaler = _scaler(kafka.bootstrap, pool, consumerGroup=uid("group"), topic=topic)
    cluster = await scaler.cluster()
    async with contextlib.aclosing(scaler.wakeups()) as wakeups:
        waiting = await _armed(wakeups)
        assert not waiting.done()  # nothing was produced: no wake-up
        assert (cluster.subscribers, cluster.watching) == (1, True)
        await kafka.produce(topic, {1: 1})
        await _woken(waiting)
    assert cluster.subscribers == 0
    await _until(lambda: not cluster.watching, "the watcher to stop with its last subscriber")
    await scaler.aclose()


async def test_a_burst_is_a_few_wake_ups(kafka: Cluster, pool: ClientPool) -> None:
    topic = await kafka.topic(3)
    scaler = _scaler(kafka.bootstrap, pool, consumerGroup=uid("group"), topic=topic)
    cluster = await scaler.cluster()
    burst = {0: 400, 1: 300, 2: 300}

    # Drained while the burst is produced: at most one wake-up per watcher round. The first
    # item only says "subscribed" (no change yet): it is taken before the burst, not counted.
    yields = 0

    async def count(wakeups: AsyncIterator[None]) -> None:
        nonlocal yields
        async for _ in wakeups:
            yields += 1

    async with contextlib.aclosing(scaler.wakeups()) as drained:
        async with asyncio.timeout(GUARD):
            await anext(drained)  # subscribed
        counting = asyncio.create_task(count(drained))
        start = cluster.watch_rounds
        await kafka.produce(topic, burst)
        await _rounds(cluster, 3)  # a whole round after the last message, and the count's turn
        rounds = cluster.watch_rounds - start
        await _stopped(counting)
    assert 1 <= yields <= rounds < sum(burst.values())

    # Not drained: the wake-ups of every round that saw part of the burst are one wake-up, and
    # none follows once it is read.
    async with contextlib.aclosing(scaler.wakeups()) as quiet:
        pending = await _armed(quiet)
        await kafka.produce(topic, {0: 1})
        await _woken(pending)  # a change woke it, and nobody waits on it now
        await kafka.produce(topic, burst)
        await _rounds(cluster, 2)  # a whole round after the last message
        await _woken(asyncio.create_task(_next(quiet)))
        again = asyncio.create_task(_next(quiet))
        await _rounds(cluster, 3)
        assert not again.done()
        await _stopped(again)
    await scaler.aclose()


async def test_two_scalers_share_one_watcher(kafka: Cluster, pool: ClientPool) -> None:
    first_topic, second_topic = await kafka.topic(2), await kafka.topic(3)
    first = _scaler(kafka.bootstrap, pool, consumerGroup=uid("group"), topic=first_topic)
    second = _scaler(kafka.bootstrap, pool, consumerGroup=uid("group"), topic=second_topic)
    cluster = await first.cluster()
    assert await second.cluster() is cluster
    async with (
        contextlib.aclosing(first.wakeups()) as first_wakeups,
        contextlib.aclosing(second.wakeups()) as second_wakeups,
    ):
        first_waiting = await _armed(first_wakeups)
        second_waiting = await _armed(second_wakeups)
        assert (len(pool), cluster.subscribers) == (1, 2)

        queries, rounds = cluster.requests, cluster.watch_rounds
        list_offsets = cluster.watch_requests_by_api["ListOffsets"]
        await _rounds(cluster, 5)
        rounds = cluster.watch_rounds - rounds
        sent = cluster.watch_requests_by_api["ListOffsets"] - list_offsets
        # one broker leads every partition of both topics: one ListOffsets per round, not two
        assert cluster.last_watch_round == {"ListOffsets": 1}
        assert rounds - 1 <= sent <= rounds + 1
        assert cluster.requests == queries  # the sample path's counters are not charged
        assert cluster.connections == 1

        await _sampled(second)  # samples and the watcher share the connection
        assert cluster.connections == 1

        await kafka.produce(second_topic, {2: 1})
        await _woken(second_waiting)
        await _rounds(cluster, 3)
        assert not first_waiting.done()  # its partitions did not move
        await _stopped(first_waiting)
    await first.aclose()
    await second.aclose()
    assert len(pool) == 0


async def test_partition_limitation_watches_only_those_partitions(
    kafka: Cluster, pool: ClientPool
) -> None:
    topic = await kafka.topic(3)
    scaler = _scaler(
        kafka.bootstrap, pool, consumerGroup=uid("group"), topic=topic, partitionLimitation="0,2"
    )
    cluster = await scaler.cluster()
    async with contextlib.aclosing(scaler.wakeups()) as wakeups:
        waiting = await _armed(wakeups)
        await kafka.produce(topic, {1: 5})
        await _rounds(cluster, 3)
        assert not waiting.done()
        await kafka.produce(topic, {2: 1})
        await _woken(waiting)
    await scaler.aclose()


async def test_deleted_topic_ends_the_iterator_with_an_error(
    kafka: Cluster, pool: ClientPool
) -> None:
    topic = await kafka.topic(1)
    scaler = _scaler(kafka.bootstrap, pool, consumerGroup=uid("group"), topic=topic)
    cluster = await scaler.cluster()
    async with contextlib.aclosing(scaler.wakeups()) as wakeups:
        waiting = await _armed(wakeups)
        await kafka.admin.delete_topics([topic])
        with pytest.raises(QueryError, match=f"'{topic}'"):
            await _woken(waiting)
    assert cluster.subscribers == 0
    await scaler.aclose()


async def test_missing_topic_is_an_error_and_is_not_created(
    kafka: Cluster, pool: ClientPool
) -> None:
    missing = uid("missing")
    scaler = _scaler(kafka.bootstrap, pool, consumerGroup=uid("group"), topic=missing)
    with pytest.raises(QueryError, match=f"topic '{missing}' does not exist"):
        await _woken(asyncio.create_task(_next(scaler.wakeups())))
    assert missing not in await kafka.admin.list_topics()
    await scaler.aclose()


async def test_broker_killed_raises_then_a_new_subscription_works(
    kafka_factory: Callable[..., KafkaBroker], pool: ClientPool
) -> None:
    broker = kafka_factory("3.9.1")
    producer = await Cluster(broker.bootstrap).start()
    try:
        topic = await producer.topic(2)
    finally:
        await producer.stop()
    scaler = _scaler(broker.bootstrap, pool, consumerGroup=uid("group"), topic=topic)
    cluster = await scaler.cluster()
    waiting = await _armed(scaler.wakeups())
    assert not waiting.done()

    broker.kill()
    with pytest.raises(ScalerError):
        await _woken(waiting)
    assert cluster.subscribers == 0
    with pytest.raises(ScalerError):
        await scaler.sample(0.0)  # the sample path keeps its own errors
    with pytest.raises(ScalerError):  # subscribing again while the broker is down fails too
        await _woken(asyncio.create_task(_next(scaler.wakeups())))

    broker.restart()
    wakeups, resubscribed = await _resubscribe(scaler)
    producer = await Cluster(broker.bootstrap).start()
    try:
        await producer.produce(topic, {0: 1})
    finally:
        await producer.stop()
    await _woken(resubscribed)
    await wakeups.aclose()
    await scaler.aclose()


async def _resubscribe(
    scaler: KafkaScaler,
) -> tuple[AsyncGenerator[None, None], asyncio.Task[None]]:
    """Subscribe again (as the core does, with backoff) until the watcher takes a baseline."""
    async with asyncio.timeout(120):  # a JVM restart on 2 shared cores
        while True:
            wakeups = scaler.wakeups()
            try:
                return wakeups, await _armed(wakeups)
            except ScalerError:
                await asyncio.sleep(0.5)


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param({}, id="no-topic"),
        pytest.param({"allowIdleConsumers": "true"}, id="no-topic-allow-idle"),
    ],
)
async def test_push_without_topic_is_unsupported(
    pool: ClientPool, metadata: dict[str, str]
) -> None:
    scaler = _scaler("127.0.0.1:9092", pool, consumerGroup="g", **metadata)
    with pytest.raises(UnsupportedError, match="kafka push needs `topic`"):
        scaler.wakeups()
    await scaler.aclose()


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        pytest.param(None, 0.1, id="default-100ms"),
        pytest.param("250", 0.25, id="bare-number-is-ms"),
        pytest.param("1s", 1.0, id="duration"),
    ],
)
async def test_push_interval(pool: ClientPool, value: str | None, seconds: float) -> None:
    extra = {} if value is None else {"pushInterval": value}
    scaler = _scaler("127.0.0.1:9092", pool, consumerGroup="g", topic="t", **extra)
    assert scaler.push_interval == seconds


@pytest.mark.parametrize(
    "value", [pytest.param("0", id="zero"), pytest.param("soon", id="not-a-duration")]
)
async def test_push_interval_must_be_a_positive_duration(pool: ClientPool, value: str) -> None:
    with pytest.raises(ConfigError, match="pushInterval"):
        _scaler("127.0.0.1:9092", pool, consumerGroup="g", topic="t", pushInterval=value)
