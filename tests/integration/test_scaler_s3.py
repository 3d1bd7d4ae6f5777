"""The aws-s3 scaler and its bucket-event wake-ups against a real MinIO, Redis and NATS."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import nats
import pytest
import redis.asyncio as aioredis
from botocore.config import Config as BotoConfig

from localenv.minio import EVENTS, MinioServer
from localenv.nats import NatsServer
from localenv.process import free_port
from localenv.redis import RedisServer
from scaler.clients import ClientPool
from scaler.contract import PushScaler, TriggerContext
from scaler.errors import QueryError, ScalerError
from scaler.registry import build_scaler
from scalers.s3 import S3EventsScaler, S3Scaler

# Guards against a hang when an expected event never comes; never a measured time.
HANG_GUARD = 30.0

LAYOUT = (
    "in/a.txt",
    "in/b.txt",
    "in/sub/c.txt",
    "in/sub/d.txt",
    "in/sub/deeper/e.txt",
    "other/f.txt",
    "top.txt",
)


def _s3(minio: MinioServer) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=minio.endpoint,
        aws_access_key_id=minio.access_key,
        aws_secret_access_key=minio.secret_key,
        region_name=minio.region,
        config=BotoConfig(s3={"addressing_style": "path"}, max_pool_connections=32),
    )


def _bucket_name(what: str) -> str:
    return f"tidal-{what}-{uuid.uuid4().hex[:8]}"


def _put_many(s3: Any, bucket: str, keys: Iterable[str]) -> None:
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket=bucket, Key=key, Body=b"x"), keys))


def _drop_bucket(s3: Any, bucket: str) -> None:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", ())]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    s3.delete_bucket(Bucket=bucket)


def _trigger(
    endpoint: str,
    metadata: dict[str, str],
    auth: dict[str, str],
    index: int = 0,
) -> TriggerContext:
    meta = {"awsEndpoint": endpoint, **metadata}
    return TriggerContext("ns", "so", index, "aws-s3", "", meta, auth_params=auth)


def _auth(minio: MinioServer) -> dict[str, str]:
    return {"awsAccessKeyID": minio.access_key, "awsSecretAccessKey": minio.secret_key}


def _scaler(
    minio: MinioServer, pool: ClientPool, auth: dict[str, str] | None = None, **metadata: str
) -> S3Scaler:
    scaler = build_scaler(_trigger(minio.endpoint, metadata, auth or _auth(minio)), pool)
    assert isinstance(scaler, S3Scaler)
    return scaler


@pytest.fixture(scope="module")
def s3(minio_server: MinioServer) -> Any:
    return _s3(minio_server)


@pytest.fixture(scope="module")
def layout_bucket(s3: Any) -> Iterator[str]:
    bucket = _bucket_name("layout")
    s3.create_bucket(Bucket=bucket)
    _put_many(s3, bucket, LAYOUT)
    yield bucket
    _drop_bucket(s3, bucket)


@pytest.fixture(scope="module")
def big_bucket(s3: Any) -> Iterator[str]:
    """1500 objects: more than one ListObjectsV2 page (1000 keys)."""
    bucket = _bucket_name("big")
    s3.create_bucket(Bucket=bucket)
    _put_many(s3, bucket, (f"jobs/{i:05d}" for i in range(1500)))
    yield bucket
    _drop_bucket(s3, bucket)


@pytest.fixture
def bucket(s3: Any) -> Iterator[str]:
    name = _bucket_name("t")
    s3.create_bucket(Bucket=name)
    yield name
    _drop_bucket(s3, name)


# -- counting ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        pytest.param({}, 7, id="whole-bucket"),
        pytest.param({"prefix": "in/"}, 5, id="prefix-flat"),
        pytest.param({"prefix": "in/", "delimiter": "/"}, 2, id="prefix-direct-children-only"),
        pytest.param(
            {"prefix": "in/", "delimiter": "/", "recursive": "true"}, 5, id="recursive-ignores-dirs"
        ),
        pytest.param({"delimiter": "/"}, 1, id="root-direct-children"),
        pytest.param({"prefix": "in/sub/", "delimiter": "/"}, 2, id="nested-direct-children"),
        pytest.param({"prefix": "in/s"}, 3, id="partial-key-prefix"),
        pytest.param({"prefix": "nothing/"}, 0, id="empty-prefix-is-a-real-zero"),
    ],
)
async def test_counts_objects_under_prefix(
    minio_server: MinioServer,
    pool: ClientPool,
    layout_bucket: str,
    metadata: dict[str, str],
    expected: int,
) -> None:
    scaler = _scaler(minio_server, pool, _auth(minio_server), bucketName=layout_bucket, **metadata)
    sample = await scaler.sample(1000.0)
    assert (sample.value, sample.active, sample.observed_at) == (expected, expected > 0, 1000.0)
    await scaler.aclose()


@pytest.mark.parametrize(
    ("activation", "active"),
    [
        pytest.param("6", True, id="count-above-activation"),
        pytest.param("7", False, id="count-equal-to-activation-is-inactive"),
    ],
)
async def test_activation_threshold(
    minio_server: MinioServer, pool: ClientPool, layout_bucket: str, activation: str, active: bool
) -> None:
    scaler = _scaler(
        minio_server, pool, bucketName=layout_bucket, activationTargetObjectCount=activation
    )
    sample = await scaler.sample(1.0)
    assert (sample.value, sample.active) == (7, active)


async def test_count_follows_puts_and_deletes(
    minio_server: MinioServer, pool: ClientPool, s3: Any, bucket: str
) -> None:
    scaler = _scaler(minio_server, pool, bucketName=bucket, prefix="q/")
    assert (await scaler.sample(1.0)).active is False
    await asyncio.to_thread(_put_many, s3, bucket, ["q/1", "q/2", "elsewhere/3"])
    sample = await scaler.sample(2.0)
    assert (sample.value, sample.active) == (2, True)
    await asyncio.to_thread(s3.delete_object, Bucket=bucket, Key="q/1")
    assert (await scaler.sample(3.0)).value == 1


@pytest.mark.parametrize(
    ("max_scan", "expected", "requests", "truncated"),
    [
        pytest.param(None, 1000, 1, True, id="default-1000-caps-at-one-page"),
        pytest.param("5000", 1500, 2, False, id="past-1000-two-pages"),
        pytest.param("1200", 1200, 2, True, id="cap-inside-second-page"),
        pytest.param("1500", 1500, 2, False, id="cap-equal-to-count"),
        pytest.param("10", 10, 1, True, id="small-cap-one-small-page"),
    ],
)
async def test_pagination_is_bounded_by_max_objects_to_scan(
    minio_server: MinioServer,
    pool: ClientPool,
    big_bucket: str,
    caplog: pytest.LogCaptureFixture,
    max_scan: str | None,
    expected: int,
    requests: int,
    truncated: bool,
) -> None:
    metadata = {"bucketName": big_bucket}
    if max_scan is not None:
        metadata["maxObjectsToScan"] = max_scan
    scaler = _scaler(minio_server, pool, _auth(minio_server), **metadata)
    with caplog.at_level(logging.INFO, logger="scalers.s3"):
        sample = await scaler.sample(1.0)
        await scaler.sample(2.0)  # a second capped listing does not warn again
    assert sample.value == expected
    assert scaler.last_count is not None
    assert (scaler.last_count.requests, scaler.last_count.truncated) == (requests, truncated)
    warnings = [r for r in caplog.records if "maxObjectsToScan" in r.getMessage()]
    assert len(warnings) == (1 if truncated else 0)
    if truncated:
        assert warnings[0].levelno == logging.WARNING
        assert vars(warnings[0])["max_objects_to_scan"] == scaler.listing.max_objects


async def test_directories_use_up_the_scan_bound(
    minio_server: MinioServer, pool: ClientPool, s3: Any, bucket: str
) -> None:
    """CommonPrefixes are not counted, but they are scanned: the bound holds the work."""
    await asyncio.to_thread(_put_many, s3, bucket, [*(f"d{i:02d}/x" for i in range(20)), "zz-file"])
    scaler = _scaler(minio_server, pool, bucketName=bucket, delimiter="/", maxObjectsToScan="5")
    sample = await scaler.sample(1.0)
    assert sample.value == 0  # five directories scanned, the one file not reached
    assert scaler.last_count is not None
    assert scaler.last_count.truncated
    complete = _scaler(minio_server, pool, bucketName=bucket, delimiter="/")
    assert (await complete.sample(1.0)).value == 1


async def test_scalers_with_one_identity_share_one_client(
    minio_server: MinioServer, pool: ClientPool, layout_bucket: str
) -> None:
    first = _scaler(minio_server, pool, bucketName=layout_bucket)
    second = _scaler(minio_server, pool, bucketName=layout_bucket, prefix="in/")
    await asyncio.gather(first.sample(1.0), second.sample(1.0))
    assert len(pool) == 1
    assert pool.refs(first.target.key()) == 2
    await first.aclose()
    await second.aclose()
    assert len(pool) == 0


# -- errors are never a zero ---------------------------------------------------------------------


async def test_missing_bucket_is_a_query_error(minio_server: MinioServer, pool: ClientPool) -> None:
    scaler = _scaler(minio_server, pool, bucketName=_bucket_name("missing"))
    with pytest.raises(QueryError, match="does not exist"):
        await scaler.sample(1.0)


@pytest.mark.parametrize(
    "auth",
    [
        pytest.param(
            {"awsAccessKeyID": "tidal-minio", "awsSecretAccessKey": "wrong-secret-4242"},
            id="wrong-secret",
        ),
        pytest.param(
            {"awsAccessKeyID": "nobody", "awsSecretAccessKey": "wrong-secret-4242"},
            id="unknown-access-key",
        ),
    ],
)
async def test_bad_credentials_are_an_error_without_the_secret(
    minio_server: MinioServer, pool: ClientPool, layout_bucket: str, auth: dict[str, str]
) -> None:
    scaler = _scaler(minio_server, pool, auth, bucketName=layout_bucket)
    with pytest.raises(ScalerError, match="access denied") as info:
        await scaler.sample(1.0)
    assert not isinstance(info.value, QueryError)
    assert "wrong-secret-4242" not in str(info.value)


async def test_nothing_listening_is_a_connection_error(pool: ClientPool) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    auth = {"awsAccessKeyID": "k", "awsSecretAccessKey": "s3cr3t-value"}
    scaler = build_scaler(_trigger(endpoint, {"bucketName": "b"}, auth), pool)
    with pytest.raises(ScalerError, match="connection failed") as info:
        await scaler.sample(1.0)
    assert "s3cr3t-value" not in str(info.value)


async def test_endpoint_down_then_back(run_dir: Path, pool: ClientPool) -> None:
    """A private MinIO (the shared one must stay up): stopped -> error, restarted -> a value."""
    with MinioServer(run_dir, name=f"minio-private-{uuid.uuid4().hex[:6]}") as minio:
        s3 = _s3(minio)
        s3.create_bucket(Bucket="held")
        _put_many(s3, "held", ["a", "b"])
        scaler = _scaler(minio, pool, bucketName="held")
        assert (await scaler.sample(1.0)).value == 2
        minio.stop()
        with pytest.raises(ScalerError):
            await scaler.sample(2.0)
        minio.start()
        assert (await scaler.sample(3.0)).value == 2
        await scaler.aclose()


# -- bucket events wake the scaler ---------------------------------------------------------------


def _notify(s3: Any, bucket: str, queue_arn: str | None, prefix: str = "") -> None:
    assert queue_arn is not None
    rules = {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}} if prefix else {}
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"], **({"Filter": rules})}
            ]
        },
    )


async def _put_once_subscribed(scaler: PushScaler, s3: Any, bucket: str, key: str) -> None:
    """Take `wakeups()`'s first item ("subscribed"), put ONE object, wait for its wake-up.

    The first item comes once the events subscription is live, so the put's event cannot be
    missed: one put is enough (before the first item meant "subscribed", the test had to put
    again and again until a wake-up came).
    """
    wakeups = scaler.wakeups()
    try:
        async with asyncio.timeout(HANG_GUARD):
            await anext(wakeups)
            await asyncio.to_thread(s3.put_object, Bucket=bucket, Key=key, Body=b"event")
            await anext(wakeups)
    finally:
        await wakeups.aclose()  # type: ignore[attr-defined]


async def test_put_object_event_through_redis_wakes_then_sample_is_active(
    minio_server: MinioServer, redis_server: RedisServer, pool: ClientPool, s3: Any, bucket: str
) -> None:
    _notify(s3, bucket, minio_server.redis_queue_arn, prefix="incoming/")
    scaler = _scaler(
        minio_server,
        pool,
        bucketName=bucket,
        prefix="incoming/",
        eventsRedisAddress=f"{redis_server.host}:{redis_server.port}",
        eventsRedisList=EVENTS,
    )
    assert isinstance(scaler, S3EventsScaler)
    assert isinstance(scaler, PushScaler)
    before = await scaler.sample(1.0)
    assert (before.value, before.active) == (0, False)
    await _put_once_subscribed(scaler, s3, bucket, "incoming/obj")
    after = await scaler.sample(2.0)
    assert (after.value, after.active) == (1, True)
    assert len(pool) == 1  # the events connection was released with its iterator
    await scaler.aclose()
    assert len(pool) == 0


async def test_put_object_event_through_nats_wakes_then_sample_is_active(
    minio_server: MinioServer, nats_server: NatsServer, pool: ClientPool, s3: Any, bucket: str
) -> None:
    _notify(s3, bucket, minio_server.nats_queue_arn)
    scaler = _scaler(
        minio_server,
        pool,
        bucketName=bucket,
        eventsNatsServer=nats_server.url,
        eventsNatsSubject=EVENTS,
    )
    assert isinstance(scaler, PushScaler)
    assert (await scaler.sample(1.0)).active is False
    await _put_once_subscribed(scaler, s3, bucket, "obj")
    after = await scaler.sample(2.0)
    assert (after.value, after.active) == (1, True)
    await scaler.aclose()


async def test_without_an_events_source_the_scaler_only_polls(
    minio_server: MinioServer, pool: ClientPool, layout_bucket: str
) -> None:
    scaler = _scaler(minio_server, pool, bucketName=layout_bucket)
    assert type(scaler) is S3Scaler
    assert not isinstance(scaler, PushScaler)


def _events_scaler(pool: ClientPool, **events: str) -> S3EventsScaler:
    """A scaler whose S3 side is never sampled: these tests watch only the events source."""
    auth = {"awsAccessKeyID": "k", "awsSecretAccessKey": "s"}
    trigger = _trigger("http://127.0.0.1:9", {"bucketName": "b", **events}, auth)
    scaler = build_scaler(trigger, pool)
    assert isinstance(scaler, S3EventsScaler)
    return scaler


async def _wake_when(wakeups: Any, act: Any) -> None:
    """Take a new iterator's first item ("subscribed"), `act()` once, wait for its wake-up."""
    async with asyncio.timeout(HANG_GUARD):
        await anext(wakeups)
        await act()
        await anext(wakeups)


async def test_redis_events_wake_shared_watchers_and_a_lost_server_ends_with_an_error(
    redis_factory: Any, pool: ClientPool
) -> None:
    server = redis_factory(notify_keyspace_events="Kl")
    scaler = _events_scaler(
        pool, eventsRedisAddress=f"{server.host}:{server.port}", eventsRedisList="events"
    )
    other = _events_scaler(
        pool, eventsRedisAddress=f"{server.host}:{server.port}", eventsRedisList="events"
    )
    db = aioredis.Redis(host=server.host, port=server.port)
    first, second = scaler.wakeups(), other.wakeups()
    try:
        await _wake_when(first, lambda: db.rpush("events", "e"))
        await _wake_when(second, lambda: db.rpush("events", "e"))
        assert len(pool) == 1  # both watchers share one connection
        await db.rpush("events", "e1", "e2", "e3")
        await asyncio.wait_for(anext(first), HANG_GUARD)
        assert await db.llen("events") > 0  # the watcher never consumes the list
        server.stop()
        with pytest.raises(ScalerError, match="redis"):
            await asyncio.wait_for(anext(first), HANG_GUARD)
        with pytest.raises(ScalerError):
            await asyncio.wait_for(anext(second), HANG_GUARD)
    finally:
        await first.aclose()  # type: ignore[attr-defined]
        await second.aclose()  # type: ignore[attr-defined]
        await db.aclose()
    assert len(pool) == 0


async def test_redis_without_keyspace_notifications_is_an_error(
    redis_factory: Any, pool: ClientPool
) -> None:
    server = redis_factory()
    scaler = _events_scaler(
        pool, eventsRedisAddress=f"{server.host}:{server.port}", eventsRedisList="events"
    )
    with pytest.raises(ScalerError, match="notify-keyspace-events"):
        await anext(scaler.wakeups())
    assert len(pool) == 0


async def test_events_redis_down_is_an_error(pool: ClientPool) -> None:
    scaler = _events_scaler(
        pool, eventsRedisAddress=f"127.0.0.1:{free_port()}", eventsRedisList="events"
    )
    with pytest.raises(ScalerError, match="connection failed"):
        await anext(scaler.wakeups())


async def test_nats_events_wake_and_a_lost_server_ends_with_an_error(
    nats_factory: Any, pool: ClientPool
) -> None:
    """Bucket events on NATS wake the object; the server going away ends the iterator with an
    error. (That the first item means "subscribed" is test_scaler_nats.py's
    test_push_first_item_means_subscribed; here one clean-clone run under load saw a single
    publish right after it not arrive within 30 s, so the event is published until it wakes.)"""
    server = nats_factory()
    scaler = _events_scaler(pool, eventsNatsServer=server.url, eventsNatsSubject="bucket.events")
    publisher = await nats.connect(server.url)
    wakeups = scaler.wakeups()
    try:

        async def publish() -> None:
            await publisher.publish("bucket.events", b"{}")
            await publisher.flush()

        async with asyncio.timeout(HANG_GUARD):
            await anext(wakeups)  # subscribed
            woken = asyncio.ensure_future(anext(wakeups))
            while not woken.done():
                await publish()
                await asyncio.wait([woken], timeout=2.0)
            await woken
        server.stop()
        with pytest.raises(ScalerError, match="nats"):
            await asyncio.wait_for(anext(wakeups), HANG_GUARD)
    finally:
        await wakeups.aclose()  # type: ignore[attr-defined]
        await publisher.close()
    assert len(pool) == 0


async def test_events_nats_down_is_an_error(pool: ClientPool) -> None:
    scaler = _events_scaler(
        pool, eventsNatsServer=f"nats://127.0.0.1:{free_port()}", eventsNatsSubject="s"
    )
    with pytest.raises(ScalerError, match="connection failed"):
        await anext(scaler.wakeups())
