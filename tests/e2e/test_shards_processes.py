"""`tidal run --shards auto` as processes on the real control plane: three replicas share 3000
objects, a killed replica's objects are taken over, a frozen replica writes nothing once its
objects moved (apiserver audit log), and scaling out 1 -> 3 and back 3 -> 1 keeps cooldowns.

Each replica runs as its own user so kube-apiserver's audit log tells their writes apart.
Lease settings are short (3 s duration, 2 s renew deadline, 0.5 s retry) to keep the tests
quick; the rules do not depend on the values."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from localenv.controlplane import ControlPlane
from localenv.process import ManagedProcess, free_port
from localenv.redis import RedisServer
from localenv.tidal import tidal_process
from scaler.shards import Member, Ring
from tests.e2e.harness import Cluster, deployment, eventually, redis_trigger, scaled_object
from tests.e2e.test_shards import metric_client, read_metric

LEASE = 3.0
GROUP = "tidal-shards"
BULK = 3000  # cron objects: cheap to poll, so three replicas of 1000 fit on a test machine
CREATE_CONCURRENCY = 24


class Replica:
    def __init__(self, identity: str, proc: ManagedProcess, health: int, api: int) -> None:
        self.identity = identity
        self.proc = proc
        self.health = health
        self.api = api

    def gauge(self, name: str) -> float:
        url = f"http://127.0.0.1:{self.health}/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.rsplit(" ", 1)[1])
        return 0.0

    def owned(self) -> int:
        """Objects the replica owns now; -1 while its health port does not answer (a replica
        building a thousand objects on a loaded 2-core machine can be slow to)."""
        try:
            return int(self.gauge("tidal_shard_owned_objects"))
        except OSError:
            return -1


@contextlib.contextmanager
def replica(run_dir: Path, kubeconfig: Path, ns: str, identity: str) -> Iterator[Replica]:
    api, peer = free_port(), free_port()
    proc, health = tidal_process(
        run_dir,
        kubeconfig,
        [
            "--watch-namespace",
            ns,
            "--cluster-object-namespace",
            ns,
            "--leader-election-namespace",
            ns,
            "--leader-election-id",
            GROUP,
            "--identity",
            identity,
            "--lease-duration",
            str(LEASE),
            "--renew-deadline",
            "2",
            "--retry-period",
            "0.5",
            "--shards",
            "auto",
            "--api-address",
            f"127.0.0.1:{api}",
            "--shard-peer-address",
            f"127.0.0.1:{peer}",
            "--shard-advertise-address",
            f"127.0.0.1:{peer}",
            "--cert-secret",
            f"{ns}/tidal-serving",
            "--cert-apiservice",
            "",
            "--metrics-authorization",
            "none",
            "--webhook",
            "false",
            "--log-format",
            "json",
        ],
        name=f"tidal-{identity}-{ns}",
        timeout=120,
    )
    proc.start()
    try:
        yield Replica(identity, proc, health, api)
    finally:
        proc.stop()


async def create_all(cluster: Cluster, bodies: list[tuple[str, dict[str, Any]]]) -> None:
    """POSTs (kind, body) pairs, CREATE_CONCURRENCY at a time."""
    gate = asyncio.Semaphore(CREATE_CONCURRENCY)

    async def one(kind: str, body: dict[str, Any]) -> None:
        async with gate:
            if kind == "deployment":
                await cluster.create_deployment(body)
            else:
                await cluster.create_so(body)

    await asyncio.gather(*(one(kind, body) for kind, body in bodies))


def cron_object(name: str) -> dict[str, Any]:
    trigger = {
        "type": "cron",
        "metadata": {
            "timezone": "Etc/UTC",
            "start": "0 3 * * *",
            "end": "0 4 * * *",
            "desiredReplicas": "2",
        },
    }
    return scaled_object(name, name, [trigger], pollingInterval=30)


async def fill(redis: RedisServer, names: list[str], lengths: list[int]) -> None:
    r = aioredis.from_url(redis.url)
    try:
        for name, n in zip(names, lengths, strict=True):
            await r.delete(name)
            if n:
                await r.rpush(name, *(["job"] * n))
    finally:
        await r.aclose()


async def test_three_replicas_share_3000_objects_and_take_over_a_killed_one(
    crds: ControlPlane, cluster: Cluster, redis_server: RedisServer, run_dir: Path, kubeconfig: Path
) -> None:
    ns = cluster.ns
    bulk = [f"bulk-{i:04d}" for i in range(BULK)]
    probes = [f"probe-{i:02d}" for i in range(24)]
    await fill(redis_server, [f"{ns}-{p}" for p in probes], [i + 1 for i in range(len(probes))])
    started = time.monotonic()
    bodies: list[tuple[str, dict[str, Any]]] = []
    for name in bulk:  # at 0 and inactive: nothing to write once Ready
        bodies.append(("deployment", deployment(name, replicas=0)))
    for name in probes:
        bodies.append(("deployment", deployment(name, replicas=1)))
    for name in bulk:
        bodies.append(("so", cron_object(name)))
    for name in probes:
        trigger = redis_trigger(redis_server.address, f"{ns}-{name}", listLength="1000")
        bodies.append(("so", scaled_object(name, name, [trigger], pollingInterval=1)))
    await create_all(cluster, bodies)
    total = BULK + len(probes)
    print(f"\n[shards] {total} objects created in {time.monotonic() - started:.1f} s")

    with contextlib.ExitStack() as stack:
        replicas = [
            stack.enter_context(replica(run_dir, kubeconfig, ns, name))
            for name in ("Tidal-0", "tidal-1.b", "tidal-2")
        ]

        async def counts(live: list[Replica]) -> list[int]:
            return await asyncio.to_thread(lambda: [r.owned() for r in live])

        split = await eventually(
            functools.partial(counts, replicas),
            lambda c: sum(c) == total and all(n > 0 for n in c),
            timeout=180,
            what="the three replicas to own every object between them",
        )
        print(f"[shards] owned per replica: {split} (ready {time.monotonic() - started:.1f} s)")
        assert all(0.25 * total < c < 0.42 * total for c in split), split

        async def check_metrics(live: list[Replica]) -> None:
            async with metric_client(crds) as http:
                for r in live:
                    for i, name in enumerate(probes):

                        async def read(r: Replica = r, name: str = name) -> tuple[int, Any]:
                            return await read_metric(http, r.api, ns, name, f"{ns}-{name}")

                        _, body = await eventually(read, lambda sb: sb[0] == 200, timeout=30)
                        assert body["items"][0]["value"] == str(i + 1), (r.identity, name, body)

        await check_metrics(replicas)

        # SIGKILL one: no goodbye, its Lease stays until it expires on the others' clocks.
        victim, survivors = replicas[2], replicas[:2]
        victim.proc.kill()
        killed = time.monotonic()
        after = await eventually(
            functools.partial(counts, survivors),
            lambda c: sum(c) == total,
            timeout=60,
            what="the survivors to take the killed replica's objects over",
        )
        print(
            f"[shards] killed {victim.identity}: survivors own {after} after "
            f"{time.monotonic() - killed:.1f} s (lease {LEASE} s)"
        )
        # Only the victim's objects moved: each survivor kept what it had.
        assert after[0] >= split[0]
        assert after[1] >= split[1]
        await check_metrics(survivors)


def _when(event: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(str(event["requestReceivedTimestamp"]).replace("Z", "+00:00"))


def _story(
    events: list[dict[str, Any]],
    name: str,
    by_user: dict[str, str],
    frozen: str,
    froze_at: dt.datetime,
    thawed_at: dt.datetime,
) -> str:
    """The writes to one object in order, who made them and when (a failure's message)."""
    lines = [
        f"{frozen} froze at {froze_at.time()}, thawed at {thawed_at.time()}; writes to {name}:"
    ]
    for e in sorted((e for e in events if _object_of(e, [name])), key=_when):
        ref = e.get("objectRef", {})
        who = by_user.get(e["user"]["username"], e["user"]["username"])
        parts = [ref.get("resource"), ref.get("name"), ref.get("subresource")]
        code = e.get("responseStatus", {}).get("code")
        lines.append(
            f"  {_when(e).time()} {who} {e.get('verb')} {'/'.join(filter(None, parts))} {code}"
        )
    return "\n".join(lines)


def _object_of(event: dict[str, Any], names: list[str]) -> str | None:
    ref = event.get("objectRef", {})
    name = str(ref.get("name") or "")
    for n in names:
        if name == n or name == f"keda-hpa-{n}" or name.startswith(f"{n}."):
            return n
    return None


async def test_a_frozen_replica_writes_nothing_once_its_objects_moved(
    crds: ControlPlane, cluster: Cluster, redis_server: RedisServer, run_dir: Path
) -> None:
    ns = cluster.ns
    identities = ["fz-a", "fz-b", "fz-c"]
    users = {i: f"shards-{i}-{ns}" for i in identities}
    configs = {i: await asyncio.to_thread(crds.user_kubeconfig, u) for i, u in users.items()}
    names = [f"wx{i:02d}z" for i in range(12)]
    lists = [f"{ns}-{n}" for n in names]
    for name, key in zip(names, lists, strict=True):
        await cluster.create_deployment(deployment(name, replicas=0))
        trigger = redis_trigger(redis_server.address, key)
        await cluster.create_so(
            scaled_object(name, name, [trigger], pollingInterval=1, cooldownPeriod=0)
        )
    ring = Ring.of(Member(i, "") for i in identities)
    owner = {n: getattr(ring.owner((ns, n)), "identity", "") for n in names}
    frozen_id = max(identities, key=lambda i: sum(o == i for o in owner.values()))
    theirs = [n for n in names if owner[n] == frozen_id]
    assert theirs
    r = aioredis.from_url(redis_server.url)
    state = {"step": 0, "on": False}

    async def toggle() -> None:
        while True:
            if state["on"]:
                for i, key in enumerate(lists):
                    if (state["step"] + i) % 2 == 0:
                        await r.rpush(key, "job")
                    else:
                        await r.delete(key)
                state["step"] += 1
            await asyncio.sleep(0.7)

    def writes(identity: str, since: int) -> list[dict[str, Any]]:
        return [
            e
            for e in crds.audit_events(since, user=users[identity])
            if e.get("objectRef", {}).get("resource") != "leases"
        ]

    start = crds.audit_offset()
    with contextlib.ExitStack() as stack:
        procs = {i: stack.enter_context(replica(run_dir, configs[i], ns, i)) for i in identities}
        toggler = asyncio.create_task(toggle())
        try:
            state["on"] = True
            await eventually(
                lambda: asyncio.to_thread(writes, frozen_id, start),
                lambda ws: sum(1 for w in ws if w["objectRef"].get("subresource") == "scale") >= 3,
                timeout=90,
                what=f"{frozen_id} scaling its workloads",
            )
            state["on"] = False

            async def quiet_for(seconds: float) -> bool:
                mark = crds.audit_offset()
                await asyncio.sleep(seconds)
                return not await asyncio.to_thread(writes, frozen_id, mark)

            await eventually(lambda: quiet_for(2.0), bool, what="the replica to go quiet")
            frozen = crds.audit_offset()
            procs[frozen_id].proc.freeze()
            froze_at = dt.datetime.now(dt.UTC)
            state["on"] = True
            others = [i for i in identities if i != frozen_id]

            def taken_over() -> list[dict[str, Any]]:
                return [
                    e
                    for i in others
                    for e in writes(i, frozen)
                    if _object_of(e, theirs) is not None
                ]

            await eventually(
                lambda: asyncio.to_thread(taken_over),
                bool,
                timeout=60,
                what="the others writing the frozen replica's objects",
            )
            thawed_at = dt.datetime.now(dt.UTC)
            procs[frozen_id].proc.thaw()
            # Resumed, it joins again: its objects come back to it after a lease duration.
            await asyncio.sleep(4 * LEASE)
            state["on"] = False
            await asyncio.sleep(1.0)
        finally:
            toggler.cancel()
            await r.aclose()
    events = await asyncio.to_thread(crds.audit_events, frozen)
    by_user = {u: i for i, u in users.items()}
    mine = [e for e in events if by_user.get(e["user"]["username"]) == frozen_id]
    mine = [e for e in mine if e.get("objectRef", {}).get("resource") != "leases"]
    other = [
        e
        for e in events
        if by_user.get(e["user"]["username"]) in set(identities) - {frozen_id}
        and e.get("objectRef", {}).get("resource") != "leases"
    ]
    took = [e for e in other if _object_of(e, theirs) is not None]
    assert took, "nobody wrote the frozen replica's objects"
    # No object was written by two replicas at once. For each of the frozen replica's objects,
    # none of its writes falls inside the others' stretch of writes to it; one that comes before
    # the others' first write must have been received before the thaw (sent just before the
    # SIGSTOP: a poll that was due then, logged after the offset), never after it.
    for name in theirs:
        others = sorted(_when(e) for e in took if _object_of(e, [name]))
        if not others:
            continue
        for e in mine:
            if _object_of(e, [name]) is None:
                continue
            when = _when(e)
            story = _story(events, name, by_user, frozen_id, froze_at, thawed_at)
            assert not others[0] <= when <= others[-1], story
            assert when > others[-1] or when < thawed_at, story
    print(
        f"\n[shards] frozen {frozen_id} ({len(theirs)} objects): writes by the others to them "
        f"{len(took)}, by {frozen_id} after resuming {len(mine)}"
    )


async def test_scaling_out_and_back_keeps_each_objects_cooldown(
    crds: ControlPlane, cluster: Cluster, redis_server: RedisServer, run_dir: Path, kubeconfig: Path
) -> None:
    ns = cluster.ns
    cooldown = 40  # long enough that starting or stopping two processes on a loaded machine fits
    names = [f"cd-{i:02d}" for i in range(12)]
    lists = [f"{ns}-{n}" for n in names]
    for name, key in zip(names, lists, strict=True):
        await cluster.create_deployment(deployment(name, replicas=0))
        trigger = redis_trigger(redis_server.address, key)
        await cluster.create_so(
            scaled_object(name, name, [trigger], pollingInterval=1, cooldownPeriod=cooldown)
        )

    async def replicas_now() -> list[int]:
        return [await cluster.replicas(n) for n in names]

    async def phase(scale: contextlib.ExitStack, change: Any) -> None:
        await fill(redis_server, lists, [1] * len(lists))
        await eventually(replicas_now, lambda rs: all(rs), timeout=60, what="all active")
        await asyncio.sleep(2.0)  # a couple of polls while active
        await fill(redis_server, lists, [0] * len(lists))
        emptied = time.time()
        change()  # starts or stops replicas: blocking, and slow on a loaded machine
        # Shortly before the cooldown ends nothing has been scaled to zero, whoever owns it now.
        check_at = emptied + cooldown - 5
        assert time.time() < check_at, f"the replicas took {time.time() - emptied:.0f} s to change"
        await asyncio.sleep(check_at - time.time())
        assert all(await replicas_now()), "an object lost its cooldown when it moved"
        await eventually(replicas_now, lambda rs: not any(rs), timeout=90, what="all idle")
        print(f"[shards] idle {time.time() - emptied:.1f} s after the lists emptied")

    with contextlib.ExitStack() as one:
        first = one.enter_context(replica(run_dir, kubeconfig, ns, "co-0"))
        await eventually(
            lambda: asyncio.to_thread(first.owned), lambda n: n == len(names), timeout=60
        )
        extra = contextlib.ExitStack()
        with extra:

            def scale_out() -> None:
                for i in (1, 2):
                    extra.enter_context(replica(run_dir, kubeconfig, ns, f"co-{i}"))

            await phase(one, scale_out)  # 1 -> 3 while every object cools down
            assert first.owned() < len(names), "nothing moved to the new replicas"
            await phase(one, extra.close)  # 3 -> 1 while every object cools down
        assert first.owned() == len(names)
