"""Making Redis clients and connections costs the event loop no package-metadata read: redis-py
reads its own version (importlib.metadata, ~0.7 ms) for every client and connection object
unless it is handed the driver metadata; with 1000 failing TLS objects rebuilt every 30 s that
was most of the loop (benchmarks/tls_lateness.py). Against a real server."""

from __future__ import annotations

import pytest
import redis.utils

from localenv.redis import RedisServer
from scalers.redis_common import RedisTarget, close_client, create_client, driver_info


def target(port: int) -> RedisTarget:
    return RedisTarget(
        mode="single",
        addresses=(("127.0.0.1", port),),
        db=0,
        username=None,
        password=None,
        sentinel_username=None,
        sentinel_password=None,
        sentinel_master=None,
        tls=None,
        timeout=2.0,
    )


async def test_clients_and_connections_read_no_package_metadata(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver_info()  # made once per process (at the first client)
    reads: list[str] = []
    real = redis.utils.get_lib_version

    def counted() -> str:
        reads.append("version")
        return str(real())

    monkeypatch.setattr(redis.utils, "get_lib_version", counted)
    clients = [await create_client(target(redis_server.port)) for _ in range(5)]
    try:
        for client in clients:
            assert await client.ping() is True
            pubsub = client.pubsub()  # the push hub's connection
            await pubsub.subscribe("tidal-test")
            await pubsub.aclose()
        shared = clients[0].connection_pool.connection_kwargs["driver_info"]
    finally:
        for client in clients:
            await close_client(client)
    assert reads == []
    # The same metadata as redis-py's default (sent with CLIENT SETINFO on Redis >= 7.2).
    assert shared is driver_info()
    assert (shared.name, shared.lib_version) == ("redis-py", real())
