"""Every scaler closed while its first sample is still taking the shared client leaves no client
behind (each against its real component on 127.0.0.1).

Scalers share clients through `scaler.clients.ClientPool`: a scaler takes its lease on its first
sample and releases it in ``aclose()``. The daemon closes a scaler when its object is edited or
deleted, and the first sample may be waiting for the pool to create the shared client at that
moment: ``aclose()`` then saw no lease and released nothing, and the lease the sample received
afterwards was kept by a closed scaler for good (one pool entry, a client and its connections per
such race; tests/e2e/test_safety_churn.py found it for redis under load in CI). Before the fix
(scaler/lease_slot.py) every row but redis failed here: the sample returned a value and the pool
kept the entry; now the sample fails "... the scaler is closed" and the pool is empty. The slot
itself, including two first uses at once, is tested in tests/unit/test_lease_slot.py.

The HTTP add-on scaler (scalers/http/scaler.py) is not here: it needs the kube control plane.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import nats
import pytest
from aiohttp import web
from nats.js.api import AckPolicy, ConsumerConfig

from localenv.elasticmq import ElasticMqServer
from localenv.minio import MinioServer
from localenv.nats import NatsServer
from localenv.prometheus import PrometheusServer
from localenv.pytest_rabbitmq import RabbitVhost
from localenv.pytest_sql import SqlDatabase
from localenv.pytest_sqs import SqsQueue
from localenv.redis import RedisServer
from scaler.clients import ClientPool
from scaler.contract import Scaler, TriggerContext
from scaler.errors import ScalerError
from scaler.registry import build_scaler
from tests.integration.kafka_helpers import Cluster, uid
from tests.integration.test_scaler_external import ScalerState, Server
from tests.integration.test_scaler_rabbitmq import amqp_host, http_host
from tests.integration.test_scaler_s3 import _s3 as s3_client

NOW = 1000.0
STEPS = 10_000  # event-loop steps for the first sample to reach the pool (it takes a few)

Row = Callable[[pytest.FixtureRequest, ClientPool], AbstractAsyncContextManager[Scaler]]


def _build(
    pool: ClientPool, kind: str, meta: dict[str, str], auth: dict[str, str] | None = None
) -> Scaler:
    trigger = TriggerContext("ns", "so", 0, kind, "", meta, auth_params=auth or {}, timeout=5.0)
    return build_scaler(trigger, pool)


@contextlib.asynccontextmanager
async def _kafka(request: pytest.FixtureRequest, pool: ClientPool) -> AsyncIterator[Scaler]:
    cluster = await Cluster(request.getfixturevalue("kafka_broker").bootstrap).start()
    try:
        topic, group = await cluster.topic(1, {0: 2}), uid("group")
        await cluster.commit(group, topic, {0: 1})
        meta = {"bootstrapServers": cluster.bootstrap, "consumerGroup": group, "topic": topic}
        yield _build(pool, "kafka", meta)
    finally:
        await cluster.stop()


def _rabbitmq(protocol: str) -> Row:
    @contextlib.asynccontextmanager
    async def row(request: pytest.FixtureRequest, pool: ClientPool) -> AsyncIterator[Scaler]:
        vhost: RabbitVhost = request.getfixturevalue("rabbitmq_vhost")
        vhost.server.declare_queue("jobs", vhost.name)
        vhost.server.wait_for_messages("jobs", 0, vhost.name)
        host = amqp_host(vhost) if protocol == "amqp" else http_host(vhost)
        meta = {"host": host, "queueName": "jobs", "mode": "QueueLength", "value": "5"}
        yield _build(pool, "rabbitmq", meta)

    return row


@contextlib.asynccontextmanager
async def _postgresql(request: pytest.FixtureRequest, pool: ClientPool) -> AsyncIterator[Scaler]:
    db: SqlDatabase = request.getfixturevalue("postgres_database")
    meta = {
        "host": db.host,
        "port": str(db.port),
        "userName": db.user,
        "dbName": db.name,
        "sslmode": "disable",
        "query": "SELECT 1",
        "targetQueryValue": "5",
    }
    yield _build(pool, "postgresql", meta, {"password": db.password})


@contextlib.asynccontextmanager
async def _mysql(request: pytest.FixtureRequest, pool: ClientPool) -> AsyncIterator[Scaler]:
    db: SqlDatabase = request.getfixturevalue("mysql_database")
    meta = {
        "host": db.host,
        "port": str(db.port),
        "username": db.user,
        "dbName": db.name,
        "query": "SELECT 1",
        "queryValue": "5",
    }
    yield _build(pool, "mysql", meta, {"password": db.password})


@contextlib.asynccontextmanager
async def _sqs(request: pytest.FixtureRequest, pool: ClientPool) -> AsyncIterator[Scaler]:
    server: ElasticMqServer = request.getfixturevalue("elasticmq_server")
    queue: SqsQueue = request.getfixturevalue("sqs_queue")
    meta = {"queueURL": queue.url, "awsRegion": server.region, "awsEndpoint": server.endpoint}
    auth = {"awsAccessKeyID": server.access_key, "awsSecretAccessKey": server.secret_key}
    yield _build(pool, "aws-sqs-queue", meta, auth)


@contextlib.asynccontextmanager
async def _s3(request: pytest.FixtureRequest, pool: ClientPool) -> AsyncIterator[Scaler]:
    minio: MinioServer = request.getfixturevalue("minio_server")
    s3 = s3_client(minio)
    bucket = f"tidal-lease-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    try:
        meta = {"awsEndpoint": minio.endpoint, "bucketName": bucket}
        auth = {"awsAccessKeyID": minio.access_key, "awsSecretAccessKey": minio.secret_key}
        yield _build(pool, "aws-s3", meta, auth)
    finally:
        s3.delete_bucket(Bucket=bucket)


@contextlib.asynccontextmanager
async def _prometheus(request: pytest.FixtureRequest, pool: ClientPool) -> AsyncIterator[Scaler]:
    server: PrometheusServer = request.getfixturevalue("prometheus_server")
    meta = {"serverAddress": server.url, "query": "vector(3)", "threshold": "5"}
    yield _build(pool, "prometheus", meta)


@contextlib.asynccontextmanager
async def _metrics_api(request: pytest.FixtureRequest, pool: ClientPool) -> AsyncIterator[Scaler]:
    async def stats(_request: web.Request) -> web.Response:
        return web.json_response({"tasks": 3})

    app = web.Application()
    app.router.add_get("/stats", stats)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/stats"
        meta = {"url": url, "valueLocation": "tasks", "targetValue": "5"}
        yield _build(pool, "metrics-api", meta)
    finally:
        await runner.cleanup()


def _nats(mode: str) -> Row:
    @contextlib.asynccontextmanager
    async def row(request: pytest.FixtureRequest, pool: ClientPool) -> AsyncIterator[Scaler]:
        server: NatsServer = request.getfixturevalue("nats_server")
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        stream, consumer = uid("S"), uid("c")
        await js.add_stream(name=stream, subjects=[f"{stream}.>"])
        await js.add_consumer(
            stream, ConsumerConfig(durable_name=consumer, ack_policy=AckPolicy.EXPLICIT)
        )
        try:
            meta = {"stream": stream, "consumer": consumer}
            if mode == "monitoring":
                meta |= {"natsServerMonitoringEndpoint": server.monitoring, "account": "$G"}
            else:
                meta["natsServer"] = server.url
            yield _build(pool, "nats-jetstream", meta)
        finally:
            await js.delete_stream(stream)
            await nc.close()

    return row


@contextlib.asynccontextmanager
async def _external(request: pytest.FixtureRequest, pool: ClientPool) -> AsyncIterator[Scaler]:
    server = Server(ScalerState())
    await server.start()
    try:
        yield _build(pool, "external", {"scalerAddress": server.address})
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def _redis(request: pytest.FixtureRequest, pool: ClientPool) -> AsyncIterator[Scaler]:
    server: RedisServer = request.getfixturevalue("redis_server")
    meta = {"address": f"{server.host}:{server.port}", "listName": uid("list")}
    yield _build(pool, "redis", meta)


ROWS = pytest.mark.parametrize(
    "row",
    [
        pytest.param(_kafka, id="kafka"),
        pytest.param(_rabbitmq("amqp"), id="rabbitmq-amqp"),
        pytest.param(_rabbitmq("http"), id="rabbitmq-management"),
        pytest.param(_postgresql, id="postgresql"),
        pytest.param(_mysql, id="mysql"),
        pytest.param(_sqs, id="aws-sqs-queue"),
        pytest.param(_s3, id="aws-s3"),
        pytest.param(_prometheus, id="prometheus"),
        pytest.param(_metrics_api, id="metrics-api"),
        pytest.param(_nats("client"), id="nats-jetstream-client"),
        pytest.param(_nats("monitoring"), id="nats-jetstream-monitoring"),
        pytest.param(_external, id="external"),
        pytest.param(_redis, id="redis"),
    ],
)


async def _until_the_pool_creates_the_client(pool: ClientPool, sample: asyncio.Task[Any]) -> None:
    """Step the loop until the first sample waits for the pool to create the shared client."""
    for _ in range(STEPS):
        await asyncio.sleep(0)
        assert not sample.done(), f"the first sample ended before taking a client: {sample!r}"
        if len(pool) >= 1:
            return
    sample.cancel()
    pytest.fail(f"the first sample took no client from the pool within {STEPS} loop steps")


@ROWS
async def test_closing_while_the_first_sample_takes_the_client_releases_it(
    request: pytest.FixtureRequest, pool: ClientPool, row: Row
) -> None:
    async with row(request, pool) as scaler:
        sample = asyncio.create_task(scaler.sample(NOW))
        await _until_the_pool_creates_the_client(pool, sample)
        await scaler.aclose()  # the daemon closes the scaler: its object was edited or deleted
        with pytest.raises(ScalerError, match="closed"):
            await sample
        assert len(pool) == 0, "the closed scaler still holds the shared client"


@ROWS
async def test_a_sample_before_close_holds_the_client_and_close_releases_it(
    request: pytest.FixtureRequest, pool: ClientPool, row: Row
) -> None:
    async with row(request, pool) as scaler:
        sample = await scaler.sample(NOW)
        assert sample.observed_at == NOW
        assert len(pool) >= 1  # the scaler holds its lease between samples
        await scaler.aclose()
        assert len(pool) == 0


@ROWS
async def test_a_sample_after_close_takes_no_client(
    request: pytest.FixtureRequest, pool: ClientPool, row: Row
) -> None:
    async with row(request, pool) as scaler:
        await scaler.aclose()
        with pytest.raises(ScalerError, match="closed"):
            await scaler.sample(NOW)
        assert len(pool) == 0, "the closed scaler took a client that nobody will release"
