"""ClientPool (scaler/clients.py) at daemon shutdown: `aclose()` closes every shared client once,
and a lease released afterwards (a scaler that closes late) does nothing -- it used to take the
reference count to -1 and close the client a second time (found in review)."""

from __future__ import annotations

from scaler.clients import ClientKey, ClientPool

KEY = ClientKey("test", "127.0.0.1:1")


async def test_a_lease_released_after_the_pool_closed_closes_nothing_again() -> None:
    pool = ClientPool()
    closed: list[str] = []

    async def make() -> str:
        return "client"

    async def close(client: str) -> None:
        closed.append(client)

    first = await pool.acquire(KEY, make, close)
    second = await pool.acquire(KEY, make, close)
    await pool.aclose()
    assert (closed, len(pool)) == (["client"], 0)
    await first.release()
    await second.release()
    assert closed == ["client"]  # closed once, by the pool
    assert pool.refs(KEY) == 0
