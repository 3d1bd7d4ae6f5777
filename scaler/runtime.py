"""One ScaledObject as the daemon runs it: its lifecycle, what its last build produced, and what
the leader last wrote for it.

The lifecycle is an explicit state machine. Each transition is one method here, called by one
owner:

    UNBUILT  --begin_build-->   BUILDING   scaler.builder (at the start of a poll)
    BUILDING --finish_build-->  RUNNING    scaler.builder: the build produced a `Build`
    BUILDING --finish_build-->  BLOCKED    scaler.builder: it produced a `BuildFailure`
    BUILDING --finish_build-->  UNBUILT    scaler.builder: an input changed while it ran (the
                                           result is dropped, never applied; built again at once)
    RUNNING/BLOCKED --invalidate--> UNBUILT  scaler.inputs (a Secret, ConfigMap, auth object or
                                           foreign HPA it was built from changed) and
                                           scaler.poller (a trigger kept failing: KEDA rebuilds
                                           a failing scaler, re-reading its secrets)
    any      --retire-->        RETIRED    scaler.table (an edit replaced it, a delete removed it)

The rest of the runtime has owners too (each field is set by its owner only; everyone may read):

    build, failure                 scaler.builder (through the transitions above)
    written                        scaler.actuator: what the leader last wrote (scaler.table
                                   and scaler.inputs load it from the object's status)
    last_scale                     scaler.actuator: the last /scale write it tried (a `ScaleAction`)
    last_input, last_decision      scaler.poller: the newest decide() call, its input and result
    polls, polling, last_active_time, original_replicas, gauges, lateness
                                   scaler.poller (scaler.table and scaler.inputs load
                                   last_active_time and original_replicas from the status)
    so, generation                 scaler.table (a runtime is born with them and never changes them)

`last_input`, `last_decision` and `last_scale` only record what already exists (the poll's own
`DecisionInput` and `Decision`): `tidal status` / `tidal explain` read them through the debug
endpoint (scaler.debug), nothing else does.

RETIRED is final. Every runtime has a `generation`, unique in the process; work begun for a
runtime that was retired meanwhile (a build awaiting a Secret, a sample, a write) sees
`is_retired()` and drops its result. A BLOCKED runtime whose failure is transient (`retry`: the
scale target was unreadable, another owner may let go) is built again at its next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal

from scaler.contract import MetricSpec, Scaler
from scaler.decide import Decision, DecisionInput
from scaler.errors import ConfigError, TidalError
from scaler.kube.paths import GVKR
from scaler.objects import ScaledObject, Trigger

log = logging.getLogger(__name__)

Ref = tuple[str, str, str]
"""(kind, namespace, name) of a Secret or ConfigMap a build read."""


class Phase(enum.Enum):
    UNBUILT = "unbuilt"  # parsed; scalers not built yet, or an input changed since
    BUILDING = "building"  # a build is running (it awaits the API: Secrets, discovery)
    RUNNING = "running"  # built: every poll samples, decides and (on the leader) writes
    BLOCKED = "blocked"  # the build failed: reported Ready=False, nothing is sampled
    RETIRED = "retired"  # replaced or removed: in-flight work drops out; closed when idle


@dataclass(frozen=True, slots=True)
class TriggerRuntime:
    trigger: Trigger
    spec: MetricSpec
    scaler: Scaler | None  # None for cpu/memory (never sampled)


@dataclass(frozen=True, slots=True)
class Build:
    """What a successful build produced. Replaced whole by the next build, never mutated."""

    target: GVKR
    triggers: tuple[TriggerRuntime, ...]
    refs: frozenset[Ref]
    at: float  # loop time it finished

    @property
    def specs(self) -> list[MetricSpec]:
        return [t.spec for t in self.triggers]


@dataclass(frozen=True, slots=True)
class BuildFailure:
    error: ConfigError
    target: GVKR | None  # resolved before the failure, if it got that far
    refs: frozenset[Ref]  # read before the failure: a Secret that appears later rebuilds
    retry: bool  # transient: build again at the next poll


ScaleOutcome = Literal["scaled", "conflict", "failed"]


@dataclass(frozen=True, slots=True)
class ScaleAction:
    """The last /scale write the actuator tried for the object, and how it ended: written
    (`scaled`), refused because the count moved since the decision (`conflict`), or an API
    error (`failed`, with its text). Made only when a write is tried: never per poll."""

    at: float  # wall-clock epoch seconds
    from_replicas: int
    to_replicas: int
    branch: str  # the decision-table row that asked for it
    outcome: ScaleOutcome
    error: str | None = None


@dataclass(slots=True)
class Written:
    """What the leader last wrote (or read back) for the object; owned by scaler.actuator.
    Lets a poll skip every write whose content did not change."""

    finalizer_added: bool = False
    # The finalizers and resourceVersion of the watch event that admitted the object: the
    # finalizer is added from them without reading the object first (a 409 falls back to it).
    seen_finalizers: tuple[str, ...] = ()
    hpa_present: bool = True  # an HPA may exist until we deleted it
    hpa_dirty: bool = True  # the HPA must be checked against the desired one
    hpa_seen: object = None  # fingerprint of the HPA as last written or checked
    status_key: object = None  # what the last status check was built from (skip when equal)
    last_status: dict[str, Any] | None = None  # what we last wrote (or read) as status

    def status_observed(self, status: dict[str, Any]) -> None:
        """A watch event brought the status the API now holds (ours or another writer's)."""
        self.last_status = status
        self.status_key = None


class ObjectRuntime:
    """Per-object state, touched only from the event loop."""

    __slots__ = (
        "_epoch",
        "_phase",
        "_push_tasks",
        "build",
        "failure",
        "gauges",
        "generation",
        "last_active_time",
        "last_decision",
        "last_input",
        "last_scale",
        "lateness",
        "original_replicas",
        "polling",
        "polls",
        "so",
        "unknown_keys_warned",
        "written",
    )

    def __init__(self, so: ScaledObject, generation: int) -> None:
        self.so = so
        self.generation = generation
        self._phase = Phase.UNBUILT
        self._epoch = 0  # inputs changed this many times; a build from an older epoch is stale
        self._push_tasks: tuple[asyncio.Task[None], ...] = ()
        self.build: Build | None = None
        self.failure: BuildFailure | None = None
        self.written = Written()
        self.last_scale: ScaleAction | None = None  # owned by scaler.actuator
        # Owned by scaler.poller:
        self.polls = 0
        self.polling = False  # a poll is in flight (it closes a runtime retired meanwhile)
        self.last_active_time: float | None = None
        self.original_replicas: int | None = None
        self.gauges: dict[str, tuple[Any, ...]] = {}  # per-trigger telemetry children
        self.lateness: Any = None  # the object's scale-loop-latency child
        self.unknown_keys_warned = False
        self.last_input: DecisionInput | None = None  # the newest decide() call's input
        self.last_decision: Decision | None = None  # ... and its result

    def __repr__(self) -> str:
        return f"<ObjectRuntime {self.so.namespace}/{self.so.name} #{self.generation} {self.phase}>"

    # ------------------------------------------------------------------ state

    @property
    def phase(self) -> Phase:
        return self._phase

    def is_retired(self) -> bool:
        """A method, not a property: it changes across awaits (type checkers keep a narrowed
        property's value)."""
        return self._phase is Phase.RETIRED

    @property
    def needs_build(self) -> bool:
        if self._phase is Phase.BLOCKED:
            return self.failure is not None and self.failure.retry
        return self._phase is Phase.UNBUILT

    @property
    def target(self) -> GVKR | None:
        if self.build is not None:
            return self.build.target
        return None if self.failure is None else self.failure.target

    @property
    def refs(self) -> frozenset[Ref]:
        if self.build is not None:
            return self.build.refs
        return frozenset() if self.failure is None else self.failure.refs

    @property
    def triggers(self) -> tuple[TriggerRuntime, ...]:
        return () if self.build is None else self.build.triggers

    @property
    def specs(self) -> list[MetricSpec]:
        return [] if self.build is None else self.build.specs

    # ------------------------------------------------------------------ transitions

    def begin_build(self) -> int:
        """UNBUILT (or BLOCKED with retry) → BUILDING; returns the input epoch built from.
        The previous build's resources must have been closed (`close()`) by the caller."""
        if not self.needs_build:
            raise TidalError(f"begin_build in phase {self._phase.value}")
        self._phase = Phase.BUILDING
        self.build = None
        return self._epoch

    def finish_build(self, result: Build | BuildFailure, epoch: int) -> bool:
        """BUILDING → RUNNING / BLOCKED; or → UNBUILT when the inputs changed meanwhile. False
        when the result was not applied (stale or retired): the caller closes what it built."""
        if self._phase is not Phase.BUILDING:
            return False  # retired while building
        if epoch != self._epoch:
            self._phase = Phase.UNBUILT
            self.failure = None
            return False
        if isinstance(result, Build):
            self.build, self.failure = result, None
            self._phase = Phase.RUNNING
            self.written.hpa_dirty = True  # the desired HPA follows the new metric specs
        else:
            self.build, self.failure = None, result
            self._phase = Phase.BLOCKED
        return True

    def invalidate(self) -> None:
        """An input the build read changed: build again at the next poll (a build running now
        is stale and will be dropped)."""
        self._epoch += 1
        if self._phase in (Phase.RUNNING, Phase.BLOCKED):
            self._phase = Phase.UNBUILT

    def retire(self) -> None:
        self._phase = Phase.RETIRED

    # ------------------------------------------------------------------ resources

    def attach_push(self, tasks: Iterable[asyncio.Task[None]]) -> None:
        self._push_tasks = (*self._push_tasks, *tasks)

    async def close(self) -> None:
        """Stop push subscriptions and close the scalers of the current build."""
        tasks, self._push_tasks = self._push_tasks, ()
        await cancel_and_wait(tasks)
        if self.build is not None and self.build.triggers:
            closing, self.build = self.build.triggers, replace(self.build, triggers=())
            await close_scalers(closing)


async def close_scalers(triggers: Iterable[TriggerRuntime]) -> None:
    for t in triggers:
        if t.scaler is not None:
            with contextlib.suppress(Exception):
                await t.scaler.aclose()


CANCEL_ATTEMPTS = 10
CANCEL_WAIT = 2.0  # seconds per attempt: long enough for a task's own clean-up to finish


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel `tasks` and wait until they have ended. A task that swallows a cancellation (a
    client library awaiting inside may) is cancelled again, so no push subscription outlives its
    object; after ~20 s of that the survivors are logged and left."""
    pending = {t for t in tasks if not t.done()}
    for _ in range(CANCEL_ATTEMPTS):
        if not pending:
            return
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=CANCEL_WAIT)
    if pending:
        log.warning(
            "tasks did not stop when cancelled",
            extra={"tasks": sorted(t.get_name() for t in pending)},
        )
