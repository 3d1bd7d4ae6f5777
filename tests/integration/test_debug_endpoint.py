"""The debug endpoint (GET /debug/objects) served by the real metrics-port server over loopback
HTTP, at 1000 objects: the whole list, one object, the namespace filter, a 404, and how long
the event loop is held while the list is built (it yields every `CHUNK` objects).

The objects are real runtimes in a real ObjectTable, MetricStore and scheduler; their builds
hold a stand-in scaler (nothing is sampled here) and their decisions come from decide().
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import aiohttp
import pytest

from scaler.contract import MetricSpec, Sample
from scaler.debug import CHUNK, DebugView, debug_routes
from scaler.decide import DecisionInput, TriggerView, decide
from scaler.health import serve_health
from scaler.kube.paths import GVKR
from scaler.object_parser import parse_scaled_object
from scaler.params import Param
from scaler.runtime import Build, ScaleAction, TriggerRuntime
from scaler.store import MetricStore
from scaler.table import ObjectTable
from scaler.telemetry import Telemetry

OBJECTS = 1000
SECRET = "pa55-SECRET-in-metadata"


class ListScaler:
    PARAMS: ClassVar[tuple[Param, ...]] = (
        Param("password", secret=True),
        Param("activationListLength", "int", default=0),
    )

    def metric_spec(self) -> MetricSpec:
        raise NotImplementedError

    async def sample(self, now: float) -> Sample:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


def fill(table: ObjectTable, store: MetricStore, now: float, n: int) -> None:
    target = GVKR("apps", "v1", "Deployment", "deployments")
    for i in range(n):
        so = parse_scaled_object(
            {
                "metadata": {"name": f"so-{i}", "namespace": f"ns-{i % 10}"},
                "spec": {
                    "scaleTargetRef": {"name": f"w-{i}"},
                    "pollingInterval": 1,
                    "triggers": [
                        {
                            "type": "redis",
                            "metadata": {"listName": f"l{i}", "password": SECRET},
                        }
                    ],
                },
            }
        )
        rt = table.admit(so, {}, finalizer=True)
        metric = f"s0-redis-l{i}"
        spec = MetricSpec(metric, 5.0)
        rt.build = Build(
            target, (TriggerRuntime(so.triggers[0], spec, ListScaler()),), frozenset(), 0
        )
        store.register(so.namespace, so.name, [spec])
        if i % 7 == 0:
            store.record_error(so.namespace, so.name, metric, "connection refused", now)
        else:
            store.record_sample(so.namespace, so.name, metric, Sample(i % 3, i % 3 > 0, now - 1))
        view = TriggerView(metric, "redis", Sample(i % 3, i % 3 > 0, now - 1))
        inp = DecisionInput(so, i % 2, (view,), now - 30, now)
        rt.last_input, rt.last_decision = inp, decide(inp)
        rt.last_active_time = rt.last_decision.last_active_time
        rt.last_scale = ScaleAction(now - 5, 0, 1, "activate", "scaled")


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, ObjectTable]]:
    telemetry = Telemetry()
    store = MetricStore()
    now = time.time()
    table = ObjectTable(
        store, telemetry, lambda uid: None, clock=time.time, on_lateness=lambda k, x: None
    )
    fill(table, store, now, OBJECTS)
    gc.collect()
    gc.freeze()  # as the daemon does once its objects are loaded
    view = DebugView(table, store, leader=None, identity="tidal-test", clock=time.time)
    async with serve_health(
        "127.0.0.1:0", telemetry.registry, lambda: True, debug_routes(view)
    ) as port:
        yield f"http://127.0.0.1:{port}", table
    gc.unfreeze()


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any, str]:
    status, text = await _fetch(session, url)
    return status, json.loads(text), text


async def _fetch(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as r:
        return r.status, await r.text()


async def test_the_list_of_1000_objects_is_served_without_holding_the_loop(
    served: tuple[str, ObjectTable],
) -> None:
    base, _ = served
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while not stop.is_set():
            await asyncio.sleep(0)
            now = loop.time()
            gaps.append(now - last)
            last = now

    async with aiohttp.ClientSession() as session:
        await _get(session, f"{base}/debug/objects")  # warm-up (imports, first connection)
        tick = asyncio.create_task(ticker())
        t0 = time.perf_counter()
        status, text = await _fetch(session, f"{base}/debug/objects")
        elapsed = time.perf_counter() - t0
        stop.set()
        await tick
    doc = json.loads(text)
    assert status == 200
    assert doc["count"] == OBJECTS
    assert doc["leader"] == {"election": False, "identity": "tidal-test", "is_leader": True}
    row = next(o for o in doc["objects"] if o["name"] == "so-7")
    assert row["triggers"][0]["metric"] == "s0-redis-l7"
    assert row["triggers"][0]["error"] == "connection refused"
    assert row["triggers"][0]["active"] is None  # failing: unknown, never inactive
    assert row["triggers"][0]["activation"] == {"param": "activationListLength", "value": 0}
    assert row["last_scale"]["outcome"] == "scaled"
    assert row["next_poll_in"] is not None
    assert SECRET not in text
    longest = max(gaps)
    print(
        f"\n/debug/objects at {OBJECTS} objects: {elapsed * 1000:.0f} ms end to end, "
        f"{len(text) // 1024} KiB, longest loop hold {longest * 1000:.1f} ms "
        f"({OBJECTS // CHUNK} chunks)"
    )
    # The loop ran between every two chunks (its time is machine noise: printed, not asserted).
    assert len(gaps) >= OBJECTS // CHUNK


async def test_one_object_its_namespace_and_an_unknown_one(served: tuple[str, ObjectTable]) -> None:
    base, _ = served
    async with aiohttp.ClientSession() as session:
        status, doc, text = await _get(session, f"{base}/debug/objects/ns-9/so-9")
        assert status == 200
        assert doc["decision"]["branch"] == "cooldown"
        assert doc["decision"]["inputs"]["current_replicas"] == 1
        assert doc["cooldown"]["period"] == 300
        assert 260 < doc["cooldown"]["remaining"] <= 270
        assert doc["hpa"] == {"name": "keda-hpa-so-9", "min": 1, "max": 100}
        assert SECRET not in text
        status, doc, _ = await _get(session, f"{base}/debug/objects?namespace=ns-4")
        assert status == 200
        assert doc["count"] == OBJECTS // 10
        assert {o["namespace"] for o in doc["objects"]} == {"ns-4"}
        status, doc, _ = await _get(session, f"{base}/debug/objects/ns-3/nope")
        assert status == 404
        assert "ns-3/nope" in doc["error"]
