"""`push_loop`: `tidal_push_subscription_up` is 1 only once the scaler's `wakeups()` iterator has
yielded its first item ("subscribed"), and that item wakes the object once.

The scaler here is a fake ON PURPOSE: the test must decide exactly when the subscription becomes
live (and when it breaks), which a real broker never lets a test hold still. What each real
`wakeups()` yields first is tested against the real servers in tests/integration
(``test_*first_item_means_subscribed``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Callable

import pytest

from scaler.contract import MetricSpec, PushScaler, Sample
from scaler.errors import ScalerError, UnsupportedError
from scaler.kube.watch import Backoff
from scaler.objects import Trigger
from scaler.push import push_loop
from scaler.runtime import TriggerRuntime
from scaler.telemetry import Telemetry

KEY = ("ns", "worker")
GUARD = 10.0  # a hang guard for conditions that must become true; never a measured speed


class GatedScaler:
    """A push scaler whose subscription goes live when the test sets `live`; `events` feeds
    hints (None) or a failure to raise (the subscription breaks)."""

    def __init__(self, *, unsupported: bool = False) -> None:
        self.live = asyncio.Event()
        self.events: asyncio.Queue[BaseException | None] = asyncio.Queue()
        self.subscriptions = 0  # wakeups() calls
        self._unsupported = unsupported

    def metric_spec(self) -> MetricSpec:
        return MetricSpec("s0-fake", 1.0)

    async def sample(self, now: float) -> Sample:
        return Sample(0.0, False, now)

    async def aclose(self) -> None:
        pass

    def wakeups(self) -> AsyncIterator[None]:
        self.subscriptions += 1
        if self._unsupported:
            raise UnsupportedError("fake: cannot push")
        return self._wakeups()

    async def _wakeups(self) -> AsyncGenerator[None, None]:
        await self.live.wait()  # connecting, subscribing...
        yield None  # subscribed
        while True:
            item = await self.events.get()
            if item is not None:
                self.live.clear()
                raise item
            yield None


class Loop:
    """A running push_loop over a GatedScaler, with its gauge and the wake-ups it made."""

    def __init__(self, scaler: GatedScaler) -> None:
        assert isinstance(scaler, PushScaler)
        self.scaler = scaler
        self.telemetry = Telemetry()
        self.woken: list[tuple[str, str]] = []
        trig = TriggerRuntime(Trigger(0, "fake"), scaler.metric_spec(), scaler)
        self.task = asyncio.create_task(
            push_loop(KEY, trig, wake=self.woken.append, telemetry=self.telemetry, recheck=60.0)
        )

    @property
    def up(self) -> float | None:
        labels = {"namespace": KEY[0], "scaledObject": KEY[1], "triggerIndex": "0"}
        return self.telemetry.registry.get_sample_value("tidal_push_subscription_up", labels)

    async def __aenter__(self) -> Loop:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def _until(check: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(GUARD):
            while True:
                if check():
                    return
                await asyncio.sleep(0.005)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


async def _settle() -> None:
    """Let every ready task run until nothing is left to do without the test acting."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_the_gauge_is_up_only_once_subscribed_and_subscribing_wakes_once() -> None:
    scaler = GatedScaler()
    async with Loop(scaler) as loop:
        await _until(lambda: scaler.subscriptions == 1, "wakeups() to be called")
        await _settle()
        # The iterator exists and is being awaited, but the subscription is not in place.
        assert loop.up in (None, 0.0)
        assert loop.woken == []

        scaler.live.set()
        await _until(lambda: loop.up == 1.0, "the gauge to go up")
        await _settle()
        assert loop.woken == [KEY]  # one wake-up: the poll that covers the time before

        scaler.events.put_nowait(None)
        await _until(lambda: len(loop.woken) == 2, "the hint's wake-up")
        assert loop.up == 1.0
    assert loop.up == 0.0  # cancelled: no subscription


async def test_a_broken_subscription_is_down_until_the_new_one_is_in_place(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="scaler.push")
    scaler = GatedScaler()
    async with Loop(scaler) as loop:
        scaler.live.set()
        await _until(lambda: loop.up == 1.0, "the first subscription")
        scaler.events.put_nowait(ScalerError("fake: connection lost"))
        await _until(lambda: loop.up == 0.0, "the gauge to go down")
        assert [r.message for r in caplog.records] == ["push subscription down; polling"]

        # Backoff, then wakeups() again: called, yet not subscribed -- the gauge stays 0.
        await _until(lambda: scaler.subscriptions == 2, "the retry")
        await _settle()
        assert (loop.up, loop.woken) == (0.0, [KEY])

        scaler.live.set()
        await _until(lambda: loop.up == 1.0, "the second subscription")
        await _settle()
        assert loop.woken == [KEY, KEY]  # the re-subscription's poll covers the gap
        assert [r.message for r in caplog.records][-1] == "push subscription restored"


async def test_a_source_that_cannot_push_is_never_up_nor_woken() -> None:
    scaler = GatedScaler(unsupported=True)
    async with Loop(scaler) as loop:
        await _until(lambda: scaler.subscriptions == 1, "wakeups() to be called")
        await _settle()
        assert (loop.up, loop.woken) == (0.0, [])


def test_backoffs_share_one_jitter_source_yet_stay_within_their_bounds() -> None:
    """Every object's push loop holds a Backoff: each one used to seed its own random.Random
    (~2.7 KiB of state, 2.7 MiB at 1000 objects). They now share one; the delays keep their
    bounds (base * 2^n capped, +-50 %) and a test can still pass its own seeded source."""
    a, b = Backoff(base=1.0, cap=30.0), Backoff(base=1.0, cap=30.0)
    assert a.rng is b.rng
    delays = [a.next_delay() for _ in range(8)]
    for n, delay in enumerate(delays):
        bound = min(30.0, 2.0**n)
        assert 0.5 * bound <= delay <= 1.5 * bound
    seeded = Backoff(rng=random.Random(7))
    assert seeded.rng is not a.rng
    assert seeded.next_delay() == Backoff(rng=random.Random(7)).next_delay()


async def test_waiting_to_recheck_an_unsupported_source_keeps_no_exception_alive() -> None:
    """Objects whose source cannot push wait minutes before asking again; the wait used to
    happen inside the except block, keeping the exception, its traceback and their frames
    alive per object for the whole wait."""
    scaler = GatedScaler(unsupported=True)
    async with Loop(scaler) as loop:
        await _until(lambda: scaler.subscriptions == 1, "wakeups() to be called")
        await _settle()
        assert not loop.task.done()  # waiting for the recheck
        gc.collect()
        alive = [
            o
            for o in gc.get_objects()
            if isinstance(o, UnsupportedError) and str(o) == "fake: cannot push"
        ]
        assert alive == []
        assert loop.up == 0.0
