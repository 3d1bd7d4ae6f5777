"""The ScaledJob controller: watches ScaledJobs, the Jobs they own and those Jobs' pods; polls
each ScaledJob every `pollingInterval` (scaler.scheduler), samples its triggers (built by
scaler.builder.build_triggers, TriggerAuthentication and Secrets included), decides with
scaler.jobs.decide and writes through scaler.jobs.writer: Jobs created from the template, Jobs of
an older generation deleted (rollout `default`), finished Jobs beyond the history limits
deleted, status conditions and Events as KEDA writes them.

Safety as in the ScaledObject path: a failing trigger contributes nothing (never a 0 read as a
queue length; KEDA's rule: the other triggers still decide) and makes Ready Unknown or False;
Jobs just created count as running and pending until the Job watch has seen them, so a fast
poll never creates them twice; `may_write()` is checked before every write and `owns(key)`
before every poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from prometheus_client import Counter

from scaler.clients import ClientPool
from scaler.contract import Sample
from scaler.errors import ConfigError, KubeError, ScalerError, TidalError
from scaler.jobs.build import build_scaled_job
from scaler.jobs.decide import (
    JobCounts,
    TriggerReading,
    decide_jobs,
    to_prune,
)
from scaler.jobs.owned import OwnedJobs
from scaler.jobs.render import check_failed, paused_conditions, poll_conditions, status_patch
from scaler.jobs.spec import GENERATION_ANNOTATION, NAME_LABEL, ScaledJob, read_scaled_job
from scaler.jobs.writer import JobWriter, scaled_jobs_path
from scaler.kube.client import JSON, KubeClient
from scaler.kube.events import EventRecorder
from scaler.kube.watch import EventType, Watcher
from scaler.registry import Registry, default_registry
from scaler.runtime import TriggerRuntime, close_scalers
from scaler.scheduler import Scheduler
from scaler.settings import Settings
from scaler.telemetry import Telemetry

log = logging.getLogger(__name__)

Key = tuple[str, str]
UNSEEN_TTL = 60.0  # s: a created Job the watch has not shown by then is no longer counted
REBUILD_AFTER = 3  # failing polls in a row before the triggers are built again (KEDA: 1)


@dataclass(slots=True)
class _Entry:
    """One ScaledJob as the controller runs it."""

    sj: ScaledJob
    problem: str = ""  # the spec's problems ("" when it parsed)
    triggers: tuple[TriggerRuntime, ...] | None = None
    build_error: str = ""
    failing_polls: int = 0
    rolled_out: int = -1  # the generation whose older Jobs were deleted
    unseen: dict[str, float] = field(default_factory=dict)  # created, not yet watched
    written: list[dict[str, str]] | None = None  # conditions last written
    reported: str = ""  # the check failure last reported as an Event
    retired: bool = False


@dataclass(frozen=True, slots=True)
class PollResult:
    """What one poll saw and did (for logs and tests)."""

    branch: Literal[
        "paused", "invalid", "inactive", "to-min", "strategy", "skipped", "not-owned", "fenced"
    ]
    created: int = 0
    pruned: int = 0
    running: int = 0
    pending: int = 0


class ScaledJobController:
    """Runs every ScaledJob of the watched namespace(s). `run()` until cancelled."""

    def __init__(
        self,
        kube: KubeClient,
        settings: Settings,
        *,
        may_write: Callable[[], bool] = lambda: True,
        owns: Callable[[Key], bool] = lambda key: True,
        registry: Registry | None = None,
        clients: ClientPool | None = None,
        telemetry: Telemetry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._kube = kube
        self._settings = settings
        self._may_write = may_write
        self._owns = owns
        self._registry = registry or default_registry()
        self._own_clients = clients is None
        self._clients = clients or ClientPool()
        self._clock = clock
        self.telemetry = telemetry
        self.writer = JobWriter(kube, EventRecorder(kube, settings.leader.identity), may_write)
        self.entries: dict[Key, _Entry] = {}
        self.scheduler: Scheduler[Key] = Scheduler(lambda: asyncio.get_running_loop().time())
        self.last: dict[Key, PollResult] = {}
        ns = settings.watch.namespace or None
        self.scaled_jobs = Watcher(
            kube, scaled_jobs_path(ns), self._on_scaled_job, name="scaledjobs"
        )
        self.owned = OwnedJobs(kube, ns, on_job=self._on_job)
        self.errors = Counter(
            "keda_scaled_job_errors",
            "The number of errors that have occurred for each ScaledJob",
            ["namespace", "scaledJob"],
            registry=None if telemetry is None else telemetry.registry,
        )
        self.started = asyncio.Event()

    # ------------------------------------------------------------------ watches

    async def _on_job(self, kind: EventType, obj: JSON) -> None:
        meta = obj.get("metadata", {})
        key = (str(meta.get("namespace", "")), str((meta.get("labels") or {}).get(NAME_LABEL)))
        entry = self.entries.get(key)
        if entry is not None:
            entry.unseen.pop(str(meta.get("name")), None)

    async def _on_scaled_job(self, kind: EventType, obj: JSON) -> None:
        meta = obj.get("metadata", {})
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        old = self.entries.get(key)
        if kind == "DELETED" or meta.get("deletionTimestamp"):
            self._remove(key)  # being deleted: no more Jobs; garbage collection takes its own
            return
        sj, problems = read_scaled_job(obj)
        if old is not None and _same_spec(old.sj, sj):
            old.sj = replace(old.sj, status=sj.status)  # a status write, ours or another's
            return
        entry = _Entry(sj, problem="; ".join(f"{p.path}: {p.message}" for p in problems))
        if old is not None:
            entry.rolled_out = old.rolled_out
            entry.unseen = old.unseen
            entry.written = old.written
            self._retire(old)
        self.entries[key] = entry
        now = asyncio.get_running_loop().time()
        self.scheduler.schedule(key, now, float(sj.polling_interval))

    def _remove(self, key: Key) -> None:
        entry = self.entries.pop(key, None)
        self.scheduler.remove(key)
        self.last.pop(key, None)
        if entry is not None:
            self._retire(entry)
            self.writer.forget(entry.sj.uid)
            with contextlib.suppress(KeyError):
                self.errors.remove(*key)

    def _retire(self, entry: _Entry) -> None:
        entry.retired = True
        self._forget_metrics(entry)
        if entry.triggers:
            task = asyncio.get_running_loop().create_task(close_scalers(entry.triggers))
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)
            entry.triggers = None

    # ------------------------------------------------------------------ run

    def ready(self) -> bool:
        return self.started.is_set()

    async def run(self) -> None:
        tasks: list[asyncio.Task[None]] = []
        try:
            for w in self.owned.watchers:
                tasks.append(asyncio.create_task(w.run(), name=f"watch {w.name}"))
            for w in self.owned.watchers:
                await w.synced.wait()
            tasks.append(asyncio.create_task(self.scaled_jobs.run(), name="watch scaledjobs"))
            await self.scaled_jobs.synced.wait()
            self.started.set()
            log.info("scaledjob controller started", extra={"objects": len(self.entries)})
            await self.scheduler.run(self.poll, self._settings.poll.max_concurrent)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for entry in self.entries.values():
                if entry.triggers:
                    await close_scalers(entry.triggers)
                    entry.triggers = None
            if self._own_clients:
                await self._clients.aclose()

    # ------------------------------------------------------------------ one poll

    async def poll(self, key: Key) -> None:
        entry = self.entries.get(key)
        if entry is None:
            return
        if not self._owns(key):
            result = PollResult("not-owned")  # another replica's (sharded)
        elif not self._may_write():
            result = PollResult("fenced")  # not the leader: no sample, no write
        else:
            result = await self._poll(entry)
        if not entry.retired:
            self.last[key] = result

    async def _poll(self, entry: _Entry) -> PollResult:
        sj = entry.sj
        if sj.paused:
            await self._set_conditions(entry, paused_conditions(sj))
            return PollResult("paused")
        if entry.problem:
            await self._check_failed(entry, entry.problem)
            return PollResult("invalid")
        if entry.triggers is None:
            try:
                triggers = await build_scaled_job(
                    self._kube,
                    sj,
                    registry=self._registry,
                    clients=self._clients,
                    cluster_namespace=self._settings.watch.cluster_object_namespace,
                    timeout=self._settings.poll.http_timeout,
                )
            except ConfigError as exc:
                entry.build_error = "; ".join(exc.problems)
            except KubeError as exc:
                entry.build_error = f"reading the triggers' references: {exc}"
            else:
                if entry.retired:
                    await close_scalers(triggers)
                    return PollResult("skipped")
                entry.triggers, entry.build_error = triggers, ""
            if entry.build_error:
                self.errors.labels(*sj.key).inc()
                await self._check_failed(entry, entry.build_error)
                return PollResult("invalid")
        assert entry.triggers is not None
        if entry.rolled_out != sj.generation:
            await self._rollout(entry)
        readings, failed = await self._sample(entry, entry.triggers)
        if entry.retired:
            return PollResult("skipped")
        counts = self._counts(entry)
        decision = decide_jobs(sj, readings, counts)
        created: list[str] = []
        if decision.create > 0:
            created = await self.writer.create_jobs(sj, decision.create)
            loop_now = asyncio.get_running_loop().time()
            for name in created:
                if not self.owned.has(sj.namespace, name):
                    entry.unseen[name] = loop_now
        conditions = poll_conditions(sj, decision.active, bool(failed))
        await self._set_conditions(
            entry, conditions, self._clock() if decision.active else None, bool(created)
        )
        pruned = await self._prune(entry)
        return PollResult(decision.branch, len(created), pruned, counts.running, counts.pending)

    async def _sample(
        self, entry: _Entry, triggers: tuple[TriggerRuntime, ...]
    ) -> tuple[list[TriggerReading], list[str]]:
        """Every sampled trigger at once; a failure is reported (Event, counter) and leaves
        that trigger out, never in as a 0."""
        sj = entry.sj
        sampled = [t for t in triggers if t.scaler is not None]
        now = self._clock()
        results = await asyncio.gather(
            *(self._sample_one(t, now) for t in sampled), return_exceptions=True
        )
        readings: list[TriggerReading] = []
        failed: list[str] = []
        for t, result in zip(sampled, results, strict=True):
            if isinstance(result, Sample):
                readings.append(TriggerReading(result.value, t.spec.target, result.active))
                self._record(sj, t, result)
                continue
            message = f"{t.spec.name}: {result}"
            failed.append(message)
            self.errors.labels(*sj.key).inc()
            log.warning(
                "scaledjob trigger failed",
                extra={"object": f"{sj.namespace}/{sj.name}", "error": message},
            )
            await self.writer.event(sj, "Warning", "KEDAScalerFailed", message)
        entry.failing_polls = entry.failing_polls + 1 if failed else 0
        if entry.failing_polls >= REBUILD_AFTER and not entry.retired:
            # KEDA rebuilds a failing ScaledJob's scalers (and re-reads its Secrets).
            entry.failing_polls = 0
            await close_scalers(triggers)
            entry.triggers = None
        return readings, failed

    async def _sample_one(self, t: TriggerRuntime, now: float) -> Sample:
        assert t.scaler is not None
        try:
            async with asyncio.timeout(self._settings.poll.http_timeout):
                return await t.scaler.sample(now)
        except TimeoutError as exc:
            raise ScalerError(
                f"query timed out after {self._settings.poll.http_timeout:.1f}s"
            ) from exc
        except TidalError:
            raise
        except Exception as exc:  # a plugin bug is this trigger's failure, nothing more
            raise ScalerError(f"{type(exc).__name__}: {exc}") from exc

    def _labels(self, sj: ScaledJob, t: TriggerRuntime) -> tuple[str, ...]:
        """KEDA's scaler labels with type "scaledjob" (the metric name is the trigger's)."""
        return (
            sj.namespace,
            t.spec.name,
            sj.name,
            t.trigger.type,
            str(t.trigger.index),
            "scaledjob",
        )

    def _record(self, sj: ScaledJob, t: TriggerRuntime, sample: Sample) -> None:
        if self.telemetry is not None:
            labels = self._labels(sj, t)
            self.telemetry.scaler_value.labels(*labels).set(sample.value)
            self.telemetry.scaler_active.labels(*labels).set(1.0 if sample.active else 0.0)

    def _forget_metrics(self, entry: _Entry) -> None:
        if self.telemetry is None or not entry.triggers:
            return
        for t in entry.triggers:
            for gauge in (self.telemetry.scaler_value, self.telemetry.scaler_active):
                with contextlib.suppress(KeyError):
                    gauge.remove(*self._labels(entry.sj, t))

    def _counts(self, entry: _Entry) -> JobCounts:
        """Running and pending Jobs (the watch's), plus the ones created but not seen yet."""
        sj = entry.sj
        jobs = self.owned.of(sj.key)
        loop_now = asyncio.get_running_loop().time()
        for name, at in list(entry.unseen.items()):
            if (sj.namespace, name) in jobs or loop_now - at > UNSEEN_TTL:
                del entry.unseen[name]
        counts = self.owned.counts(sj.key, sj.scaling.pending_pod_conditions)
        unseen = len(entry.unseen)
        return JobCounts(counts.running + unseen, counts.pending + unseen)

    async def _rollout(self, entry: _Entry) -> None:
        """Rollout strategy `default`: the Jobs of another generation are deleted (with the
        propagation policy) when a new generation is first polled; `gradual` keeps them."""
        sj = entry.sj
        if sj.rollout == "default":
            generation = str(sj.generation)
            old = [
                name
                for (_, name), job in self.owned.of(sj.key).items()
                if job["metadata"]["annotations"].get(GENERATION_ANNOTATION) != generation
            ]
            if old:
                deleted = await self.writer.delete_jobs(sj, sorted(old), sj.propagation)
                log.info(
                    "jobs of an older scaledjob generation deleted",
                    extra={"object": f"{sj.namespace}/{sj.name}", "jobs": deleted},
                )
                if deleted < len(old):
                    return  # not all deleted (fenced or failed): again next poll
        entry.rolled_out = sj.generation

    async def _prune(self, entry: _Entry) -> int:
        sj = entry.sj
        names = to_prune(
            self.owned.of(sj.key).values(),
            sj.successful_history_limit,
            sj.failed_history_limit,
        )
        if not names:
            return 0
        return await self.writer.delete_jobs(sj, names, "background")

    async def _check_failed(self, entry: _Entry, message: str) -> None:
        sj = entry.sj
        await self._set_conditions(entry, check_failed(sj, message))
        if entry.reported != message:
            entry.reported = message
            log.warning(
                "scaledjob check failed",
                extra={"object": f"{sj.namespace}/{sj.name}", "error": message},
            )
            await self.writer.event(sj, "Warning", "ScaledJobCheckFailed", message)

    async def _set_conditions(
        self,
        entry: _Entry,
        conditions: list[dict[str, str]],
        last_active: float | None = None,
        force: bool = False,
    ) -> None:
        sj = entry.sj
        if entry.written == conditions and not force:
            return
        patch = status_patch(sj, conditions, last_active, force=force)
        if patch is None:
            entry.written = conditions
            return
        before = {c["type"]: c["status"] for c in (entry.written or _stored(sj))}
        if not await self.writer.write_status(sj, patch):
            return
        entry.written = conditions
        after = {c["type"]: c["status"] for c in conditions}
        if after.get("Ready") == "True" and before.get("Ready") != "True":
            await self.writer.event(
                sj, "Normal", "ScaledJobReady", "ScaledJob is ready for scaling"
            )
        if after.get("Active") != before.get("Active"):
            if after.get("Active") == "True":
                await self.writer.event(
                    sj,
                    "Normal",
                    "ScaledJobActive",
                    "Scaling is performed because triggers are active",
                )
            elif after.get("Active") == "False":
                await self.writer.event(
                    sj,
                    "Normal",
                    "ScaledJobInactive",
                    "Scaling is not performed because triggers are not active",
                )


def _stored(sj: ScaledJob) -> list[dict[str, str]]:
    return [
        {"type": str(c.get("type")), "status": str(c.get("status"))}
        for c in sj.status.get("conditions") or ()
        if isinstance(c, Mapping)
    ]


def _same_spec(a: ScaledJob, b: ScaledJob) -> bool:
    """An event that changed neither generation, labels nor annotations (a status write)."""
    return (
        a.uid == b.uid
        and a.generation == b.generation
        and a.labels == b.labels
        and a.annotations == b.annotations
    )
