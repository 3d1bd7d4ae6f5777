"""Leader election on a coordination.k8s.io/v1 Lease (client-go's algorithm, KEDA's defaults)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from scaler.errors import KubeError
from scaler.kube.client import JSON, KubeClient
from scaler.kube.paths import namespaced

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    namespace: str
    name: str = "tidal-leader"
    identity: str = ""
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


def _fmt(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(s: str | None) -> float:
    if not s:
        return 0.0
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


class LeaderElector:
    """`is_leader` is True only while this process holds a lease it renewed within the deadline.

    Only the leader writes to the cluster (DESIGN: one writer); the standby keeps watching and
    polling so it can take over at once. `clock` is wall time (leases compare wall times).
    """

    def __init__(self, kube: KubeClient, settings: LeaseSettings, clock: Callable[[], float]):
        self._kube = kube
        self.settings = settings
        self._clock = clock
        self.is_leader = False
        self.known = asyncio.Event()  # set once we know whether we lead (readiness)
        self.changed = asyncio.Event()
        self._last_renew = 0.0

    @property
    def _path(self) -> str:
        s = self.settings
        return namespaced("coordination.k8s.io", "v1", "leases", s.namespace, s.name)

    async def run(self) -> None:
        s = self.settings
        while True:
            try:
                await self._try_acquire_or_renew()
            except asyncio.CancelledError:
                raise
            except KubeError as exc:
                log.warning("lease update failed", extra={"lease": s.name, "error": str(exc)})
            if self.is_leader and self._clock() - self._last_renew > s.renew_deadline:
                self._set_leader(False)
            self.known.set()
            await asyncio.sleep(s.retry_period)

    def _set_leader(self, value: bool) -> None:
        if value != self.is_leader:
            self.is_leader = value
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

    def _spec(self, now: float, transitions: int, acquire: float) -> JSON:
        s = self.settings
        return {
            "holderIdentity": s.identity,
            "leaseDurationSeconds": int(s.lease_duration),
            "acquireTime": _fmt(acquire),
            "renewTime": _fmt(now),
            "leaseTransitions": transitions,
        }

    async def _try_acquire_or_renew(self) -> None:
        s = self.settings
        now = self._clock()
        live = await self._kube.get_or_none(self._path)
        if live is None:
            await self._kube.create(
                namespaced("coordination.k8s.io", "v1", "leases", s.namespace),
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": s.name, "namespace": s.namespace},
                    "spec": self._spec(now, 0, now),
                },
            )
            self._last_renew = now
            self._set_leader(True)
            return
        spec = live.get("spec", {})
        holder = spec.get("holderIdentity") or ""
        renewed = _parse(spec.get("renewTime"))
        duration = float(spec.get("leaseDurationSeconds") or s.lease_duration)
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder and holder != s.identity and renewed + duration > now:
            self._set_leader(False)  # someone else holds a valid lease
            return
        if holder == s.identity:
            acquire = _parse(spec.get("acquireTime")) or now
        else:
            acquire, transitions = now, transitions + 1
        body = dict(live)
        body["spec"] = self._spec(now, transitions, acquire)
        try:
            await self._kube.replace(self._path, body)  # carries resourceVersion: conditional
        except KubeError as exc:
            if exc.status == 409:  # another candidate won this round
                self._set_leader(False)
                return
            raise
        self._last_renew = now
        self._set_leader(True)

    async def release(self) -> None:
        """Give the lease up on shutdown so a standby takes over at once."""
        if not self.is_leader:
            return
        self._set_leader(False)
        with contextlib.suppress(KubeError):
            live = await self._kube.get_or_none(self._path)
            if live and live.get("spec", {}).get("holderIdentity") == self.settings.identity:
                body = dict(live)
                body["spec"] = {**live["spec"], "holderIdentity": "", "leaseDurationSeconds": 1}
                await self._kube.replace(self._path, body)
