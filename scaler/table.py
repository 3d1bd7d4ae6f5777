"""The runtimes of every ScaledObject the daemon runs, keyed by (namespace, name).

The table is the one owner of a runtime's birth and retirement: `admit` puts a new runtime in
place of the old one (an edit) and `remove` takes it out (a delete); both retire the old runtime
and close it off the caller's path (a watch handler must never wait on one object: safety rule
6). It also keeps the poll scheduler's membership and the registered-object counters in step.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any

from scaler.objects import ScaledObject
from scaler.runtime import ObjectRuntime
from scaler.scheduler import Scheduler
from scaler.status import stored_last_active_time
from scaler.store import MetricStore
from scaler.telemetry import Telemetry

log = logging.getLogger(__name__)

Key = tuple[str, str]


def later(a: float | None, b: float | None) -> float | None:
    """The later of two optional times."""
    if a is None or b is None:
        return b if a is None else a
    return max(a, b)


class ObjectTable:
    def __init__(
        self,
        store: MetricStore,
        telemetry: Telemetry,
        forget_events: Callable[[Collection[str]], None],
        *,
        clock: Callable[[], float],
        on_lateness: Callable[[Key, float], None],
    ) -> None:
        self._store = store
        self._telemetry = telemetry
        self._forget_events = forget_events
        self._clock = clock
        self._objects: dict[Key, ObjectRuntime] = {}
        self._on_workload: dict[Key, set[Key]] = {}  # (namespace, target name) -> objects
        self._generations = itertools.count(1)
        self._closing: set[asyncio.Future[None]] = set()  # retired runtimes being closed
        self._per_namespace: dict[str, int] = {}
        self._per_type: dict[str, int] = {}
        # Monotonic counters for scaler.heapfreeze: admissions and removals, retired runtimes.
        self.changes = 0
        self.retired = 0
        self.scheduler: Scheduler[Key] = Scheduler(_loop_time, on_lateness=on_lateness)

    # ------------------------------------------------------------------ reading

    def get(self, key: Key) -> ObjectRuntime | None:
        return self._objects.get(key)

    def __len__(self) -> int:
        return len(self._objects)

    def __iter__(self) -> Iterator[Key]:
        return iter(list(self._objects))

    def runtimes(self) -> Iterator[ObjectRuntime]:
        return iter(list(self._objects.values()))

    def items(self) -> Iterator[tuple[Key, ObjectRuntime]]:
        return iter(list(self._objects.items()))

    def on_workload(self, namespace: str, name: str) -> list[ScaledObject]:
        """The ScaledObjects whose scale target has this name in `namespace` (any kind)."""
        keys = self._on_workload.get((namespace, name), ())
        return [self._objects[k].so for k in keys if k in self._objects]

    def wake(self, key: Key) -> None:
        """Poll the object now (coalesced with any wake-up already pending)."""
        if key in self.scheduler:
            self.scheduler.wake(key)

    # ------------------------------------------------------------------ transitions

    def admit(self, so: ScaledObject, status: dict[str, Any], *, finalizer: bool) -> ObjectRuntime:
        """A new or edited ScaledObject: a fresh runtime replaces the old one, carrying over
        what outlives an edit (the last activity, the original replica count)."""
        key = so.key
        old = self._objects.get(key)
        new = ObjectRuntime(so, next(self._generations))
        self.changes += 1
        new.written.last_status = status
        new.written.finalizer_added = finalizer
        new.last_active_time = stored_last_active_time(status, self._clock())
        if old is not None:
            new.last_active_time = later(old.last_active_time, new.last_active_time)
            new.original_replicas = old.original_replicas
            self._count(old.so, -1)
        # The new runtime is in place before the old one retires: work still running for the
        # old one (a build awaiting a Secret, a poll) sees it is retired and drops out.
        self._objects[key] = new
        if old is not None:
            self._unindex(old.so)
        self._on_workload.setdefault(_workload(so), set()).add(key)
        self._count(so, +1)
        if old is not None:
            if so.triggers != old.so.triggers:  # the new triggers' series come with samples
                self._telemetry.forget_triggers(so.namespace, so.name)
            self._retire(old)
        if key in self.scheduler:
            self.scheduler.set_interval(key, so.polling_interval)
            self.scheduler.wake(key)
        else:
            self.scheduler.schedule(key, _loop_time(), so.polling_interval)
        return new

    def remove(self, key: Key) -> ObjectRuntime | None:
        """A deleted (or no longer valid) ScaledObject: nothing of it is served or polled."""
        return self.remove_many([key]).get(key)

    def remove_many(self, keys: Iterable[Key]) -> dict[Key, ObjectRuntime]:
        """`remove` for many objects at once (a shard handing its share over): the telemetry
        and the Event memory are swept once, not once per object."""
        removed: dict[Key, ObjectRuntime] = {}
        gone = set(keys)
        for key in gone:
            rt = self._objects.pop(key, None)
            self.scheduler.remove(key)
            self._store.remove_object(*key)
            if rt is not None:
                removed[key] = rt
                self._unindex(rt.so)
                self._retire(rt)
                self._count(rt.so, -1)
        self._telemetry.forget_objects(gone)
        if removed:
            self._forget_events({rt.so.uid for rt in removed.values()})
        return removed

    def _unindex(self, so: ScaledObject) -> None:
        keys = self._on_workload.get(_workload(so))
        if keys is not None:
            keys.discard(so.key)
            if not keys:
                del self._on_workload[_workload(so)]

    def _retire(self, rt: ObjectRuntime) -> None:
        """Retire `rt` and close it off the caller's path. A runtime being polled is closed by
        that poll when it ends, never under its feet (a scaler closed mid-query would reconnect
        and leak its connection)."""
        rt.retire()
        self.changes += 1
        self.retired += 1
        if rt.polling:
            return
        task = asyncio.ensure_future(rt.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close_all(self) -> None:
        """At shutdown: retire every runtime and wait until all are closed."""
        for rt in list(self._objects.values()):
            self._retire(rt)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def _count(self, so: ScaledObject, delta: int) -> None:
        """Keep keda_resource_registered_total / keda_trigger_registered_total current by
        delta (a recount of every object on each event was O(objects) per event)."""
        n = self._per_namespace[so.namespace] = self._per_namespace.get(so.namespace, 0) + delta
        if n:
            self._telemetry.resources.labels("scaled_object", so.namespace).set(n)
        else:
            del self._per_namespace[so.namespace]
            self._telemetry.resources.remove("scaled_object", so.namespace)
        for t in so.triggers:
            m = self._per_type[t.type] = self._per_type.get(t.type, 0) + delta
            if m:
                self._telemetry.triggers.labels(t.type).set(m)
            else:
                del self._per_type[t.type]
                self._telemetry.triggers.remove(t.type)


def _workload(so: ScaledObject) -> Key:
    return (so.namespace, so.scale_target_ref.name)


def _loop_time() -> float:
    return asyncio.get_running_loop().time()
