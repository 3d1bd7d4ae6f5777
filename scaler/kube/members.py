"""Shard membership on coordination.k8s.io/v1 Leases: one Lease per replica (`--shards auto`).

Every replica keeps a member Lease of its own (labelled with the group) renewed every
`retry_period`, and in the same round LISTs the group's Leases. The live members form the ring
(scaler.shards) that assigns objects. The rules are leader election's (scaler.kube.lease), per
member instead of for one holder:

* **Expiry is observed, never computed from a remote clock.** A member is live while its Lease's
  resourceVersion changed less than its `leaseDurationSeconds` ago on OUR monotonic clock. A
  replica that stops renewing (SIGKILL, a partition, SIGSTOP) drops out of every other
  replica's ring `lease_duration` after the last renew they saw, plus at most one round.
* **Fencing on the writer's side.** `may_write()` is True only while the last round that both
  renewed our Lease and listed the members *started* less than `renew_deadline` ago: a paused
  or partitioned replica stops writing before anyone else can count it as gone, and a replica
  whose view of the members is older than that does not write on it.
* **A joiner waits a lease duration before its first write.** Its objects move to it in every
  other replica's ring within one round of its Lease appearing (they stop writing them then);
  the joiner polls and serves them at once but writes only after `lease_duration`, by which time
  every other replica has either seen it or stopped writing altogether. A replica whose view
  lapsed (no complete round for `renew_deadline`: frozen, partitioned) may have been dropped by
  the others meanwhile, so it joins again the same way.
* **Leaving is explicit.** On shutdown a replica stops writing, then deletes its Lease, so the
  others take its objects over at their next round. A Lease left behind by a replica that died
  is deleted (conditionally on what was read) once it has been expired for
  `GC_AFTER` lease durations.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from scaler.errors import KubeError
from scaler.kube.client import JSON, KubeClient
from scaler.kube.lease import check_timing, lease_time, loop_now
from scaler.kube.paths import namespaced
from scaler.shards import Member, Ring

log = logging.getLogger(__name__)

GROUP_LABEL = "tidal.sh/shard-group"
ADDRESS_ANNOTATION = "tidal.sh/peer-address"
GC_AFTER = 4  # lease durations a dead member's Lease stays before a live member deletes it


@dataclass(frozen=True, slots=True)
class MemberSettings:
    namespace: str
    group: str  # the label value shared by the replicas of one installation
    identity: str
    address: str  # HOST:PORT announced to peers
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


def lease_name(group: str, identity: str) -> str:
    """A DNS-1123 name for any identity (pod names, hostnames with capitals or dots)."""
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    return f"{group[:40].rstrip('-.')}-member-{digest}"


@dataclass(slots=True)
class _Seen:
    version: str
    since: float  # our monotonic time when this version was first seen
    duration: float


def _duration(value: object, default: float) -> float:
    """A Lease's leaseDurationSeconds; a missing or malformed one counts as ours."""
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    return seconds if 0 < seconds < 86400 else default


class MemberLeases:
    """This replica's member Lease and its view of the others; see the module docstring."""

    def __init__(
        self,
        kube: KubeClient,
        settings: MemberSettings,
        *,
        on_change: Callable[[Ring], None] = lambda ring: None,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        check_timing(settings.renew_deadline, settings.lease_duration)
        self._kube = kube
        self.settings = settings
        self._on_change = on_change
        self._clock = clock
        self._monotonic = monotonic
        self._name = lease_name(settings.group, settings.identity)
        self._live: JSON | None = None  # our Lease as last written
        self._joined_at: float | None = None  # monotonic start of our first renew
        self._fresh_at: float | None = None  # monotonic start of the last renew + list
        self._seen: dict[str, _Seen] = {}  # Lease name -> last version seen
        self._leaving = False
        self._longest_lease = 0.0  # the longest leaseDurationSeconds of any member seen
        self.ring = Ring()
        self.known = asyncio.Event()  # set after the first complete round (readiness)
        self.rounds = 0
        self._gc_tasks: set[asyncio.Future[None]] = set()
        self._members_gauge = Gauge(
            "tidal_shard_members",
            "Live members of this replica's shard ring (--shards auto)",
            registry=registry,
        )
        self._changes = Counter(
            "tidal_shard_ring_changes_total",
            "Times this replica's shard ring changed (a member joined or left)",
            registry=registry,
        )

    # ------------------------------------------------------------------ reading

    def _now(self) -> float:
        return loop_now(self._monotonic)

    @property
    def identity(self) -> str:
        return self.settings.identity

    def active(self) -> bool:
        """Past the joining period (see the module docstring): the longest lease duration
        of any member seen, so a rolling update that changes the timings stays safe."""
        joined = self._joined_at
        wait = max(self.settings.lease_duration, self._longest_lease)
        return joined is not None and self._now() >= joined + wait

    def fresh(self) -> bool:
        at = self._fresh_at
        return at is not None and self._now() - at < self.settings.renew_deadline

    def may_write(self) -> bool:
        """Checked before every write: joined, not leaving, and the view is fresh."""
        return not self._leaving and self.active() and self.fresh()

    def write_window(self) -> float:
        """Seconds a write may still be sent (`may_write()` then turns False, see
        scaler.kube.lease's `write_window`); 0 when it may not write."""
        at = self._fresh_at
        if at is None or not self.may_write():
            return 0.0
        return max(0.0, at + self.settings.renew_deadline - self._now())

    def owns(self, key: tuple[str, str]) -> bool:
        owner = self.ring.owner(key)
        return owner is not None and owner.identity == self.settings.identity

    # ------------------------------------------------------------------ the loop

    def _path(self, name: str = "") -> str:
        s = self.settings
        return namespaced("coordination.k8s.io", "v1", "leases", s.namespace, name)

    async def run(self) -> None:
        """Rounds every retry period; `known` is set after the first complete one. A round
        that fails in an unexpected way is logged and counts as failed: the loop goes on."""
        while True:
            try:
                if await self.attempt():
                    self.known.set()
            except Exception:
                log.exception("shard membership round failed unexpectedly")
            await asyncio.sleep(self.settings.retry_period)

    async def attempt(self) -> bool:
        """One renew + list round, bounded by the renew deadline; True when both succeeded."""
        s = self.settings
        started = self._now()
        try:
            async with asyncio.timeout(s.renew_deadline):
                await self._renew()
                leases = await self._kube.get(
                    self._path(), labelSelector=f"{GROUP_LABEL}={s.group}"
                )
        except TimeoutError:
            log.warning("shard membership round timed out", extra={"identity": s.identity})
            return False
        except KubeError as exc:
            log.warning(
                "shard membership round failed", extra={"identity": s.identity, "error": str(exc)}
            )
            return False
        done = self._now()
        if self._joined_at is None:
            # Counted from when our Lease is surely visible (the write returned), not from
            # when we began: others see us only from then on.
            self._joined_at = done
            log.info("shard member joined", extra={"identity": s.identity, "lease": self._name})
        elif self._fresh_at is not None and done - self._fresh_at >= s.renew_deadline:
            # Our previous complete round began a renew deadline or more before this one's
            # write returned: meanwhile others may have seen our Lease unchanged for a lease
            # duration and dropped us (also when this round itself began "in time", after
            # fast failures, and only its slow write crossed the deadline). Join again.
            self._joined_at = done
            log.warning(
                "shard member joins again after its view lapsed",
                extra={"identity": s.identity, "lapsed": round(done - self._fresh_at, 3)},
            )
        self._fresh_at = started
        self._update_ring(list(leases.get("items") or []), done)
        self.rounds += 1
        return True

    async def _renew(self) -> None:
        s = self.settings
        wall = self._clock()
        if self._live is not None:
            body = dict(self._live)
            body["spec"] = {**self._live["spec"], "renewTime": lease_time(wall)}
            try:
                self._live = await self._kube.replace(self._path(self._name), body)
                return
            except KubeError as exc:
                if exc.status not in (404, 409):
                    raise
        live = await self._kube.get_or_none(self._path(self._name))
        spec = {
            "holderIdentity": s.identity,
            "leaseDurationSeconds": max(1, round(s.lease_duration)),
            "acquireTime": lease_time(wall),
            "renewTime": lease_time(wall),
        }
        meta: dict[str, Any] = {
            "name": self._name,
            "namespace": s.namespace,
            "labels": {GROUP_LABEL: s.group},
            "annotations": {ADDRESS_ANNOTATION: s.address},
        }
        if live is None:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta}
            body["spec"] = spec
            self._live = await self._kube.create(self._path(), body)
        else:  # ours from an earlier run (same identity) or a conflict: take it as it is now
            meta["resourceVersion"] = (live.get("metadata") or {}).get("resourceVersion", "")
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta}
            body["spec"] = spec
            self._live = await self._kube.replace(self._path(self._name), body)

    def _update_ring(self, items: list[JSON], now: float) -> None:
        s = self.settings
        members: list[Member] = []
        names = set()
        for lease in items:
            meta = lease.get("metadata") or {}
            spec = lease.get("spec") or {}
            name = str(meta.get("name") or "")
            identity = str(spec.get("holderIdentity") or "")
            version = str(meta.get("resourceVersion") or "")
            names.add(name)
            duration = _duration(spec.get("leaseDurationSeconds"), s.lease_duration)
            self._longest_lease = max(self._longest_lease, duration)
            seen = self._seen.get(name)
            if seen is None or seen.version != version:
                seen = self._seen[name] = _Seen(version, now, duration)
            address = str((meta.get("annotations") or {}).get(ADDRESS_ANNOTATION) or "")
            if name == self._name:
                members.append(Member(s.identity, s.address))
            elif identity and now < seen.since + seen.duration:
                members.append(Member(identity, address))
            elif identity and now >= seen.since + GC_AFTER * seen.duration:
                self._collect(name, version)
        for gone in set(self._seen) - names:
            del self._seen[gone]
        ring = Ring.of(members)
        if ring != self.ring:
            old = self.ring
            self.ring = ring
            self._members_gauge.set(len(ring))
            self._changes.inc()
            log.info(
                "shard members changed",
                extra={
                    "identity": s.identity,
                    "members": list(ring.identities()),
                    "joined": sorted(set(ring.identities()) - set(old.identities())),
                    "left": sorted(set(old.identities()) - set(ring.identities())),
                },
            )
            self._on_change(ring)

    def _collect(self, name: str, version: str) -> None:
        """Delete a long-dead member's Lease, only if nobody renewed it since we read it.

        One delete at a time: they share the Lease connections (KubeClient.for_leases) with
        our own renewal, and a dead member still there is collected in a later round."""
        if self._gc_tasks:
            return

        async def delete() -> None:
            with contextlib.suppress(KubeError, TimeoutError):
                async with asyncio.timeout(self.settings.renew_deadline):
                    await self._kube.request(
                        "DELETE",
                        self._path(name),
                        body={"preconditions": {"resourceVersion": version}},
                    )
                    log.info("dead shard member's lease deleted", extra={"lease": name})

        task = asyncio.ensure_future(delete())
        self._gc_tasks.add(task)
        task.add_done_callback(self._gc_tasks.discard)

    async def release(self) -> None:
        """On shutdown: stop writing, then delete our Lease so the others take over at once."""
        self._leaving = True
        if self._live is None:
            return
        version = str((self._live.get("metadata") or {}).get("resourceVersion") or "")
        with contextlib.suppress(KubeError, TimeoutError):
            async with asyncio.timeout(self.settings.renew_deadline):
                await self._kube.request(
                    "DELETE",
                    self._path(self._name),
                    body={"preconditions": {"resourceVersion": version}},
                )
        self._live = None
