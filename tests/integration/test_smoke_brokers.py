"""Smoke tests: every broker of the local environment is real and does what the scalers read.

Each test talks to a real process started by localenv on 127.0.0.1 (no fakes).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import nats
import pytest
import redis
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from botocore.config import Config
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from localenv.kafka import KafkaBroker
from localenv.minio import EVENTS, MinioServer
from localenv.nats import NatsServer
from localenv.process import ComponentError, free_port
from localenv.prometheus import PrometheusServer
from localenv.redis import RedisServer

DEADLINE = 60.0  # generous: the machine has 2 shared cores


def _no_retry() -> Retry:
    """A client that fails at once, for commands that are expected to fail."""
    return Retry(NoBackoff(), 0)


def _uid() -> str:
    return uuid.uuid4().hex[:8]


async def _until(check: Callable[[], Awaitable[Any]], what: str, deadline: float = DEADLINE) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `deadline` s."""
    end = time.monotonic() + deadline
    last: Any = None
    while time.monotonic() < end:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.2)
    pytest.fail(f"timed out waiting for {what} (last: {last!r})")


# --- Kafka -------------------------------------------------------------------------------------


async def _produce(bootstrap: str, topic: str, counts: dict[int, int]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for partition, count in counts.items():
            for i in range(count):
                await producer.send_and_wait(
                    topic, f"{partition}-{i}".encode(), partition=partition
                )
    finally:
        await producer.stop()


async def test_kafka_group_lag_is_end_minus_committed(any_kafka: KafkaBroker) -> None:
    topic, group = f"smoke-{_uid()}", f"group-{_uid()}"
    produced = {0: 5, 1: 3, 2: 7}
    consumed = {0: 2, 1: 3, 2: 1}
    tps = {p: TopicPartition(topic, p) for p in produced}
    admin = AIOKafkaAdminClient(bootstrap_servers=any_kafka.bootstrap)
    await admin.start()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=any_kafka.bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
        # A new topic's metadata reaches the broker's cache a moment after CreateTopics returns
        # (seen on Kafka 4.1): ask again until it is there.
        partitions: list[object] = []
        for _ in range(50):
            partitions = (await admin.describe_topics([topic]))[0]["partitions"]
            if len(partitions) == 3:
                break
            await asyncio.sleep(0.1)
        assert len(partitions) == 3
        await _produce(any_kafka.bootstrap, topic, produced)

        consumer.assign(list(tps.values()))
        await consumer.start()
        for p, tp in tps.items():
            values: list[bytes] = []
            while len(values) < consumed[p]:
                batch = await consumer.getmany(
                    tp, timeout_ms=1000, max_records=consumed[p] - len(values)
                )
                values += [record.value for record in batch.get(tp, [])]
            assert values == [f"{p}-{i}".encode() for i in range(consumed[p])]
        await consumer.commit()  # commits the positions reached: consumed[p] per partition

        committed = await admin.list_consumer_group_offsets(group)
        ends = await consumer.end_offsets(list(tps.values()))
    finally:
        await consumer.stop()
        await admin.close()

    assert {tp.partition: meta.offset for tp, meta in committed.items()} == consumed
    assert {tp.partition: end for tp, end in ends.items()} == produced
    lag = {p: ends[tp] - committed[tp].offset for p, tp in tps.items()}
    assert lag == {0: 3, 1: 0, 2: 6}


async def test_kafka_private_broker_survives_kill_and_restart_on_same_port(
    kafka_factory: Callable[..., KafkaBroker],
) -> None:
    broker = kafka_factory("3.9.1")
    bootstrap, topic = broker.bootstrap, f"durable-{_uid()}"
    await _produce(bootstrap, topic, {0: 4})  # auto-created with one partition

    broker.kill()
    assert not broker.running
    broker.restart()
    assert broker.bootstrap == bootstrap

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        ends = await consumer.end_offsets([tp])
    finally:
        await consumer.stop()
    assert ends[tp] == 4


# --- NATS --------------------------------------------------------------------------------------


async def _jsz_consumer(monitoring: str, stream: str, durable: str) -> dict[str, Any] | None:
    params = {"acc": "$G", "consumers": "true", "config": "true"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://{monitoring}/jsz", params=params) as resp,
    ):
        assert resp.status == 200
        body = await resp.json()
    for account in body.get("account_details", []):
        for detail in account.get("stream_detail", []):
            if detail["name"] != stream:
                continue
            for consumer in detail.get("consumer_detail", []):
                if consumer["name"] == durable:
                    return dict(consumer)
    return None


async def test_nats_jsz_reports_pending_and_ack_pending(nats_server: NatsServer) -> None:
    stream, subject, durable = f"SMOKE{_uid()}", f"smoke.{_uid()}", "worker"
    published, fetched, acked = 10, 4, 3
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[subject])
        sub = await js.pull_subscribe(subject, durable=durable, stream=stream)
        for i in range(published):
            await js.publish(subject, f"m{i}".encode())
        msgs: list[Any] = []
        while len(msgs) < fetched:
            msgs += await sub.fetch(fetched - len(msgs), timeout=10)
        for msg in msgs[:acked]:
            await msg.ack_sync()
    finally:
        await nc.close()

    async def settled() -> dict[str, Any] | None:
        info = await _jsz_consumer(nats_server.monitoring, stream, durable)
        if info and (info["num_pending"], info["num_ack_pending"]) == (6, 1):
            return info
        return None

    info = await _until(settled, "jsz to report 6 pending / 1 ack-pending")
    assert info["config"]["durable_name"] == durable


# --- Redis -------------------------------------------------------------------------------------


async def test_redis_lpush_then_llen(redis_server: RedisServer) -> None:
    key = f"smoke-{_uid()}"
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        await client.lpush(key, "a", "b", "c")
        assert await client.llen(key) == 3
    finally:
        await client.aclose()


async def test_redis_with_password_rejects_a_wrong_one(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory(password="right-horse")
    assert "right-horse" in server.url
    assert "right-horse" not in server.safe_url
    wrong = aioredis.Redis(
        host=server.host, port=server.port, password="wrong-horse", retry=_no_retry()
    )
    with pytest.raises(redis.AuthenticationError):
        await wrong.ping()
    await wrong.aclose()
    right = aioredis.Redis.from_url(server.url)
    try:
        assert await right.ping() is True
    finally:
        await right.aclose()


async def test_redis_private_server_comes_back_on_the_same_port(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    port = server.port
    server.kill()
    client = aioredis.Redis(host=server.host, port=port, retry=_no_retry())
    try:
        with pytest.raises(redis.ConnectionError):
            await client.ping()
        server.restart()
        assert server.port == port
        assert await client.ping() is True
    finally:
        await client.aclose()


# --- MinIO -------------------------------------------------------------------------------------


def _s3(minio: MinioServer) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=minio.endpoint,
        aws_access_key_id=minio.access_key,
        aws_secret_access_key=minio.secret_key,
        region_name=minio.region,
        config=Config(s3={"addressing_style": "path"}),
    )


def _bucket_notifying(minio: MinioServer, queue_arn: str | None) -> str:
    assert queue_arn is not None
    s3, bucket = _s3(minio), f"smoke-{_uid()}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]}]
        },
    )
    return bucket


def _object_keys(event_json: str | bytes) -> list[str]:
    """The object keys named by one MinIO event payload (Redis `access` format or NATS)."""
    payload = json.loads(event_json)
    entries = payload if isinstance(payload, list) else [payload]
    keys = []
    for entry in entries:
        for event in entry.get("Event") or []:
            keys.append(event["s3"]["object"]["key"])
        for record in entry.get("Records") or []:
            keys.append(record["s3"]["object"]["key"])
    return keys


def test_minio_put_object_grows_the_redis_list(
    minio_server: MinioServer, redis_server: RedisServer
) -> None:
    bucket = _bucket_notifying(minio_server, minio_server.redis_queue_arn)
    key = f"obj-{_uid()}.txt"
    client = redis.Redis.from_url(redis_server.url)
    try:
        before = client.llen(EVENTS)
        _s3(minio_server).put_object(Bucket=bucket, Key=key, Body=b"hello")
        end = time.monotonic() + DEADLINE
        while client.llen(EVENTS) <= before and time.monotonic() < end:
            time.sleep(0.1)
        new_events = client.lrange(EVENTS, before, -1)
    finally:
        client.close()
    assert new_events, "no event pushed to the Redis list"
    assert key in [k for raw in new_events for k in _object_keys(raw)]


async def test_minio_put_object_publishes_on_nats(
    minio_server: MinioServer, nats_server: NatsServer
) -> None:
    bucket = await asyncio.to_thread(_bucket_notifying, minio_server, minio_server.nats_queue_arn)
    key = f"obj-{_uid()}.txt"
    nc = await nats.connect(nats_server.url)
    try:
        sub = await nc.subscribe(EVENTS)
        await nc.flush()
        await asyncio.to_thread(_s3(minio_server).put_object, Bucket=bucket, Key=key, Body=b"hi")
        seen: list[str] = []
        end = time.monotonic() + DEADLINE
        while key not in seen and time.monotonic() < end:
            msg = await sub.next_msg(timeout=DEADLINE)
            seen += _object_keys(msg.data)
    finally:
        await nc.close()
    assert key in seen


# --- Prometheus --------------------------------------------------------------------------------


@pytest.fixture
def metric_target() -> Iterator[tuple[str, str]]:
    """A tiny /metrics endpoint on 127.0.0.1 exposing one gauge set to 42: (target, metric)."""
    metric = f"tidal_smoke_{_uid()}"
    registry = CollectorRegistry()
    Gauge(metric, "smoke-test gauge", registry=registry).set(42)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    yield f"127.0.0.1:{port}", metric
    server.shutdown()
    server.server_close()
    thread.join(10)


async def _scraped_value(prometheus: PrometheusServer, metric: str) -> float:
    async def query() -> float | None:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{prometheus.url}/api/v1/query", params={"query": metric}) as resp,
        ):
            body = await resp.json()
        result = body["data"]["result"] if body.get("status") == "success" else []
        return float(result[0]["value"][1]) if result else None

    value: float = await _until(query, f"Prometheus to scrape {metric}")
    return value


async def test_prometheus_set_targets_scrapes_a_new_target(
    prometheus_server: PrometheusServer, metric_target: tuple[str, str]
) -> None:
    target, metric = metric_target
    prometheus_server.set_targets([target])
    try:
        assert await _scraped_value(prometheus_server, metric) == 42.0
    finally:
        prometheus_server.set_targets([])


async def test_prometheus_factory_scrapes_its_initial_targets(
    prometheus_factory: Callable[..., PrometheusServer], metric_target: tuple[str, str]
) -> None:
    target, metric = metric_target
    prometheus = prometheus_factory([target])
    assert await _scraped_value(prometheus, metric) == 42.0


# --- failures are reported, naming the component and its log ----------------------------------


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port held by a listening socket that never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(
            lambda run_dir, port: RedisServer(run_dir, name="redis-busy", port=port),
            "already in use",
            id="redis-port-in-use",
        ),
        pytest.param(
            lambda run_dir, port: NatsServer(run_dir, name="nats-busy", port=port),
            "already in use",
            id="nats-port-in-use",
        ),
        pytest.param(
            lambda run_dir, _port: RedisServer(
                run_dir, name="redis-bad-config", notify_keyspace_events="Z!"
            ),
            "exited with",
            id="redis-rejects-its-config",
        ),
    ],
)
def test_a_component_that_cannot_start_raises_component_error(
    run_dir: Path,
    busy_port: int,
    make: Callable[[Path, int], RedisServer | NatsServer],
    reason: str,
) -> None:
    component = make(run_dir, busy_port)
    with pytest.raises(ComponentError) as caught:
        component.start()
    assert caught.value.name == component.name
    assert caught.value.log == component.log
    assert component.name in str(caught.value)
    assert str(component.log) in str(caught.value)
    assert reason in str(caught.value)
    assert not component.running
