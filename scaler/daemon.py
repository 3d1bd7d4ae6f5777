"""The daemon: watches → per-object runtime → scheduler → scalers → store → decide → actuate.

Everything runs on one event loop. `Daemon` only wires the parts, each a module with one job:

* scaler.inputs — the watches; handlers record what changed and wake the object;
* scaler.table — the object runtimes (scaler.runtime: their lifecycle), admitted, replaced and
  retired, and the poll scheduler's membership;
* scaler.builder — an object's scalers built from its spec, auth and references;
* scaler.poller — one poll: build if needed, sample, decide (scaler.decide);
* scaler.actuator — the leader's writes: /scale, the HPA, status, Events, the finalizer.

A failure in one object is logged, reported on that object and never stops the others (safety
rule 6).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable

from scaler.actuator import Actuator
from scaler.builder import Builder
from scaler.clients import ClientPool
from scaler.finalizers import Finalizers
from scaler.inputs import Inputs
from scaler.kube.client import KubeClient
from scaler.kube.events import EventRecorder
from scaler.kube.lease import LeaderElector, LeaseSettings
from scaler.kube.paths import ResourceMapper
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
        self.settings = settings
        self.kube = kube
        self.clock = clock
        self.telemetry = telemetry or Telemetry()
        self.clients = ClientPool()
        self.store = MetricStore()
        self.targets = TargetCache(kube, settings.watch.namespace)
        self.events = EventRecorder(kube, settings.leader.identity)
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
        )
        self.objects = ObjectTable(
            self.store,
            self.telemetry,
            self.events.forget,
            clock=clock,
            on_lateness=lambda key, lateness: self.poller.record_lateness(key, lateness),
        )
        self.inputs = Inputs(
            kube, settings.watch, self.objects, self.actuator, finalizers, may_write=self._may_write
        )
        builder = Builder(
            kube,
            settings,
            registry=registry or default_registry(),
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
        self.started = asyncio.Event()

    @property
    def so_watcher(self) -> Watcher:
        return self.inputs.scaled_objects

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
        tasks: list[asyncio.Task[None]] = []
        try:
            if self.leader is not None:
                tasks.append(asyncio.create_task(self.leader.run(), name="leader-election"))
            first = (*self.targets.watchers.values(), *self.inputs.dependencies)
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
            await self.objects.scheduler.run(self.poller.poll, self.settings.poll.max_concurrent)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.leader is not None:
                with contextlib.suppress(Exception):
                    await self.leader.release()
            await self.objects.close_all()
            await self.clients.aclose()
