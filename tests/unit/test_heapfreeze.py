"""scaler.heapfreeze: when the daemon freezes its heap (pure decisions on a driven clock), and
what a pass does to the collector's permanent generation."""

from __future__ import annotations

import asyncio
import gc
import math
import weakref

import pytest

from scaler.heapfreeze import Activity, HeapFreezer, Pass, freeze_heap, run_heap_freezer

NO_TRIM = math.inf  # tests of the collection passes leave the periodic trim out


def step(f: HeapFreezer, now: float, a: Activity) -> tuple[HeapFreezer, Pass | None]:
    f = f.observe(now, a)
    kind = f.decide(now, a)
    if kind is not None:
        f = f.done(kind, a, now)
    return f, kind


def test_nothing_happens_while_the_table_does_not_change() -> None:
    f = HeapFreezer(quiet=3.0, trim_every=NO_TRIM)
    a = Activity(changes=0, retired=0, size=0)
    for now in range(100):
        f, kind = step(f, float(now), a)
        assert kind is None


def test_a_burst_is_frozen_once_after_it_has_been_quiet() -> None:
    f = HeapFreezer(quiet=3.0, trim_every=NO_TRIM)
    kinds = []
    # 1000 objects admitted and built over 10 s, then nothing.
    for now in range(20):
        a = Activity(changes=min(now, 10) * 200, retired=0, size=min(now, 10) * 100)
        f, kind = step(f, float(now), a)
        kinds.append((now, kind))
    frozen = [(now, k) for now, k in kinds if k is not None]
    assert frozen == [(13, Pass.YOUNG)]  # 3 s after the last change at t=10


def test_a_table_that_never_settles_is_frozen_every_longest_seconds() -> None:
    """Failing objects are rebuilt every 30 s, so the table never has 3 quiet seconds: the new
    objects are still frozen, every `longest` seconds after the last pass."""
    f = HeapFreezer(quiet=3.0, longest=60.0, trim_every=NO_TRIM)
    passes = []
    for now in range(200):
        f, kind = step(f, float(now), Activity(changes=now // 2, retired=0, size=100))
        if kind is not None:
            passes.append(now)
    assert passes == [60, 120, 180]


@pytest.mark.parametrize(
    ("retired", "size", "expected"),
    [
        pytest.param(0, 1000, Pass.YOUNG, id="no-retirements"),
        pytest.param(63, 100, Pass.YOUNG, id="below-the-floor-of-64"),
        pytest.param(64, 100, Pass.FULL, id="at-the-floor"),
        pytest.param(99, 1000, Pass.YOUNG, id="below-a-tenth-of-the-table"),
        pytest.param(100, 1000, Pass.FULL, id="a-tenth-of-the-table"),
    ],
)
def test_retirements_since_the_last_full_pass_pick_the_full_pass(
    retired: int, size: int, expected: Pass
) -> None:
    f = HeapFreezer(quiet=1.0, trim_every=NO_TRIM).observe(0.0, Activity(1, retired, size))
    assert f.decide(5.0, Activity(1, retired, size)) is expected


def test_a_full_pass_resets_the_retirement_count() -> None:
    f = HeapFreezer(quiet=1.0, trim_every=NO_TRIM)
    f, kind = step(f, 0.0, Activity(changes=200, retired=100, size=500))
    assert kind is None
    f, kind = step(f, 2.0, Activity(changes=200, retired=100, size=500))
    assert kind is Pass.FULL
    # 10 more retirements later: a young pass again.
    f, _ = step(f, 3.0, Activity(changes=210, retired=110, size=490))
    f, kind = step(f, 5.0, Activity(changes=210, retired=110, size=490))
    assert kind is Pass.YOUNG


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


def test_a_young_pass_collects_new_cycles_and_freezes_what_lives() -> None:
    gc.freeze()
    try:
        before = gc.get_freeze_count()
        kept = [[i] for i in range(1000)]  # new and alive
        garbage = Node()
        ref = weakref.ref(garbage)
        del garbage
        freeze_heap(Pass.YOUNG)
        assert ref() is None
        assert gc.get_freeze_count() >= before + 1000
        assert kept[999] == [999]
    finally:
        gc.unfreeze()


def test_a_full_pass_frees_cycles_that_were_frozen() -> None:
    node = Node()
    ref = weakref.ref(node)
    gc.freeze()  # node frozen while alive
    try:
        del node  # now a frozen cycle: a young pass never looks at it
        freeze_heap(Pass.YOUNG)
        assert ref() is not None
        freeze_heap(Pass.FULL)
        assert ref() is None
    finally:
        gc.unfreeze()


async def test_the_loop_freezes_after_quiet_and_logs_the_pass(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The loop on the real event loop: activity stops changing, one pass is logged."""
    counter = {"changes": 5}

    def activity() -> Activity:
        return Activity(counter["changes"], 0, 10)

    caplog.set_level("INFO", logger="scaler.heapfreeze")
    task = asyncio.create_task(
        run_heap_freezer(activity, freezer=HeapFreezer(quiet=0.05), every=0.01)
    )
    try:
        for _ in range(200):
            await asyncio.sleep(0.01)
            if any(r.message == "heap frozen" for r in caplog.records):
                break
        passes = [r for r in caplog.records if r.message == "heap frozen"]
        assert [getattr(r, "pass") for r in passes] == ["young"]
        assert passes[0].objects == 10
    finally:
        task.cancel()
        gc.unfreeze()


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_a_pass_hands_the_c_heaps_free_pages_back_to_the_kernel() -> None:
    """A burst (objects created, rebuilt) leaves free memory inside glibc's heap that it keeps
    resident while anything above it lives; the pass's malloc_trim returns it."""
    blocks = [bytes(2000) for _ in range(50_000)]  # ~95 MiB of C-heap blocks (> 512 B each)
    survivors = blocks[::50]  # one in 50 stays: the heap's top is never free
    del blocks
    before = _rss_mib()
    try:
        pause = freeze_heap(Pass.YOUNG)
        after = _rss_mib()
    finally:
        gc.unfreeze()  # the rest of the test session runs on an ordinary heap
    assert len(survivors) == 1000
    assert before - after > 50, (before, after)
    assert pause < 10  # a hang guard, not a speed figure


def test_a_quiet_table_still_hands_free_pages_back_every_trim_period() -> None:
    f = HeapFreezer(quiet=3.0, trim_every=30.0, trimmed_at=0.0)
    a = Activity(changes=0, retired=0, size=1000)
    trims = []
    for now in range(0, 100):
        f, kind = step(f, float(now), a)
        assert kind in (None, Pass.TRIM)
        if kind is Pass.TRIM:
            trims.append(now)
    assert trims == [30, 60, 90]


def test_a_collection_pass_trims_too_and_restarts_the_trim_period() -> None:
    f = HeapFreezer(quiet=3.0, trim_every=30.0, trimmed_at=0.0)
    kinds = {}
    for now in range(0, 70):
        a = Activity(changes=1 if now >= 20 else 0, retired=0, size=10)
        f, kind = step(f, float(now), a)
        if kind is not None:
            kinds[now] = kind
    # changed at 20, settled (young pass, with its trim) at 23; the next trim 30 s after it
    assert kinds == {23: Pass.YOUNG, 53: Pass.TRIM}
