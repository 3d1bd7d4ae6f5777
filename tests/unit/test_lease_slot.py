"""LeaseSlot (scaler/lease_slot.py) on a real ClientPool, with clients the test makes on cue.

The factories here wait for an asyncio.Event so the test can close the slot, or start a second
first use, at the exact moment the pool is still creating the client: a real broker cannot be
held at that point on demand. tests/integration/test_lease_on_close.py does the same through
every scaler against its real component.
"""

from __future__ import annotations

import asyncio

import pytest

from scaler.clients import ClientKey, ClientPool
from scaler.errors import ScalerError
from scaler.lease_slot import LeaseSlot

KEY = ClientKey("test", "127.0.0.1:1")


class Maker:
    """Makes numbered clients once `go` is set; records which were closed."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.made = 0
        self.closed: list[int] = []

    async def make(self) -> int:
        await self.go.wait()
        self.made += 1
        return self.made

    async def close(self, client: int) -> None:
        self.closed.append(client)


async def _until_waiting(pool: ClientPool) -> None:
    for _ in range(100):
        if len(pool):
            return
        await asyncio.sleep(0)
    raise AssertionError("the first take never reached the pool")


async def test_released_while_the_client_is_made_releases_the_lease_it_then_gets() -> None:
    pool, maker = ClientPool(), Maker()
    slot = LeaseSlot(pool, "test 127.0.0.1:1", KEY, maker.make, maker.close)
    first = asyncio.create_task(slot.take())
    await _until_waiting(pool)
    await slot.release()  # the holder closes while the pool is still making the client
    maker.go.set()
    with pytest.raises(ScalerError, match=r"^test 127\.0\.0\.1:1: the scaler is closed$"):
        await first
    assert len(pool) == 0
    assert maker.closed == [1]  # the client made for nobody is closed, not kept


async def test_two_first_uses_at_once_keep_one_lease() -> None:
    pool, maker = ClientPool(), Maker()
    slot = LeaseSlot(pool, "test", KEY, maker.make, maker.close)
    takes = [asyncio.create_task(slot.take()) for _ in range(2)]
    await _until_waiting(pool)
    maker.go.set()
    assert await asyncio.gather(*takes) == [1, 1]
    assert pool.refs(KEY) == 1  # one lease, not one per concurrent first use
    assert slot.client == 1
    await slot.release()
    assert (len(pool), maker.closed, slot.client) == (0, [1], None)


async def test_a_held_client_is_reused_and_a_released_slot_takes_nothing() -> None:
    pool, maker = ClientPool(), Maker()
    maker.go.set()
    slot = LeaseSlot(pool, "test", KEY, maker.make, maker.close)
    assert slot.client is None
    assert [await slot.take() for _ in range(3)] == [1, 1, 1]
    assert (maker.made, pool.refs(KEY)) == (1, 1)
    await slot.release()
    await slot.release()  # twice is harmless
    with pytest.raises(ScalerError, match="closed"):
        await slot.take()
    assert (slot.closed, len(pool), maker.made) == (True, 0, 1)


async def test_a_failed_creation_holds_nothing_and_the_next_take_tries_again() -> None:
    pool = ClientPool()
    attempts = 0

    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise OSError("connection refused")
        return "client"

    async def close(_client: str) -> None:
        return None

    slot = LeaseSlot(pool, "test", KEY, flaky, close)
    with pytest.raises(OSError, match="refused"):
        await slot.take()
    assert (slot.client, len(pool)) == (None, 0)
    assert await slot.take() == "client"
    assert (attempts, pool.refs(KEY)) == (2, 1)
    await slot.release()
    assert len(pool) == 0
