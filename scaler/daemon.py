"""The daemon: watches → per-object runtime → scheduler → scalers → store → decide → actuate.

Everything runs on one event loop. `Daemon` only wires the parts, each a module with one job:

* scaler.inputs — the watches; handlers record what changed and wake the object;
* scaler.table — the object runtimes (scaler.runtime: their lifecycle), admitted, replaced and
  retired, and the poll scheduler's membership;
* scaler.builder — an object's scalers built from its spec, auth and references;
* scaler.poller — one poll: build if needed, sample, decide (scaler.decide);
* scaler.actuator — the leader's writes: /scale, the HPA, status, Events, the finalizer;
* scaler.jobs — ScaledJobs: their own watch, poll loop and writes (Jobs, status, Events);
* scaler.http_objects — HTTPScaledObjects into the ScaledObjects they own (--http-interceptors);
* scaler.kube.lease or scaler.kube.members — who writes: one elected leader, or (`--shards
  auto`) every replica for the objects the member ring (scaler.shards) gives it.

A failure in one object is logged, reported on that object and never stops the others (safety
rule 6).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable

from prometheus_client import Gauge

from scaler.actuator import Actuator
from scaler.builder import Builder
from scaler.clients import ClientPool
from scaler.finalizers import Finalizers
from scaler.heapfreeze import Activity, Pass, freeze_heap, run_heap_freezer
from scaler.http_objects import HttpObjects
from scaler.inputs import Inputs
from scaler.jobs.controller import ScaledJobController
from scaler.kube.client import KubeClient
from scaler.kube.endpoints import EndpointDirectory
from scaler.kube.events import EventRecorder
from scaler.kube.lease import LeaderElector, LeaseSettings
from scaler.kube.members import MemberLeases, MemberSettings
from scaler.kube.paths import ResourceMapper
from scaler.kube.pods import PodCounter
from scaler.kube.targets import TargetCache
from scaler.kube.watch import Watcher
from scaler.poller import Poller
from scaler.registry import Registry, default_registry
from scaler.settings import Settings
from scaler.store import MetricStore
from scaler.table import ObjectTable
from scaler.telemetry import Telemetry

log = logging.getLogger(__name__)


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
        registry = registry or default_registry()
        self.settings = settings
        self.kube = kube
        self.clock = clock
        self.telemetry = telemetry or Telemetry()
        self.clients = ClientPool()
        self.endpoints = EndpointDirectory(kube, dict(settings.poll.endpoint_address_map))
        self.clients.endpoints = self.endpoints
        self.pods = PodCounter(kube)
        self.clients.pods = self.pods
        self.store = MetricStore()
        self.targets = TargetCache(kube, settings.watch.namespace)
        self.events = EventRecorder(kube, settings.leader.identity)
        self.leader: LeaderElector | None = None
        self.members: MemberLeases | None = None
        if settings.shards.enabled:
            kube.write_window = self._write_window
            s = settings.leader
            self.members = MemberLeases(
                kube.for_leases(),
                MemberSettings(
                    s.namespace,
                    s.name,
                    s.identity,
                    settings.shards.advertise,
                    s.lease_duration,
                    s.renew_deadline,
                    s.retry_period,
                ),
                on_change=lambda ring: self._rebalance(),
                registry=self.telemetry.registry,
                clock=clock,
            )
            Gauge(
                "tidal_shard_owned_objects",
                "ScaledObjects this replica owns, polls and writes (--shards auto)",
                registry=self.telemetry.registry,
            ).set_function(lambda: len(self.objects))
        elif settings.leader.enabled:
            kube.write_window = self._write_window
            s = settings.leader
            self.leader = LeaderElector(
                kube.for_leases(),
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
        finalizers = Finalizers(kube, self.telemetry, self.events)
        self.actuator = Actuator(
            kube,
            self.targets,
            self.events,
            self.telemetry,
            finalizers,
            may_write=self._may_write,
            failing_log_every=settings.poll.failing_log_every,
            clock=clock,
            hpa_absent=self._hpa_absent,
        )
        self.objects = ObjectTable(
            self.store,
            self.telemetry,
            self.events.forget,
            clock=clock,
            on_lateness=lambda key, lateness: self.poller.record_lateness(key, lateness),
        )
        self.inputs = Inputs(
            kube,
            settings.watch,
            self.objects,
            self.actuator,
            finalizers,
            may_write=self._may_write,
            owns=self.owns,
        )
        builder = Builder(
            kube,
            settings,
            registry=registry,
            clients=self.clients,
            mapper=ResourceMapper(kube),
            targets=self.targets,
            store=self.store,
            telemetry=self.telemetry,
            auth_lookup=self.inputs.auth_spec,
            others=self.objects.on_workload,
            hpas=self.inputs.hpas_on,
            index_refs=self.inputs.index_refs,
            wake=self.objects.wake,
        )
        self._builder = builder
        self.poller = Poller(
            self.objects,
            builder,
            self.actuator,
            store=self.store,
            targets=self.targets,
            telemetry=self.telemetry,
            settings=settings.poll,
            clock=clock,
            may_write=self._may_write,
        )
        self.jobs = ScaledJobController(
            kube,
            settings,
            may_write=self._may_write,
            owns=self.owns,
            registry=registry,
            clients=self.clients,
            telemetry=self.telemetry,
            clock=clock,
        )
        self.http_objects: HttpObjects | None = None
        if settings.poll.http_interceptors:
            self.http_objects = HttpObjects(
                kube,
                self._may_reconcile,
                interceptors=settings.poll.http_interceptors,
                namespace=settings.watch.namespace,
            )
        self.started = asyncio.Event()

    def _hpa_absent(self, namespace: str, name: str) -> bool:
        """The HPA watch has listed everything and holds no HPA of this name."""
        hpas = self.inputs.hpas
        return hpas.synced.is_set() and (namespace, name) not in hpas.objects

    def _activity(self) -> Activity:
        t = self.objects
        return Activity(t.changes + self._builder.finished, t.retired, len(t))

    @property
    def so_watcher(self) -> Watcher:
        return self.inputs.scaled_objects

    @property
    def is_leader(self) -> bool:
        return self.leader is None or self.leader.is_leader

    def _may_write(self) -> bool:
        """Checked before every write: leadership can be lost while a poll runs (a renewal
        that missed its deadline), and from then on only the new leader writes. Sharded, the
        member's own check (scaler.kube.members); which objects are its own is settled by the
        table, whose runtimes retire the moment their object moves."""
        return self._write_window() > 0

    def _write_window(self) -> float:
        """Seconds a write may still be sent (0: not at all): the member's or leader's own
        window (scaler.kube.lease); unbounded without election."""
        if self.members is not None:
            return self.members.write_window()
        if self.leader is not None:
            return self.leader.write_window()
        return math.inf

    def _may_reconcile(self) -> bool:
        """Cluster-wide reconciles (HTTPScaledObjects): the writer, or with shards the ring's
        first member alone (one writer, whichever replicas come and go)."""
        if not self._may_write():
            return False
        members = self.members
        return members is None or (
            bool(members.ring.members) and members.ring.members[0].identity == members.identity
        )

    def owns(self, key: tuple[str, str]) -> bool:
        """Whether this replica polls and writes the object (always, unless sharded)."""
        return self.members is None or self.members.owns(key)

    def _rebalance(self) -> None:
        if self.so_watcher.synced.is_set():
            self.inputs.rebalance()

    def ready(self) -> bool:
        """Watches synced and leadership (or membership) known: /readyz."""
        synced = self.so_watcher.synced.is_set() and self.started.is_set()
        if self.members is not None:
            return synced and self.members.known.is_set()
        return synced and (self.leader is None or self.leader.known.is_set())

    async def run(self) -> None:
        """Run until cancelled. On cancel: stop polling, release the lease, close clients."""
        tasks: list[asyncio.Task[None]] = []
        try:
            if self.leader is not None:
                tasks.append(asyncio.create_task(self.leader.run(), name="leader-election"))
            if self.members is not None:
                tasks.append(asyncio.create_task(self.members.run(), name="shard-members"))
                tasks.append(asyncio.create_task(self.inputs.run_claims(), name="shard-claims"))
                # The first ring decides which objects the ScaledObject watch admits.
                await self.members.known.wait()
            tasks.append(asyncio.create_task(self.inputs.run_finalizers(), name="finalizers"))
            first = (*self.targets.watchers.values(), *self.inputs.dependencies)
            for w in first:
                tasks.append(asyncio.create_task(w.run(), name=f"watch {w.name}"))
            for w in first:
                await w.synced.wait()
            tasks.append(asyncio.create_task(self.so_watcher.run(), name="watch scaledobjects"))
            await self.so_watcher.synced.wait()
            self._rebalance()  # the ring may have changed while the list was read
            tasks.append(asyncio.create_task(self.jobs.run(), name="scaledjobs"))
            if self.http_objects is not None:
                tasks.append(asyncio.create_task(self.http_objects.run(), name="httpscaledobjects"))
            # Everything loaded so far lives as long as the daemon: move it out of the
            # collector's reach, so full collections stop pausing the loop for 0.5 s at 1000
            # objects (measured by benchmarks/daemon_scale.py); objects built later are frozen
            # once the table settles.
            freeze_heap(Pass.YOUNG)
            tasks.append(asyncio.create_task(run_heap_freezer(self._activity), name="heap"))
            self.started.set()
            log.info("daemon started", extra={"objects": len(self.objects)})
            await self.objects.scheduler.run(self.poller.poll, self.settings.poll.max_concurrent)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.leader is not None:
                with contextlib.suppress(Exception):
                    await self.leader.release()
            if self.members is not None:
                with contextlib.suppress(Exception):
                    await self.members.release()
            await self.objects.close_all()
            await self.clients.aclose()
            await self.endpoints.aclose()
            await self.pods.aclose()
