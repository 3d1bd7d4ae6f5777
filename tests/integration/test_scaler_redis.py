"""Redis list and stream scalers against a real redis-server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from localenv.redis import RedisServer
from scaler.clients import ClientPool
from scaler.contract import TriggerContext
from scaler.errors import QueryError, ScalerError
from scaler.registry import build_scaler
from scalers.redis_lists import RedisListScaler
from scalers.redis_streams import RedisStreamsScaler


def _key(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _trigger(
    kind: str,
    server: RedisServer,
    metadata: dict[str, str],
    auth: dict[str, str] | None = None,
    index: int = 0,
) -> TriggerContext:
    meta = {"address": f"{server.host}:{server.port}", **metadata}
    return TriggerContext("ns", "so", index, kind, "", meta, auth_params=auth or {})


@pytest.fixture
async def db(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(host=redis_server.host, port=redis_server.port, decode_responses=True)
    yield client
    await client.aclose()


def _lists(server: RedisServer, pool: ClientPool, **metadata: str) -> RedisListScaler:
    scaler = build_scaler(_trigger("redis", server, metadata), pool)
    assert isinstance(scaler, RedisListScaler)
    return scaler


@pytest.mark.parametrize(
    ("fill", "expected"),
    [
        pytest.param(lambda db, k: db.lpush(k, "a", "b", "c"), 3, id="list-llen"),
        pytest.param(lambda db, k: db.zadd(k, {"a": 1, "b": 2}), 2, id="zset-zcard"),
        pytest.param(lambda db, k: db.sadd(k, "a", "b", "c", "d"), 4, id="set-scard"),
        pytest.param(lambda db, k: db.hset(k, mapping={"a": 1}), 1, id="hash-hlen"),
        pytest.param(None, 0, id="missing-key-is-empty-list"),
    ],
)
async def test_length_by_key_type(
    redis_server: RedisServer,
    db: aioredis.Redis,
    pool: ClientPool,
    fill: Callable[[aioredis.Redis, str], Any] | None,
    expected: int,
) -> None:
    key = _key("len")
    if fill is not None:
        await fill(db, key)
    scaler = _lists(redis_server, pool, listName=key)
    sample = await scaler.sample(1000.0)
    assert sample.value == expected
    assert sample.active is (expected > 0)
    assert sample.observed_at == 1000.0
    await scaler.aclose()


async def test_other_key_type_is_a_query_error(
    redis_server: RedisServer, db: aioredis.Redis, pool: ClientPool
) -> None:
    key = _key("str")
    await db.set(key, "x")
    scaler = _lists(redis_server, pool, listName=key)
    with pytest.raises(QueryError, match="unsupported type string"):
        await scaler.sample(0.0)
    await scaler.aclose()


async def test_activation_is_strictly_greater(
    redis_server: RedisServer, db: aioredis.Redis, pool: ClientPool
) -> None:
    key = _key("act")
    scaler = _lists(redis_server, pool, listName=key, activationListLength="3")
    await db.rpush(key, 1, 2, 3)
    at_threshold = await scaler.sample(0.0)
    assert (at_threshold.value, at_threshold.active) == (3.0, False)
    await db.rpush(key, 4)
    above = await scaler.sample(1.0)
    assert (above.value, above.active) == (4.0, True)
    await scaler.aclose()


async def test_scalers_of_one_server_share_a_client_and_a_pipeline(
    redis_server: RedisServer, db: aioredis.Redis, pool: ClientPool
) -> None:
    keys = [_key("many") for _ in range(20)]
    for n, key in enumerate(keys):
        if n:
            await db.rpush(key, *range(n))
    scalers = [_lists(redis_server, pool, listName=k) for k in keys]
    first = await asyncio.gather(*(s.sample(0.0) for s in scalers))
    assert [s.value for s in first] == [float(n) for n in range(20)]
    assert len(pool) == 1
    runner = scalers[0]._conn._runner.client
    assert runner is not None
    before = runner.round_trips
    await asyncio.gather(*(s.sample(1.0) for s in scalers))
    assert runner.round_trips == before + 1  # 20 reads, one pipeline
    for scaler in scalers:
        await scaler.aclose()
    assert len(pool) == 0


async def _streams(server: RedisServer, pool: ClientPool, **metadata: str) -> RedisStreamsScaler:
    scaler = build_scaler(_trigger("redis-streams", server, metadata), pool)
    assert isinstance(scaler, RedisStreamsScaler)
    return scaler


async def test_stream_length_mode(
    redis_server: RedisServer, db: aioredis.Redis, pool: ClientPool
) -> None:
    stream = _key("xlen")
    scaler = await _streams(redis_server, pool, stream=stream, activationLagCount="2")
    assert (await scaler.sample(0.0)).value == 0.0
    for n in range(3):
        await db.xadd(stream, {"n": n})
    sample = await scaler.sample(1.0)
    assert (sample.value, sample.active) == (3.0, True)
    await scaler.aclose()


async def test_pending_entries_mode(
    redis_server: RedisServer, db: aioredis.Redis, pool: ClientPool
) -> None:
    stream = _key("pending")
    for n in range(5):
        await db.xadd(stream, {"n": n})
    await db.xgroup_create(stream, "workers", id="0")
    scaler = await _streams(redis_server, pool, stream=stream, consumerGroup="workers")
    assert scaler.mode == "pending"
    assert (await scaler.sample(0.0)).value == 0.0  # nothing delivered yet
    delivered = await db.xreadgroup("workers", "c1", {stream: ">"}, count=3)
    ids = [entry_id for entry_id, _ in delivered[0][1]]
    assert (await scaler.sample(1.0)).value == 3.0
    await db.xack(stream, "workers", ids[0])
    sample = await scaler.sample(2.0)
    assert (sample.value, sample.active) == (2.0, True)
    await scaler.aclose()


async def test_pending_mode_on_a_missing_group_is_a_query_error(
    redis_server: RedisServer, pool: ClientPool
) -> None:
    scaler = await _streams(redis_server, pool, stream=_key("nogroup"), consumerGroup="g")
    with pytest.raises(QueryError, match="NOGROUP"):
        await scaler.sample(0.0)
    await scaler.aclose()


async def test_lag_mode(redis_server: RedisServer, db: aioredis.Redis, pool: ClientPool) -> None:
    stream = _key("lag")
    scaler = await _streams(
        redis_server, pool, stream=stream, consumerGroup="g", lagCount="10", activationLagCount="1"
    )
    assert scaler.mode == "lag"
    missing = await scaler.sample(0.0)
    assert (missing.value, missing.active) == (0.0, False)  # no stream yet
    for n in range(5):
        await db.xadd(stream, {"n": n})
    assert (await scaler.sample(1.0)).value == 5.0  # no group yet: the stream length
    await db.xgroup_create(stream, "g", id="0")
    await db.xreadgroup("g", "c1", {stream: ">"}, count=4)
    one_left = await scaler.sample(2.0)
    assert (one_left.value, one_left.active) == (1.0, False)  # lag 1 is not > 1
    await db.xreadgroup("g", "c1", {stream: ">"}, count=10)
    assert (await scaler.sample(3.0)).value == 0.0
    await scaler.aclose()


async def test_lag_mode_uses_the_length_when_redis_cannot_tell(
    redis_server: RedisServer, db: aioredis.Redis, pool: ClientPool
) -> None:
    """After XDEL inside the unread range Redis reports lag as nil: never read it as 0."""
    stream = _key("lagnil")
    ids = [await db.xadd(stream, {"n": n}) for n in range(6)]
    await db.xgroup_create(stream, "g", id="0")
    await db.xreadgroup("g", "c1", {stream: ">"}, count=1)
    await db.xdel(stream, ids[3])
    groups = await db.xinfo_groups(stream)
    assert groups[0]["lag"] is None
    scaler = await _streams(redis_server, pool, stream=stream, consumerGroup="g", lagCount="5")
    sample = await scaler.sample(0.0)
    assert (sample.value, sample.active) == (5.0, True)
    await scaler.aclose()


async def test_server_killed_is_a_scaler_error_then_recovers(
    redis_factory: Callable[..., RedisServer], pool: ClientPool
) -> None:
    server = redis_factory()
    key = _key("kill")
    scaler = _lists(server, pool, listName=key)
    assert (await scaler.sample(0.0)).value == 0.0
    server.kill()
    with pytest.raises(ScalerError) as info:
        await scaler.sample(1.0)
    assert not isinstance(info.value, QueryError)
    server.restart()  # empty, and its script cache is gone
    client = aioredis.Redis(host=server.host, port=server.port)
    await client.rpush(key, "a", "b")
    await client.aclose()
    assert (await scaler.sample(2.0)).value == 2.0
    await scaler.aclose()


@pytest.mark.parametrize(
    ("auth", "fragment"),
    [
        pytest.param({"password": "wrong-password-123"}, "authentication failed", id="wrong"),
        pytest.param({}, "authentication failed", id="missing"),
    ],
)
async def test_bad_password_is_a_scaler_error_without_the_secret(
    redis_factory: Callable[..., RedisServer],
    pool: ClientPool,
    auth: dict[str, str],
    fragment: str,
) -> None:
    server = redis_factory(password="right-password-456")
    scaler = build_scaler(_trigger("redis", server, {"listName": "q"}, auth), pool)
    with pytest.raises(ScalerError) as info:
        await scaler.sample(0.0)
    assert fragment in str(info.value)
    assert "wrong-password-123" not in str(info.value)
    assert "right-password-456" not in str(info.value)
    await scaler.aclose()
    good = build_scaler(
        _trigger("redis", server, {"listName": "q"}, {"password": "right-password-456"}), pool
    )
    assert (await good.sample(0.0)).value == 0.0
    await good.aclose()


async def test_connection_refused_is_a_scaler_error(pool: ClientPool) -> None:
    from localenv.process import free_port

    trigger = TriggerContext(
        "ns", "so", 0, "redis", "", {"address": f"127.0.0.1:{free_port()}", "listName": "q"}
    )
    scaler = build_scaler(trigger, pool)
    with pytest.raises(ScalerError, match="connection failed"):
        await scaler.sample(0.0)
    await scaler.aclose()


# -- push: keyspace notifications ----------------------------------------------------------------

# Bounds a wait for an item that must come; a hang guard, never a measured speed. The event the
# tests push after the first item reaches a live subscription at once; one pushed before the
# SUBSCRIBE took effect is lost for good, so the wait would run out whatever its length.
PUSH_GUARD = 10.0


async def test_push_first_item_means_subscribed(
    redis_server: RedisServer, db: aioredis.Redis, pool: ClientPool
) -> None:
    """`wakeups()` yields once when the server has confirmed the SUBSCRIBE, before any event:
    one RPUSH right after that first item wakes the next. (Before, the first item was the first
    event's, and the core reported the subscription up before it existed.)"""
    key = _key("push")
    scaler = _lists(redis_server, pool, listName=key)
    wakeups = scaler.wakeups()
    try:
        await asyncio.wait_for(anext(wakeups), PUSH_GUARD)  # subscribed; nothing was pushed
        await db.rpush(key, "x")
        await asyncio.wait_for(anext(wakeups), PUSH_GUARD)
        pending = asyncio.ensure_future(anext(wakeups))
        await asyncio.sleep(0.5)
        assert not pending.done()  # one event, one wake-up: the first item was not an event
        pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)
    finally:
        await wakeups.aclose()  # type: ignore[attr-defined]
    await scaler.aclose()
    assert len(pool) == 0


async def test_push_watchers_starting_together_share_one_subscribe(
    redis_server: RedisServer, db: aioredis.Redis, pool: ClientPool
) -> None:
    """50 objects whose push starts in the same moment (a daemon starting with 1000) send their
    channels in one SUBSCRIBE command, not one each after the previous one's reply (counted by
    the server: INFO commandstats); each is still woken by its own key only."""
    keys = [_key("many") for _ in range(50)]
    scalers = [_lists(redis_server, pool, listName=k) for k in keys]
    iters = [s.wakeups() for s in scalers]

    async def subscribes() -> int:
        stats = await db.info("commandstats")
        return int(stats.get("cmdstat_subscribe", {}).get("calls", 0))

    before = await subscribes()
    try:
        await asyncio.wait_for(asyncio.gather(*(anext(w) for w in iters)), PUSH_GUARD)
        # The hub's own first SUBSCRIBE (a placeholder channel), then the 50 keys' in one.
        assert await subscribes() - before == 2
        await db.rpush(keys[7], "x")
        await asyncio.wait_for(anext(iters[7]), PUSH_GUARD)
        others = [asyncio.ensure_future(anext(w)) for i, w in enumerate(iters) if i != 7]
        await asyncio.sleep(0.3)
        assert not any(o.done() for o in others)  # nobody else's key changed
        for o in others:
            o.cancel()
        await asyncio.gather(*others, return_exceptions=True)
    finally:
        for w in iters:
            await w.aclose()  # type: ignore[attr-defined]
    for s in scalers:
        await s.aclose()
    assert len(pool) == 0


async def test_push_second_subscriber_of_a_live_channel_is_subscribed_at_once(
    redis_server: RedisServer, db: aioredis.Redis, pool: ClientPool
) -> None:
    """The shared hub already has the key's channel: a second watcher's first item comes at
    once, and one RPUSH after it wakes both."""
    key = _key("push")
    first, second = (_lists(redis_server, pool, listName=key) for _ in range(2))
    a, b = first.wakeups(), second.wakeups()
    try:
        await asyncio.wait_for(anext(a), PUSH_GUARD)
        await asyncio.wait_for(anext(b), PUSH_GUARD)
        assert len(pool) == 1  # one keyspace connection for both
        await db.rpush(key, "x")
        await asyncio.wait_for(asyncio.gather(anext(a), anext(b)), PUSH_GUARD)
    finally:
        await a.aclose()  # type: ignore[attr-defined]
        await b.aclose()  # type: ignore[attr-defined]
    await first.aclose()
    await second.aclose()
    assert len(pool) == 0
