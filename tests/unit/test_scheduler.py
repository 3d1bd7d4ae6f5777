"""Scheduler: one heap, coalesced wake-ups, bounded concurrency, lateness. Time is virtual:
a fake clock for the heap operations, and an event loop whose clock jumps forward whenever it
would otherwise sleep (so "10 minutes" of polling runs in milliseconds; no real sleeping)."""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest

from scaler.scheduler import Deadlines, Scheduler

T = TypeVar("T")


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class _JumpingSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """Instead of blocking for `timeout`, move the virtual clock forward by it."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready  # type: ignore[no-any-return]
        if timeout is None:  # nothing scheduled at all: a real (short) wait for I/O
            return super().select(0.05)  # type: ignore[no-any-return]
        self.clock.now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.clock = FakeClock(1000.0)
        super().__init__(_JumpingSelector(self.clock))

    def time(self) -> float:
        return self.clock.now


def run_virtual(main: Callable[[VirtualTimeLoop], Coroutine[Any, Any, T]]) -> T:
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main(loop))
    finally:
        loop.close()


# --------------------------------------------------------------------------- heap operations


def test_keys_come_due_in_order() -> None:
    clock = FakeClock(100.0)
    s: Scheduler[str] = Scheduler(clock)
    s.schedule("b", 105.0, 10)
    s.schedule("a", 101.0, 10)
    s.schedule("c", 120.0, 10)
    assert s.pop_due() == []
    clock.now = 110.0
    assert s.pop_due() == [("a", 101.0), ("b", 105.0)]
    assert s.is_running("a")
    assert s.next_due() == 120.0
    assert len(s) == 3


def test_finished_rearms_one_interval_after_the_start() -> None:
    clock = FakeClock(100.0)
    s: Scheduler[str] = Scheduler(clock)
    s.schedule("a", 100.0, 30)
    [(key, _)] = s.pop_due()
    clock.now = 107.0  # the run took 7 s
    s.finished(key, started=100.0)
    assert s.due_at("a") == 130.0


def test_many_wakeups_before_a_run_are_one_run() -> None:
    clock = FakeClock(100.0)
    s: Scheduler[str] = Scheduler(clock)
    s.schedule("a", 200.0, 100)
    for _ in range(50):
        s.wake("a")
    assert s.pop_due() == [("a", 100.0)]
    assert s.pop_due() == []


def test_wakeup_of_an_already_due_key_keeps_its_due_time() -> None:
    clock = FakeClock(100.0)
    s: Scheduler[str] = Scheduler(clock)
    s.schedule("a", 90.0, 100)
    s.wake("a")
    assert s.pop_due() == [("a", 90.0)]  # lateness still measured from 90


def test_wakeup_while_running_gives_exactly_one_more_run() -> None:
    clock = FakeClock(100.0)
    s: Scheduler[str] = Scheduler(clock)
    s.schedule("a", 100.0, 100)
    s.pop_due()
    s.wake("a")
    s.wake("a")
    clock.now = 101.0
    s.finished("a", started=100.0)
    assert s.due_at("a") == 101.0
    assert s.pop_due() == [("a", 101.0)]
    s.finished("a", started=101.0)
    assert s.due_at("a") == 201.0


def test_reschedule_moves_the_due_time() -> None:
    clock = FakeClock(100.0)
    s: Scheduler[str] = Scheduler(clock)
    s.schedule("a", 150.0, 100)
    s.reschedule("a", 300.0)
    clock.now = 200.0
    assert s.pop_due() == []
    assert s.next_due() == 300.0
    s.reschedule("missing", 1.0)  # ignored
    assert "missing" not in s


def test_shorter_interval_pulls_the_next_run_in() -> None:
    clock = FakeClock(100.0)
    s: Scheduler[str] = Scheduler(clock)
    s.schedule("a", 130.0, 30)  # last run started at 100
    s.set_interval("a", 5)
    assert s.due_at("a") == 105.0
    s.set_interval("a", 60)  # longer: applies from the next run
    assert s.due_at("a") == 105.0


def test_removed_keys_are_never_due_again() -> None:
    clock = FakeClock(100.0)
    s: Scheduler[str] = Scheduler(clock)
    s.schedule("a", 100.0, 10)
    s.schedule("b", 100.0, 10)
    s.remove("a")
    s.wake("a")
    assert s.pop_due() == [("b", 100.0)]
    s.remove("b")  # while running
    s.finished("b", started=100.0)
    clock.now = 1000.0
    assert s.pop_due() == []
    assert s.next_due() is None


def test_limit_leaves_the_rest_in_the_heap() -> None:
    clock = FakeClock(100.0)
    s: Scheduler[int] = Scheduler(clock)
    for i in range(5):
        s.schedule(i, 90.0 + i, 10)
    assert [k for k, _ in s.pop_due(limit=2)] == [0, 1]
    assert [k for k, _ in s.pop_due()] == [2, 3, 4]


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda s: s.schedule("a", 1.0, 0), id="schedule-zero-interval"),
        pytest.param(lambda s: s.set_interval("a", -1), id="negative-interval"),
    ],
)
def test_invalid_intervals_are_rejected(call: Callable[[Scheduler[str]], None]) -> None:
    with pytest.raises(ValueError, match="interval"):
        call(Scheduler(FakeClock()))


# --------------------------------------------------------------------------- run()


async def _run_for(
    s: Scheduler[str],
    loop: VirtualTimeLoop,
    handler: Callable[[str], Awaitable[None]],
    seconds: float,
    concurrency: int = 10,
) -> None:
    task = asyncio.create_task(s.run(handler, concurrency))
    await asyncio.sleep(seconds)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_run_polls_each_key_every_interval() -> None:
    runs: dict[str, list[float]] = {"a": [], "b": []}
    lateness: list[float] = []

    async def main(loop: VirtualTimeLoop) -> None:
        s: Scheduler[str] = Scheduler(loop.time, on_lateness=lambda k, late: lateness.append(late))
        t0 = loop.time()
        s.schedule("a", t0, 1.0)
        s.schedule("b", t0 + 0.5, 2.0)

        async def handler(key: str) -> None:
            runs[key].append(loop.time() - t0)

        await _run_for(s, loop, handler, 10.25)

    run_virtual(main)
    assert runs["a"] == pytest.approx([float(i) for i in range(11)])
    assert runs["b"] == pytest.approx([0.5, 2.5, 4.5, 6.5, 8.5])
    assert lateness == pytest.approx([0.0] * 16)


def test_concurrency_is_bounded_and_waiting_shows_as_lateness() -> None:
    running = 0
    peak = 0
    lateness: dict[str, float] = {}

    async def main(loop: VirtualTimeLoop) -> None:
        s: Scheduler[str] = Scheduler(loop.time, on_lateness=lateness.setdefault)
        for key in "abcd":
            s.schedule(key, loop.time(), 100.0)

        async def handler(key: str) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(5)
            running -= 1

        await _run_for(s, loop, handler, 20, concurrency=2)

    run_virtual(main)
    assert peak == 2
    assert sorted(lateness.values()) == pytest.approx([0.0, 0.0, 5.0, 5.0])


def test_wake_runs_now_and_restarts_the_interval() -> None:
    runs: list[float] = []

    async def main(loop: VirtualTimeLoop) -> None:
        s: Scheduler[str] = Scheduler(loop.time)
        t0 = loop.time()
        s.schedule("a", t0, 100.0)

        async def handler(key: str) -> None:
            runs.append(loop.time() - t0)

        task = asyncio.create_task(s.run(handler, 4))
        await asyncio.sleep(3)
        for _ in range(10):
            s.wake("a")  # a burst of push events
        await asyncio.sleep(150)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run_virtual(main)
    assert runs == pytest.approx([0.0, 3.0, 103.0])


def test_key_added_while_waiting_is_picked_up_at_its_time() -> None:
    runs: list[tuple[str, float]] = []

    async def main(loop: VirtualTimeLoop) -> None:
        s: Scheduler[str] = Scheduler(loop.time)
        t0 = loop.time()
        s.schedule("slow", t0 + 500, 500.0)

        async def handler(key: str) -> None:
            runs.append((key, loop.time() - t0))

        task = asyncio.create_task(s.run(handler, 4))
        await asyncio.sleep(1)
        s.schedule("new", loop.time() + 2, 1000.0)
        await asyncio.sleep(10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run_virtual(main)
    assert runs == [("new", pytest.approx(3.0))]


def test_a_failing_handler_does_not_stall_the_others() -> None:
    runs: dict[str, int] = {"bad": 0, "good": 0}

    async def main(loop: VirtualTimeLoop) -> None:
        s: Scheduler[str] = Scheduler(loop.time)
        s.schedule("bad", loop.time(), 1.0)
        s.schedule("good", loop.time(), 1.0)

        async def handler(key: str) -> None:
            runs[key] += 1
            if key == "bad":
                raise RuntimeError("broken object")

        await _run_for(s, loop, handler, 4.5)

    run_virtual(main)
    assert runs == {"bad": 5, "good": 5}


def test_a_failing_lateness_hook_does_not_stop_the_loop() -> None:
    runs: list[str] = []

    def hook(key: str, lateness: float) -> None:
        raise RuntimeError("metrics broke")

    async def main(loop: VirtualTimeLoop) -> None:
        s: Scheduler[str] = Scheduler(loop.time, on_lateness=hook)
        s.schedule("a", loop.time(), 1.0)

        async def handler(key: str) -> None:
            runs.append(key)

        await _run_for(s, loop, handler, 2.5)

    run_virtual(main)
    assert runs == ["a", "a", "a"]


def test_cancelling_run_cancels_running_handlers() -> None:
    cancelled: list[str] = []

    async def main(loop: VirtualTimeLoop) -> None:
        s: Scheduler[str] = Scheduler(loop.time)
        s.schedule("a", loop.time(), 1.0)

        async def handler(key: str) -> None:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.append(key)
                raise

        await _run_for(s, loop, handler, 1)

    run_virtual(main)
    assert cancelled == ["a"]


def test_removed_key_stops_running() -> None:
    runs: list[float] = []

    async def main(loop: VirtualTimeLoop) -> None:
        s: Scheduler[str] = Scheduler(loop.time)
        t0 = loop.time()
        s.schedule("a", t0, 1.0)

        async def handler(key: str) -> None:
            runs.append(loop.time() - t0)
            if len(runs) == 3:
                s.remove(key)

        await _run_for(s, loop, handler, 10)

    run_virtual(main)
    assert runs == pytest.approx([0.0, 1.0, 2.0])


def test_run_rejects_zero_concurrency() -> None:
    async def main(loop: VirtualTimeLoop) -> None:
        s: Scheduler[str] = Scheduler(loop.time)

        async def handler(key: str) -> None:
            return None

        with pytest.raises(ValueError, match="concurrency"):
            await s.run(handler, 0)

    run_virtual(main)


def test_thousand_keys_one_heap() -> None:
    """1000 objects at 1 s: every key runs every virtual second, all on time."""
    counts: dict[int, int] = {}
    worst = 0.0

    def hook(key: int, lateness: float) -> None:
        nonlocal worst
        worst = max(worst, lateness)

    async def main(loop: VirtualTimeLoop) -> None:
        s: Scheduler[int] = Scheduler(loop.time, on_lateness=hook)
        t0 = loop.time()
        for i in range(1000):
            s.schedule(i, t0 + i / 1000, 1.0)

        async def handler(key: int) -> None:
            counts[key] = counts.get(key, 0) + 1

        task = asyncio.create_task(s.run(handler, 100))
        await asyncio.sleep(5.9999)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run_virtual(main)
    assert set(counts.values()) == {6}
    assert worst == pytest.approx(0.0, abs=1e-6)


# --------------------------------------------------------------------------- Deadlines


def test_deadline_ends_a_hanging_await_with_timeout_error() -> None:
    """A sample that never answers ends as TimeoutError, in virtual time past its deadline
    (rounded up to the 0.25 s step), and leaves no timer group behind."""

    async def main(loop: VirtualTimeLoop) -> tuple[float, int]:
        deadlines = Deadlines()
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            await deadlines.run(asyncio.sleep(3600), 3.0)
        return loop.time() - t0, len(deadlines._groups)

    waited, groups = run_virtual(main)
    assert 3.0 <= waited <= 3.25
    assert groups == 0


def test_deadline_returns_the_value_of_a_quick_await() -> None:
    async def main(loop: VirtualTimeLoop) -> list[int]:
        deadlines = Deadlines()

        async def answer(n: int) -> int:
            await asyncio.sleep(0.01)
            return n

        results = await asyncio.gather(*(deadlines.run(answer(n), 3.0) for n in range(50)))
        await asyncio.sleep(5)  # the shared timer fires over tasks that are long done
        return list(results)

    assert run_virtual(main) == list(range(50))


def test_deadline_lets_an_outside_cancel_through() -> None:
    """Cancelling the task from elsewhere (the scheduler stopping) is a CancelledError, not a
    timeout; a deadline that fires first is a timeout, and a cancel after it has no effect."""

    async def main(loop: VirtualTimeLoop) -> list[str]:
        deadlines = Deadlines()
        seen: list[str] = []

        async def one(timeout: float) -> None:
            try:
                await deadlines.run(asyncio.sleep(3600), timeout)
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise
            except TimeoutError:
                seen.append("timeout")

        early = asyncio.create_task(one(3.0))
        await asyncio.sleep(1.0)
        early.cancel()
        both = asyncio.create_task(one(1.0))
        await asyncio.sleep(0.5)
        loop.call_at(loop.time() + 0.75, both.cancel)  # after its deadline (at +1.0 s) fired
        await asyncio.gather(early, both, return_exceptions=True)
        return seen

    assert run_virtual(main) == ["cancelled", "timeout"]
