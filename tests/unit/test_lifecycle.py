"""The object lifecycle (scaler/runtime.py): each transition from each phase, and the rule that a
stale build is dropped, never applied.

Pure state: no API, no event loop beyond what `close()` awaits. The end-to-end consequences (an
edit or a Secret change landing mid-build) are covered against the real control plane by
tests/e2e/test_safety_churn.py and test_safety_race.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from scaler.contract import MetricSpec, Sample
from scaler.errors import ConfigError, TidalError
from scaler.kube.paths import GVKR
from scaler.object_parser import parse_scaled_object
from scaler.runtime import Build, BuildFailure, ObjectRuntime, Phase, TriggerRuntime

TARGET = GVKR("apps", "v1", "Deployment", "deployments")


def runtime(generation: int = 1) -> ObjectRuntime:
    so = parse_scaled_object(
        {
            "metadata": {"name": "Orders.EU", "namespace": "shop", "uid": "u", "generation": 1},
            "spec": {
                "scaleTargetRef": {"name": "worker"},
                "triggers": [{"type": "redis", "metadata": {"listName": "jobs"}}],
            },
        }
    )
    return ObjectRuntime(so, generation)


class ClosingScaler:
    """Counts aclose() calls: whether a dropped build closed what it built."""

    def __init__(self) -> None:
        self.closed = 0

    def metric_spec(self) -> MetricSpec:
        return MetricSpec("s0-redis-jobs", 5.0, "AverageValue")

    async def sample(self, now: float) -> Sample:
        return Sample(1.0, True, now)

    async def aclose(self) -> None:
        self.closed += 1


def build(scaler: Any = None, *, refs: frozenset[tuple[str, str, str]] = frozenset()) -> Build:
    rt = runtime()
    trig = TriggerRuntime(
        rt.so.triggers[0], MetricSpec("s0-redis-jobs", 5.0, "AverageValue"), scaler
    )
    return Build(TARGET, (trig,), refs, at=10.0)


def failure(*, retry: bool) -> BuildFailure:
    return BuildFailure(ConfigError("Secret 'shop/redis' not found"), TARGET, frozenset(), retry)


def test_a_new_runtime_is_unbuilt_and_needs_a_build() -> None:
    rt = runtime()
    assert rt.phase is Phase.UNBUILT
    assert rt.needs_build
    assert rt.target is None
    assert rt.triggers == ()
    assert not rt.is_retired()


def test_a_successful_build_runs_and_marks_the_hpa_for_a_check() -> None:
    rt = runtime()
    rt.written.hpa_dirty = False
    epoch = rt.begin_build()
    assert rt.phase is Phase.BUILDING
    result = build(refs=frozenset({("Secret", "shop", "redis")}))
    assert rt.finish_build(result, epoch)
    assert rt.phase is Phase.RUNNING
    assert not rt.needs_build
    assert rt.build is result
    assert rt.target == TARGET
    assert rt.refs == {("Secret", "shop", "redis")}
    assert [s.name for s in rt.specs] == ["s0-redis-jobs"]
    assert rt.written.hpa_dirty


@pytest.mark.parametrize(
    ("retry", "needs_build"),
    [
        pytest.param(False, False, id="config-error-waits-for-an-input-change"),
        pytest.param(True, True, id="transient-error-builds-again-next-poll"),
    ],
)
def test_a_failed_build_blocks(retry: bool, needs_build: bool) -> None:
    rt = runtime()
    epoch = rt.begin_build()
    assert rt.finish_build(failure(retry=retry), epoch)
    assert rt.phase is Phase.BLOCKED
    assert rt.needs_build is needs_build
    assert rt.failure is not None
    assert "not found" in str(rt.failure.error)
    assert rt.target == TARGET  # resolved before the failure: reported in status
    assert rt.build is None


@pytest.mark.parametrize(
    "start",
    [
        pytest.param(Phase.RUNNING, id="running"),
        pytest.param(Phase.BLOCKED, id="blocked"),
    ],
)
def test_an_input_change_invalidates_a_built_runtime(start: Phase) -> None:
    rt = runtime()
    epoch = rt.begin_build()
    rt.finish_build(build() if start is Phase.RUNNING else failure(retry=False), epoch)
    assert rt.phase is start
    rt.invalidate()
    assert rt.phase is Phase.UNBUILT
    assert rt.needs_build


def test_a_build_whose_inputs_changed_meanwhile_is_dropped_not_applied() -> None:
    rt = runtime()
    epoch = rt.begin_build()
    rt.invalidate()  # a Secret the build read changed while it awaited the API
    assert rt.phase is Phase.BUILDING
    assert not rt.finish_build(build(), epoch)
    assert rt.phase is Phase.UNBUILT
    assert rt.build is None
    assert rt.needs_build


def test_a_retired_runtime_stays_retired_and_refuses_a_late_build() -> None:
    rt = runtime()
    epoch = rt.begin_build()
    rt.retire()  # edited or deleted while building
    assert not rt.finish_build(build(), epoch)
    assert rt.is_retired()
    rt.invalidate()
    assert rt.is_retired()
    assert not rt.needs_build


@pytest.mark.parametrize(
    "phase",
    [
        pytest.param(Phase.RUNNING, id="running"),
        pytest.param(Phase.BUILDING, id="building"),
        pytest.param(Phase.RETIRED, id="retired"),
    ],
)
def test_a_build_begins_only_when_one_is_needed(phase: Phase) -> None:
    rt = runtime()
    epoch = rt.begin_build()
    if phase is Phase.RUNNING:
        rt.finish_build(build(), epoch)
    elif phase is Phase.RETIRED:
        rt.retire()
    with pytest.raises(TidalError, match=phase.value):
        rt.begin_build()


def test_close_stops_push_tasks_and_closes_scalers_once() -> None:
    async def scenario() -> tuple[ClosingScaler, asyncio.Task[None], ObjectRuntime]:
        scaler = ClosingScaler()
        rt = runtime()
        epoch = rt.begin_build()
        rt.finish_build(build(scaler), epoch)
        task: asyncio.Task[None] = asyncio.create_task(asyncio.sleep(3600))
        rt.attach_push([task])
        await rt.close()
        await rt.close()  # idempotent: retire and a finishing poll may both close
        return scaler, task, rt

    scaler, task, rt = asyncio.run(scenario())
    assert scaler.closed == 1
    assert task.cancelled()
    assert rt.target == TARGET  # what it was built for stays readable after closing
    assert rt.triggers == ()


def test_generations_tell_runtimes_apart() -> None:
    first, second = runtime(1), runtime(2)
    assert first.so == second.so
    assert "#1" in repr(first)
    assert "#2" in repr(second)
