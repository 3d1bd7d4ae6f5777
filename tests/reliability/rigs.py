"""One rig per scaler: its brokers, how each row reaches them, and how to fill the source.

Every row's busy source holds `VALUE` (3) units of work under its own key, topic, stream or
bucket, and its empty source (`RowSpec.zero`, read by the row's drained objects) none.
Rows of the broker-wide faults (stopped, frozen) reach the broker directly; the slow row and
the tls-mismatch row go through their own `FaultProxy`; the wrong-credentials row reads its
credential from a Secret the fault overwrites.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import boto3
import nats
import redis.asyncio as aioredis
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError
from botocore.config import Config as BotoConfig
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from localenv.faultbrokers import (
    AuthNatsServer,
    BasicAuthPrometheus,
    add_kafka_listeners,
    redis_acl_user,
)
from localenv.jsonapi import JsonApiServer
from localenv.kafka import KafkaBroker
from localenv.minio import MinioServer
from localenv.paths import KAFKA_VERSIONS
from localenv.process import free_port
from localenv.redis import RedisServer
from localenv.redis_cluster import RedisCluster, command
from tests.integration.kafka_helpers import Cluster as KafkaAdmin
from tests.reliability.harness import TARGET, VALUE, Env, Rig, RowSpec, in_thread, row_name

HOST = "127.0.0.1"
USER = "tidal-rel"
PASSWORD = f"pw-{uuid.uuid4().hex[:12]}"  # a throwaway credential of loopback-only servers
N = int(VALUE)
SEED_ATTEMPTS = 3  # KafkaRig.seed against a broker that has just started


def _key(scaler: str, fault: str) -> str:
    return f"rel-{row_name(scaler, fault)}"


# ----------------------------------------------------------------------------- Redis


class _Shared:
    """A broker two rigs share: started once by whichever rig starts first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._up = False

    def ensure_started(self) -> None:
        with self._lock:
            if not self._up:
                self.start()
                self._up = True

    def start(self) -> None:
        raise NotImplementedError


class _SharedRedis(_Shared):
    """One Redis (keyspace notifications on, so push subscriptions live through the faults too)
    with an ACL user, shared by the redis and redis-streams rigs."""

    def __init__(self, env: Env) -> None:
        super().__init__()
        self.server = RedisServer(env.run_dir, notify_keyspace_events="KEA", name="rel-redis")

    def start(self) -> None:
        self.server.start()
        redis_acl_user(self.server.port, USER, PASSWORD)

    def stop(self) -> None:
        self.server.stop()

    def save_and_stop(self) -> None:
        command(self.server.port, "SAVE")  # the restart reloads every row's data
        self.server.stop()


class RedisRig(Rig):
    scaler = "redis"

    def __init__(self, env: Env) -> None:
        super().__init__(env)
        shared = env.shared.get("redis")
        if shared is None:
            shared = env.shared["redis"] = _SharedRedis(env)
        self.redis: _SharedRedis = shared

    def close(self) -> None:
        """The shared Redis is stopped by the environment (env.shared)."""

    def start(self) -> None:
        self.redis.ensure_started()
        upstream = (HOST, self.redis.server.port)
        self.proxy("slow", upstream)
        self.proxy("tls-mismatch", upstream)

    def _metadata(self, key: str, address: str) -> dict[str, str]:
        return {"address": address, "listName": key, "listLength": TARGET}

    def spec(self, fault: str) -> RowSpec:
        address = self.redis.server.address
        auth: dict[str, str] = {}
        if fault == "wrong-credentials":
            auth = {"username": USER, "password": PASSWORD}
        elif fault == "tls-mismatch":
            address = self.proxy_address(fault)
            auth = {"tls": "enable", **self.tls_auth()}
        elif fault == "slow":
            address = self.proxy_address(fault)
        key = _key(self.scaler, fault)
        return RowSpec(
            self.scaler,
            self._metadata(key, address),
            auth,
            zero=self._metadata(f"{key}-z", address),
        )

    async def seed(self, fault: str) -> None:
        r = aioredis.from_url(f"redis://{self.redis.server.address}/0")
        key = _key(self.scaler, fault)
        await r.delete(key, f"{key}-z")
        await self._fill(r, key)
        await r.aclose()

    async def _fill(self, r: aioredis.Redis, key: str) -> None:
        await r.rpush(key, *[str(i) for i in range(N)])

    def component(self) -> Any:
        return self.redis.server

    def stop_broker(self) -> None:
        self.redis.save_and_stop()

    def start_broker(self) -> None:
        self.redis.start()  # and its ACL user again


class RedisStreamsRig(RedisRig):
    scaler = "redis-streams"

    def _metadata(self, key: str, address: str) -> dict[str, str]:
        return {"address": address, "stream": key, "streamLength": TARGET}

    async def _fill(self, r: aioredis.Redis, key: str) -> None:
        for i in range(N):
            await r.xadd(key, {"n": str(i)})


class RedisClusterRig(Rig):
    """Three masters. Each row's key lives on a chosen node: the stopped row's on node 0, the
    frozen row's on node 1, the slow row's on node 2, which announces its slow proxy's port
    (cluster-announce-port) so cluster clients reach it only through that proxy."""

    scaler = "redis-cluster"
    NODE = {"stopped": 0, "frozen": 1, "wrong-credentials": 0, "slow": 2}

    def __init__(self, env: Env) -> None:
        super().__init__(env)
        self.cluster = RedisCluster(env.run_dir, name="rel-redis-cluster")
        self.keys: dict[str, str] = {}

    def start(self) -> None:
        self.cluster.start()
        for node in self.cluster.nodes:
            redis_acl_user(node.port, USER, PASSWORD)
        for fault, index in self.NODE.items():
            # The empty source on the same node, so the fault reaches it too. (No hash tags:
            # test_hash_tagged_cluster_key covers those on their own.)
            base = _key(self.scaler, fault)
            self.keys[fault] = self._key_on(index, base)
            self.keys[f"{fault}-z"] = self._key_on(index, f"{base}-z")
        slow_node = self.cluster.nodes[self.NODE["slow"]]
        proxy = self.proxy("slow", (HOST, slow_node.port))
        command(slow_node.port, "CONFIG", "SET", "cluster-announce-port", str(proxy.port))
        self._wait(lambda: self._announced(proxy.port), "the slow node's announced port")

    def close(self) -> None:
        self.cluster.stop()

    def node_of(self, key: str) -> int:
        slot = command(self.cluster.nodes[0].port, "CLUSTER", "KEYSLOT", key)
        assert isinstance(slot, int)
        return self.cluster.node_for_slot(slot)

    def _key_on(self, index: int, base: str) -> str:
        port = self.cluster.nodes[0].port
        for n in range(10_000):
            key = f"{base}-{n}"
            slot = command(port, "CLUSTER", "KEYSLOT", key)
            assert isinstance(slot, int)
            if self.cluster.node_for_slot(slot) == index:
                return key
        raise AssertionError(f"no key for node {index}")

    def _announced(self, port: int) -> bool:
        lo, _ = self.cluster.slot_ranges()[self.NODE["slow"]]
        for node in self.cluster.nodes:
            slots = command(node.port, "CLUSTER", "SLOTS")
            assert isinstance(slots, list)
            owner = [s for s in slots if isinstance(s, list) and s[0] == lo]
            if not owner or not isinstance(owner[0][2], list) or owner[0][2][1] != port:
                return False
        return True

    def _formed(self) -> bool:
        for node in self.cluster.nodes:
            info = command(node.port, "CLUSTER", "INFO")
            if not isinstance(info, str) or "cluster_state:ok" not in info:
                return False
        return True

    @staticmethod
    def _wait(check: Any, what: str, timeout: float = 60.0) -> None:
        import time

        deadline = time.monotonic() + timeout
        while True:
            try:
                if check():
                    return
            except (OSError, RuntimeError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"redis cluster: {what} not reached in {timeout:.0f}s")
            time.sleep(0.1)

    def spec(self, fault: str) -> RowSpec:
        key = self.keys[fault]
        meta = {"addresses": self.cluster.address, "listName": key, "listLength": TARGET}
        zero = {**meta, "listName": self.keys[f"{fault}-z"]}
        auth = {"username": USER, "password": PASSWORD} if fault == "wrong-credentials" else {}
        return RowSpec(self.scaler, meta, auth, zero=zero)

    async def seed(self, fault: str) -> None:
        key = self.keys[fault]
        port = self.cluster.nodes[self.NODE[fault]].port
        await in_thread(command, port, "DEL", key)
        await in_thread(command, port, "DEL", self.keys[f"{fault}-z"])
        await in_thread(command, port, "RPUSH", key, *[str(i) for i in range(N)])

    def stop_broker(self) -> None:
        node = self.cluster.nodes[self.NODE["stopped"]]
        command(node.port, "SAVE")
        node.proc.stop()

    def start_broker(self) -> None:
        index = self.NODE["stopped"]
        self.cluster.restart(index)
        redis_acl_user(self.cluster.nodes[index].port, USER, PASSWORD)

    def freeze_broker(self) -> None:
        self.cluster.nodes[self.NODE["frozen"]].proc.freeze()

    def thaw_broker(self) -> None:
        self.cluster.nodes[self.NODE["frozen"]].proc.thaw()
        self._wait(self._formed, "cluster_state:ok on every node")


# ----------------------------------------------------------------------------- Kafka


class KafkaRig(Rig):
    """One KRaft broker with a SCRAM listener and two extra listeners advertised at the slow
    proxy and the TLS front, so every connection of those rows goes through their proxy."""

    scaler = "kafka"

    def __init__(self, env: Env) -> None:
        super().__init__(env)
        self.broker = KafkaBroker(
            env.run_dir, KAFKA_VERSIONS[0], name="rel-kafka", scram={USER: PASSWORD}
        )
        self.groups: dict[str, str] = {}
        self.topics: dict[str, str] = {}

    def start(self) -> None:
        listeners: dict[str, tuple[int, int]] = {}
        for fault, listener in (("slow", "SLOWPROXY"), ("tls-mismatch", "TLSPROXY")):
            bind = free_port()
            proxy = self.proxy(fault, (HOST, bind))
            listeners[listener] = (bind, proxy.port)
        add_kafka_listeners(self.broker, listeners)
        self.broker.start()

    def close(self) -> None:
        self.broker.stop()

    def spec(self, fault: str) -> RowSpec:
        bootstrap = self.broker.bootstrap
        auth: dict[str, str] = {}
        if fault == "wrong-credentials":
            bootstrap = self.broker.sasl_bootstrap
            auth = {"sasl": "scram_sha512", "username": USER, "password": PASSWORD}
        elif fault == "tls-mismatch":
            bootstrap = self.proxy_address(fault)
            auth = {"tls": "enable", **self.tls_auth()}
        elif fault == "slow":
            bootstrap = self.proxy_address(fault)
        meta = {
            "bootstrapServers": bootstrap,
            "consumerGroup": self.groups[fault],
            "topic": self.topics[fault],
            "lagThreshold": TARGET,
        }
        zero = {**meta, "consumerGroup": self.groups[f"{fault}-z"], "topic": self.topics[fault]}
        return RowSpec(self.scaler, meta, auth, zero=zero)

    async def seed(self, fault: str) -> None:
        """A topic with N messages and two groups (lag N, lag 0). A broker that has just
        answered its first Metadata request can still close the admin connection while it
        finishes starting (seen once in CI at load ~10): the seeding is retried, the rows'
        faults come only after it."""
        for attempt in range(1, SEED_ATTEMPTS + 1):
            try:
                topic, group = await self._seed_once(fault)
                break
            except (KafkaConnectionError, KafkaTimeoutError):
                if attempt == SEED_ATTEMPTS:
                    raise
                await asyncio.sleep(2.0)
        self.topics[fault], self.groups[fault] = topic, group
        self.groups[f"{fault}-z"] = f"{group}-z"

    async def _seed_once(self, fault: str) -> tuple[str, str]:
        admin = await KafkaAdmin(self.broker.bootstrap).start()
        try:
            topic = await admin.topic(1, {0: N})
            group = f"{_key(self.scaler, fault)}-{uuid.uuid4().hex[:6]}"
            await admin.commit(group, topic, {0: 0})  # lag = N
            await admin.commit(f"{group}-z", topic, {0: N})  # caught up: lag 0
        finally:
            await admin.stop()
        return topic, group

    def component(self) -> Any:
        return self.broker


# ----------------------------------------------------------------------------- NATS


class _SharedNats(_Shared):
    def __init__(self, env: Env) -> None:
        super().__init__()
        self.server = AuthNatsServer(env.run_dir, user=USER, password=PASSWORD, name="rel-nats")

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()


class NatsMonitoringRig(Rig):
    """JetStream consumer lag read from /jsz; the server requires client credentials."""

    scaler = "nats-monitoring"
    tls_kind = "required"  # the scaler has no CA parameter: the fault turns TLS on

    def __init__(self, env: Env) -> None:
        super().__init__(env)
        shared = env.shared.get("nats")
        if shared is None:
            shared = env.shared["nats"] = _SharedNats(env)
        self.nats: _SharedNats = shared

    def close(self) -> None:
        """The shared NATS server is stopped by the environment (env.shared)."""

    def start(self) -> None:
        self.nats.ensure_started()
        for fault in ("slow", "tls-mismatch"):
            self.proxy(fault, self._upstream())

    def _upstream(self) -> tuple[str, int]:
        return (HOST, self.nats.server.monitoring_port)

    def _stream(self, fault: str) -> str:
        return _key(self.scaler, fault).replace("-", "_").upper()

    def _address(self, fault: str, direct: str) -> str:
        return self.proxy_address(fault) if fault in ("slow", "tls-mismatch") else direct

    def spec(self, fault: str) -> RowSpec:
        meta = {
            "natsServerMonitoringEndpoint": self._address(fault, self.nats.server.monitoring),
            "account": "$G",
            "stream": self._stream(fault),
            "consumer": "worker",
            "lagThreshold": TARGET,
        }
        return RowSpec("nats-jetstream", meta, zero={**meta, "consumer": "idle"})

    async def seed(self, fault: str) -> None:
        """The row's stream with two durable consumers: "worker" with VALUE pending messages
        and "idle", created after them with deliver policy "new" (nothing pending)."""
        stream = self._stream(fault)
        nc = await nats.connect(self.nats.server.client_url)
        try:
            js = nc.jetstream()
            await js.add_stream(name=stream, subjects=[f"{stream}.>"])
            config = ConsumerConfig(durable_name="worker", ack_policy=AckPolicy.EXPLICIT)
            await js.add_consumer(stream, config)
            for i in range(N):
                await js.publish(f"{stream}.work", str(i).encode())
            idle = ConsumerConfig(
                durable_name="idle", ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.NEW
            )
            await js.add_consumer(stream, idle)
        finally:
            await nc.close()

    def component(self) -> Any:
        return self.nats.server


class NatsClientRig(NatsMonitoringRig):
    """The same lag through a NATS client connection (and push wake-ups), with credentials."""

    scaler = "nats-client"

    def _upstream(self) -> tuple[str, int]:
        return (HOST, self.nats.server.port)

    def spec(self, fault: str) -> RowSpec:
        address = self._address(fault, f"{HOST}:{self.nats.server.port}")
        meta = {
            "natsServer": f"nats://{address}",
            "stream": self._stream(fault),
            "consumer": "worker",
            "lagThreshold": TARGET,
        }
        auth = {"username": USER, "password": PASSWORD}
        return RowSpec("nats-jetstream", meta, auth, zero={**meta, "consumer": "idle"})


# ----------------------------------------------------------------------------- S3


class S3Rig(Rig):
    scaler = "aws-s3"
    tls_kind = "required"  # awsEndpoint is trusted through the system CAs only

    def __init__(self, env: Env) -> None:
        super().__init__(env)
        self.minio = MinioServer(env.run_dir, name="rel-minio")

    def _s3(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.minio.endpoint,
            aws_access_key_id=self.minio.access_key,
            aws_secret_access_key=self.minio.secret_key,
            region_name=self.minio.region,
            config=BotoConfig(s3={"addressing_style": "path"}),
        )

    def spec(self, fault: str) -> RowSpec:
        endpoint, _ = self.http_url(fault, self.minio.endpoint)
        meta = {
            "bucketName": _key(self.scaler, fault),
            "awsEndpoint": endpoint,
            "targetObjectCount": TARGET,
        }
        auth = {
            "awsAccessKeyID": self.minio.access_key,
            "awsSecretAccessKey": self.minio.secret_key,
        }
        zero = {**meta, "bucketName": f"{meta['bucketName']}-z"}
        return RowSpec(self.scaler, meta, auth, credential="awsSecretAccessKey", zero=zero)

    async def seed(self, fault: str) -> None:
        bucket = _key(self.scaler, fault)

        def fill() -> None:
            s3 = self._s3()
            s3.create_bucket(Bucket=bucket)
            s3.create_bucket(Bucket=f"{bucket}-z")
            for i in range(N):
                s3.put_object(Bucket=bucket, Key=f"jobs/{i}", Body=b"x")

        await in_thread(fill)

    def component(self) -> Any:
        return self.minio


# ----------------------------------------------------------------------------- HTTP


class PrometheusRig(Rig):
    """`vector(3)` through Prometheus' query API, which requires basic auth."""

    scaler = "prometheus"

    def __init__(self, env: Env) -> None:
        super().__init__(env)
        self.prom = BasicAuthPrometheus(
            env.run_dir, user=USER, password=PASSWORD, name="rel-prometheus"
        )

    def spec(self, fault: str) -> RowSpec:
        url, tls = self.http_url(fault, self.prom.url)
        auth = {"username": USER, "password": PASSWORD, **tls}
        meta = {
            "serverAddress": url,
            "query": f"vector({N})",
            "threshold": TARGET,
            "authModes": "basic",
        }
        return RowSpec(self.scaler, meta, auth, zero={**meta, "query": "vector(0)"})

    async def seed(self, fault: str) -> None:
        return None  # vector(3) needs no data

    def component(self) -> Any:
        return self.prom


class MetricsApiRig(Rig):
    """A JSON API process (localenv.jsonapi) that requires a bearer token; `depth` holds
    VALUE, `idle` 0."""

    scaler = "metrics-api"
    TOKEN = f"token-{uuid.uuid4().hex[:12]}"

    def __init__(self, env: Env) -> None:
        super().__init__(env)
        self.api = JsonApiServer(env.run_dir, self.TOKEN, name="rel-jsonapi", value=VALUE)

    def spec(self, fault: str) -> RowSpec:
        url, tls = self.http_url(fault, self.api.url)
        auth = {"token": self.TOKEN, **tls}
        meta = {
            "url": f"{url}/queue",
            "valueLocation": "depth",
            "targetValue": TARGET,
            "authMode": "bearer",
        }
        zero = {**meta, "valueLocation": "idle"}
        return RowSpec(self.scaler, meta, auth, credential="token", zero=zero)

    async def seed(self, fault: str) -> None:
        return None  # the server serves VALUE to every row

    def component(self) -> Any:
        return self.api


RIGS: dict[str, type[Rig]] = {
    "kafka": KafkaRig,
    "nats-monitoring": NatsMonitoringRig,
    "nats-client": NatsClientRig,
    "redis": RedisRig,
    "redis-streams": RedisStreamsRig,
    "redis-cluster": RedisClusterRig,
    "aws-s3": S3Rig,
    "prometheus": PrometheusRig,
    "metrics-api": MetricsApiRig,
}
