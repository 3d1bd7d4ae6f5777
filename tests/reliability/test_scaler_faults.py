"""Every scaler x every fault against real brokers: no scale-down, the right conditions and
metrics-API errors while the fault lasts, a good sample within two polls after it clears.

Rows run in the order of `SCALERS`, so each scaler's brokers start once (module scope) and stay
up for its five rows; one Tidal serves the whole module. See tests/reliability/harness.py.
"""

from __future__ import annotations

import asyncio

import pytest

from localenv.redis_cluster import command
from tests.reliability.harness import (
    EVENTUALLY,
    FAULTS,
    NOT_APPLICABLE,
    PUSH_BACK,
    PUSH_SCALERS,
    RESULTS,
    SCALERS,
    TARGET,
    VALUE,
    Env,
    RowSpec,
    eventually,
    in_thread,
    row_name,
    run_row,
)
from tests.reliability.rigs import RIGS, RedisClusterRig

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROWS = [
    pytest.param(scaler, fault, id=f"{scaler}-{fault}")
    for scaler in SCALERS
    for fault in FAULTS
    if (scaler, fault) not in NOT_APPLICABLE
]


@pytest.mark.parametrize(("scaler", "fault"), ROWS)
async def test_fault(env: Env, scaler: str, fault: str, request: pytest.FixtureRequest) -> None:
    # The brokers of every selected row start together at the first row.
    specs = [getattr(item, "callspec", None) for item in request.session.items]
    scalers = {c.params["scaler"] for c in specs if c is not None and "scaler" in c.params}
    env.prestart({s: RIGS[s] for s in SCALERS if s in scalers})
    rig = await env.rig(scaler, RIGS[scaler])
    await run_row(env, rig, fault)


async def test_hash_tagged_cluster_key_is_served(env: Env) -> None:
    """Redis Cluster users co-locate keys with hash tags ({tag}:jobs); the metric name keeps
    the braces (s0-redis-{tag}-jobs, as KEDA's), and the HPA must still get its value."""
    rig = await env.rig("redis-cluster", RIGS["redis-cluster"])
    assert isinstance(rig, RedisClusterRig)
    key = "{rel-tag}:jobs"
    port = rig.cluster.nodes[rig.node_of(key)].port
    await in_thread(command, port, "RPUSH", key, *[str(i) for i in range(int(VALUE))])
    meta = {"addresses": rig.cluster.address, "listName": key, "listLength": TARGET}
    name = "redis-cluster-hashtag"
    await env.create_row(name, RowSpec("redis-cluster", meta))
    await eventually(
        lambda: env.ready(name), lambda r: r == "True/ScaledObjectReady", what=f"{name} Ready"
    )
    assert env.metric(name) == "s0-redis-{rel-tag}-jobs"
    assert await env.api(name) == ("value", VALUE)


async def test_push_subscriptions_come_back(env: Env) -> None:
    """After all the faults, every object of the push-capable rows that ran has its push
    subscription up again (retried with jittered backoff, capped at 30 s, while it polled)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    # A rig that failed to set up fails its own rows; it has no objects to wait for here.
    rows = [row_name(s, f) for (s, f) in RESULTS if s in PUSH_SCALERS and env.has_rows(s)]
    waiting = {n for row in rows for n in (row, f"{row}-z", f"{row}-q", f"{row}-b")}
    while waiting and loop.time() - start < EVENTUALLY:
        telemetry = await env.telemetry()
        for name in sorted(waiting):
            if telemetry.get(f"push:{name}:0") == 1.0:
                PUSH_BACK[name] = loop.time() - start
                waiting.discard(name)
        await asyncio.sleep(0.5)
    for name in waiting:
        PUSH_BACK[name] = None
    assert not waiting, (
        f"push subscriptions still down {EVENTUALLY:.0f}s after the faults: {waiting}"
    )
