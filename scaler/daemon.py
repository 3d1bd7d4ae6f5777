"""The daemon: watches → per-object runtime → scheduler → scalers → store → decide → actuate.

Everything runs on one event loop. Watch handlers only record what changed and wake the object;
the object's next poll (re)builds its scalers, samples its triggers concurrently, decides, and —
on the leader only — writes: the /scale subresource, the HPA, status and Events, each only when
something changed. A failure in one object is logged, reported on that object and never stops
the others (safety rule 6).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import itertools
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

from scaler.actuator import Actuator, hpa_fingerprint
from scaler.admission import keep_hpa, ownership_problem
from scaler.clients import ClientPool
from scaler.contract import Sample
from scaler.decide import Decision, DecisionInput, TriggerView, decide
from scaler.errors import (
    ConfigError,
    KubeError,
    NotLeaderError,
    ScalerError,
    TidalError,
)
from scaler.finalizers import FINALIZER, Finalizers, involved
from scaler.kube.client import JSON, KubeClient
from scaler.kube.events import EventRecorder
from scaler.kube.hpa import (
    SO_NAME_LABEL,
    desired_hpa,
    hpa_drifted,
)
from scaler.kube.lease import LeaderElector, LeaseSettings
from scaler.kube.objects_io import fetch_data
from scaler.kube.paths import (
    GVKR,
    KEDA_GROUP,
    KEDA_VERSION,
    ResourceMapper,
    api_prefix,
    scaled_objects,
)
from scaler.kube.targets import TargetCache, TargetState
from scaler.kube.watch import EventType, Watcher, object_key
from scaler.objects import (
    ScaledObject,
    hpa_max_replicas,
    hpa_name,
    parse_scaled_object,
    parse_timestamp,
)
from scaler.push import push_loop
from scaler.registry import Registry, default_registry
from scaler.runtime import ObjectRuntime, TriggerRuntime, build_triggers, sample_with_timeout
from scaler.scheduler import Scheduler
from scaler.settings import Settings
from scaler.status import (
    stored_last_active_time,
)
from scaler.store import MetricStore
from scaler.telemetry import Telemetry, TriggerLabels

log = logging.getLogger(__name__)

PUSH_ANNOTATION = "autoscaling.tidal.sh/push"  # "false": poll only, never subscribe
REBUILD_ON_ERROR_EVERY = 30.0  # seconds between rebuilds of a failing object's scalers
STALE_AFTER_POLLS = 3  # a metric value not refreshed for this many polls is not served
MIN_STALE_INTERVAL = 5.0  # seconds: the polling interval counted at least this long for that
Key = tuple[str, str]


class Daemon:
    def __init__(
        self,
        settings: Settings,
        kube: KubeClient,
        *,
        telemetry: Telemetry | None = None,
        registry: Registry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.kube = kube
        self.telemetry = telemetry or Telemetry()
        self.registry = registry or default_registry()
        self.clock = clock
        self.clients = ClientPool()
        self.store = MetricStore()
        self.objects: dict[Key, ObjectRuntime] = {}
        self.mapper = ResourceMapper(kube)
        ns = settings.watch.namespace
        self.targets = TargetCache(kube, ns)
        self.events = EventRecorder(kube, settings.leader.identity)
        self.finalizers = Finalizers(kube, self.telemetry, self.events)
        self.actuator = Actuator(
            kube,
            self.targets,
            self.events,
            self.telemetry,
            self.finalizers,
            may_write=self._may_write,
            is_current=self._current,
            failing_log_every=settings.poll.failing_log_every,
        )
        self.leader: LeaderElector | None = None
        if settings.leader.enabled:
            kube.write_guard = self._may_write
            s = settings.leader
            self.leader = LeaderElector(
                kube,
                LeaseSettings(
                    s.namespace,
                    s.name,
                    s.identity,
                    s.lease_duration,
                    s.renew_deadline,
                    s.retry_period,
                ),
                clock,
            )
        keda = api_prefix(KEDA_GROUP, KEDA_VERSION)
        ns_part = f"/namespaces/{ns}" if ns else ""
        self.so_watcher = Watcher(
            kube,
            scaled_objects(ns or None),
            self._on_scaled_object,
            label_selector=settings.watch.label_selector or None,
            name="scaledobjects",
            keep=_keep_meta,  # the parsed object lives in the runtime; the cache needs rv only
        )
        self.ta_watcher = Watcher(
            kube, f"{keda}{ns_part}/triggerauthentications", self._on_auth, name="triggerauths"
        )
        self.cta_watcher = Watcher(
            kube, f"{keda}/clustertriggerauthentications", self._on_auth, name="clustertriggerauths"
        )
        # Every HPA, not only ours: the ownership check must see HPAs someone else made.
        self.hpa_watcher = Watcher(
            kube,
            f"/apis/autoscaling/v2{ns_part}/horizontalpodautoscalers",
            self._on_hpa,
            name="hpas",
            keep=keep_hpa,
        )
        # Metadata-only watches of Secrets and ConfigMaps: a change to one an object read while
        # building its scalers (auth params, *FromEnv) rebuilds that object. No values are read.
        self.ref_watchers = [
            Watcher(
                kube,
                f"/api/v1{ns_part}/{resource}",
                functools.partial(self._on_ref, kind),
                name=resource,
                metadata_only=True,
                keep=_keep_meta,
            )
            for kind, resource in (("Secret", "secrets"), ("ConfigMap", "configmaps"))
        ]
        self._by_ref: dict[tuple[str, str, str], set[Key]] = {}
        self._lateness_children: dict[Key, Any] = {}
        self._per_namespace: dict[str, int] = {}
        self._per_type: dict[str, int] = {}
        self.scheduler: Scheduler[Key] | None = None
        self.started = asyncio.Event()
        self._generations = itertools.count(1)
        self._closing: set[asyncio.Future[None]] = set()  # runtimes being closed

    # ------------------------------------------------------------------ lifecycle

    @property
    def is_leader(self) -> bool:
        return self.leader is None or self.leader.is_leader

    def _may_write(self) -> bool:
        """Checked before every write: leadership can be lost while a poll runs (a renewal
        that missed its deadline), and from then on only the new leader writes."""
        return self.leader is None or self.leader.is_leader

    def ready(self) -> bool:
        """Watches synced and leadership known (leader or standby): /readyz."""
        synced = self.so_watcher.synced.is_set() and self.started.is_set()
        return synced and (self.leader is None or self.leader.known.is_set())

    async def run(self) -> None:
        """Run until cancelled. On cancel: stop polling, release the lease, close clients."""
        loop = asyncio.get_running_loop()
        self.scheduler = Scheduler(loop.time, on_lateness=self._lateness)
        tasks: list[asyncio.Task[None]] = []
        try:
            if self.leader is not None:
                tasks.append(asyncio.create_task(self.leader.run(), name="leader-election"))
            first = (
                *self.targets.watchers.values(),
                self.ta_watcher,
                self.cta_watcher,
                self.hpa_watcher,
                *self.ref_watchers,
            )
            for w in first:
                tasks.append(asyncio.create_task(w.run(), name=f"watch {w.name}"))
            for w in first:
                await w.synced.wait()
            tasks.append(asyncio.create_task(self.so_watcher.run(), name="watch scaledobjects"))
            await self.so_watcher.synced.wait()
            # Everything loaded so far lives as long as the daemon: move it out of the
            # collector's reach, so full collections stop pausing the loop for 0.5 s at 1000
            # objects (measured by benchmarks/daemon_scale.py).
            gc.collect()
            gc.freeze()
            self.started.set()
            log.info("daemon started", extra={"objects": len(self.objects)})
            await self.scheduler.run(self._poll, self.settings.poll.max_concurrent)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.leader is not None:
                with contextlib.suppress(Exception):
                    await self.leader.release()
            for rt in list(self.objects.values()):
                self._close_later(rt)
            if self._closing:
                await asyncio.gather(*self._closing, return_exceptions=True)
            await self.clients.aclose()

    def _lateness(self, key: Key, lateness: float) -> None:
        self.telemetry.lateness.observe(lateness)
        child = self._lateness_children.get(key)
        if child is None:
            child = self.telemetry.loop_latency.labels(key[0], "scaledobject", key[1])
            self._lateness_children[key] = child
        child.set(lateness)

    def _wake(self, key: Key) -> None:
        if self.scheduler is not None and key in self.scheduler:
            self.scheduler.wake(key)

    # ------------------------------------------------------------------ watch handlers

    async def _on_scaled_object(self, kind: EventType, raw: JSON) -> None:
        key = object_key(raw)
        meta = raw.get("metadata", {})
        if kind == "DELETED":
            await self._forget(key)
            return
        if meta.get("deletionTimestamp"):
            await self._finalize(key, raw)
            return
        rt = self.objects.get(key)
        status = dict(raw.get("status") or {})
        if rt is not None and not _spec_changed(rt.so, raw):
            rt.last_status = status
            rt.status_key = None  # compare against what the API now holds
            # Another writer (an old leader) may have recorded a later activity.
            stored = parse_timestamp(status.get("lastActiveTime"))
            rt.last_active_time = _later(rt.last_active_time, stored)
            return
        try:
            so = parse_scaled_object(raw)
            problem: ConfigError | None = None
        except ConfigError as exc:
            so, problem = None, exc
        if so is None:
            assert problem is not None
            await self._forget(key)
            await self.actuator.report_invalid(raw, problem)
            return
        new = ObjectRuntime(so, generation=next(self._generations))
        new.needs_rebuild = True
        new.last_status = status
        new.last_active_time = stored_last_active_time(status, self.clock())
        new.finalizer_added = FINALIZER in (meta.get("finalizers") or [])
        if rt is not None:
            new.refs = rt.refs
            new.last_active_time = _later(rt.last_active_time, new.last_active_time)
            new.original_replicas = rt.original_replicas
            self._count(rt.so, -1)
        # The new runtime is current before the old one is closed: work still running for
        # the old one (a rebuild awaiting a Secret, a poll) sees it is stale and drops out.
        self.objects[key] = new
        self._count(so, +1)
        if rt is not None:
            self._forget_series(rt, keep=so)
            self._close_later(rt)
        if self.scheduler is not None:
            loop_now = asyncio.get_running_loop().time()
            if key in self.scheduler:
                self.scheduler.set_interval(key, so.polling_interval)
                self.scheduler.wake(key)
            else:
                self.scheduler.schedule(key, loop_now, so.polling_interval)

    async def _on_auth(self, kind: EventType, raw: JSON) -> None:
        ns, name = object_key(raw)
        auth_kind = raw.get("kind", "")
        for key, rt in self.objects.items():
            for t in rt.so.triggers:
                ref = t.authentication_ref
                if ref is None or ref.name != name or ref.kind != auth_kind:
                    continue
                if auth_kind == "TriggerAuthentication" and key[0] != ns:
                    continue
                rt.needs_rebuild = True
                self._wake(key)

    async def _on_ref(self, ref_kind: str, kind: EventType, raw: JSON) -> None:
        meta = raw.get("metadata", {})
        ref = (ref_kind, str(meta.get("namespace", "")), str(meta.get("name", "")))
        for key in self._by_ref.get(ref, ()):
            rt = self.objects.get(key)
            if rt is not None:
                rt.needs_rebuild = True
                self._wake(key)

    def _index_refs(
        self, key: Key, old: frozenset[tuple[str, str, str]], new: frozenset[tuple[str, str, str]]
    ) -> None:
        for ref in old - new:
            keys = self._by_ref.get(ref)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_ref[ref]
        for ref in new - old:
            self._by_ref.setdefault(ref, set()).add(key)

    async def _on_hpa(self, kind: EventType, raw: JSON) -> None:
        ns = raw.get("metadata", {}).get("namespace", "")
        so_name = (raw.get("metadata", {}).get("labels") or {}).get(SO_NAME_LABEL)
        if so_name is None:
            # Someone else's HPA: an object it blocked may be free now (or be blocked now).
            for key, other in self.objects.items():
                if key[0] == ns and (other.config_error is not None or kind == "ADDED"):
                    other.needs_rebuild = True
            return
        rt = self.objects.get((ns, str(so_name)))
        if rt is None or rt.target is None or rt.so.flags.paused:
            return
        if kind == "DELETED":
            rt.hpa_dirty = True
        elif raw.get("metadata", {}).get("name") == hpa_name(rt.so):
            seen = hpa_fingerprint(raw)
            if seen == rt.hpa_seen:
                return  # a status update by the HPA controller (every sync period): no drift
            rt.hpa_dirty = hpa_drifted(desired_hpa(self.actuator.hpa_request(rt, rt.target)), raw)
            if not rt.hpa_dirty:
                rt.hpa_seen = seen
        if rt.hpa_dirty:
            self._wake((ns, str(so_name)))

    def _close_later(self, rt: ObjectRuntime) -> None:
        """Close a replaced or removed runtime off the watch handler: closing waits for push
        subscriptions to end, and a watch must never wait on one object (safety rule 6). A
        runtime being polled is closed by that poll when it ends, never under its feet (a
        scaler closed mid-query would reconnect and leak its connection)."""
        if rt.polling:
            return
        task = asyncio.ensure_future(rt.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _current(self, rt: ObjectRuntime) -> bool:
        """Whether `rt` is still the object's runtime: work begun for a runtime that an edit or
        a delete replaced meanwhile is dropped, never applied."""
        return self.objects.get(rt.so.key) is rt

    def _forget_series(self, rt: ObjectRuntime, keep: ScaledObject | None = None) -> None:
        """Drop the old runtime's per-trigger series when its spec changed (the new triggers'
        series appear with their first sample)."""
        if keep is None or keep.triggers != rt.so.triggers:
            self.telemetry.forget_triggers(rt.so.namespace, rt.so.name)

    async def _forget(self, key: Key) -> None:
        rt = self.objects.pop(key, None)
        if self.scheduler is not None:
            self.scheduler.remove(key)
        self.store.remove_object(*key)
        self._lateness_children.pop(key, None)
        self.telemetry.forget_object(*key)
        if rt is not None:
            self._index_refs(key, rt.refs, frozenset())
            self._close_later(rt)
            self.events.forget(rt.so.uid)
            self._count(rt.so, -1)

    def _count(self, so: ScaledObject, delta: int) -> None:
        """Keep keda_resource_registered_total / keda_trigger_registered_total current by
        delta (a recount of every object on each event was O(objects) per event)."""
        n = self._per_namespace[so.namespace] = self._per_namespace.get(so.namespace, 0) + delta
        if n:
            self.telemetry.resources.labels("scaled_object", so.namespace).set(n)
        else:
            del self._per_namespace[so.namespace]
            self.telemetry.resources.remove("scaled_object", so.namespace)
        for t in so.triggers:
            m = self._per_type[t.type] = self._per_type.get(t.type, 0) + delta
            if m:
                self.telemetry.triggers.labels(t.type).set(m)
            else:
                del self._per_type[t.type]
                self.telemetry.triggers.remove(t.type)

    # ------------------------------------------------------------------ polling

    async def _rebuild(self, rt: ObjectRuntime) -> None:
        """(Re)build the object's scalers. Every await may see the object edited or deleted:
        a rebuild that finds its runtime replaced closes what it built and registers nothing
        (no store entry, reference index entry, push task or subscription outlives it)."""
        so = rt.so
        await rt.close()
        rt.needs_rebuild = False
        rt.config_error = None
        notes: list[str] = []
        read: set[tuple[str, str, str]] = set()

        async def recording_fetch(kind: Literal["Secret", "ConfigMap"], ns: str, name: str) -> Any:
            read.add((kind, ns, name))
            return await fetch_data(self.kube, kind, ns, name)

        built: list[TriggerRuntime] = []
        try:
            target = await self.mapper.resolve(
                so.scale_target_ref.api_version, so.scale_target_ref.kind
            )
            if not self._current(rt):
                return
            rt.target = target
            owner = ownership_problem(
                rt.so,
                rt.target,
                (o.so for o in self.objects.values()),
                self.hpa_watcher.objects,
            )
            if owner is not None:
                rt.config_error = ConfigError(owner)
                rt.needs_rebuild = True  # re-checked every poll: the other owner may go away
                return
            containers = self.targets.containers(rt.target, so.namespace, so.scale_target_ref.name)
            built = await build_triggers(
                so,
                registry=self.registry,
                clients=self.clients,
                fetch=recording_fetch,
                auth_lookup=self._auth_spec,
                pod_spec=None if containers is None else {"containers": containers},
                cluster_namespace=self.settings.watch.cluster_object_namespace,
                timeout=self.settings.poll.http_timeout,
                notes=notes,
            )
        except ConfigError as exc:
            rt.config_error = exc
            return
        except KubeError as exc:
            rt.config_error = ConfigError(f"scale target: {exc}")
            rt.needs_rebuild = True  # transient: try again next poll
            return
        finally:
            if self._current(rt):
                # Also after a failure: a missing Secret that appears later rebuilds the object.
                refs = frozenset(read)
                self._index_refs(so.key, rt.refs, refs)
                rt.refs = refs
        if not self._current(rt):
            for t in built:
                if t.scaler is not None:
                    with contextlib.suppress(Exception):
                        await t.scaler.aclose()
            return
        rt.triggers = built
        if notes and not rt.unknown_keys_warned:
            rt.unknown_keys_warned = True
            log.warning(
                "trigger metadata has unknown keys or warnings",
                extra={"object": f"{so.namespace}/{so.name}", "notes": notes},
            )
        fallback = so.fallback.failure_threshold if so.fallback else None
        self.store.register(so.namespace, so.name, rt.specs, fallback, max_age=self._max_age(so))
        for t in rt.triggers:
            if t.spec.kind == "External":
                labels = TriggerLabels(
                    so.namespace, t.spec.name, so.name, t.trigger.type, t.trigger.index
                )
                self.telemetry.record_target(labels, t.spec.target)
        rt.hpa_dirty = True
        rt.rebuilt_at = asyncio.get_running_loop().time()
        push_off = so.annotations.get(PUSH_ANNOTATION, "").strip().lower() in ("false", "0", "off")
        for t in rt.triggers:
            if push_off:
                break
            if t.scaler is not None and callable(getattr(t.scaler, "wakeups", None)):
                loop = push_loop(
                    so.key,
                    t,
                    wake=self._wake,
                    telemetry=self.telemetry,
                    recheck=self.settings.poll.push_recheck,
                )
                task = asyncio.create_task(loop, name=f"push {so.key}")
                rt.push_tasks.append(task)

    async def _finalize(self, key: Key, raw: JSON) -> None:
        rt = self.objects.get(key)
        await self._forget(key)
        if self._may_write():
            await self.finalizers.finalize(key, raw, None if rt is None else rt.so)

    async def _auth_spec(self, kind: str, namespace: str, name: str) -> Mapping[str, Any] | None:
        if kind == "ClusterTriggerAuthentication":
            obj = self.cta_watcher.objects.get(("", name))
        else:
            obj = self.ta_watcher.objects.get((namespace, name))
        return None if obj is None else dict(obj.get("spec") or {})

    async def _poll(self, key: Key) -> None:
        rt = self.objects.get(key)
        if rt is None:
            return
        rt.polling = True
        try:
            await self._poll_runtime(rt)
        finally:
            rt.polling = False
            if not self._current(rt):
                await rt.close()  # replaced or removed while it was being polled

    async def _poll_runtime(self, rt: ObjectRuntime) -> None:
        so = rt.so
        rt.polls += 1
        if rt.needs_rebuild:
            await self._rebuild(rt)
            if not self._current(rt):
                return
        if rt.config_error is not None or rt.target is None:
            await self._not_ready(rt, rt.config_error or ConfigError("scale target not resolved"))
            return
        target = rt.target
        state = await self._target_state(rt, target)
        if state is None or not self._current(rt):
            return
        current = state.replicas
        if rt.original_replicas is None:
            rt.original_replicas = so.original_replica_count
            if rt.original_replicas is None:
                rt.original_replicas = current
        self.telemetry.record_replicas(
            so.namespace, so.name, current, so.min_replica_count, hpa_max_replicas(so)
        )
        decision = await self._sample_and_decide(rt, current)
        if decision.scale_to_zero and self.is_leader:
            # Safety rule 2: re-check activity (and the replica count: someone may have scaled
            # meanwhile) just before lowering to zero / idle.
            state = await self._target_state(rt, target)
            if state is None:
                return
            decision = await self._sample_and_decide(rt, state.replicas)
        if not self._current(rt):
            return  # edited or deleted while sampling: the new runtime decides
        self.store.set_broken(so.namespace, so.name, None)
        rt.last_active_time = decision.last_active_time
        self.store.set_fallback(
            so.namespace,
            so.name,
            decision.fallback_replicas if decision.fallback_active else None,
            ready_replicas=state.ready_replicas,
        )
        self.telemetry.object_paused.labels(so.namespace, so.name).set(int(so.flags.paused))
        if self.is_leader:
            try:
                await self.actuator.actuate(rt, target, state, decision)
            except NotLeaderError:
                return  # leadership lost mid-poll: the new leader writes from now on
            except KubeError as exc:
                if not self._current(rt):
                    return  # edited or deleted while writing (a 404 or 409 says so)
                self.telemetry.object_errors.labels(so.namespace, so.name).inc()
                log.warning(
                    "write failed",
                    extra={"object": f"{so.namespace}/{so.name}", "error": str(exc)},
                )

    async def _target_state(self, rt: ObjectRuntime, target: GVKR) -> TargetState | None:
        """The scale target's replicas as the poll decides from them; None (reported) when
        the target is missing or unreadable."""
        so = rt.so
        name = so.scale_target_ref.name
        try:
            state = await self.targets.state(target, so.namespace, name)
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
        if not self._current(rt):
            return
        self.store.set_broken(rt.so.namespace, rt.so.name, str(problem))
        await self.actuator.report_invalid_runtime(rt, problem)

    def _max_age(self, so: ScaledObject) -> float:
        """How old a metric value may be when the HPA reads it (see README: a value no poll
        refreshed for this long is an error, never served as fresh)."""
        interval = max(float(so.polling_interval), MIN_STALE_INTERVAL)
        return STALE_AFTER_POLLS * interval + self.settings.poll.http_timeout

    async def _sample_and_decide(self, rt: ObjectRuntime, current: int) -> Decision:
        so = rt.so
        now = self.clock()
        sampled = [t for t in rt.triggers if t.scaler is not None]
        calls = [
            self._sample_one(rt, t.spec.name, t.trigger.type, t.trigger.index, t.scaler, now)
            for t in sampled
            if t.scaler is not None
        ]
        # Most objects have one trigger: await it directly (a gather costs a task per call).
        results = [await calls[0]] if len(calls) == 1 else await asyncio.gather(*calls)
        views: list[TriggerView] = []
        by_name = dict(zip((t.spec.name for t in sampled), results, strict=True))
        for t in rt.triggers:
            if t.scaler is None:
                views.append(TriggerView(t.spec.name, t.trigger.type))
                continue
            record = self.store.get(so.namespace, so.name, t.spec.name)
            sample = record.sample() if record is not None else None
            views.append(
                TriggerView(
                    metric_name=t.spec.name,
                    trigger_type=t.trigger.type,
                    sample=sample,
                    error=by_name[t.spec.name],
                    consecutive_failures=record.consecutive_failures if record else 0,
                )
            )
        return decide(
            DecisionInput(
                so=so,
                current_replicas=current,
                triggers=tuple(views),
                last_active_time=rt.last_active_time,
                now=now,
            )
        )

    async def _sample_one(
        self, rt: ObjectRuntime, metric: str, typ: str, index: int, scaler: Any, now: float
    ) -> str | None:
        """Sample one trigger into the store; returns the error text (None on success)."""
        so = rt.so
        labels = TriggerLabels(so.namespace, metric, so.name, typ, index).values()
        t0 = time.perf_counter()
        try:
            # The full query timeout, not capped by pollingInterval: a busy loop must not turn
            # a healthy 1 s trigger into "failing" and back (a status write each way).
            sample: Sample = await sample_with_timeout(scaler, now, self.settings.poll.http_timeout)

        except (ScalerError, ConfigError) as exc:
            if not self._current(rt):
                return str(exc)  # edited or deleted meanwhile: nothing is recorded
            record = self.store.record_error(so.namespace, so.name, metric, str(exc), now)
            if record is None:
                return str(exc)
            self.telemetry.scaler_errors.labels(*labels).inc()
            self.telemetry.object_errors.labels(so.namespace, so.name).inc()
            failures = record.consecutive_failures
            every = self.settings.poll.failing_log_every
            if failures == 1 or failures % every == 0:
                log.warning(
                    "trigger failing",
                    extra={
                        "object": f"{so.namespace}/{so.name}",
                        "trigger": metric,
                        "failures": failures,
                        "error": str(exc),
                    },
                )
                if self._may_write():  # KEDA users alert on this Event
                    await self.events.emit(
                        involved(so), "Warning", "KEDAScalerFailed", f"{metric}: {exc}"
                    )
            # KEDA rebuilds a failing scaler (re-reading its secrets); at most every 30 s here,
            # so a broker outage doesn't churn clients and push subscriptions every poll.
            if asyncio.get_running_loop().time() - rt.rebuilt_at > REBUILD_ON_ERROR_EVERY:
                rt.needs_rebuild = True
            return str(exc)
        except Exception as exc:  # a scaler bug must not stall the object loop
            log.exception(
                "scaler raised an unexpected error",
                extra={"object": f"{so.namespace}/{so.name}", "trigger": metric},
            )
            if not self._current(rt):
                return type(exc).__name__
            self.store.record_error(so.namespace, so.name, metric, type(exc).__name__, now)
            self.telemetry.scaler_errors.labels(*labels).inc()
            self.telemetry.object_errors.labels(so.namespace, so.name).inc()
            return type(exc).__name__
        if not self._current(rt):
            return None  # edited or deleted meanwhile: nothing is recorded
        previous = self.store.get(so.namespace, so.name, metric)
        if previous is not None and previous.failing:
            log.info(
                "trigger recovered",
                extra={"object": f"{so.namespace}/{so.name}", "trigger": metric},
            )
        self.store.record_sample(so.namespace, so.name, metric, sample)
        children = rt.gauges.get(metric)
        if children is None:
            t = self.telemetry
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

    # ------------------------------------------------------------------ writes (leader only)


def _later(a: float | None, b: float | None) -> float | None:
    """The later of two optional times."""
    if a is None or b is None:
        return b if a is None else a
    return max(a, b)


def _keep_meta(obj: JSON) -> JSON:
    meta = obj.get("metadata", {})
    return {
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "resourceVersion": meta.get("resourceVersion"),
        },
    }


def _spec_changed(so: ScaledObject, raw: JSON) -> bool:
    """A change Tidal must act on: spec (generation), labels or annotations."""
    meta = raw.get("metadata", {})
    if int(meta.get("generation") or 0) != so.generation:
        return True
    if dict(meta.get("labels") or {}) != dict(so.labels):
        return True
    return dict(meta.get("annotations") or {}) != dict(so.annotations)
