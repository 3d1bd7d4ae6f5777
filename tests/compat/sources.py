"""The event sources the corpus drives: work arrives (fill), work is done (drain).

Every source is the real component of the session (Redis, NATS JetStream, Kafka, MinIO,
Prometheus) started by deploy/local/localenv. The one process written here is `AppServer`:
the user's own application, which the metrics-api trigger reads and Prometheus scrapes; it is
an application, not a stand-in for a component.

Each source fills to `per_replica * replicas` of its metric (the HPA then asks for exactly
`replicas`), and drains to 0.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import boto3
import nats
import redis.asyncio as aioredis
from aiohttp import web
from aiokafka.admin import NewTopic
from botocore.config import Config as BotoConfig
from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from localenv.elasticmq import ElasticMqServer
from localenv.kafka import KafkaBroker
from localenv.minio import MinioServer
from localenv.mysql import MysqlServer
from localenv.nats import NatsServer
from localenv.postgres import PostgresServer
from localenv.prometheus import PrometheusServer
from localenv.rabbitmq import RabbitMQServer
from localenv.redis import RedisServer
from tests.integration.kafka_helpers import Cluster as KafkaCluster

HOST = "127.0.0.1"
WORK = 15  # items of work filled in: 3 replicas at a target of 5


class AppServer:
    """The user's application: Prometheus metrics at /metrics, JSON stats behind an API key."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.gauges: dict[str, float] = {}  # exposition line prefix → value
        self.stats: dict[str, Any] = {}
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _metrics(self, _: web.Request) -> web.Response:
        lines = [f"{series} {value}" for series, value in self.gauges.items()]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def _stats(self, request: web.Request) -> web.Response:
        if request.headers.get("X-API-KEY") != self.api_key:
            return web.json_response({"error": "unauthorized"}, status=401)
        return web.Response(text=json.dumps(self.stats), content_type="application/json")

    async def start(self) -> AppServer:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/api/v1/stats", self._stats)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        return self

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class Components:
    redis: RedisServer  # the session's Redis
    redis_auth: RedisServer  # a private Redis with a password
    nats: NatsServer
    kafka: KafkaBroker
    minio: MinioServer
    prometheus: PrometheusServer  # a private Prometheus scraping `app` every second
    app: AppServer
    postgres: PostgresServer
    mysql: MysqlServer
    elasticmq: ElasticMqServer
    rabbitmq: RabbitMQServer


class Source(Protocol):
    """What a case needs from its event source."""

    starts_active: bool

    @property
    def values(self) -> dict[str, str]: ...

    async def prepare(self) -> None: ...

    async def fill(self) -> None: ...

    async def drain(self) -> None: ...

    async def close(self) -> None: ...


@dataclass
class RedisList:
    server: RedisServer
    keys: Sequence[str]  # every list the manifest names (emptied first)
    fill_key: str
    starts_active: bool = False
    _db: Any = None

    @property
    def values(self) -> dict[str, str]:
        return {
            "RedisAddress": self.server.address,
            "RedisHost": self.server.host,
            "RedisPort": str(self.server.port),
            "RedisPassword": self.server.password or "",
        }

    async def prepare(self) -> None:
        self._db = aioredis.from_url(self.server.url)
        await self._db.delete(*self.keys)

    async def fill(self) -> None:
        await self._db.rpush(self.fill_key, *[f"job-{i}" for i in range(WORK)])

    async def drain(self) -> None:
        await self._db.delete(self.fill_key)

    async def close(self) -> None:
        if self._db is not None:
            await self._db.aclose()


@dataclass
class RedisStreamLag:
    """A stream read by a consumer group; lag = entries not yet delivered to the group."""

    server: RedisServer
    stream: str
    group: str
    starts_active: bool = False
    _db: Any = None

    @property
    def values(self) -> dict[str, str]:
        return {"RedisAddress": self.server.address}

    async def prepare(self) -> None:
        self._db = aioredis.from_url(self.server.url)
        await self._db.delete(self.stream)
        await self._db.xgroup_create(self.stream, self.group, id="$", mkstream=True)

    async def fill(self) -> None:
        for i in range(WORK):
            await self._db.xadd(self.stream, {"order": str(i)})

    async def drain(self) -> None:
        read = await self._db.xreadgroup(self.group, "worker-1", {self.stream: ">"}, count=1000)
        ids = [entry_id for _, entries in read for entry_id, _ in entries]
        if ids:
            await self._db.xack(self.stream, self.group, *ids)

    async def close(self) -> None:
        if self._db is not None:
            await self._db.aclose()


@dataclass
class KafkaLag:
    """A 3-partition topic; the group commits 0 first (lag 0), then the produced offsets."""

    broker: KafkaBroker
    topic: str
    group: str
    partitions: int = 3
    starts_active: bool = False
    _cluster: KafkaCluster | None = None

    @property
    def values(self) -> dict[str, str]:
        return {"BootstrapServer": self.broker.bootstrap}

    @property
    def cluster(self) -> KafkaCluster:
        assert self._cluster is not None
        return self._cluster

    async def prepare(self) -> None:
        self._cluster = await KafkaCluster(self.broker.bootstrap).start()
        await self.cluster.admin.create_topics([NewTopic(self.topic, self.partitions, 1)])
        for _ in range(100):  # a new topic's metadata can lag CreateTopics by a moment
            if self.topic in await self.cluster.admin.list_topics():
                break
            await asyncio.sleep(0.1)
        await self.cluster.commit(self.group, self.topic, dict.fromkeys(range(self.partitions), 0))

    def _per_partition(self) -> dict[int, int]:
        return dict.fromkeys(range(self.partitions), WORK // self.partitions)

    async def fill(self) -> None:
        await self.cluster.produce(self.topic, self._per_partition())

    async def drain(self) -> None:
        await self.cluster.commit(self.group, self.topic, self._per_partition())

    async def close(self) -> None:
        if self._cluster is not None:
            await self._cluster.stop()


@dataclass
class NatsLag:
    """A JetStream stream with one durable pull consumer (explicit acks), as KEDA's e2e test."""

    server: NatsServer
    stream: str
    consumer: str
    starts_active: bool = False
    _nc: NatsClient | None = None

    @property
    def values(self) -> dict[str, str]:
        return {
            "NatsAddress": self.server.url,
            "NatsServerMonitoringEndpoint": self.server.monitoring,
        }

    @property
    def subject(self) -> str:
        return f"{self.stream}.received"

    async def prepare(self) -> None:
        self._nc = await nats.connect(self.server.url)
        js = self._nc.jetstream()
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(self.stream)
        await js.add_stream(name=self.stream, subjects=[f"{self.stream}.*"])
        config = ConsumerConfig(
            durable_name=self.consumer,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
        )
        await js.add_consumer(self.stream, config)

    async def fill(self) -> None:
        assert self._nc is not None
        js = self._nc.jetstream()
        for i in range(WORK):
            await js.publish(self.subject, f"order-{i}".encode())

    async def drain(self) -> None:
        assert self._nc is not None
        js = self._nc.jetstream()
        sub = await js.pull_subscribe(self.subject, durable=self.consumer, stream=self.stream)
        acked = 0
        while acked < WORK:
            for msg in await sub.fetch(WORK - acked, timeout=5):
                await msg.ack_sync()
                acked += 1

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.close()


@dataclass
class PrometheusGauge:
    """A gauge of the user's app, scraped by the real Prometheus every second."""

    components: Components
    series: str
    starts_active: bool = False

    @property
    def values(self) -> dict[str, str]:
        return {"PrometheusServer": self.components.prometheus.url}

    async def prepare(self) -> None:
        self.components.app.gauges[self.series] = 0

    async def fill(self) -> None:
        self.components.app.gauges[self.series] = WORK

    async def drain(self) -> None:
        self.components.app.gauges[self.series] = 0

    async def close(self) -> None:
        self.components.app.gauges.pop(self.series, None)


@dataclass
class AppStats:
    """A number inside the JSON the user's app serves (read through an API key)."""

    components: Components
    path: Sequence[str]
    starts_active: bool = False

    @property
    def values(self) -> dict[str, str]:
        app = self.components.app
        return {
            "MetricsApiUrl": f"http://{app.address}/api/v1/stats",
            "MetricsApiKey": app.api_key,
        }

    def _set(self, value: int) -> None:
        node = self.components.app.stats
        for key in self.path[:-1]:
            node = node.setdefault(key, {})
        node[self.path[-1]] = value

    async def prepare(self) -> None:
        self._set(0)

    async def fill(self) -> None:
        self._set(WORK)

    async def drain(self) -> None:
        self._set(0)

    async def close(self) -> None:
        pass


@dataclass
class S3Objects:
    """Objects under a prefix of a MinIO bucket."""

    minio: MinioServer
    bucket: str
    prefix: str
    starts_active: bool = False
    _s3: Any = None

    @property
    def values(self) -> dict[str, str]:
        return {
            "AwsEndpoint": self.minio.endpoint,
            "AwsAccessKeyID": self.minio.access_key,
            "AwsSecretAccessKey": self.minio.secret_key,
        }

    def _keys(self) -> list[str]:
        return [f"{self.prefix}invoice-{i:03d}.json" for i in range(WORK)]

    def _prepare(self) -> None:
        self._s3 = boto3.client(
            "s3",
            endpoint_url=self.minio.endpoint,
            aws_access_key_id=self.minio.access_key,
            aws_secret_access_key=self.minio.secret_key,
            region_name=self.minio.region,
            config=BotoConfig(s3={"addressing_style": "path"}),
        )
        existing = {b["Name"] for b in self._s3.list_buckets().get("Buckets", [])}
        if self.bucket not in existing:
            self._s3.create_bucket(Bucket=self.bucket)
        self._drain()

    def _fill(self) -> None:
        for key in self._keys():
            self._s3.put_object(Bucket=self.bucket, Key=key, Body=b"{}")

    def _drain(self) -> None:
        listing = self._s3.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix)
        keys = [{"Key": o["Key"]} for o in listing.get("Contents", [])]
        if keys:
            self._s3.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})

    async def prepare(self) -> None:
        await asyncio.to_thread(self._prepare)

    async def fill(self) -> None:
        await asyncio.to_thread(self._fill)

    async def drain(self) -> None:
        await asyncio.to_thread(self._drain)

    async def close(self) -> None:
        pass


@dataclass
class SqsMessages:
    """Messages waiting in a FIFO queue of ElasticMQ (the drain is PurgeQueue, as KEDA's e2e)."""

    server: ElasticMqServer
    queue: str  # ends in ".fifo"
    starts_active: bool = False
    _sqs: Any = None
    _url: str = ""

    @property
    def values(self) -> dict[str, str]:
        def b64(text: str) -> str:
            return base64.b64encode(text.encode()).decode()

        return {
            "AwsAccessKeyIDBase64": b64(self.server.access_key),
            "AwsSecretAccessKeyBase64": b64(self.server.secret_key),
            "AwsRegion": self.server.region,
            "AwsEndpoint": self.server.endpoint,
            "SqsQueue": self.server.queue_url(self.queue),
        }

    def _prepare(self) -> None:
        self._sqs = self.server.client()
        attributes = {"FifoQueue": "true", "ContentBasedDeduplication": "true"}
        self._url = self._sqs.create_queue(QueueName=self.queue, Attributes=attributes)["QueueUrl"]
        self._sqs.purge_queue(QueueUrl=self._url)

    def _fill(self) -> None:
        for i in range(WORK):
            self._sqs.send_message(
                QueueUrl=self._url, MessageBody=f"Message - {i}", MessageGroupId=f"g{i % 3}"
            )

    async def prepare(self) -> None:
        await asyncio.to_thread(self._prepare)

    async def fill(self) -> None:
        await asyncio.to_thread(self._fill)

    async def drain(self) -> None:
        await asyncio.to_thread(self._sqs.purge_queue, QueueUrl=self._url)

    async def close(self) -> None:
        pass


@dataclass
class SqlTasks:
    """KEDA's e2e table `task_instance` in database `test_db`, read by `test-user`; work is
    4000 queued rows, as KEDA's insert job writes (CEIL(4000 / 5) = 800: past both e2e
    activations, and the HPA asks for its maximum)."""

    server: PostgresServer | MysqlServer
    starts_active: bool = False

    @property
    def _postgres(self) -> bool:
        return isinstance(self.server, PostgresServer)

    @property
    def values(self) -> dict[str, str]:
        address = f"{self.server.host}:{self.server.port}"
        if self._postgres:
            url = f"postgresql://test-user:test-password@{address}/test_db?sslmode=disable"
            return {"PostgreSQLConnectionStringBase64": base64.b64encode(url.encode()).decode()}
        dsn = f"test-user:test-password@tcp({address})/test_db"
        return {"MySQLConnectionString": base64.b64encode(dsn.encode()).decode()}

    def _run(self, *statements: str) -> None:
        if isinstance(self.server, PostgresServer):
            self.server.execute(*statements, dbname="test_db")
        else:
            self.server.execute(*statements, database="test_db")

    def _prepare(self) -> None:
        self.server.create_database("test_db")
        serial = "serial" if self._postgres else "INT AUTO_INCREMENT"
        self._run(f"CREATE TABLE task_instance (id {serial} PRIMARY KEY, state VARCHAR(10))")
        self.server.create_user("test-user", "test-password", "test_db")

    async def prepare(self) -> None:
        await asyncio.to_thread(self._prepare)

    async def fill(self) -> None:
        rows = ", ".join(["('queued')"] * 4000)
        await asyncio.to_thread(self._run, f"INSERT INTO task_instance (state) VALUES {rows}")

    async def drain(self) -> None:
        await asyncio.to_thread(self._run, "DELETE FROM task_instance")

    async def close(self) -> None:
        pass


@dataclass
class CronWindow:
    """A window open from the current minute to the next boundary at least 40 s away.

    As KEDA's e2e test does, the start and end minutes are filled in at run time, in the
    trigger's own time zone (Asia/Kolkata is UTC+5:30, so its minutes differ from UTC's).
    The window opens as soon as the object is created and closes by itself.
    """

    zone: str
    starts_active: bool = True
    minutes: dict[str, str] = field(default_factory=dict)

    @property
    def values(self) -> dict[str, str]:
        return dict(self.minutes)

    async def prepare(self) -> None:
        now = datetime.now(ZoneInfo(self.zone))
        end = now.minute + (1 if now.second <= 20 else 2)
        self.minutes = {"StartMin": str(now.minute), "EndMin": str(end % 60)}

    async def fill(self) -> None:
        pass  # the window is open

    async def drain(self) -> None:
        pass  # the window closes at EndMin

    async def close(self) -> None:
        pass


@dataclass
class RabbitQueue:
    """KEDA's e2e queue `hello` in vhost '/', read with KEDA's e2e user and password; work is
    30 messages (3 replicas at KEDA's target 10, past its activation 5), drained by a purge."""

    server: RabbitMQServer
    queue: str = "hello"
    user: str = "rmq-queue-amqp-test-user"
    password: str = "rmq-queue-amqp-test-password"
    starts_active: bool = False

    @property
    def values(self) -> dict[str, str]:
        url = f"amqp://{self.user}:{self.password}@{self.server.host}:{self.server.port}/"
        return {
            "RabbitMQConnection": url,
            "RabbitMQConnectionBase64": base64.b64encode(url.encode()).decode(),
        }

    def _prepare(self) -> None:
        self.server.add_user(self.user, self.password, "/")
        self.server.declare_queue(self.queue)
        self.server.purge_queue(self.queue)

    async def prepare(self) -> None:
        await asyncio.to_thread(self._prepare)

    async def fill(self) -> None:
        await asyncio.to_thread(self.server.publish, self.queue, 2 * WORK)

    async def drain(self) -> None:
        await asyncio.to_thread(self.server.purge_queue, self.queue)

    async def close(self) -> None:
        pass
