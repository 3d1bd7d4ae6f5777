"""Fencing: a leader frozen past its lease makes no write once another replica has taken over.

Two `tidal run` processes, each with a user of its own (so kube-apiserver's audit log tells
their writes apart), elect a leader on a Lease with short settings (3 s duration, 2 s renew
deadline, 0.5 s retry). Redis lists toggle between empty and not, so the leader keeps scaling
workloads 0 <-> 1 and writing status. The leader is frozen with SIGSTOP while it is quiet (no
write in flight), the lists keep changing while the standby takes over and writes, then the old
leader is resumed with SIGCONT and left running while the lists still change. The audit log must
show no write by the old leader after the standby's takeover: no /scale, status, HPA, Event or
finalizer write, and no successful Lease write (a refused one would be harmless).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from localenv.controlplane import ControlPlane
from localenv.redis import RedisServer
from scaler.kube.paths import namespaced
from tests.e2e.harness import Cluster, deployment, eventually, redis_trigger, scaled_object
from tests.e2e.test_daemon_lifecycle import tidal_run

LEASE_DURATION = 3.0  # test_daemon_lifecycle.tidal_run's: duration 3 s, deadline 2 s, retry 0.5 s
WORKLOADS = 3
TOGGLE_EVERY = 0.7  # seconds between flips of the lists


def _when(event: dict[str, Any], field: str = "requestReceivedTimestamp") -> dt.datetime:
    return dt.datetime.fromisoformat(str(event[field]).replace("Z", "+00:00"))


def _ok(event: dict[str, Any]) -> bool:
    code = int(event.get("responseStatus", {}).get("code", 0))
    return 200 <= code < 300


def _is_lease(event: dict[str, Any]) -> bool:
    return bool(event.get("objectRef", {}).get("resource") == "leases")


def _describe(event: dict[str, Any]) -> str:
    ref = event.get("objectRef", {})
    what = ref.get("resource", "?") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
    code = event.get("responseStatus", {}).get("code")
    return f"{event['requestReceivedTimestamp']} {event['verb']} {what} {ref.get('name')} -> {code}"


class Toggler:
    """Flips each workload's Redis list between empty and non-empty, out of phase."""

    def __init__(self, r: aioredis.Redis, keys: list[str]) -> None:
        self.r = r
        self.keys = keys
        self.running = asyncio.Event()
        self.step = 0
        self.state = [False] * len(keys)

    async def run(self) -> None:
        while True:
            await self.running.wait()
            for i, key in enumerate(self.keys):
                self.state[i] = (self.step + i) % 2 == 0
                if self.state[i]:
                    await self.r.rpush(key, "job")
                else:
                    await self.r.delete(key)
            self.step += 1
            await asyncio.sleep(TOGGLE_EVERY)

    @contextlib.asynccontextmanager
    async def task(self) -> AsyncIterator[Toggler]:
        task = asyncio.create_task(self.run())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_a_leader_frozen_past_its_lease_writes_nothing_after_the_takeover(
    crds: ControlPlane, cluster: Cluster, redis_server: RedisServer, run_dir: Path
) -> None:
    ns = cluster.ns
    users = {identity: f"fencing-{identity}-{ns}" for identity in ("a", "b")}
    kubeconfigs = {
        identity: await asyncio.to_thread(crds.user_kubeconfig, user)
        for identity, user in users.items()
    }
    keys = [f"jobs-{ns}-{i}" for i in range(WORKLOADS)]
    for i, key in enumerate(keys):
        await cluster.create_deployment(deployment(f"w{i}", replicas=0))
        await cluster.create_so(
            scaled_object(
                f"w{i}",
                f"w{i}",
                [redis_trigger(redis_server.address, key)],
                pollingInterval=1,
                cooldownPeriod=0,
            )
        )
    lease = namespaced("coordination.k8s.io", "v1", "leases", ns, "tidal-leader")
    r = aioredis.from_url(redis_server.url)
    start = crds.audit_offset()

    def writes(identity: str, since: int, *, lease_too: bool = False) -> list[dict[str, Any]]:
        events = crds.audit_events(since, user=users[identity])
        return [e for e in events if lease_too or not _is_lease(e)]

    async def holder() -> str:
        obj = await cluster.kube.get_or_none(lease)
        return "" if obj is None else str(obj["spec"].get("holderIdentity") or "")

    with (
        tidal_run(run_dir, kubeconfigs["a"], ns, "a") as (proc_a, _),
        tidal_run(run_dir, kubeconfigs["b"], ns, "b") as (proc_b, _),
    ):
        procs = {"a": proc_a, "b": proc_b}
        old = await eventually(holder, lambda h: h in ("a", "b"), what="a lease holder")
        new = "b" if old == "a" else "a"
        old_proc = procs[old].proc
        assert old_proc is not None
        async with Toggler(r, keys).task() as toggler, _resumed(old_proc.pid):
            # 1. The leader scales and writes status while the lists flip; the standby doesn't.
            toggler.running.set()
            await eventually(
                lambda: asyncio.to_thread(writes, old, start),
                lambda ws: sum(1 for w in ws if w["objectRef"].get("subresource") == "scale") >= 4,
                what=f"the leader '{old}' scaling the workloads",
            )
            # 2. Quiet: the lists hold still until the leader has nothing left to write, so no
            #    write of its own is in flight when it freezes.
            toggler.running.clear()
            for i, key in enumerate(keys):
                want = 1 if toggler.state[i] else 0
                await eventually(
                    functools.partial(cluster.replicas, f"w{i}"),
                    want.__eq__,
                    what=f"w{i} settled at {want} ({key})",
                )

            async def quiet_for(seconds: float) -> bool:
                mark = crds.audit_offset()
                await asyncio.sleep(seconds)
                return not await asyncio.to_thread(writes, old, mark)

            await eventually(lambda: quiet_for(2.0), bool, what="the leader to go quiet")
            assert await asyncio.to_thread(writes, new, start) == []  # the standby never wrote

            # 3. Freeze the leader; the world keeps changing; the standby takes over and writes.
            frozen = crds.audit_offset()
            os.kill(old_proc.pid, signal.SIGSTOP)
            toggler.running.set()
            await eventually(holder, lambda h: h == new, timeout=60, what="the takeover")
            await eventually(
                lambda: asyncio.to_thread(writes, new, frozen),
                bool,
                timeout=60,
                what=f"the new leader '{new}' writing",
            )
            # 4. Resume the old leader and let it run while the lists keep changing (longer than
            #    a lease duration, several polls of every object).
            os.kill(old_proc.pid, signal.SIGCONT)
            await asyncio.sleep(2 * LEASE_DURATION)
            toggler.running.clear()
            await asyncio.sleep(1.0)

        events = await asyncio.to_thread(crds.audit_events, frozen)
        assert await holder() == new
        assert procs[old].running, "the old leader exited instead of standing by"

    await r.aclose()
    by_new = [e for e in events if e["user"]["username"] == users[new]]
    takeover = next(e for e in by_new if _is_lease(e) and _ok(e))
    first_write = next(e for e in by_new if not _is_lease(e))
    after_new_writes = [e for e in by_new if not _is_lease(e)]
    by_old = [e for e in events if e["user"]["username"] == users[old]]
    # Anything the old leader sent once the new one held the lease: no write at all, except a
    # Lease write the apiserver refused.
    harmful = [e for e in by_old if not (_is_lease(e) and not _ok(e))]
    late = [e for e in harmful if _when(e) >= _when(takeover)]
    after_first = [e for e in harmful if _when(e) >= _when(first_write)]
    print(
        f"\n[fencing] old leader '{old}' frozen, new leader '{new}': takeover at "
        f"{takeover['requestReceivedTimestamp']}, first write at "
        f"{first_write['requestReceivedTimestamp']}; writes by the new leader since: "
        f"{len(after_new_writes)}; by the old leader after the takeover: {len(late)} "
        f"(after the first write: {len(after_first)})"
    )
    assert late == [], "the old leader wrote after the takeover:\n" + "\n".join(
        _describe(e) for e in late
    )
    assert len(after_new_writes) >= 2  # the new leader kept acting while the old one ran

    log = [json.loads(line) for line in _json_lines(procs[old].log)]
    lost = [entry for entry in log if entry.get("msg") == "leadership lost"]
    assert lost, f"the old leader never logged that it lost leadership ({procs[old].log})"


@contextlib.asynccontextmanager
async def _resumed(pid: int) -> AsyncIterator[None]:
    """Never leave the process frozen: a stopped process ignores SIGTERM."""
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def _json_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.startswith("{")]
