"""Event → `spec.replicas: 1` on the real control plane: Tidal's headline number (issue 10).

For each source, one event is published to an idle source whose object sits at 0 replicas, and
the time until a watch on the Deployment sees `spec.replicas: 1` is recorded; then the work is
removed and the object goes back to 0 (cooldownPeriod 0) before the next repetition.

* push sources (pollingInterval 300 s, so only a wake-up explains a fast reaction): repetitions
  one after another on one object;
* polled sources (pollingInterval 30 s and 5 s, push off): one event to each of N objects at
  once — each object's poll timer has its own phase, so N objects in one round sample the same
  distribution as N rounds of one object, in one interval instead of N.

Tidal runs as its own process (`tidal run`), as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from benchmarks.common import Result, Row, ms, percentile, progress
from localenv.controlplane import ControlPlane
from localenv.crds import install_crds
from localenv.kafka import KafkaBroker
from localenv.minio import MinioServer
from localenv.nats import NatsServer
from localenv.paths import new_run_dir
from localenv.process import ManagedProcess
from localenv.redis import RedisServer
from localenv.tidal import tidal_process

NAME = "activation_latency"
MISSES: dict[str, int] = {}  # repetitions not activated within 30 s, per source
NS = "bench"


@dataclass
class Env:
    plane: ControlPlane
    brokers: Brokers
    tidal: ManagedProcess
    session: aiohttp.ClientSession
    base: str

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
        async with self.session.request(
            method, self.base + path, json=body, headers=headers
        ) as resp:
            text = await resp.text()
            if resp.status >= 300:
                raise RuntimeError(f"{method} {path}: {resp.status} {text[:200]}")
            return json.loads(text) if text else None


@dataclass
class Brokers:
    redis: RedisServer
    nats: NatsServer
    minio: MinioServer
    kafka: KafkaBroker


@contextlib.contextmanager
def _processes(run_dir: Path) -> Iterator[tuple[ControlPlane, Brokers, ManagedProcess]]:
    progress(NAME, f"starting the control plane, Redis, NATS, MinIO and Tidal (logs: {run_dir})")
    plane = ControlPlane(run_dir, hpa_sync_period="15s").start()
    started: list[RedisServer | NatsServer | MinioServer | KafkaBroker] = []
    tidal: ManagedProcess | None = None
    try:
        server = RedisServer(run_dir, notify_keyspace_events="Kl").start()
        started.append(server)
        nats = NatsServer(run_dir).start()
        started.append(nats)
        minio = MinioServer(run_dir, redis=server).start()
        started.append(minio)
        kafka = KafkaBroker(run_dir).start()
        started.append(kafka)
        install_crds(plane)
        plane.apply(
            f"/api/v1/namespaces/{NS}",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
        )
        tidal, _ = tidal_process(
            run_dir,
            plane.kubeconfig,
            ["--leader-elect", "false", "--log-format", "json", "--log-level", "warning"],
        )
        tidal.start()
        yield plane, Brokers(server, nats, minio, kafka), tidal
    finally:
        if tidal is not None:
            tidal.stop()
        for component in reversed(started):
            component.stop()
        plane.stop()


def _deployment(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "a", "image": "registry.invalid/a"}]},
            },
        },
    }


def _scaled_object(name: str, trigger: dict[str, Any], poll: int, push: bool) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if not push:
        meta["annotations"] = {"autoscaling.tidal.sh/push": "false"}
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": meta,
        "spec": {
            "scaleTargetRef": {"name": name},
            "pollingInterval": poll,
            "cooldownPeriod": 0,
            "triggers": [trigger],
        },
    }


class ReplicaWatch:
    """One watch on the namespace's Deployments; records when each reaches replicas 1."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.replicas: dict[str, int] = {}
        self.changed = asyncio.Condition()
        self.reached: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        body = await self.env.request("GET", f"/apis/apps/v1/namespaces/{NS}/deployments")
        for d in body["items"]:
            self.replicas[d["metadata"]["name"]] = int(d["spec"].get("replicas", 0))
        rv = body["metadata"]["resourceVersion"]
        self._task = asyncio.create_task(self._run(rv))

    async def _run(self, rv: str) -> None:
        url = (
            f"{self.env.base}/apis/apps/v1/namespaces/{NS}/deployments?watch=1"
            f"&resourceVersion={rv}&timeoutSeconds=3600"
        )
        async with self.env.session.get(url, timeout=aiohttp.ClientTimeout(total=None)) as resp:
            async for line in resp.content:
                if not line.strip():
                    continue
                now = time.perf_counter()
                event = json.loads(line)
                obj = event["object"]
                name = obj["metadata"]["name"]
                n = int(obj.get("spec", {}).get("replicas", 0))
                if n >= 1 and self.replicas.get(name, 0) == 0:
                    self.reached[name] = now
                self.replicas[name] = n
                async with self.changed:
                    self.changed.notify_all()

    async def wait(self, check: Callable[[], bool], timeout: float) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(check), timeout)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def _create(
    env: Env, name: str, trigger: dict[str, Any], poll: int, push: bool = True
) -> None:
    await env.request("POST", f"/apis/apps/v1/namespaces/{NS}/deployments", _deployment(name))
    await env.request(
        "POST",
        f"/apis/keda.sh/v1alpha1/namespaces/{NS}/scaledobjects",
        _scaled_object(name, trigger, poll, push),
    )


async def _ready_object(env: Env, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        so = await env.request(
            "GET", f"/apis/keda.sh/v1alpha1/namespaces/{NS}/scaledobjects/{name}"
        )
        for c in (so.get("status") or {}).get("conditions") or []:
            if c["type"] == "Ready" and c["status"] == "True":
                return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{name} not Ready")


class PushSource:
    """One kind of event source: its trigger, how to publish one event and how to undo it."""

    label = ""

    async def setup(self, env: Env) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The trigger (and an optional TriggerAuthentication spec)."""
        raise NotImplementedError

    async def publish(self) -> None:
        raise NotImplementedError

    async def consume(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        return None


class RedisPush(PushSource):
    label = "redis push (keyspace notifications)"

    async def setup(self, env: Env) -> tuple[dict[str, Any], dict[str, Any] | None]:
        self.r = aioredis.Redis(port=env.brokers.redis.port)
        meta = {"address": f"127.0.0.1:{env.brokers.redis.port}", "listName": "push-jobs"}
        return {"type": "redis", "metadata": meta}, None

    async def publish(self) -> None:
        await self.r.rpush("push-jobs", "job")

    async def consume(self) -> None:
        await self.r.lpop("push-jobs")

    async def close(self) -> None:
        await self.r.aclose()


class NatsPush(PushSource):
    label = "nats-jetstream push (stream subjects)"

    async def setup(self, env: Env) -> tuple[dict[str, Any], dict[str, Any] | None]:
        import nats

        n = env.brokers.nats
        self.nc = await nats.connect(n.url)
        self.js = self.nc.jetstream()
        await self.js.add_stream(name="BENCH", subjects=["bench.jobs"])
        self.sub = await self.js.pull_subscribe("bench.jobs", durable="worker")
        meta = {
            "natsServerMonitoringEndpoint": n.monitoring,
            "account": "$G",
            "stream": "BENCH",
            "consumer": "worker",
            "natsServer": n.url,
        }
        return {"type": "nats-jetstream", "metadata": meta}, None

    async def publish(self) -> None:
        await self.js.publish("bench.jobs", b"job")

    async def consume(self) -> None:
        for msg in await self.sub.fetch(1, timeout=5):
            await msg.ack_sync()

    async def close(self) -> None:
        await self.nc.close()


class S3Push(PushSource):
    label = "aws-s3 push (MinIO bucket events via Redis)"

    async def setup(self, env: Env) -> tuple[dict[str, Any], dict[str, Any] | None]:
        import boto3

        m = env.brokers.minio
        self.s3 = boto3.client(
            "s3",
            endpoint_url=m.endpoint,
            region_name="us-east-1",
            aws_access_key_id=m.access_key,
            aws_secret_access_key=m.secret_key,
        )
        self.s3.create_bucket(Bucket="bench")
        self.s3.put_bucket_notification_configuration(
            Bucket="bench",
            NotificationConfiguration={
                "QueueConfigurations": [
                    {"QueueArn": m.redis_queue_arn, "Events": ["s3:ObjectCreated:*"]}
                ]
            },
        )
        await env.request(
            "POST",
            f"/api/v1/namespaces/{NS}/secrets",
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "minio"},
                "stringData": {"id": m.access_key, "secret": m.secret_key},
            },
        )
        auth = {
            "secretTargetRef": [
                {"parameter": "awsAccessKeyID", "name": "minio", "key": "id"},
                {"parameter": "awsSecretAccessKey", "name": "minio", "key": "secret"},
            ]
        }
        meta = {
            "bucketName": "bench",
            "awsEndpoint": m.endpoint,
            "awsRegion": "us-east-1",
            "eventsRedisAddress": f"127.0.0.1:{env.brokers.redis.port}",
            "eventsRedisList": "s3-events",
        }
        return {"type": "aws-s3", "metadata": meta}, auth

    async def publish(self) -> None:
        await asyncio.to_thread(self.s3.put_object, Bucket="bench", Key="job", Body=b"x")

    async def consume(self) -> None:
        await asyncio.to_thread(self.s3.delete_object, Bucket="bench", Key="job")


class KafkaPush(PushSource):
    label = "kafka push (end-offset watcher)"

    async def setup(self, env: Env) -> tuple[dict[str, Any], dict[str, Any] | None]:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        boot = env.brokers.kafka.bootstrap
        admin = AIOKafkaAdminClient(bootstrap_servers=boot)
        await admin.start()
        await admin.create_topics([NewTopic("bench", num_partitions=1, replication_factor=1)])
        await admin.close()
        self.tp = TopicPartition("bench", 0)
        self.producer = AIOKafkaProducer(bootstrap_servers=boot)
        await self.producer.start()
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=boot, group_id="worker", enable_auto_commit=False
        )
        await self.consumer.start()
        self.consumer.assign([self.tp])
        await self.consume()  # a committed offset, so the idle group has no lag at all
        meta = {"bootstrapServers": boot, "consumerGroup": "worker", "topic": "bench"}
        return {"type": "kafka", "metadata": meta}, None

    async def publish(self) -> None:
        await self.producer.send_and_wait("bench", b"job", partition=0)

    async def consume(self) -> None:
        from aiokafka.structs import OffsetAndMetadata

        end = (await self.consumer.end_offsets([self.tp]))[self.tp]
        await self.consumer.commit({self.tp: OffsetAndMetadata(end, "")})

    async def close(self) -> None:
        await self.producer.stop()
        await self.consumer.stop()


async def push_reps(env: Env, watch: ReplicaWatch, source: PushSource, reps: int) -> list[float]:
    name = "push-" + source.label.split()[0]
    trigger, auth = await source.setup(env)
    if auth is not None:
        await env.request(
            "POST",
            f"/apis/keda.sh/v1alpha1/namespaces/{NS}/triggerauthentications",
            {
                "apiVersion": "keda.sh/v1alpha1",
                "kind": "TriggerAuthentication",
                "metadata": {"name": name},
                "spec": auth,
            },
        )
        trigger["authenticationRef"] = {"name": name}
    await _create(env, name, trigger, poll=300)
    await _ready_object(env, name)
    await asyncio.sleep(1.0)  # let the subscription settle
    out: list[float] = []
    misses: list[int] = []
    deploy = f"/apis/apps/v1/namespaces/{NS}/deployments/{name}"
    for i in range(reps):
        watch.reached.pop(name, None)
        t0 = time.perf_counter()
        await source.publish()
        try:
            await watch.wait(lambda: name in watch.reached, 30)
        except TimeoutError:
            misses.append(i)
            progress(NAME, f"{source.label}: repetition {i + 1} not activated within 30 s")
            await source.consume()
            continue
        out.append(watch.reached[name] - t0)
        # Undo: consume the work, then put the workload back to 0 ourselves (the object polls
        # only every 300 s; the next event wakes it and it must scale 0 -> 1 again).
        await source.consume()
        await env.request("PATCH", deploy, {"spec": {"replicas": 0}})
        await watch.wait(lambda: watch.replicas.get(name) == 0, 30)
        # Tidal's own Deployment watch must see the 0 before the next event; the random part
        # keeps the events from locking onto a periodic source's phase (Kafka's 100 ms watcher).
        await asyncio.sleep(1.0 + random.random() * 0.25)
        if (i + 1) % 10 == 0:
            progress(NAME, f"{source.label}: {i + 1}/{reps}, p50 so far {ms(percentile(out, 50))}")
    await source.close()
    MISSES[source.label] = len(misses)
    return out


async def polled_round(
    env: Env, watch: ReplicaWatch, r: aioredis.Redis, poll: int, n: int
) -> list[float]:
    names = [f"poll{poll}-{i}" for i in range(n)]
    # Stagger the creations over one interval: each object's poll timer gets its own phase, so
    # one event to every object samples the whole 0..pollingInterval range of waiting times.
    for name in names:
        trigger = {
            "type": "redis",
            "metadata": {"address": f"127.0.0.1:{env.brokers.redis.port}", "listName": name},
        }
        await _create(env, name, trigger, poll, push=False)
        await asyncio.sleep(poll / n)
    for name in names:
        await _ready_object(env, name)
    starts: dict[str, float] = {}
    for name in names:
        starts[name] = time.perf_counter()
        await r.rpush(name, "job")
    await watch.wait(lambda: all(nm in watch.reached for nm in names), poll * 2 + 30)
    return [watch.reached[nm] - starts[nm] for nm in names]


async def _main(run_dir: Path, quick: bool) -> dict[str, list[float]]:
    reps = 10 if quick else 60
    with _processes(run_dir) as (plane, brokers, tidal):
        ctx = ssl.create_default_context(cafile=str(plane.ca_path))
        crt, key = plane.admin_cert_paths
        ctx.load_cert_chain(crt, key)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
            env = Env(plane, brokers, tidal, session, plane.server)
            watch = ReplicaWatch(env)
            await watch.start()
            r = aioredis.Redis(port=brokers.redis.port)
            results: dict[str, list[float]] = {}
            for source in (RedisPush(), NatsPush(), S3Push(), KafkaPush()):
                progress(NAME, f"{source.label}: {reps} repetitions, pollingInterval 300 s")
                results[source.label] = await push_reps(env, watch, source, reps)
            for poll in (5, 30):
                n = 10 if quick else 50
                progress(NAME, f"redis polled every {poll} s: one event to each of {n} objects")
                results[f"redis polled, pollingInterval {poll} s"] = await polled_round(
                    env, watch, r, poll, n
                )
            await r.aclose()
            await watch.stop()
    return results


def run(out: Path, quick: bool) -> Result:
    run_dir = new_run_dir("bench-activation")
    results = asyncio.run(_main(run_dir, quick))
    rows: list[Row] = []
    for source, values in results.items():
        p50, p90, p99, mx = (percentile(values, p) for p in (50, 90, 99, 100))
        push = "push" in source
        budget = "p50 ≤ 100 ms, p99 ≤ 500 ms" if push else "≤ pollingInterval + 200 ms"
        ok = (
            (p50 <= 0.1 and p99 <= 0.5 and not MISSES.get(source))
            if push
            else (mx <= float(source.split()[-2]) + 0.2)
        )
        keda = "p50 516 ms, max 823 ms at a 1 s poll" if push else "p50 12.7 s, max 28.9 s at 30 s"
        rows.append(
            Row(
                f"event → replicas 1, {source} (n={len(values)}"
                + (f", {MISSES[source]} missed" if MISSES.get(source) else "")
                + ")",
                f"p50 {ms(p50)}, p90 {ms(p90)}, p99 {ms(p99)}, max {ms(mx)}",
                budget,
                keda,
                ok,
            )
        )
    return Result(NAME, rows, raw={k: sorted(v) for k, v in results.items()}, started=time.time())
