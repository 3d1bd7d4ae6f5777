"""Keeping CPython's cyclic collector off the event loop's critical path.

The collector pauses the thread for a pass over every tracked container of the generations it
collects. A daemon's long-lived objects (parsed ScaledObjects, runtimes, scaler clients, metric
children) outnumber a poll's garbage by orders of magnitude, and every full pass over them is a
stall that every poll due meanwhile waits for: 10 full passes of up to 0.76 s in 45 s at 1000
objects x 1 s, measured by benchmarks/daemon_scale.py with the objects created after start-up.
`gc.freeze()` moves everything alive into a permanent generation the collector never scans.

`HeapFreezer` decides when to freeze (pure: it is handed the clock and the table's counters);
`run_heap_freezer` applies its decisions:

* after the object table has been quiet for `quiet` seconds following a change (objects admitted,
  removed or rebuilt), a YOUNG pass: collect what is not frozen yet and freeze what survives --
  one pause over the new objects only; a table that never settles (failing objects are rebuilt
  every 30 s) gets one at least every `longest` seconds;
* retired runtimes frozen earlier are not freed by a young pass (frozen cycles are never
  collected; objects without cycles are freed by reference counting as usual): once retirements
  since the last FULL pass reach a tenth of the table (at least `full_after` objects), the next
  pass unfreezes, collects everything and freezes again -- one pause over the whole heap after
  a churn, instead of one every few seconds.

After each pass, and as a TRIM pass of its own every `trim_every` seconds, the C allocator is
asked to hand its free pages back to the kernel (`malloc_trim`, glibc only). glibc returns only
the top of its heap on its own: at 1000 objects its main heap held 16 MiB in use inside 46 MiB
resident, the rest freed by the creation burst and re-touched by the polls' allocations since.

The generation-0 threshold is raised at start-up (`tune_thresholds`): a poll's short-lived
containers then die by reference counting before a collection ever looks at them (1000 objects
x 1 s: 965 generation-0 passes in 45 s at the default 700, 1-2 at 10,000).
"""

from __future__ import annotations

import asyncio
import ctypes
import enum
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

log = logging.getLogger(__name__)

GEN0_THRESHOLD = 10_000  # CPython's default is 700
QUIET_S = 3.0  # seconds without a table change before the new objects are frozen
LONGEST_S = 120.0  # a table that never settles (objects failing and rebuilt) is frozen this often
FULL_AFTER = 64  # retired runtimes (and at least a tenth of the table) before a full pass
CHECK_EVERY_S = 1.0
TRIM_EVERY_S = 10.0  # seconds between TRIM passes (~1 ms when there is little to return)
SLOW_TRIM_S = 0.005  # a TRIM pass this long is logged at info


class Pass(enum.Enum):
    YOUNG = "young"  # collect the objects not frozen yet, freeze the survivors
    FULL = "full"  # unfreeze, collect everything, freeze again
    TRIM = "trim"  # only hand the C heap's free pages back (every pass ends with it)


@dataclass(frozen=True, slots=True)
class Activity:
    """The table's monotonic counters: changes (admitted, removed, built) and retirements."""

    changes: int
    retired: int
    size: int


@dataclass(frozen=True, slots=True)
class HeapFreezer:
    """What the last pass saw and when the table last changed: `decide` is pure."""

    quiet: float = QUIET_S
    full_after: int = FULL_AFTER
    longest: float = LONGEST_S
    passed_at: float = 0.0  # when the last pass ran (start-up's counts as one)
    seen: int = 0  # `changes` when last observed
    changed_at: float = 0.0  # when `changes` last moved
    frozen_at_changes: int = 0  # `changes` at the last pass
    retired_at_full: int = 0  # `retired` at the last full pass
    trim_every: float = TRIM_EVERY_S
    trimmed_at: float = 0.0  # when the free pages were last handed back (by any pass)

    def observe(self, now: float, activity: Activity) -> HeapFreezer:
        if activity.changes == self.seen:
            return self
        return replace(self, seen=activity.changes, changed_at=now)

    def decide(self, now: float, activity: Activity) -> Pass | None:
        """The pass to run now, if any (call `observe` first with the same figures)."""
        collect = self._collection(now, activity)
        if collect is None and now - self.trimmed_at >= self.trim_every:
            return Pass.TRIM
        return collect

    def _collection(self, now: float, activity: Activity) -> Pass | None:
        if activity.changes == self.frozen_at_changes:
            return None
        settled = now - self.changed_at >= self.quiet
        if not settled and now - self.passed_at < self.longest:
            return None
        retired = activity.retired - self.retired_at_full
        if retired >= max(self.full_after, activity.size // 10):
            return Pass.FULL
        return Pass.YOUNG

    def done(self, kind: Pass, activity: Activity, now: float) -> HeapFreezer:
        if kind is Pass.TRIM:
            return replace(self, trimmed_at=now)
        if kind is Pass.FULL:
            return replace(
                self,
                frozen_at_changes=activity.changes,
                retired_at_full=activity.retired,
                passed_at=now,
                trimmed_at=now,
            )
        return replace(self, frozen_at_changes=activity.changes, passed_at=now, trimmed_at=now)


def tune_thresholds(gen0: int = GEN0_THRESHOLD) -> None:
    """Raise generation 0's threshold (keeping CPython's ratios for the older generations)."""
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0, gen1, gen2)


def _find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None where the C library has none (musl, macOS)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    found: Callable[[int], int] = trim
    return found


_MALLOC_TRIM = _find_malloc_trim()


def release_free_memory() -> bool:
    """Return the C heap's free pages to the kernel; False where that is not possible."""
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True


def freeze_heap(kind: Pass) -> float:
    """Run one pass (then release the free pages); the pause in seconds."""
    began = time.perf_counter()
    if kind is Pass.FULL:
        gc.unfreeze()
    if kind is not Pass.TRIM:
        gc.collect()
        gc.freeze()
    release_free_memory()
    return time.perf_counter() - began


async def run_heap_freezer(
    activity: Callable[[], Activity],
    *,
    freezer: HeapFreezer | None = None,
    every: float = CHECK_EVERY_S,
) -> None:
    """Check the table every `every` seconds and freeze the heap when it has settled."""
    loop = asyncio.get_running_loop()
    state = freezer or HeapFreezer(passed_at=loop.time(), trimmed_at=loop.time())
    while True:
        await asyncio.sleep(every)
        now, seen = loop.time(), activity()
        state = state.observe(now, seen)
        kind = state.decide(now, seen)
        if kind is None:
            continue
        pause = freeze_heap(kind)
        state = state.done(kind, seen, now)
        if kind is Pass.TRIM:
            # Usually ~1 ms; said at info when it held the loop long enough to matter.
            level = logging.INFO if pause >= SLOW_TRIM_S else logging.DEBUG
            log.log(level, "heap trimmed", extra={"pause_ms": round(pause * 1000, 1)})
            continue
        log.info(
            "heap frozen",
            extra={
                "pass": kind.value,
                "objects": seen.size,
                "pause_ms": round(pause * 1000, 1),
                "frozen": gc.get_freeze_count(),
            },
        )
