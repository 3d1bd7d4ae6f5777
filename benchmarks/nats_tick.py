"""Cost of one tick of 100 nats-jetstream objects on one account, in both modes.

A private nats-server holds 10 streams x 10 durable consumers (some lag on each). 100 scalers
(one per consumer) sample concurrently once per tick, as the scheduler fires objects that share
an interval. Measured per tick: HTTP ``/jsz`` requests (monitoring mode; budget 1 per server),
NATS API requests (client mode: one ``CONSUMER.INFO`` per object), wall time, and this
process's CPU seconds -- at 1 tick/s that is the cores used (budget <= 0.05). For comparison,
KEDA's pattern (every object GETs and decodes the whole account listing) is run in Python on
the same server.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.common import Result, Row, cpu_seconds, ms, percentile, progress
from scaler.clients import ClientPool
from scaler.contract import TriggerContext
from scaler.registry import build_scaler
from scalers.nats_jetstream import NatsJetStreamScaler

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy" / "local"))

from localenv.nats import NatsServer
from localenv.paths import new_run_dir

NAME = "nats_tick"
STREAMS, CONSUMERS = 10, 10


async def _populate(url: str) -> list[tuple[str, str, int]]:
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig

    nc = await nats.connect(url)
    js = nc.jetstream()
    out = []
    for s in range(STREAMS):
        stream = f"BENCH{s}"
        await js.add_stream(name=stream, subjects=[f"bench{s}.>"])
        for c in range(CONSUMERS):
            await js.add_consumer(
                stream, ConsumerConfig(durable_name=f"w{c}", ack_policy=AckPolicy.EXPLICIT)
            )
        for _ in range(s + 1):
            await js.publish(f"bench{s}.x", b"job")
        out += [(stream, f"w{c}", s + 1) for c in range(CONSUMERS)]
    await nc.close()
    return out


def _scalers(
    pool: ClientPool, server: NatsServer, mode: str, targets: list[tuple[str, str, int]]
) -> list[NatsJetStreamScaler]:
    out = []
    for i, (stream, consumer, _) in enumerate(targets):
        meta = {"stream": stream, "consumer": consumer}
        if mode == "monitoring":
            meta |= {"natsServerMonitoringEndpoint": server.monitoring, "account": "$G"}
        else:
            meta["natsServer"] = server.url
        trigger = TriggerContext("bench", f"so-{i}", 0, "nats-jetstream", "", meta)
        scaler = build_scaler(trigger, pool)
        assert isinstance(scaler, NatsJetStreamScaler)
        out.append(scaler)
    return out


async def _ticks(
    name: str, ticks: int, tick: Any, expected: list[int]
) -> tuple[list[float], list[float]]:
    walls, cpus = [], []
    for n in range(ticks):
        c0, t0 = cpu_seconds(), time.perf_counter()
        values = await tick()
        walls.append(time.perf_counter() - t0)
        cpus.append(cpu_seconds() - c0)
        if values != expected:
            raise RuntimeError(f"{name}: wrong values at tick {n}")
        if n % 10 == 0:
            progress(NAME, f"{name}: tick {n + 1}/{ticks}")
    return walls, cpus


async def _measure(server: NatsServer, ticks: int) -> dict[str, Any]:
    targets = await _populate(server.url)
    expected = [lag for _, _, lag in targets]
    raw: dict[str, Any] = {"objects": len(targets), "ticks": ticks}
    for mode in ("monitoring", "client"):
        pool = ClientPool()
        scalers = _scalers(pool, server, mode, targets)

        clock = [time.time()]

        async def tick(
            scalers: list[NatsJetStreamScaler] = scalers, clock: list[float] = clock
        ) -> list[int]:
            # One tick per second of sample time, as at pollingInterval 1 s: the /jsz answer
            # is shared for 0.5 s of sample time, so back-to-back ticks must not share it.
            clock[0] += 1.0
            samples = await asyncio.gather(*(s.sample(clock[0]) for s in scalers))
            return [int(s.value) for s in samples]

        await tick()  # warm-up: connections, sessions
        poller = scalers[0].poller
        before = poller.jsz_requests if poller is not None else 0
        walls, cpus = await _ticks(mode, ticks, tick, expected)
        requests = (poller.jsz_requests - before) / ticks if poller is not None else 0.0
        raw[mode] = {
            "jsz_requests_per_tick": requests,
            "nats_requests_per_tick": len(scalers) if mode == "client" else 0,
            "wall_p50_s": percentile(walls, 50),
            "wall_p99_s": percentile(walls, 99),
            "cpu_s_per_tick_mean": sum(cpus) / len(cpus),
            "cpu_s_per_tick_p99": percentile(cpus, 99),
        }
        for s in scalers:
            await s.aclose()
        await pool.aclose()

    # KEDA's pattern for reference: each object GETs and decodes the whole listing.
    url = f"http://{server.monitoring}/jsz"
    params = {"acc": "$G", "consumers": "true", "config": "true"}
    async with aiohttp.ClientSession() as session:

        async def one(stream: str, consumer: str) -> int:
            async with session.get(url, params=params) as resp:
                doc = json.loads(await resp.read())
            for acc in doc["account_details"]:
                for st in acc.get("stream_detail") or ():
                    if st["name"] == stream:
                        for c in st.get("consumer_detail") or ():
                            if c["name"] == consumer:
                                return int(c["num_pending"]) + int(c["num_ack_pending"])
            raise RuntimeError("consumer not found")

        async def naive() -> list[int]:
            return list(await asyncio.gather(*(one(s, c) for s, c, _ in targets)))

        await naive()
        walls, cpus = await _ticks("per-object /jsz", ticks, naive, expected)
        raw["per_object_jsz"] = {
            "jsz_requests_per_tick": len(targets),
            "wall_p50_s": percentile(walls, 50),
            "cpu_s_per_tick_mean": sum(cpus) / len(cpus),
        }
    return raw


def run(out: Path, quick: bool) -> Result:
    ticks = 5 if quick else 60
    run_dir = new_run_dir("bench-nats")
    progress(NAME, f"starting nats-server (logs in {run_dir})")
    server = NatsServer(run_dir, name="nats-bench").start()
    try:
        raw = asyncio.run(_measure(server, ticks))
    finally:
        server.stop()
    mon, cli, naive = raw["monitoring"], raw["client"], raw["per_object_jsz"]
    rows = [
        Row(
            "100 objects / 1 account, monitoring mode: /jsz requests per tick",
            f"{mon['jsz_requests_per_tick']:g}",
            "1 per server per tick",
            "99.6 /s at 1 s poll",
            mon["jsz_requests_per_tick"] <= 1,
        ),
        Row(
            "monitoring mode: CPU per tick (= cores at 1 tick/s), mean",
            f"{mon['cpu_s_per_tick_mean']:.4f} cores",
            "<= 0.05 cores",
            "0.29 cores",
            mon["cpu_s_per_tick_mean"] <= 0.05,
        ),
        Row("monitoring mode: wall time per tick, p50", ms(mon["wall_p50_s"])),
        Row(
            "client mode: CONSUMER.INFO requests per tick (one connection)",
            f"{cli['nats_requests_per_tick']}",
        ),
        Row(
            "client mode: CPU per tick (= cores at 1 tick/s), mean",
            f"{cli['cpu_s_per_tick_mean']:.4f} cores",
            "<= 0.05 cores",
            "0.29 cores",
            cli["cpu_s_per_tick_mean"] <= 0.05,
        ),
        Row("client mode: wall time per tick, p50", ms(cli["wall_p50_s"])),
        Row(
            "KEDA's pattern in Python (100 x /jsz per tick): CPU per tick, mean",
            f"{naive['cpu_s_per_tick_mean']:.4f} cores",
        ),
    ]
    return Result(NAME, rows, raw)
