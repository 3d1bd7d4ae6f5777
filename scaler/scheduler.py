"""One heap of due times for every object's poll: no task, no timer per object.

Due times are on the event loop's clock (``loop.time()``, monotonic), passed in as `loop_time`
so tests can drive time. `run(handler, concurrency)` pops due keys and runs ``handler(key)`` with
at most `concurrency` running at once; when a run ends the key is due again one interval after
that run STARTED (a push wake-up therefore restarts the interval). Each start reports its
lateness (start - due) to `on_lateness`, the meaning of KEDA's
``keda_internal_scale_loop_latency_seconds``.

`wake(key)` makes a key due now. Wake-ups coalesce: any number of them before the key runs give
one run; a wake-up that arrives while the key is running gives exactly one more run right after.
Heap entries are invalidated lazily by a per-key generation number, so reschedule/wake/remove are
O(log n) pushes and never scan the heap.

A handler that raises is logged and rescheduled: one broken object never stalls the others.

`Deadlines` bounds many concurrent awaits (one sample per poll) with one timer per 0.25 s of
deadlines instead of one per await.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

LatenessHook = Callable[[K, float], None]


class _Slot:
    """Scheduling state of one key."""

    __slots__ = ("due", "generation", "interval", "rerun", "running")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.due: float | None = None  # None: not in the heap (running, or parked)
        self.generation = 0
        self.running = False
        self.rerun = False  # woken while running


class Scheduler(Generic[K]):
    def __init__(
        self,
        loop_time: Callable[[], float],
        *,
        on_lateness: LatenessHook[K] | None = None,
    ) -> None:
        self._time = loop_time
        self._on_lateness = on_lateness
        self._slots: dict[K, _Slot] = {}
        self._heap: list[tuple[float, int, int, K]] = []  # (due, seq, generation, key)
        self._seq = 0
        self._changed = asyncio.Event()
        # When run() will wake by itself (its timer), and whether it waits for a free slot: a
        # push later than that, or a run ending while slots are free, need not wake it (at 1000
        # polls a second, waking it after every run was a loop pass and a timer each).
        self._wake_at = -math.inf
        self._full = False

    # ---------------------------------------------------------------- bookkeeping

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, key: object) -> bool:
        return key in self._slots

    def due_at(self, key: K) -> float | None:
        """When the key is next due (None when unknown or running)."""
        slot = self._slots.get(key)
        return None if slot is None else slot.due

    def is_running(self, key: K) -> bool:
        slot = self._slots.get(key)
        return slot is not None and slot.running

    def _push(self, key: K, slot: _Slot, at: float) -> None:
        slot.generation += 1
        slot.due = at
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, slot.generation, key))
        if at < self._wake_at:
            self._changed.set()

    # ---------------------------------------------------------------- API

    def schedule(self, key: K, at: float, interval: float) -> None:
        """Add `key` (or replace its due time and interval). `at` is in loop time."""
        if interval <= 0:
            raise ValueError("interval must be > 0")
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot(interval)
        slot.interval = interval
        if slot.running:
            return  # re-armed from the interval when the run ends
        self._push(key, slot, at)

    def reschedule(self, key: K, at: float) -> None:
        """Move an existing key's next due time (no-op for unknown or running keys)."""
        slot = self._slots.get(key)
        if slot is not None and not slot.running:
            self._push(key, slot, at)

    def set_interval(self, key: K, interval: float) -> None:
        """Change the interval; the next due time moves to last start + new interval at most."""
        if interval <= 0:
            raise ValueError("interval must be > 0")
        slot = self._slots.get(key)
        if slot is None:
            return
        old, slot.interval = slot.interval, interval
        if slot.due is not None and not slot.running and interval < old:
            self._push(key, slot, min(slot.due, slot.due - old + interval))

    def wake(self, key: K) -> None:
        """Make `key` due now (coalesced). Unknown keys are ignored."""
        slot = self._slots.get(key)
        if slot is None:
            return
        if slot.running:
            slot.rerun = True
            return
        now = self._time()
        if slot.due is not None and slot.due <= now:
            return  # already due: this wake-up merges with the pending run
        self._push(key, slot, now)

    def remove(self, key: K) -> None:
        """Forget `key`; a run in progress finishes but is not rescheduled."""
        self._slots.pop(key, None)

    # ---------------------------------------------------------------- running

    def pop_due(self, limit: int | None = None) -> list[tuple[K, float]]:
        """Take the keys due now, as (key, due time), earliest first; mark them running."""
        now = self._time()
        out: list[tuple[K, float]] = []
        heap = self._heap
        while heap and heap[0][0] <= now and (limit is None or len(out) < limit):
            due, _, generation, key = heapq.heappop(heap)
            slot = self._slots.get(key)
            if slot is None or slot.generation != generation or slot.running:
                continue  # stale entry
            slot.due = None
            slot.running = True
            out.append((key, due))
        return out

    def finished(self, key: K, started: float) -> None:
        """A run of `key` that started at `started` has ended: arm the next one."""
        slot = self._slots.get(key)
        if slot is None:
            return
        slot.running = False
        if slot.rerun:
            slot.rerun = False
            self._push(key, slot, self._time())
        else:
            self._push(key, slot, started + slot.interval)

    def next_due(self) -> float | None:
        """The earliest valid due time in the heap (drops stale entries on the way)."""
        heap = self._heap
        while heap:
            _, _, generation, key = heap[0]
            slot = self._slots.get(key)
            if slot is not None and slot.generation == generation and not slot.running:
                return heap[0][0]
            heapq.heappop(heap)
        return None

    def _report_lateness(self, key: K, lateness: float) -> None:
        if self._on_lateness is None:
            return
        try:
            self._on_lateness(key, lateness)
        except Exception:
            log.exception("lateness hook failed")

    async def run(self, handler: Callable[[K], Awaitable[None]], concurrency: int) -> None:
        """Run due keys forever, at most `concurrency` at a time. Cancel to stop; running
        handlers are cancelled and awaited."""
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        tasks: set[asyncio.Task[None]] = set()

        async def one(key: K, due: float, started: float) -> None:
            try:
                await handler(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduled run failed", extra={"key": str(key)})
            finally:
                # Free the slot before waking the loop (a done-callback would run too late).
                tasks.discard(asyncio.current_task())
                self.finished(key, started)  # wakes the loop if due before its timer
                if self._full:
                    self._changed.set()

        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle | None = None
        timer_for = math.inf  # the due time `timer` is set for
        try:
            while True:
                self._changed.clear()
                self._wake_at, self._full = -math.inf, False
                free = concurrency - len(tasks)
                if free > 0:
                    for key, due in self.pop_due(free):
                        started = self._time()
                        self._report_lateness(key, max(0.0, started - due))
                        # A constant name: formatting the key (or asyncio's "Task-N") per poll
                        # is measurable at 1000 polls a second; `one` logs the key on failure.
                        task = asyncio.create_task(one(key, due, started), name="poll")
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                wake_at = math.inf  # slots all taken: only a run ending (`one`) wakes the loop
                if len(tasks) < concurrency:
                    next_due = self.next_due()
                    if next_due is not None:
                        if next_due <= self._time():
                            await asyncio.sleep(0)
                            continue
                        wake_at = next_due
                # One timer while the earliest due time stays the same (most passes).
                if timer is not None and timer_for != wake_at:
                    timer.cancel()
                    timer = None
                if timer is None and wake_at != math.inf:
                    delay = wake_at - self._time()
                    timer, timer_for = loop.call_later(delay, self._changed.set), wake_at
                self._wake_at, self._full = wake_at, wake_at == math.inf and bool(tasks)
                await self._changed.wait()
                if timer is not None and self._time() >= timer_for:
                    timer = None  # it fired (or is about to: one spurious pass at most)
        finally:
            if timer is not None:
                timer.cancel()
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)


class Deadlines:
    """Timeouts for many concurrent awaits, coarse by `step` seconds: the tasks whose deadlines
    round up to the same multiple of `step` share one timer, which cancels those still waiting.

    ``asyncio.timeout`` costs a timer per await (an object, a heap push of a Python-compared
    handle, a cancel): ~15 us per poll at 1000 polls a second, with ~3000 handles in the loop's
    heap at a 3 s timeout. Here an await costs a set insert and discard; a deadline fires up to
    `step` late, which a query timeout of seconds does not notice.
    """

    def __init__(self, step: float = 0.25) -> None:
        self._step = step
        self._groups: dict[float, set[asyncio.Task[Any]]] = {}
        self._fired: set[asyncio.Task[Any]] = set()

    async def run(self, awaitable: Awaitable[T], timeout: float) -> T:
        """Await `awaitable` in the current task; TimeoutError once `timeout` has passed (up to
        `step` later). A cancellation from elsewhere propagates as usual."""
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        at = math.ceil((loop.time() + timeout) / self._step) * self._step
        group = self._groups.get(at)
        if group is None:
            group = self._groups[at] = set()
            loop.call_at(at, self._fire, at)
        group.add(task)
        cancelling = task.cancelling()
        try:
            return await awaitable
        except asyncio.CancelledError:
            if task in self._fired:
                self._fired.discard(task)
                if task.uncancel() <= cancelling:
                    raise TimeoutError from None
            raise
        finally:
            group.discard(task)
            self._fired.discard(task)

    def _fire(self, at: float) -> None:
        for task in self._groups.pop(at, ()):
            if not task.done():
                self._fired.add(task)
                task.cancel()
