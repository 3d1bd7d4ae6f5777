"""Leader election on a coordination.k8s.io/v1 Lease (client-go's algorithm, KEDA's defaults).

The rules, as in client-go's `leaderelection` package:

* **Expiry is observed, never computed from the remote clock.** A candidate remembers the lease
  record it last saw and *when* (on its own monotonic clock) it saw that record change. Another
  holder's lease has expired only once `leaseDurationSeconds` have passed on that clock without
  the record changing. The `renewTime` written by the holder is never compared with local time,
  so clock skew between replicas does not matter (only a difference in clock *rate* would).
* **A renew is bounded by the renew deadline.** The leader retries every `retry_period`; each
  attempt (PUT, or GET + PUT) is cancelled when the deadline counted from the start of the last
  successful renew passes, and then the leader steps down.
* **Fencing on the writer's side.** `may_write()` (and `is_leader`, the same check) is True only
  while this process holds the lease AND the last successful renew *started* less than
  `renew_deadline` ago on the monotonic clock. After a pause longer than that (SIGSTOP, a stalled
  loop, a VM freeze), the first answer is "no", before the election loop has even run. Other
  candidates saw that renew's record no earlier than it started, so they cannot take over before
  `start + lease_duration`: the gap `lease_duration - renew_deadline` is the safety margin.

Local deadlines use the event loop's clock (`loop.time()`, monotonic; injectable for tests); the
wall clock is used only for the timestamps written into the Lease, as Kubernetes expects.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scaler.errors import KubeError
from scaler.kube.client import JSON, KubeClient
from scaler.kube.paths import namespaced

log = logging.getLogger(__name__)

RECORD_FIELDS = (
    "holderIdentity",
    "leaseDurationSeconds",
    "acquireTime",
    "renewTime",
    "leaseTransitions",
)


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    namespace: str
    name: str = "tidal-leader"
    identity: str = ""
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


def _fmt(t: float) -> str:
    """A wall-clock time as a Lease's MicroTime."""
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


lease_time = _fmt


def check_timing(renew_deadline: float, lease_duration: float) -> None:
    """The margin the fencing rests on: a writer stops before others may take over."""
    if not 0 < renew_deadline < lease_duration:
        raise ValueError(
            f"renew deadline ({renew_deadline} s) must be positive and shorter "
            f"than the lease duration ({lease_duration} s)"
        )


def loop_now(override: Callable[[], float] | None) -> float:
    """Monotonic now: `override` (tests), else the running loop's clock, else time.monotonic
    (a thread outside the loop: the loop's clock is that one)."""
    if override is not None:
        return override()
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


def _record(lease: JSON) -> tuple[Any, ...]:
    """The election record of a Lease: what changes when anyone acquires, renews or releases."""
    spec = lease.get("spec") or {}
    return tuple(spec.get(f) for f in RECORD_FIELDS)


class LeaderElector:
    """Elects one writer among the replicas; see the module docstring for the rules.

    Only the leader writes to the cluster (docs/design.md); the standby keeps watching and
    polling so it can take over at once. `clock` is wall time, used only for the timestamps in
    the Lease; `monotonic` (default: the running event loop's `time()`) measures every local
    deadline. The daemon checks `is_leader` (or `may_write()`) right before each write.
    """

    def __init__(
        self,
        kube: KubeClient,
        settings: LeaseSettings,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] | None = None,
    ):
        check_timing(settings.renew_deadline, settings.lease_duration)
        self._kube = kube
        self.settings = settings
        self._clock = clock
        self._monotonic = monotonic
        self._leading = False  # the last record we saw (or wrote) names us as holder
        self._renewed_at: float | None = None  # monotonic START of the last successful renew
        self._observed: tuple[Any, ...] | None = None  # last election record seen
        self._observed_at = 0.0  # monotonic time it was first seen (or written by us)
        self._live: JSON | None = None  # the Lease as we last wrote it (fast-path renew)
        self.known = asyncio.Event()  # set once we know whether we lead (readiness)
        self.changed = asyncio.Event()

    # ------------------------------------------------------------------ the writer's check

    def _now(self) -> float:
        return loop_now(self._monotonic)

    def may_write(self) -> bool:
        """True only while we hold the lease and renewed it (attempt start) within the deadline.

        Call it right before every write. When the deadline has passed it also steps down
        (logged, `changed` set), so a process resumed after a long pause says "no" at once.
        """
        if not self._leading:
            return False
        if self._renewed_at is not None and self._fresh(self._now()):
            return True
        self._step_down("renew deadline passed")
        return False

    def write_window(self) -> float:
        """Seconds a write may still be sent (`may_write()` then turns False): a write that
        waits longer than this for a connection must not go out. 0 when it may not write."""
        if not self.may_write() or self._renewed_at is None:
            return 0.0
        return max(0.0, self._renewed_at + self.settings.renew_deadline - self._now())

    @property
    def is_leader(self) -> bool:
        """`may_write()`: leadership includes the freshness of the last renew."""
        return self.may_write()

    @property
    def holder(self) -> str:
        """Who holds the lease as far as this process knows: us while we lead, else the
        holderIdentity of the last record seen ("" before the first read, or when free).
        Read-only, for `tidal status` (the debug endpoint)."""
        if self._leading:
            return self.settings.identity
        return "" if self._observed is None else str(self._observed[0] or "")

    def _fresh(self, now: float) -> bool:
        return (
            self._renewed_at is not None and now - self._renewed_at < self.settings.renew_deadline
        )

    # ------------------------------------------------------------------ the loop

    @property
    def _path(self) -> str:
        s = self.settings
        return namespaced("coordination.k8s.io", "v1", "leases", s.namespace, s.name)

    async def run(self) -> None:
        s = self.settings
        while True:
            await self.attempt()
            self.known.set()
            await asyncio.sleep(s.retry_period)

    async def attempt(self) -> bool:
        """One acquire-or-renew round, bounded in time; returns whether we lead afterwards."""
        s = self.settings
        started = self._now()
        if self._leading and not self._fresh(started):
            self._step_down("renew deadline passed")
        # A leader's attempt ends with its renew deadline; a candidate's gets the same budget.
        if self._leading and self._renewed_at is not None:
            budget = self._renewed_at + s.renew_deadline - started
        else:
            budget = s.renew_deadline
        try:
            async with asyncio.timeout(budget):
                ok = await self._try_acquire_or_renew(started)
        except TimeoutError:
            log.warning(
                "lease update timed out",
                extra={"lease": s.name, "identity": s.identity, "after": round(budget, 3)},
            )
            ok = False
        except KubeError as exc:
            log.warning(
                "lease update failed",
                extra={"lease": s.name, "identity": s.identity, "error": str(exc)},
            )
            ok = False
        if ok:
            self._renewed_at = started
            self._set_leader(True)
        elif self._leading and not self._fresh(self._now()):
            self._step_down("renew deadline passed")
        return self._leading

    # ------------------------------------------------------------------ one round

    def _observe(self, lease: JSON | None, now: float) -> None:
        record = None if lease is None else _record(lease)
        if record != self._observed:
            self._observed = record
            self._observed_at = now

    def _spec(self, now: float, transitions: int, acquire: str) -> JSON:
        s = self.settings
        return {
            "holderIdentity": s.identity,
            "leaseDurationSeconds": max(1, round(s.lease_duration)),
            "acquireTime": acquire,
            "renewTime": _fmt(now),
            "leaseTransitions": transitions,
        }

    async def _write(self, body: JSON, *, create: bool = False) -> bool:
        """PUT (or POST) the Lease; False when another candidate changed it first."""
        s = self.settings
        try:
            if create:
                path = namespaced("coordination.k8s.io", "v1", "leases", s.namespace)
                written = await self._kube.create(path, body)
            else:
                written = await self._kube.replace(self._path, body)  # resourceVersion: conditional
        except KubeError as exc:
            if exc.status == 409:  # another candidate won this round
                return False
            raise
        self._live = written
        # Our own write is a change of the record: observed now, as client-go does.
        self._observed = _record(written)
        self._observed_at = self._now()
        return True

    async def _try_acquire_or_renew(self, started: float) -> bool:
        s = self.settings
        wall = self._clock()
        # 1. Fast path: the leader renews optimistically on the Lease it last wrote (one PUT).
        if self._leading and self._live is not None:
            spec = self._live.get("spec") or {}
            body = dict(self._live)
            body["spec"] = self._spec(
                wall, int(spec.get("leaseTransitions") or 0), str(spec.get("acquireTime") or "")
            )
            if await self._write(body):
                return True
            # Conflict: someone else wrote the Lease; read it and decide below.
        # 2. Read (or create) the record.
        live = await self._kube.get_or_none(self._path)
        self._observe(live, self._now())
        if live is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": s.name, "namespace": s.namespace},
                "spec": self._spec(wall, 0, _fmt(wall)),
            }
            return await self._write(body, create=True)
        spec = live.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        if holder != s.identity:
            if self._leading:
                self._step_down(f"the lease is now held by '{holder or 'nobody'}'")
            duration = float(spec.get("leaseDurationSeconds") or s.lease_duration)
            if holder and self._now() < self._observed_at + duration:
                return False  # held by someone else, not expired on OUR clock
        # 3. Acquire (expired or free) or renew (ours), conditional on the resourceVersion read.
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == s.identity and spec.get("acquireTime"):
            acquire = str(spec["acquireTime"])
        else:
            acquire = _fmt(wall)
            if holder != s.identity:
                transitions += 1
        body = dict(live)
        body["spec"] = self._spec(wall, transitions, acquire)
        if not await self._write(body):
            if self._leading:
                self._step_down("another candidate wrote the lease")
            return False
        return True

    # ------------------------------------------------------------------ transitions

    def _step_down(self, reason: str) -> None:
        if self._leading:
            self._leading = False
            self._live = None
            log.warning(
                "leadership lost",
                extra={
                    "lease": self.settings.name,
                    "identity": self.settings.identity,
                    "reason": reason,
                },
            )
            self._notify(False)

    def _set_leader(self, value: bool) -> None:
        if value != self._leading:
            self._leading = value
            if not value:
                self._live = None
            self._notify(value)

    def _notify(self, value: bool) -> None:
        log.info(
            "leadership changed",
            extra={
                "lease": self.settings.name,
                "identity": self.settings.identity,
                "leader": value,
            },
        )
        self.changed.set()
        self.changed = asyncio.Event()

    async def release(self) -> None:
        """Give the lease up on shutdown so a standby takes over at once."""
        if not self._leading:
            return
        self._set_leader(False)
        with contextlib.suppress(KubeError, TimeoutError):
            async with asyncio.timeout(self.settings.renew_deadline):
                live = await self._kube.get_or_none(self._path)
                if live and live.get("spec", {}).get("holderIdentity") == self.settings.identity:
                    body = dict(live)
                    body["spec"] = {
                        **live["spec"],
                        "holderIdentity": "",
                        "leaseDurationSeconds": 1,
                        "renewTime": _fmt(self._clock()),
                    }
                    await self._kube.replace(self._path, body)
