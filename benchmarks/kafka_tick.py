"""Cost of one tick of 1000 `kafka` ScaledObjects on one broker.

A private single-node Kafka (3.9.1, KRaft) holds 100 topics x 10 partitions with a few messages
on every partition; 100 consumer groups have committed offsets on 10 topics each. 1000 scalers
(one per (group, topic) pair) are built through the registry sharing one ClientPool, as the daemon
builds them, and every tick samples all 1000 concurrently (the scheduler fires objects that share
an interval within a few ms). Measured per tick: Kafka requests sent (by API), wall time, CPU;
after warm-up: this process's RSS and its TCP connections to the broker (sockets owned by this
process, from /proc). Each tick's values are checked against the offsets written.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Result, Row, cpu_seconds, ms, percentile, progress, rss_mib
from scaler.clients import ClientPool
from scaler.contract import TriggerContext
from scaler.registry import default_registry
from scalers.kafka.scaler import KafkaScaler

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy" / "local"))

from localenv.kafka import KafkaBroker
from localenv.paths import new_run_dir
from localenv.process import connections_to

NAME = "kafka_tick"
TOPICS, PARTITIONS, GROUPS, OBJECTS = 100, 10, 100, 1000
TOPICS_PER_GROUP = OBJECTS // GROUPS


def _pairs() -> list[tuple[int, int]]:
    """(group, topic) per object: group g watches topics g, g+1, ... g+9 (mod 100)."""
    return [(i % GROUPS, (i % GROUPS + i // GROUPS) % TOPICS) for i in range(OBJECTS)]


def _produced(topic: int, partition: int) -> int:
    return 5 + (topic + partition) % 7


def _committed(group: int, topic: int, partition: int) -> int:
    return (group + topic + partition) % 5  # always <= produced


async def _populate(bootstrap: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(f"bench-{t}", PARTITIONS, 1) for t in range(TOPICS)], timeout_ms=60_000
        )
    finally:
        await admin.close()
    progress(NAME, f"created {TOPICS} topics x {PARTITIONS} partitions; producing")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        sent = [
            await producer.send(f"bench-{t}", b"job", partition=p)
            for t in range(TOPICS)
            for p in range(PARTITIONS)
            for _ in range(_produced(t, p))
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    progress(NAME, f"produced {len(sent)} messages; committing offsets for {GROUPS} groups")
    watched: dict[int, set[int]] = {}
    for g, t in _pairs():
        watched.setdefault(g, set()).add(t)
    for g, topics in sorted(watched.items()):
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=f"group-{g}", enable_auto_commit=False
        )
        tps = {(t, p): TopicPartition(f"bench-{t}", p) for t in topics for p in range(PARTITIONS)}
        consumer.assign(list(tps.values()))
        await consumer.start()
        try:
            await consumer.commit({tp: _committed(g, t, p) for (t, p), tp in tps.items()})
        finally:
            await consumer.stop()
        if g % 20 == 19:
            progress(NAME, f"committed offsets for {g + 1}/{GROUPS} groups")


def _expected(group: int, topic: int) -> float:
    return float(sum(_produced(topic, p) - _committed(group, topic, p) for p in range(PARTITIONS)))


async def _measure(broker: KafkaBroker, ticks: int, spacing: float) -> dict[str, Any]:
    await _populate(broker.bootstrap)
    rss_before = rss_mib()
    pool = ClientPool()
    registry = default_registry()
    pairs = _pairs()
    scalers: list[KafkaScaler] = []
    for i, (g, t) in enumerate(pairs):
        trigger = TriggerContext(
            "bench",
            f"so-{i}",
            0,
            "kafka",
            "",
            {
                "bootstrapServers": broker.bootstrap,
                "consumerGroup": f"group-{g}",
                "topic": f"bench-{t}",
                "allowIdleConsumers": "true",
            },
        )
        scaler = registry.build(trigger, pool)
        assert isinstance(scaler, KafkaScaler)
        scalers.append(scaler)
    expected = [_expected(g, t) for g, t in pairs]

    async def tick() -> None:
        now = time.time()
        samples = await asyncio.gather(*(s.sample(now) for s in scalers))
        if [s.value for s in samples] != expected:
            raise RuntimeError("kafka_tick: a sample does not match the committed offsets")

    progress(NAME, f"built {len(scalers)} scalers; warming up")
    for _ in range(3):
        await tick()
    cluster = await scalers[0].cluster()
    rss_warm = rss_mib()
    connections = connections_to(broker.port)
    requests0, by_api0, rounds0 = (
        cluster.requests,
        dict(cluster.requests_by_api),
        cluster.rounds,
    )
    walls, cpus, per_tick = [], [], []
    for n in range(ticks):
        c0, t0, r0 = cpu_seconds(), time.perf_counter(), cluster.requests
        await tick()
        walls.append(time.perf_counter() - t0)
        cpus.append(cpu_seconds() - c0)
        per_tick.append(cluster.requests - r0)
        if n % 10 == 0:
            progress(NAME, f"tick {n + 1}/{ticks}: {per_tick[-1]} requests, {ms(walls[-1])}")
        await asyncio.sleep(spacing)
    connections = max(connections, connections_to(broker.port))
    by_api = {
        api: (count - by_api0.get(api, 0)) / ticks for api, count in cluster.requests_by_api.items()
    }
    raw = {
        "objects": OBJECTS,
        "topics": TOPICS,
        "partitions_per_topic": PARTITIONS,
        "groups": GROUPS,
        "brokers": 1,
        "kafka_version": broker.version,
        "ticks": ticks,
        "tick_spacing_s": spacing,
        "requests_per_tick_mean": (cluster.requests - requests0) / ticks,
        "requests_per_tick_max": max(per_tick),
        "requests_per_tick_by_api": by_api,
        "rounds_per_tick": (cluster.rounds - rounds0) / ticks,
        "wall_p50_s": percentile(walls, 50),
        "wall_p99_s": percentile(walls, 99),
        "wall_max_s": max(walls),
        "cpu_s_per_tick_mean": sum(cpus) / len(cpus),
        "rss_mib_before_scalers": rss_before,
        "rss_mib_after_warmup": rss_warm,
        "rss_mib_end": rss_mib(),
        "broker_connections": connections,
        "pooled_clients": len(pool),
    }
    for scaler in scalers:
        await scaler.aclose()
    await pool.aclose()
    return raw


def run(out: Path, quick: bool) -> Result:
    ticks, spacing = (5, 0.2) if quick else (60, 1.0)
    run_dir = new_run_dir("bench-kafka")
    progress(NAME, f"starting kafka 3.9.1 (logs in {run_dir})")
    broker = KafkaBroker(run_dir, "3.9.1", name="kafka-bench").start()
    try:
        raw = asyncio.run(_measure(broker, ticks, spacing))
    finally:
        broker.stop()
    by_api = raw["requests_per_tick_by_api"]
    rows = [
        Row(
            "1000 objects, 100 topics x 10 partitions, 100 groups, 1 broker:"
            " Kafka requests per tick",
            f"{raw['requests_per_tick_mean']:.2f} (OffsetFetch {by_api.get('OffsetFetch', 0):g},"
            f" ListOffsets {by_api.get('ListOffsets', 0):g}, Metadata"
            f" {by_api.get('Metadata', 0):.3f}: one refresh per 60 s)",
            "O(brokers): 1 OffsetFetch per coordinator + 1 ListOffsets per leader",
            "one client and query set per object",
            by_api.get("OffsetFetch", 0) <= 1
            and by_api.get("ListOffsets", 0) <= 1
            and raw["requests_per_tick_mean"] <= 2.1,
        ),
        Row(
            "broker TCP connections (this process)",
            f"{raw['broker_connections']}",
            "<= 2",
            "200 at 100 objects",
            raw["broker_connections"] <= 2,
        ),
        Row("wall time per tick (1000 concurrent samples), p50", ms(raw["wall_p50_s"])),
        Row("wall time per tick, p99", ms(raw["wall_p99_s"])),
        Row(
            "CPU per tick (= cores at 1 tick/s), mean",
            f"{raw['cpu_s_per_tick_mean']:.3f} cores",
        ),
        Row(
            "RSS after warm-up (1000 kafka scalers + shared client, this process)",
            f"{raw['rss_mib_after_warmup']:.0f} MiB"
            f" (+{raw['rss_mib_after_warmup'] - raw['rss_mib_before_scalers']:.1f} MiB"
            " for the scalers)",
            "< 150 MiB (daemon, 1000 objects)",
            "~35 GiB at ~3k objects (kedacore/keda#7453)",
            raw["rss_mib_after_warmup"] < 150,
        ),
    ]
    return Result(NAME, rows, raw)
