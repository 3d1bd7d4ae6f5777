"""One holder's lease on a shared client, taken on first use and released when the holder closes.

A scaler takes its `Lease` (scaler.clients) lazily, on its first sample, and the pool may need a
while to create the client: the daemon can close the scaler (its object was edited or deleted)
in that time, and a wake-up stream can make a second first use at once. A plain
``self._lease = await pool.acquire(...)`` then keeps a lease that nobody releases: one client and
its connections per race (tests/e2e/test_safety_churn.py found one under load). `LeaseSlot` takes
the lease and, when it arrives, releases it again if the holder closed meanwhile (the first use
fails with ScalerError "... the scaler is closed") or if a concurrent first use already holds one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from scaler.clients import ClientKey, ClientPool, Lease
from scaler.errors import ScalerError

T = TypeVar("T")


class LeaseSlot(Generic[T]):
    """At most one lease for one holder; `release()` ends the slot for good."""

    __slots__ = ("_close", "_closed", "_factory", "_key", "_lease", "_owner", "_pool")

    def __init__(
        self,
        pool: ClientPool,
        owner: str,
        key: ClientKey,
        factory: Callable[[], Awaitable[T]],
        close: Callable[[T], Awaitable[None]],
    ) -> None:
        """`owner` names the holder in the error ("redis 127.0.0.1:6379"); `key`, `factory`
        and `close` are what `ClientPool.acquire` takes, fixed here so a sample that finds the
        client held computes nothing (a key's credential fingerprint is a SHA-256)."""
        self._pool = pool
        self._owner = owner
        self._key = key
        self._factory = factory
        self._close = close
        self._lease: Lease[T] | None = None
        self._closed = False

    @property
    def client(self) -> T | None:
        """The shared client once taken (None before the first use and after release)."""
        return None if self._lease is None else self._lease.client

    @property
    def closed(self) -> bool:
        return self._closed

    async def take(self) -> T:
        """The held client, or a lease on the shared client (see ClientPool.acquire);
        ScalerError once the slot is released, also when that happened while waiting here."""
        if self._lease is not None:
            return self._lease.client
        if self._closed:
            raise self._closed_error()
        return await self._keep(await self._pool.acquire(self._key, self._factory, self._close))

    async def _keep(self, lease: Lease[T]) -> T:
        """Hold `lease`, unless it would never be released then: the slot was released while
        it was being taken, or a concurrent first use holds one already."""
        if self._closed or self._lease is not None:
            await lease.release()
            held = self._lease  # None once released
            if held is None:
                raise self._closed_error()
            return held.client
        self._lease = lease
        return lease.client

    async def release(self) -> None:
        """Release the lease (if any); every later `take()` raises."""
        self._closed = True
        lease, self._lease = self._lease, None
        if lease is not None:
            await lease.release()

    def _closed_error(self) -> ScalerError:
        return ScalerError(f"{self._owner}: the scaler is closed")
