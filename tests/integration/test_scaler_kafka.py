"""The `kafka` scaler against real Kafka brokers (3.9 and 4.1, KRaft) on 127.0.0.1.

Each test creates uniquely named topics and groups on the shared session brokers; the
stop/restart test starts a private broker, and the SASL/SCRAM tests one private broker per version
with a SCRAM listener.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from localenv.kafka import KafkaBroker
from localenv.paths import KAFKA_VERSIONS
from scaler.clients import ClientPool
from scaler.contract import TriggerContext
from scaler.errors import QueryError, ScalerError
from scaler.registry import build_scaler
from scalers.kafka.scaler import KafkaScaler
from tests.integration.kafka_helpers import Cluster, uid

DEADLINE = 90.0  # generous: 2 shared cores, a JVM restart


@pytest.fixture
async def kafka(any_kafka: KafkaBroker) -> AsyncIterator[Cluster]:
    cluster = await Cluster(any_kafka.bootstrap).start()
    yield cluster
    await cluster.stop()


def _scaler(bootstrap: str, pool: ClientPool, index: int = 0, **metadata: str) -> KafkaScaler:
    trigger = TriggerContext(
        "ns", "so", index, "kafka", "", {"bootstrapServers": bootstrap, **metadata}
    )
    scaler = build_scaler(trigger, pool)
    assert isinstance(scaler, KafkaScaler)
    return scaler


async def test_lag_per_partition_is_latest_minus_committed(
    kafka: Cluster, pool: ClientPool
) -> None:
    topic, group = await kafka.topic(3, {0: 5, 1: 3, 2: 7}), uid("group")
    await kafka.commit(group, topic, {0: 2, 1: 3, 2: 1})
    scaler = _scaler(
        kafka.bootstrap, pool, consumerGroup=group, topic=topic, allowIdleConsumers="true"
    )
    sample = await scaler.sample(1000.0)
    assert (sample.value, sample.active, sample.observed_at) == (9.0, True, 1000.0)
    offsets = await (await scaler.cluster()).offsets(group, topic)
    assert [(p.partition, p.committed, p.latest) for p in offsets] == [
        (0, 2, 5),
        (1, 3, 3),
        (2, 1, 7),
    ]
    await kafka.commit(group, topic, {0: 5, 1: 3, 2: 7})
    caught_up = await scaler.sample(1001.0)
    assert (caught_up.value, caught_up.active) == (0.0, False)
    await scaler.aclose()


# One scenario, every flag: 4 partitions with 40, 10, 0 and 5 messages; the group committed 0 on
# partition 0 and 10 on partition 1, nothing on partitions 2 and 3.
FLAG_CASES = [
    pytest.param({}, 42.0, True, id="default-no-commit-is-1"),
    pytest.param({"scaleToZeroOnInvalidOffset": "true"}, 40.0, True, id="scale-to-zero-invalid"),
    pytest.param({"offsetResetPolicy": "earliest"}, 45.0, True, id="earliest-whole-partition"),
    pytest.param(
        {"offsetResetPolicy": "earliest", "scaleToZeroOnInvalidOffset": "true"},
        40.0,
        True,
        id="earliest-scale-to-zero",
    ),
    pytest.param({"lagThreshold": "5"}, 20.0, True, id="capped-at-partitions"),
    pytest.param(
        {"lagThreshold": "5", "allowIdleConsumers": "true"}, 42.0, True, id="allow-idle-uncapped"
    ),
    pytest.param(
        {"lagThreshold": "5", "limitToPartitionsWithLag": "true"},
        15.0,
        True,
        id="limit-to-partitions-with-lag",
    ),
    pytest.param(
        {"lagThreshold": "20", "ensureEvenDistributionOfPartitions": "true"},
        80.0,
        True,
        id="even-distribution",
    ),
    pytest.param({"activationLagThreshold": "42"}, 42.0, False, id="activation-strict"),
    pytest.param({"activationLagThreshold": "41"}, 42.0, True, id="activation-above"),
    pytest.param(
        {"lagThreshold": "100", "activationLagThreshold": "41"},
        42.0,
        True,
        id="activation-uncapped",
    ),
    pytest.param({"partitionLimitation": "0-1"}, 20.0, True, id="partition-limitation"),
    pytest.param(
        {"partitionLimitation": "2,3", "scaleToZeroOnInvalidOffset": "true"},
        0.0,
        False,
        id="partition-limitation-uncommitted",
    ),
]


@pytest.mark.parametrize(("metadata", "value", "active"), FLAG_CASES)
async def test_flags(
    kafka: Cluster, pool: ClientPool, metadata: dict[str, str], value: float, active: bool
) -> None:
    topic, group = await kafka.topic(4, {0: 40, 1: 10, 3: 5}), uid("group")
    await kafka.commit(group, topic, {0: 0, 1: 10})
    scaler = _scaler(kafka.bootstrap, pool, consumerGroup=group, topic=topic, **metadata)
    sample = await scaler.sample(0.0)
    assert (sample.value, sample.active) == (value, active)
    await scaler.aclose()


async def test_partition_limitation_matching_no_partition_is_an_error(
    kafka: Cluster, pool: ClientPool
) -> None:
    topic, group = await kafka.topic(2, {0: 1}), uid("group")
    scaler = _scaler(
        kafka.bootstrap, pool, consumerGroup=group, topic=topic, partitionLimitation="5-6"
    )
    with pytest.raises(QueryError, match="expected at least one active partition"):
        await scaler.sample(0.0)
    await scaler.aclose()


async def test_exclude_persistent_lag(kafka: Cluster, pool: ClientPool) -> None:
    topic, group = await kafka.topic(2, {0: 30, 1: 8}), uid("group")
    await kafka.commit(group, topic, {0: 10, 1: 2})
    scaler = _scaler(
        kafka.bootstrap,
        pool,
        consumerGroup=group,
        topic=topic,
        excludePersistentLag="true",
        allowIdleConsumers="true",
    )
    first = await scaler.sample(0.0)
    assert (first.value, first.active) == (26.0, True)  # nothing remembered yet
    stuck = await scaler.sample(1.0)
    assert (stuck.value, stuck.active) == (0.0, True)  # offsets did not move: persistent lag
    await kafka.commit(group, topic, {0: 12})
    moving = await scaler.sample(2.0)
    assert (moving.value, moving.active) == (18.0, True)  # partition 0 moved, 1 still stuck
    await scaler.aclose()


@pytest.mark.parametrize(
    ("metadata", "value", "active"),
    [
        pytest.param({}, 3.0, True, id="latest-one-per-partition"),
        pytest.param({"offsetResetPolicy": "earliest"}, 9.0, True, id="earliest-whole-topic"),
        pytest.param({"scaleToZeroOnInvalidOffset": "true"}, 0.0, False, id="latest-to-zero"),
        pytest.param(
            {"offsetResetPolicy": "earliest", "scaleToZeroOnInvalidOffset": "true"},
            0.0,
            False,
            id="earliest-to-zero",
        ),
    ],
)
async def test_group_with_no_commits(
    kafka: Cluster, pool: ClientPool, metadata: dict[str, str], value: float, active: bool
) -> None:
    topic = await kafka.topic(3, {0: 2, 1: 0, 2: 7})
    scaler = _scaler(
        kafka.bootstrap,
        pool,
        consumerGroup=uid("never-committed"),
        topic=topic,
        allowIdleConsumers="true",
        **metadata,
    )
    sample = await scaler.sample(0.0)
    assert (sample.value, sample.active) == (value, active)
    await scaler.aclose()


async def test_without_topic_the_groups_committed_topics_are_summed(
    kafka: Cluster, pool: ClientPool
) -> None:
    first, second = await kafka.topic(2, {0: 4, 1: 4}), await kafka.topic(1, {0: 10})
    unrelated = await kafka.topic(1, {0: 99})
    group = uid("group")
    await kafka.commit(group, first, {0: 1})  # partition 1 uncommitted: lag 1 (latest policy)
    await kafka.commit(group, second, {0: 6})
    scaler = _scaler(kafka.bootstrap, pool, consumerGroup=group, allowIdleConsumers="true")
    assert scaler.metric_spec().name == f"s0-kafka-{group}-topics"
    sample = await scaler.sample(0.0)
    assert (sample.value, sample.active) == (3 + 1 + 4.0, True)
    assert unrelated not in (await scaler.cluster()).watched_topics
    await scaler.aclose()


async def test_without_topic_a_group_with_no_commits_is_an_error(
    kafka: Cluster, pool: ClientPool
) -> None:
    scaler = _scaler(kafka.bootstrap, pool, consumerGroup=uid("unknown-group"))
    with pytest.raises(QueryError, match="has no committed offsets and no topic is set"):
        await scaler.sample(0.0)
    await scaler.aclose()


async def test_missing_topic_is_an_error_and_is_not_created(
    kafka: Cluster, pool: ClientPool
) -> None:
    missing = uid("missing")
    scaler = _scaler(kafka.bootstrap, pool, consumerGroup=uid("group"), topic=missing)
    for now in (0.0, 1.0):
        with pytest.raises(QueryError, match=f"topic '{missing}' does not exist"):
            await scaler.sample(now)
    assert missing not in await kafka.admin.list_topics()
    await scaler.aclose()


async def test_deleted_topic_is_an_error(kafka: Cluster, pool: ClientPool) -> None:
    topic, group = await kafka.topic(2, {0: 3}), uid("group")
    await kafka.commit(group, topic, {0: 1, 1: 0})
    scaler = _scaler(kafka.bootstrap, pool, consumerGroup=group, topic=topic)
    assert (await scaler.sample(0.0)).value == 2.0
    await kafka.admin.delete_topics([topic])

    async def gone() -> bool:
        return topic not in await kafka.admin.list_topics()

    await _until(gone, "the topic to be deleted")
    for now in (1.0, 2.0, 3.0):  # cached metadata first, then the refreshed metadata
        with pytest.raises(QueryError, match=f"'{topic}'"):
            await scaler.sample(now)
    await scaler.aclose()


async def test_many_topics_and_groups_share_one_client_and_one_query_per_broker(
    kafka: Cluster, pool: ClientPool
) -> None:
    topics = [await kafka.topic(2, {0: n + 1, 1: 2 * n}) for n in range(8)]
    groups = [uid("group") for _ in range(4)]
    expected: dict[tuple[str, str], float] = {}
    for g, group in enumerate(groups):
        for n, topic in enumerate(topics):
            if (g + n) % 2:  # half the pairs commit, the others have no commits (lag 1 each)
                committed = min(g, 2 * n)
                await kafka.commit(group, topic, {0: n, 1: committed})
                expected[(group, topic)] = 1.0 + 2 * n - committed
            else:
                expected[(group, topic)] = 2.0
    pairs = list(expected)
    scalers = [
        _scaler(
            kafka.bootstrap,
            pool,
            index=i,
            consumerGroup=group,
            topic=topic,
            allowIdleConsumers="true",
        )
        for i, (group, topic) in enumerate(pairs)
    ]
    first = await asyncio.gather(*(s.sample(0.0) for s in scalers))
    assert {pair: s.value for pair, s in zip(pairs, first, strict=True)} == expected
    assert len(pool) == 1
    cluster = await scalers[0].cluster()
    assert cluster.connections == 1
    before, by_api = cluster.requests, dict(cluster.requests_by_api)
    again = await asyncio.gather(*(s.sample(1.0) for s in scalers))
    assert [s.value for s in again] == [s.value for s in first]
    # 32 scalers, 4 groups, 8 topics: one OffsetFetch (all groups) and one ListOffsets (all
    # partitions) to the single broker.
    assert cluster.requests - before == 2
    assert cluster.requests_by_api["OffsetFetch"] == by_api["OffsetFetch"] + 1
    assert cluster.requests_by_api["ListOffsets"] == by_api["ListOffsets"] + 1
    for scaler in scalers:
        await scaler.aclose()
    assert len(pool) == 0


async def test_broker_down_is_an_error_then_recovers(
    kafka_factory: Callable[..., KafkaBroker], pool: ClientPool
) -> None:
    broker = kafka_factory("3.9.1")
    cluster = await Cluster(broker.bootstrap).start()
    try:
        topic, group = await cluster.topic(2, {0: 6, 1: 4}), uid("group")
        await cluster.commit(group, topic, {0: 1, 1: 1})
    finally:
        await cluster.stop()
    scaler = _scaler(
        broker.bootstrap, pool, consumerGroup=group, topic=topic, allowIdleConsumers="true"
    )
    assert (await scaler.sample(0.0)).value == 8.0

    broker.kill()
    for now in (1.0, 2.0, 3.0):  # the broken connection, then refused reconnects
        with pytest.raises(ScalerError):
            await scaler.sample(now)

    broker.restart()

    async def recovered() -> Any:
        try:
            return await scaler.sample(4.0)
        except ScalerError:
            return None

    sample = await _until(recovered, "the scaler to read the restarted broker")
    assert (sample.value, sample.active) == (8.0, True)
    await scaler.aclose()


async def _until(check: Callable[[], Any], what: str) -> Any:
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


SCRAM_USER = "tidal-scaler"
SCRAM_PASSWORD = f"pw-{uuid.uuid4().hex}"


@pytest.fixture(
    scope="module",
    params=[pytest.param(version, id=f"kafka-{version}") for version in KAFKA_VERSIONS],
)
def scram_kafka(request: pytest.FixtureRequest, run_dir: Path) -> Iterator[KafkaBroker]:
    """A private broker with a SASL_PLAINTEXT listener and one SCRAM-SHA-256/512 user."""
    version: str = request.param
    broker = KafkaBroker(
        run_dir, version, name=f"kafka-{version}-scram", scram={SCRAM_USER: SCRAM_PASSWORD}
    )
    broker.start()
    yield broker
    broker.stop()


def _sasl_scaler(
    broker: KafkaBroker, pool: ClientPool, mode: str, password: str, **metadata: str
) -> KafkaScaler:
    trigger = TriggerContext(
        "ns",
        "so",
        0,
        "kafka",
        "",
        {"bootstrapServers": broker.sasl_bootstrap, **metadata},
        auth_params={"sasl": mode, "username": SCRAM_USER, "password": password},
    )
    scaler = build_scaler(trigger, pool)
    assert isinstance(scaler, KafkaScaler)
    return scaler


SCRAM_MODES = [
    pytest.param("scram_sha256", id="scram-sha-256"),
    pytest.param("scram_sha512", id="scram-sha-512"),
]


@pytest.mark.parametrize("mode", SCRAM_MODES)
async def test_sasl_scram_samples_with_the_right_password(
    scram_kafka: KafkaBroker, pool: ClientPool, mode: str
) -> None:
    admin = await Cluster(scram_kafka.bootstrap).start()  # test side: the PLAINTEXT listener
    try:
        topic, group = await admin.topic(2, {0: 5, 1: 2}), uid("group")
        await admin.commit(group, topic, {0: 2, 1: 2})
    finally:
        await admin.stop()
    scaler = _sasl_scaler(scram_kafka, pool, mode, SCRAM_PASSWORD, consumerGroup=group, topic=topic)
    assert scaler.settings.security_protocol == "SASL_PLAINTEXT"
    sample = await scaler.sample(0.0)
    assert (sample.value, sample.active) == (3.0, True)
    cluster = await scaler.cluster()
    assert cluster.connections == 1
    await scaler.aclose()


@pytest.mark.parametrize("mode", SCRAM_MODES)
async def test_sasl_scram_wrong_password_is_an_error_without_the_password(
    scram_kafka: KafkaBroker, pool: ClientPool, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    scaler = _sasl_scaler(scram_kafka, pool, mode, wrong, consumerGroup="g", topic="t")
    for now in (0.0, 1.0):  # a fresh connection attempt each time
        with pytest.raises(ScalerError) as caught:
            await scaler.sample(now)
        assert "SaslAuthenticationFailed" in str(caught.value)  # said, not a lag of 0
        assert wrong not in str(caught.value)
        assert SCRAM_PASSWORD not in str(caught.value)
    with pytest.raises(ScalerError) as pushed:  # push fails the same way
        async with asyncio.timeout(DEADLINE):
            await anext(scaler.wakeups())
    assert wrong not in str(pushed.value)
    assert wrong not in caplog.text
    await scaler.aclose()
