"""A redis scaler closed while its first query is still taking the shared client leaves no
client behind (against a real server).

The daemon closes a scaler when its object is edited or deleted; its first poll may be waiting
for the pool to create the shared client at that moment. The lease that poll then received used
to be kept by a closed scaler that would never release it: one client and its connections per
such race, found by tests/e2e/test_safety_churn.py under load in CI.
"""

from __future__ import annotations

import asyncio

import pytest

from localenv.redis import RedisServer
from scaler.clients import ClientPool
from scaler.errors import ScalerError
from scalers.redis_reads import LuaScript, RedisConnection
from tests.integration.test_redis_client_setup import target

PING = LuaScript("return 1")


async def test_closing_while_the_first_query_takes_the_client_releases_it(
    redis_server: RedisServer,
) -> None:
    pool = ClientPool()
    conn = RedisConnection(target(redis_server.port), pool)
    query = asyncio.create_task(conn.run(PING, []))
    await asyncio.sleep(0)  # the query waits for the pool to create the shared client
    assert len(pool) == 1
    await conn.aclose()
    with pytest.raises(ScalerError, match="closed"):
        await query
    assert len(pool) == 0  # released: nothing holds the client or its connections


async def test_a_query_before_close_keeps_one_lease_and_close_releases_it(
    redis_server: RedisServer,
) -> None:
    pool = ClientPool()
    conns = [RedisConnection(target(redis_server.port), pool) for _ in range(3)]
    assert await asyncio.gather(*(c.run(PING, []) for c in conns)) == [1, 1, 1]
    key = target(redis_server.port).key()
    assert len(pool) == 1  # one shared client...
    assert pool.refs(key) == 3  # ...and one lease per scaler
    for c in conns:
        await c.aclose()
    assert len(pool) == 0
