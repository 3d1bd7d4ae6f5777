"""One poll of one object: build it when it needs to, read its scale target, sample its triggers
into the store, decide, and hand the decision to the actuator (on the leader).

The scheduler calls `poll(key)`. Samples and decisions for a runtime retired meanwhile (edited
or deleted while a query ran) are dropped, never recorded or applied.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from scaler.actuator import Actuator
from scaler.builder import Builder
from scaler.contract import Sample, Scaler
from scaler.decide import Decision, DecisionInput, TriggerView, decide
from scaler.errors import ConfigError, KubeError, NotLeaderError, ScalerError, TidalError
from scaler.kube.paths import GVKR
from scaler.kube.targets import TargetCache, TargetState
from scaler.objects import hpa_max_replicas
from scaler.runtime import ObjectRuntime, Phase
from scaler.scheduler import Deadlines
from scaler.settings import PollSettings
from scaler.store import MetricStore
from scaler.table import ObjectTable
from scaler.telemetry import Telemetry, TriggerLabels

log = logging.getLogger(__name__)

Key = tuple[str, str]
REBUILD_ON_ERROR_EVERY = 30.0  # seconds between rebuilds of a failing object's scalers


class Poller:
    def __init__(
        self,
        table: ObjectTable,
        builder: Builder,
        actuator: Actuator,
        *,
        store: MetricStore,
        targets: TargetCache,
        telemetry: Telemetry,
        settings: PollSettings,
        clock: Callable[[], float],
        may_write: Callable[[], bool],
    ) -> None:
        self._table = table
        self._builder = builder
        self._actuator = actuator
        self._store = store
        self._targets = targets
        self._telemetry = telemetry
        self._settings = settings
        self._clock = clock
        self._may_write = may_write
        self._deadlines = Deadlines()

    def record_lateness(self, key: Key, lateness: float) -> None:
        """The scheduler's report of how late a poll started (KEDA's scale loop latency)."""
        self._telemetry.lateness.observe(lateness)
        rt = self._table.get(key)
        if rt is None:
            return
        if rt.lateness is None:
            rt.lateness = self._telemetry.loop_latency.labels(key[0], "scaledobject", key[1])
        rt.lateness.set(lateness)

    async def poll(self, key: Key) -> None:
        rt = self._table.get(key)
        if rt is None:
            return
        rt.polling = True
        try:
            await self._poll(rt)
        finally:
            rt.polling = False
            if rt.is_retired():
                await rt.close()  # replaced or removed while it was being polled

    async def _poll(self, rt: ObjectRuntime) -> None:
        so = rt.so
        rt.polls += 1
        if rt.needs_build:
            await self._builder.build(rt)
        if rt.phase is Phase.BLOCKED and rt.failure is not None:
            await self._not_ready(rt, rt.failure.error)
            return
        build = rt.build
        if rt.phase is not Phase.RUNNING or build is None:
            return  # retired, or an input changed while building: built again at once
        target = build.target
        state = await self._target_state(rt, target)
        if state is None or rt.is_retired():
            return
        current = state.replicas
        if rt.original_replicas is None:
            rt.original_replicas = so.original_replica_count
            if rt.original_replicas is None:
                rt.original_replicas = current
        self._telemetry.record_replicas(
            so.namespace, so.name, current, so.min_replica_count, hpa_max_replicas(so)
        )
        decision = await self._sample_and_decide(rt, current)
        if decision.scale_to_zero and self._may_write():
            # Safety rule 2: re-check activity (and the replica count: someone may have scaled
            # meanwhile) just before lowering to zero / idle.
            state = await self._target_state(rt, target)
            if state is None:
                return
            decision = await self._sample_and_decide(rt, state.replicas)
        if rt.is_retired():
            return  # edited or deleted while sampling: the new runtime decides
        self._store.set_broken(so.namespace, so.name, None)
        rt.last_active_time = decision.last_active_time
        self._store.set_fallback(
            so.namespace,
            so.name,
            decision.fallback_replicas if decision.fallback_active else None,
            ready_replicas=state.ready_replicas,
        )
        self._telemetry.record_paused(so.namespace, so.name, so.flags.paused)
        if not self._may_write():
            return
        try:
            await self._actuator.actuate(rt, target, state, decision)
        except NotLeaderError:
            return  # leadership lost mid-poll: the new leader writes from now on
        except KubeError as exc:
            if rt.is_retired():
                return  # edited or deleted while writing (a 404 or 409 says so)
            self._telemetry.object_errors.labels(so.namespace, so.name).inc()
            log.warning(
                "write failed", extra={"object": f"{so.namespace}/{so.name}", "error": str(exc)}
            )

    async def _target_state(self, rt: ObjectRuntime, target: GVKR) -> TargetState | None:
        """The scale target's replicas as the poll decides from them; None (reported) when
        the target is missing or unreadable."""
        so = rt.so
        name = so.scale_target_ref.name
        try:
            state = await self._targets.state(target, so.namespace, name)
        except KubeError as exc:
            await self._not_ready(rt, ConfigError(f"reading the scale target: {exc}"))
            return None
        if state is None:
            msg = f"the scale target {target.gvk_string} {name} was not found"
            await self._not_ready(rt, ConfigError(msg))
        return state

    async def _not_ready(self, rt: ObjectRuntime, problem: TidalError) -> None:
        """The object cannot be run now: its metrics are served as errors at once (never the
        last value, which nothing refreshes any more), and it reports Ready=False."""
        if rt.is_retired():
            return
        self._store.set_broken(rt.so.namespace, rt.so.name, str(problem))
        await self._actuator.report_invalid_runtime(rt, problem)

    async def _sample_and_decide(self, rt: ObjectRuntime, current: int) -> Decision:
        so = rt.so
        now = self._clock()
        triggers = rt.triggers
        only = triggers[0].scaler if len(triggers) == 1 else None
        if only is not None:
            # Most objects have one sampled trigger: no lists, dict or gather for it.
            t = triggers[0]
            error = await self._sample_one(
                rt, t.spec.name, t.trigger.type, t.trigger.index, only, now
            )
            views: tuple[TriggerView, ...] = (self._view(rt, t.spec.name, t.trigger.type, error),)
        else:
            views = await self._sample_all(rt, now)
        inp = DecisionInput(
            so=so,
            current_replicas=current,
            triggers=views,
            last_active_time=rt.last_active_time,
            now=now,
        )
        decision = decide(inp)
        # Kept for `tidal explain` (the debug endpoint): references to what exists anyway.
        rt.last_input, rt.last_decision = inp, decision
        return decision

    async def _sample_all(self, rt: ObjectRuntime, now: float) -> tuple[TriggerView, ...]:
        """Every sampled trigger of the object at once; views in the triggers' order."""
        sampled = [t for t in rt.triggers if t.scaler is not None]
        calls = [
            self._sample_one(rt, t.spec.name, t.trigger.type, t.trigger.index, t.scaler, now)
            for t in sampled
            if t.scaler is not None
        ]
        results = await asyncio.gather(*calls)
        by_name = dict(zip((t.spec.name for t in sampled), results, strict=True))
        return tuple(
            self._view(rt, t.spec.name, t.trigger.type, by_name[t.spec.name])
            if t.scaler is not None
            else TriggerView(t.spec.name, t.trigger.type)
            for t in rt.triggers
        )

    def _view(self, rt: ObjectRuntime, metric: str, typ: str, error: str | None) -> TriggerView:
        """What decide() sees of a trigger sampled in this poll: the store's record of it."""
        record = self._store.get(rt.so.namespace, rt.so.name, metric)
        if record is None:
            return TriggerView(metric_name=metric, trigger_type=typ, error=error)
        return TriggerView(
            metric_name=metric,
            trigger_type=typ,
            sample=record.sample(),
            error=error,
            consecutive_failures=record.consecutive_failures,
        )

    async def _sample_one(
        self, rt: ObjectRuntime, metric: str, typ: str, index: int, scaler: Scaler, now: float
    ) -> str | None:
        """Sample one trigger into the store; returns the error text (None on success)."""
        so = rt.so
        t0 = time.perf_counter()
        try:
            # The full query timeout, not capped by pollingInterval: a busy loop must not turn
            # a healthy 1 s trigger into "failing" and back (a status write each way).
            sample = await sample_with_timeout(
                scaler, now, self._settings.http_timeout, self._deadlines
            )
        except (ScalerError, ConfigError) as exc:
            if not rt.is_retired():
                labels = TriggerLabels(so.namespace, metric, so.name, typ, index).values()
                await self._record_failure(rt, metric, labels, str(exc), now)
            return str(exc)
        except Exception as exc:  # a scaler bug must not stall the object loop
            log.exception(
                "scaler raised an unexpected error",
                extra={"object": f"{so.namespace}/{so.name}", "trigger": metric},
            )
            error = type(exc).__name__
            if not rt.is_retired():
                labels = TriggerLabels(so.namespace, metric, so.name, typ, index).values()
                self._store.record_error(so.namespace, so.name, metric, error, now)
                self._telemetry.scaler_errors.labels(*labels).inc()
                self._telemetry.object_errors.labels(so.namespace, so.name).inc()
            return error
        if rt.is_retired():
            return None  # edited or deleted meanwhile: nothing is recorded
        previous = self._store.get(so.namespace, so.name, metric)
        if previous is not None and previous.failing:
            where = {"object": f"{so.namespace}/{so.name}", "trigger": metric}
            log.info("trigger recovered", extra=where)
        self._store.record_sample(so.namespace, so.name, metric, sample)
        children = rt.gauges.get(metric)
        if children is None:
            labels = TriggerLabels(so.namespace, metric, so.name, typ, index).values()
            t = self._telemetry
            children = tuple(
                g.labels(*labels)
                for g in (t.scaler_latency, t.scaler_value, t.scaler_active, t.staleness)
            )
            rt.gauges[metric] = children
        latency, value, active, staleness = children
        latency.set(time.perf_counter() - t0)
        value.set(sample.value)
        active.set(int(sample.active))
        staleness.set(0)
        return None

    async def _record_failure(
        self, rt: ObjectRuntime, metric: str, labels: tuple[str, ...], error: str, now: float
    ) -> None:
        so = rt.so
        record = self._store.record_error(so.namespace, so.name, metric, error, now)
        if record is None:
            return
        self._telemetry.scaler_errors.labels(*labels).inc()
        self._telemetry.object_errors.labels(so.namespace, so.name).inc()
        failures = record.consecutive_failures
        every = self._settings.failing_log_every
        if failures == 1 or failures % every == 0:
            log.warning(
                "trigger failing",
                extra={
                    "object": f"{so.namespace}/{so.name}",
                    "trigger": metric,
                    "failures": failures,
                    "error": error,
                },
            )
            await self._actuator.report_trigger_failing(rt, metric, error)
        # KEDA rebuilds a failing scaler (re-reading its secrets); at most every 30 s here, so
        # a broker outage doesn't churn clients and push subscriptions every poll.
        built_at = float("-inf") if rt.build is None else rt.build.at
        if asyncio.get_running_loop().time() - built_at > REBUILD_ON_ERROR_EVERY:
            rt.invalidate()


async def sample_with_timeout(
    scaler: Scaler, now: float, timeout: float, deadlines: Deadlines | None = None
) -> Sample:
    """One sample bounded by `timeout` (a timeout is a ScalerError, never a 0); with
    `deadlines`, the poll loop's shared coarse timers instead of one timer per sample."""
    try:
        if deadlines is not None:
            return await deadlines.run(scaler.sample(now), timeout)
        async with asyncio.timeout(timeout):
            return await scaler.sample(now)
    except TimeoutError as exc:
        raise ScalerError(f"query timed out after {timeout:.1f}s") from exc
