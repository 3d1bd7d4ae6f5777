"""Redis list and stream scalers against a real Redis Cluster, Sentinel and TLS-only server.

Scalers are built the way the daemon builds them: the default registry, a TriggerContext and a
ClientPool. Components come from localenv.redis_cluster, one private instance per test.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode
from redis.crc import key_slot

from localenv.redis_cluster import RedisCluster, RedisSentinel, RedisTLSServer, command
from scaler.clients import ClientPool
from scaler.contract import TriggerContext
from scaler.errors import QueryError, ScalerError, UnsupportedError
from scaler.registry import default_registry
from scalers.redis_lists import RedisListScaler
from scalers.redis_streams import RedisStreamsScaler

_instances = itertools.count(1)


@pytest.fixture
def redis_cluster(run_dir: Path) -> Iterator[RedisCluster]:
    """A private 3-master cluster (no replicas), stopped when the test ends."""
    cluster = RedisCluster(run_dir, name=f"redis-cluster-{next(_instances)}")
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def redis_sentinel(run_dir: Path) -> Iterator[RedisSentinel]:
    """A private master + sentinel monitoring it as `mymaster`."""
    sentinel = RedisSentinel(run_dir, name=f"redis-sentinel-{next(_instances)}")
    try:
        yield sentinel.start()
    finally:
        sentinel.stop()


@pytest.fixture
def redis_tls(run_dir: Path) -> Iterator[RedisTLSServer]:
    """A private Redis listening only on TLS, its cert from a fresh CA (`ca_pem`)."""
    server = RedisTLSServer(run_dir, name=f"redis-tls-{next(_instances)}")
    try:
        yield server.start()
    finally:
        server.stop()


def _build(
    kind: str,
    metadata: dict[str, str],
    pool: ClientPool,
    auth: dict[str, str] | None = None,
    index: int = 0,
) -> Any:
    trigger = TriggerContext("ns", "so", index, kind, "", metadata, auth_params=auth or {})
    return default_registry().build(trigger, pool)


def _keys_per_node(cluster: RedisCluster, prefix: str) -> list[str]:
    """One fresh key for each cluster node, in node order (so every node gets a read)."""
    found: dict[int, str] = {}
    tag = uuid.uuid4().hex[:8]
    for n in itertools.count():
        key = f"{prefix}-{tag}-{n}"
        found.setdefault(cluster.node_for_slot(key_slot(key.encode())), key)
        if len(found) == len(cluster.nodes):
            return [found[i] for i in range(len(cluster.nodes))]
    raise AssertionError("unreachable")


@pytest.fixture
async def cluster_db(redis_cluster: RedisCluster) -> AsyncIterator[aioredis.RedisCluster]:
    nodes = [ClusterNode("127.0.0.1", node.port) for node in redis_cluster.nodes]
    client = aioredis.RedisCluster(startup_nodes=nodes, decode_responses=True)
    yield client
    await client.aclose()


# ---------------------------------------------------------------- redis-cluster


@pytest.mark.parametrize(
    "connection",
    [
        pytest.param("addresses", id="addresses"),
        pytest.param("hosts-ports", id="hosts-and-ports"),
    ],
)
async def test_cluster_list_lengths_from_every_node(
    redis_cluster: RedisCluster,
    cluster_db: aioredis.RedisCluster,
    pool: ClientPool,
    connection: str,
) -> None:
    keys = _keys_per_node(redis_cluster, "clist")
    for n, key in enumerate(keys):
        await cluster_db.rpush(key, *range(n + 2))  # 2, 3, 4 items
    for node, key in zip(redis_cluster.nodes, keys, strict=True):  # really on different nodes
        assert command(node.port, "EXISTS", key) == 1
    if connection == "addresses":
        conn = {"addresses": redis_cluster.address}
    else:
        conn = {
            "hosts": ",".join("127.0.0.1" for _ in redis_cluster.nodes),
            "ports": ",".join(str(node.port) for node in redis_cluster.nodes),
        }
    scalers = [
        _build("redis-cluster", {**conn, "listName": k, "activationListLength": "2"}, pool)
        for k in keys
    ]
    assert all(isinstance(s, RedisListScaler) for s in scalers)
    samples = await asyncio.gather(*(s.sample(10.0) for s in scalers))  # one tick, 3 nodes
    assert [(s.value, s.active) for s in samples] == [(2.0, False), (3.0, True), (4.0, True)]
    assert len(pool) == 1  # one cluster client shared by the three scalers
    await cluster_db.lpop(keys[2])
    again = await asyncio.gather(*(s.sample(11.0) for s in scalers))
    assert [s.value for s in again] == [2.0, 3.0, 3.0]
    for scaler in scalers:
        await scaler.aclose()
    assert len(pool) == 0


async def test_cluster_key_types_and_errors(
    redis_cluster: RedisCluster, cluster_db: aioredis.RedisCluster, pool: ClientPool
) -> None:
    zset, string, missing = _keys_per_node(redis_cluster, "ctype")
    await cluster_db.zadd(zset, {"a": 1, "b": 2})
    await cluster_db.set(string, "x")
    meta = {"addresses": redis_cluster.address}
    by_key = {k: _build("redis-cluster", {**meta, "listName": k}, pool) for k in (zset, missing)}
    assert (await by_key[zset].sample(0.0)).value == 2.0
    assert (await by_key[missing].sample(0.0)).value == 0.0
    wrong = _build("redis-cluster", {**meta, "listName": string}, pool)
    with pytest.raises(QueryError, match="unsupported type string"):
        await wrong.sample(0.0)
    for scaler in (*by_key.values(), wrong):
        await scaler.aclose()


async def test_cluster_streams_in_every_mode(
    redis_cluster: RedisCluster, cluster_db: aioredis.RedisCluster, pool: ClientPool
) -> None:
    xlen_key, pending_key, lag_key = _keys_per_node(redis_cluster, "cstream")
    for n in range(6):
        for stream in (xlen_key, pending_key, lag_key):
            await cluster_db.xadd(stream, {"n": n})
    delivered: dict[str, list[str]] = {}
    for stream in (pending_key, lag_key):
        await cluster_db.xgroup_create(stream, "g", id="0")
        read = await cluster_db.xreadgroup("g", "c1", {stream: ">"}, count=4)
        delivered[stream] = [entry_id for entry_id, _ in read[0][1]]
    await cluster_db.xack(pending_key, "g", delivered[pending_key][0])
    meta = {"addresses": redis_cluster.address}
    xlen = _build("redis-cluster-streams", {**meta, "stream": xlen_key}, pool)
    pending = _build(
        "redis-cluster-streams", {**meta, "stream": pending_key, "consumerGroup": "g"}, pool
    )
    lag = _build(
        "redis-cluster-streams",
        {**meta, "stream": lag_key, "consumerGroup": "g", "lagCount": "3"},
        pool,
    )
    assert all(isinstance(s, RedisStreamsScaler) for s in (xlen, pending, lag))
    assert (xlen.mode, pending.mode, lag.mode) == ("xlen", "pending", "lag")
    samples = await asyncio.gather(xlen.sample(0.0), pending.sample(0.0), lag.sample(0.0))
    assert [s.value for s in samples] == [6.0, 3.0, 2.0]  # 6 entries; 4 read - 1 acked; 6 - 4
    for scaler in (xlen, pending, lag):
        await scaler.aclose()


@pytest.mark.parametrize(
    "killed",
    [
        pytest.param(2, id="master-of-the-last-slots"),
        pytest.param(0, id="master-of-slot-0"),
    ],
)
async def test_cluster_master_killed_is_an_error_never_0_then_recovers(
    redis_cluster: RedisCluster,
    cluster_db: aioredis.RedisCluster,
    pool: ClientPool,
    killed: int,
) -> None:
    """No replicas, so nothing fails over: the killed master's keys read as ScalerError.

    The other masters keep serving their slots (`cluster-require-full-coverage no`), and the
    scaler re-sends a failed cluster pipeline node by node, so a live key read in the same tick
    as a dead one still gets its value. One redis-py limitation: each re-initialisation of its
    slot map sends COMMAND to the first primary it lists (the owner of slot 0); while that
    master is down the client cannot re-initialise and every read through it may fail. Those
    reads are ScalerErrors too (the value is held, never read as 0); the test accepts exactly
    "the right value or a ScalerError" for live keys in that case.
    """
    keys = _keys_per_node(redis_cluster, "ckill")
    on_dead, on_live = keys[killed], keys[1]
    await cluster_db.rpush(on_dead, "a", "b", "c")
    await cluster_db.rpush(on_live, "a", "b")
    meta = {"addresses": redis_cluster.address}
    dead = _build("redis-cluster", {**meta, "listName": on_dead}, pool)
    live = _build("redis-cluster", {**meta, "listName": on_live}, pool)
    assert (await dead.sample(0.0)).value == 3.0
    assert (await live.sample(0.0)).value == 2.0

    redis_cluster.kill(killed)
    for tick in range(1, 4):
        dead_result, live_result = await asyncio.gather(
            dead.sample(float(tick)), live.sample(float(tick)), return_exceptions=True
        )
        assert isinstance(dead_result, ScalerError)
        assert not isinstance(dead_result, QueryError)
        assert "connection failed" in str(dead_result)
        if killed != 0:
            assert not isinstance(live_result, BaseException)
            assert live_result.value == 2.0
        elif isinstance(live_result, BaseException):
            assert isinstance(live_result, ScalerError)
            assert not isinstance(live_result, QueryError)
        else:
            assert live_result.value == 2.0

    redis_cluster.restart(killed)  # same port and slots, empty, script cache gone
    await cluster_db.rpush(on_dead, "x")
    recovered = await asyncio.gather(dead.sample(9.0), live.sample(9.0))
    assert [s.value for s in recovered] == [1.0, 2.0]
    await dead.aclose()
    await live.aclose()


async def test_cluster_rejects_a_database_index(
    redis_cluster: RedisCluster, pool: ClientPool
) -> None:
    from scaler.errors import ConfigError

    with pytest.raises(ConfigError, match="databaseIndex is not supported"):
        _build(
            "redis-cluster",
            {"addresses": redis_cluster.address, "listName": "q", "databaseIndex": "1"},
            pool,
        )


# ---------------------------------------------------------------- redis-sentinel


def _sentinel_meta(sentinel: RedisSentinel, **extra: str) -> dict[str, str]:
    return {"address": sentinel.address, "sentinelMaster": sentinel.master_name, **extra}


@pytest.fixture
async def sentinel_db(redis_sentinel: RedisSentinel) -> AsyncIterator[aioredis.Redis]:
    """A plain client on the master itself (to prove the scaler read the right server)."""
    client = aioredis.Redis(
        host="127.0.0.1", port=redis_sentinel.master_port, decode_responses=True
    )
    yield client
    await client.aclose()


async def test_sentinel_list_and_stream_through_the_sentinel(
    redis_sentinel: RedisSentinel, sentinel_db: aioredis.Redis, pool: ClientPool
) -> None:
    key, stream = f"slist-{uuid.uuid4().hex[:8]}", f"sstream-{uuid.uuid4().hex[:8]}"
    await sentinel_db.rpush(key, *range(7))
    for n in range(4):
        await sentinel_db.xadd(stream, {"n": n})
    await sentinel_db.xgroup_create(stream, "g", id="0")
    await sentinel_db.xreadgroup("g", "c1", {stream: ">"}, count=1)
    lists = _build(
        "redis-sentinel", _sentinel_meta(redis_sentinel, listName=key, listLength="2"), pool
    )
    lag = _build(
        "redis-sentinel-streams",
        _sentinel_meta(redis_sentinel, stream=stream, consumerGroup="g", lagCount="2"),
        pool,
    )
    assert isinstance(lists, RedisListScaler)
    assert isinstance(lag, RedisStreamsScaler)
    assert lists.target.mode == "sentinel"
    list_sample, lag_sample = await asyncio.gather(lists.sample(5.0), lag.sample(5.0))
    assert (list_sample.value, list_sample.active) == (7.0, True)
    assert (lag_sample.value, lag_sample.active) == (3.0, True)
    assert len(pool) == 1
    await lists.aclose()
    await lag.aclose()


@pytest.mark.parametrize(
    ("master", "fragment"),
    [
        pytest.param("othermaster", "connection failed", id="unknown-master-name"),
    ],
)
async def test_sentinel_unknown_master_is_a_scaler_error(
    redis_sentinel: RedisSentinel, pool: ClientPool, master: str, fragment: str
) -> None:
    scaler = _build(
        "redis-sentinel",
        {"address": redis_sentinel.address, "sentinelMaster": master, "listName": "q"},
        pool,
    )
    with pytest.raises(ScalerError, match=fragment) as info:
        await scaler.sample(0.0)
    assert not isinstance(info.value, QueryError)
    await scaler.aclose()


async def test_sentinel_master_killed_is_a_scaler_error_then_recovers(
    redis_sentinel: RedisSentinel, pool: ClientPool
) -> None:
    key = f"skill-{uuid.uuid4().hex[:8]}"
    scaler = _build("redis-sentinel", _sentinel_meta(redis_sentinel, listName=key), pool)
    assert (await scaler.sample(0.0)).value == 0.0
    redis_sentinel.kill_master()
    with pytest.raises(ScalerError) as info:
        await scaler.sample(1.0)
    assert not isinstance(info.value, QueryError)
    redis_sentinel.restart_master()
    client = aioredis.Redis(host="127.0.0.1", port=redis_sentinel.master_port)
    await client.rpush(key, "a", "b")
    await client.aclose()
    assert (await scaler.sample(2.0)).value == 2.0
    await scaler.aclose()


# ---------------------------------------------------------------- TLS


@pytest.mark.parametrize(
    ("metadata", "auth"),
    [
        pytest.param({}, {"tls": "enable", "ca": "CA"}, id="auth-tls-with-ca"),
        pytest.param({"enableTLS": "true"}, {"ca": "CA"}, id="metadata-enableTLS-with-ca"),
        pytest.param({"unsafeSsl": "true"}, {"tls": "enable"}, id="unsafeSsl-without-ca"),
    ],
)
async def test_tls_list_and_stream(
    redis_tls: RedisTLSServer,
    pool: ClientPool,
    metadata: dict[str, str],
    auth: dict[str, str],
) -> None:
    auth = {k: (redis_tls.ca_pem if v == "CA" else v) for k, v in auth.items()}
    key, stream = f"tlist-{uuid.uuid4().hex[:8]}", f"tstream-{uuid.uuid4().hex[:8]}"
    setup = aioredis.Redis(
        host="127.0.0.1", port=redis_tls.port, ssl=True, ssl_ca_data=redis_tls.ca_pem
    )
    await setup.rpush(key, "a", "b", "c")
    await setup.xadd(stream, {"n": "1"})
    await setup.aclose()
    meta = {"address": redis_tls.address, **metadata}
    lists = _build("redis", {**meta, "listName": key}, pool, auth)
    streams = _build("redis-streams", {**meta, "stream": stream}, pool, auth)
    list_sample, stream_sample = await asyncio.gather(lists.sample(0.0), streams.sample(0.0))
    assert (list_sample.value, stream_sample.value) == (3.0, 1.0)
    assert lists.target.tls is not None
    await lists.aclose()
    await streams.aclose()


@pytest.mark.parametrize(
    ("metadata", "auth"),
    [
        pytest.param({}, {"tls": "enable", "ca": "OTHER-CA"}, id="wrong-ca"),
        pytest.param({}, {"tls": "enable"}, id="no-ca-verifies-against-system-store"),
        pytest.param({}, {}, id="plain-text-client-on-tls-port"),
    ],
)
async def test_tls_trust_failures_are_scaler_errors(
    redis_tls: RedisTLSServer,
    pool: ClientPool,
    metadata: dict[str, str],
    auth: dict[str, str],
) -> None:
    from localenv.certs import new_ca

    other_ca = new_ca("not-the-redis-ca").cert_pem.decode()
    auth = {k: (other_ca if v == "OTHER-CA" else v) for k, v in auth.items()}
    scaler = _build(
        "redis", {"address": redis_tls.address, "listName": "q", **metadata}, pool, auth
    )
    with pytest.raises(ScalerError) as info:
        await scaler.sample(0.0)
    assert not isinstance(info.value, QueryError)
    assert "BEGIN CERTIFICATE" not in str(info.value)
    await scaler.aclose()


# ---------------------------------------------------------------- push wake-ups


@pytest.mark.parametrize(
    "variant", [pytest.param("cluster", id="cluster"), pytest.param("sentinel", id="sentinel")]
)
async def test_push_wakeups_are_unsupported_for_cluster_and_sentinel(
    request: pytest.FixtureRequest, pool: ClientPool, variant: str
) -> None:
    if variant == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        scaler = _build("redis-cluster", {"addresses": cluster.address, "listName": "q"}, pool)
    else:
        sentinel: RedisSentinel = request.getfixturevalue("redis_sentinel")
        scaler = _build("redis-sentinel", _sentinel_meta(sentinel, listName="q"), pool)
    wakeups = scaler.wakeups()
    with pytest.raises(UnsupportedError, match="single Redis server"):
        await anext(wakeups)
    assert (await scaler.sample(0.0)).value == 0.0  # polling still works
    await scaler.aclose()
