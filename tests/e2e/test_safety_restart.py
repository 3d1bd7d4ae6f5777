"""No restart or failover ever shortens a cooldown (safety rule 2 under production conditions).

`lastActiveTime` is persisted when activity ends, not on every active poll (no idle writes). A
process that loads an object whose stored status says Active=True therefore counts its cooldown
from the moment it loaded it: the object was active when the last writer stopped.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis.asyncio as aioredis

from localenv.process import ManagedProcess
from localenv.redis import RedisServer
from localenv.tidal import tidal_process
from scaler.kube.paths import namespaced
from tests.e2e.harness import Cluster, deployment, eventually, redis_trigger, scaled_object

COOLDOWN = 12  # seconds: long against a poll (1 s), short for a test


def _polls(port: int) -> float:
    """Polls started by the process so far (the count of its scheduler-lateness histogram)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("tidal_scheduler_lateness_seconds_count"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


@contextmanager
def _tidal(
    run_dir: Path, kubeconfig: Path, ns: str, identity: str, *, elect: bool
) -> Iterator[tuple[ManagedProcess, int]]:
    args = ["--watch-namespace", ns, "--identity", identity, "--log-format", "json"]
    if elect:
        args += [
            "--leader-election-namespace",
            ns,
            "--lease-duration",
            "3",
            "--renew-deadline",
            "2",
            "--retry-period",
            "0.5",
        ]
    else:
        args += ["--leader-elect", "false"]
    proc, port = tidal_process(run_dir, kubeconfig, args, name=f"tidal-{identity}-{ns}")
    proc.start()
    try:
        yield proc, port
    finally:
        proc.stop()


async def _object(cluster: Cluster, server: RedisServer, key: str) -> aioredis.Redis:
    await cluster.create_deployment(deployment("worker", replicas=0))
    await cluster.create_so(
        scaled_object(
            "worker",
            "worker",
            [redis_trigger(server.address, key)],
            pollingInterval=1,
            cooldownPeriod=COOLDOWN,
        )
    )
    return aioredis.from_url(server.url)


async def _active(cluster: Cluster) -> None:
    await eventually(lambda: cluster.replicas("worker"), lambda n: n == 1, what="0 -> 1")
    await eventually(
        lambda: cluster.condition("worker", "Active"),
        lambda c: c is not None and c["status"] == "True",
        what="Active=True in status",
    )


async def _holds_then_deactivates(cluster: Cluster, port: int, since: float) -> float:
    """The new process polls several times and keeps the replica; it goes to 0 only once
    the cooldown has passed since `since`. Returns seconds from `since` to the 1 -> 0."""
    start = await asyncio.to_thread(_polls, port)
    await eventually(
        lambda: asyncio.to_thread(_polls, port), lambda n: n >= start + 3, what="three polls"
    )
    assert await cluster.replicas("worker") == 1, "scaled down before the cooldown"
    await eventually(
        lambda: cluster.replicas("worker"), lambda n: n == 0, timeout=60, what="1 -> 0"
    )
    return time.time() - since


async def test_sigkill_while_active_then_restart_waits_the_full_cooldown(
    cluster: Cluster, kubeconfig: Path, redis_server: RedisServer, run_dir: Path
) -> None:
    """The issue's probe: active, SIGKILL, the list drains while Tidal is down, restart. Before
    the fix the restarted process scaled 1 -> 0 about 3 s after it was last seen active."""
    key = f"jobs-{cluster.ns}"
    r = await _object(cluster, redis_server, key)
    await r.rpush(key, "x")
    with _tidal(run_dir, kubeconfig, cluster.ns, "first", elect=False) as (first, _):
        await _active(cluster)
        await asyncio.sleep(COOLDOWN + 2)  # active for longer than the cooldown
        first.kill()
    killed = time.time()
    await r.delete(key)
    with _tidal(run_dir, kubeconfig, cluster.ns, "second", elect=False) as (_, port):
        waited = await _holds_then_deactivates(cluster, port, killed)
    assert waited >= COOLDOWN
    await r.aclose()


async def test_sigkill_during_cooldown_then_restart_waits_the_rest(
    cluster: Cluster, kubeconfig: Path, redis_server: RedisServer, run_dir: Path
) -> None:
    """Killed while cooling down: the restarted process waits out the cooldown counted from
    the last active observation (persisted when activity ended)."""
    key = f"jobs-{cluster.ns}"
    r = await _object(cluster, redis_server, key)
    await r.rpush(key, "x")
    with _tidal(run_dir, kubeconfig, cluster.ns, "first", elect=False) as (first, _):
        await _active(cluster)
        await r.delete(key)
        drained = time.time()
        await eventually(
            lambda: cluster.condition("worker", "Active"),
            lambda c: c is not None and c["reason"] == "ScalerCooldown",
            what="Active=False ScalerCooldown",
        )
        first.kill()
    with _tidal(run_dir, kubeconfig, cluster.ns, "second", elect=False) as (_, port):
        waited = await _holds_then_deactivates(cluster, port, drained)
    assert waited >= COOLDOWN - 1  # lastActiveTime is the last active poll, just before drain
    await r.aclose()


async def test_leader_failover_while_active_waits_the_full_cooldown(
    cluster: Cluster, kubeconfig: Path, redis_server: RedisServer, run_dir: Path
) -> None:
    """The leader dies while the object is active and the list drains at once: the standby
    takes the lease and still waits the whole cooldown before 1 -> 0."""
    key = f"jobs-{cluster.ns}"
    r = await _object(cluster, redis_server, key)
    await r.rpush(key, "x")
    lease = namespaced("coordination.k8s.io", "v1", "leases", cluster.ns, "tidal-leader")
    with (
        _tidal(run_dir, kubeconfig, cluster.ns, "a", elect=True) as (a, port_a),
        _tidal(run_dir, kubeconfig, cluster.ns, "b", elect=True) as (b, port_b),
    ):
        held = await eventually(
            lambda: cluster.kube.get_or_none(lease),
            lambda obj: obj is not None and obj["spec"].get("holderIdentity") in ("a", "b"),
            what="a lease holder",
        )
        assert held is not None
        leader, standby_port = (a, port_b) if held["spec"]["holderIdentity"] == "a" else (b, port_a)
        await _active(cluster)
        leader.kill()
        killed = time.time()
        await r.delete(key)
        waited = await _holds_then_deactivates(cluster, standby_port, killed)
    assert waited >= COOLDOWN - 1  # the standby's own last active poll, just before the kill
    await r.aclose()
