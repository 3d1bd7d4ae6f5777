"""`tidal status` and `tidal explain` against a running daemon on the real control plane with
real Redis servers: the commands run as separate processes (as an SRE runs them) and read the
daemon's debug endpoint on its metrics port; `explain` reads the HPA from the real apiserver.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from localenv.redis import RedisServer
from scaler.explain import ERROR_IS_NEVER_A_ZERO
from scaler.kube.client import JSON
from scaler.service import Service
from scaler.settings import LeaderSettings, WatchSettings
from tests.e2e.harness import (
    Cluster,
    deployment,
    eventually,
    redis_trigger,
    running_service,
    scaled_object,
)

REPO = Path(__file__).resolve().parents[2]
SECRET = "Tidal-e2e-PASSWORD-7f3a9c"
PAUSED = {"autoscaling.keda.sh/paused": "true"}


def _watch(cluster: Cluster) -> WatchSettings:
    return WatchSettings(namespace=cluster.ns, cluster_object_namespace="tidal-system")


async def tidal(*args: str) -> tuple[int, str, str]:
    """`tidal ARGS` in a separate process."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scaler.cli",
        *args,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def address(service: Service) -> str:
    return f"127.0.0.1:{service.health_port}"


async def endpoint(service: Service, path: str) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{address(service)}{path}") as r,
    ):
        return await r.json() if r.status == 200 else None


def branch_is(service: Service, ns: str, name: str, branch: str) -> Any:
    async def probe() -> Any:
        return await endpoint(service, f"/debug/objects/{ns}/{name}")

    async def wait() -> Any:
        return await eventually(
            probe,
            lambda d: d is not None and (d.get("decision") or {}).get("branch") == branch,
            what=f"{name}: decision {branch}",
        )

    return wait()


async def explain(service: Service, cluster: Cluster, kubeconfig: Path, name: str) -> str:
    code, out, err = await tidal(
        "explain",
        f"{cluster.ns}/{name}",
        "--address",
        address(service),
        "--kubeconfig",
        str(kubeconfig),
    )
    assert code == 0, err
    return out


def _with_auth(trigger: JSON, auth: str) -> JSON:
    return {**trigger, "authenticationRef": {"name": auth}}


async def test_status_lists_every_object_and_explain_says_why(
    cluster: Cluster, kubeconfig: Path, redis_server: RedisServer
) -> None:
    """An active object, one in cooldown, a paused one and a BLOCKED one (its Secret is
    missing): `tidal status` shows each with its values (table and JSON); `tidal explain`
    names the decision-table row and its inputs for each."""
    busy, cool = f"busy-{cluster.ns}", f"cool-{cluster.ns}"
    r = aioredis.from_url(redis_server.url)
    await r.rpush(busy, "a", "b", "c")
    await r.rpush(cool, "a")
    await cluster.create_secret_auth("no-secret-auth", "password", "missing-secret", None)
    for name, replicas in (("busy", 0), ("cool", 0), ("paused", 2), ("blocked", 0)):
        await cluster.create_deployment(deployment(name, replicas=replicas))
    address_ = redis_server.address
    await cluster.create_so(
        scaled_object(
            "busy", "busy", [redis_trigger(address_, busy, listLength="2")], pollingInterval=1
        )
    )
    await cluster.create_so(
        scaled_object("cool", "cool", [redis_trigger(address_, cool)], pollingInterval=1)
    )
    paused = scaled_object("paused", "paused", [redis_trigger(address_, busy)], pollingInterval=1)
    paused["metadata"]["annotations"] = PAUSED
    await cluster.create_so(paused)
    await cluster.create_so(
        scaled_object(
            "blocked",
            "blocked",
            [_with_auth(redis_trigger(address_, busy), "no-secret-auth")],
            pollingInterval=1,
        )
    )
    async with running_service(kubeconfig, watch=_watch(cluster)) as service:
        await eventually(lambda: cluster.replicas("cool"), lambda n: n == 1, what="cool 0 -> 1")
        await r.delete(cool)  # drained: cooldownPeriod (300 s) starts
        await branch_is(service, cluster.ns, "cool", "cooldown")
        await branch_is(service, cluster.ns, "busy", "active")
        await branch_is(service, cluster.ns, "paused", "paused")
        await eventually(
            lambda: endpoint(service, f"/debug/objects/{cluster.ns}/blocked"),
            lambda d: d is not None and d["phase"] == "blocked",
            what="blocked is BLOCKED",
        )

        code, out, err = await tidal(
            "status", "--address", address(service), "-n", cluster.ns, "-o", "json"
        )
        assert code == 0, err
        doc = json.loads(out)
        rows = {o["name"]: o for o in doc["objects"]}
        assert set(rows) == {"busy", "cool", "paused", "blocked"}
        assert rows["busy"]["active"] is True
        assert rows["busy"]["triggers"][0]["metric"] == f"s0-redis-{busy}"
        assert rows["busy"]["triggers"][0]["value"] == 3
        assert rows["busy"]["triggers"][0]["age"] < 5
        assert rows["cool"]["last_scale"]["to"] == 1
        assert rows["cool"]["last_scale"]["outcome"] == "scaled"
        assert rows["blocked"]["phase"] == "blocked"
        assert "missing-secret" in rows["blocked"]["error"]
        assert doc["leader"]["is_leader"] is True

        code, table, err = await tidal("status", "--address", address(service), "-n", cluster.ns)
        assert code == 0, err
        assert table.splitlines()[0].split()[:3] == ["NAMESPACE", "NAME", "PHASE"]
        busy_row = next(line for line in table.splitlines() if f"{cluster.ns}  busy " in line)
        assert f"s0-redis-{busy}=3 (" in busy_row
        assert " yes " in busy_row
        assert f"BLOCKED {cluster.ns}/blocked:" in table
        assert "(no leader election: it writes)" in table

        text = await explain(service, cluster, kubeconfig, "busy")
        assert "At 1, the HPA owns the count: active" in text
        assert f"the trigger s0-redis-{busy} is active (3 > activation 0)" in text
        assert "HPA             keda-hpa-busy:" in text
        assert "min 1, max 100" in text
        text = await explain(service, cluster, kubeconfig, "cool")
        assert (
            f"Held at 1: cooldown — the trigger s0-redis-{cool} is inactive (0 ≤ activation 0) "
            f"since " in text
        )
        # How much is left depends on how long the steps above took (a loaded CI machine: over a
        # minute); never more than the cooldownPeriod (lastActiveTime is stored rounded up).
        left = re.search(r"cooldownPeriod 300 s ends in (?:(\d) min)?(?: ?(\d+) s)?\b", text)
        assert left is not None, text
        assert 0 < int(left.group(1) or 0) * 60 + int(left.group(2) or 0) <= 300, text
        assert "then 1 → 0." in text
        assert "last scale      0 → 1 (activate, scaled)" in text
        text = await explain(service, cluster, kubeconfig, "paused")
        assert "Held at 2: paused — autoscaling.keda.sh/paused is set" in text
        assert "autoscaling.keda.sh/paused=true" in text
        text = await explain(service, cluster, kubeconfig, "blocked")
        assert "Not scaling: BLOCKED" in text
        assert "missing-secret" in text

        code, _, err = await tidal("explain", f"{cluster.ns}/nope", "--address", address(service))
        assert code == 1
        assert f"no ScaledObject {cluster.ns}/nope" in err
    await r.aclose()
    assert await cluster.replicas("cool") == 1  # cooldown held it


async def test_explain_a_failing_trigger(
    cluster: Cluster, kubeconfig: Path, redis_factory: Callable[..., RedisServer]
) -> None:
    """Redis stops under a running workload: explain says it holds, because an error is never
    a zero, and shows the failure streak and the last good value; status marks the trigger."""
    server = redis_factory()
    r = aioredis.from_url(server.url)
    await r.rpush("jobs", "a", "b")
    await r.aclose()
    await cluster.create_deployment(deployment("worker", replicas=0))
    await cluster.create_so(
        scaled_object(
            "worker",
            "worker",
            [redis_trigger(server.address, "jobs")],
            pollingInterval=1,
            cooldownPeriod=1,
        )
    )
    async with running_service(kubeconfig, watch=_watch(cluster)) as service:
        await eventually(lambda: cluster.replicas("worker"), lambda n: n == 1, what="0 -> 1")
        server.kill()
        await branch_is(service, cluster.ns, "worker", "hold-error")
        text = await explain(service, cluster, kubeconfig, "worker")
        assert f"Held at 1: {ERROR_IS_NEVER_A_ZERO} — the trigger s0-redis-jobs is failing" in text
        assert "last good value 2 is held" in text
        code, table, err = await tidal("status", "--address", address(service), "-n", cluster.ns)
        assert code == 0, err
        assert "s0-redis-jobs=2!x" in table
        assert await cluster.replicas("worker") == 1


async def test_the_endpoint_and_the_commands_show_no_secret(
    cluster: Cluster, kubeconfig: Path, redis_factory: Callable[..., RedisServer]
) -> None:
    """A Redis password from a TriggerAuthentication Secret reaches the scaler (the object
    scales) and appears nowhere in the endpoint's JSON nor the commands' output. The daemon runs
    with leader election here: status and explain name the leader."""
    server = redis_factory(password=SECRET)
    r = aioredis.from_url(server.url)
    await r.rpush("jobs", "a", "b", "c")
    await r.aclose()
    await cluster.create_secret_auth("redis-auth", "password", "redis-auth", SECRET)
    await cluster.create_deployment(deployment("guarded", replicas=0))
    trigger = _with_auth(redis_trigger(server.address, "jobs"), "redis-auth")
    await cluster.create_so(scaled_object("guarded", "guarded", [trigger], pollingInterval=1))
    leader = LeaderSettings(namespace=cluster.ns, identity="tidal-status-e2e")
    async with running_service(kubeconfig, watch=_watch(cluster), leader=leader) as service:
        await eventually(lambda: cluster.replicas("guarded"), lambda n: n == 1, what="0 -> 1")
        await branch_is(service, cluster.ns, "guarded", "active")
        async with aiohttp.ClientSession() as session:
            texts = []
            for path in ("/debug/objects", f"/debug/objects/{cluster.ns}/guarded"):
                async with session.get(f"http://{address(service)}{path}") as resp:
                    texts.append(await resp.text())
        _, status_json, _ = await tidal("status", "--address", address(service), "-o", "json")
        _, status_table, _ = await tidal("status", "--address", address(service))
        explained = await explain(service, cluster, kubeconfig, "guarded")
        for text in (*texts, status_json, status_table, explained):
            assert SECRET not in text
            assert '"password"' not in text
        assert "tidal-status-e2e is the leader" in status_table
        assert "[daemon tidal-status-e2e, leader]" in explained
