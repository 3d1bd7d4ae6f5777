"""daemon_scale's NATS mix: the scenario's N objects moved to nats-jetstream triggers.

A private nats-server holds one stream with N durable consumers (one per object, a few
messages pending on each). Every ScaledObject is merge-PATCHed to one `nats-jetstream` trigger
in monitoring mode on account ``$G`` (KEDA's usual manifest), so Tidal rebuilds them all. Once
each object has served a value for its new metric, a window counts the ``/jsz`` requests the
NATS server itself answered (``/varz`` → ``http_req_stats``: measured from outside Tidal, by
the server), Tidal's CPU and its scheduler lateness.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Any

from benchmarks._scale_env import ScaleEnv, lateness_window, names
from benchmarks.common import cpu_seconds, progress
from localenv.nats import NatsServer

STREAM = "BENCH"
METRIC = f'metric="s0-nats-jetstream-{STREAM}"'
VALUES = "keda_scaler_metrics_value{"


async def _populate(url: str, consumers: list[str]) -> None:
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=STREAM, subjects=["bench.>"])
        for name in consumers:
            config = ConsumerConfig(
                durable_name=name,
                ack_policy=AckPolicy.EXPLICIT,
                filter_subject=f"bench.{name}",
            )
            await js.add_consumer(STREAM, config)
        for name in consumers[::10]:
            await js.publish(f"bench.{name}", b"job")
    finally:
        await nc.close()


def _jsz_served(server: NatsServer) -> int:
    with urllib.request.urlopen(f"http://{server.monitoring}/varz", timeout=10) as resp:
        stats = json.loads(resp.read()).get("http_req_stats") or {}
    return int(stats.get("/jsz", 0))


def _patch(server: NatsServer) -> Any:
    def manifest(name: str) -> dict[str, Any]:
        trigger = {
            "type": "nats-jetstream",
            "metadata": {
                "natsServerMonitoringEndpoint": server.monitoring,
                "account": "$G",
                "stream": STREAM,
                "consumer": name,
                "lagThreshold": "5",
            },
        }
        return {"spec": {"triggers": [trigger]}}

    return manifest


def nats_mix(env: ScaleEnv, window: float) -> dict[str, Any]:
    server = NatsServer(env.run_dir).start()
    try:
        progress(env.name, f"NATS mix: {env.objects} durable consumers on {server.monitoring}")
        asyncio.run(_populate(server.url, names(env.objects)))
        progress(env.name, "NATS mix: PATCHing every ScaledObject to nats-jetstream")
        t0 = time.monotonic()
        asyncio.run(env.write_scaled_objects(_patch(server), patch=True))
        moved = 0
        while True:
            try:  # a scrape while Tidal rebuilds 1000 objects on a loaded machine may time out
                metrics = env.scrape(timeout=60)
            except OSError as exc:
                progress(env.name, f"NATS mix: scrape failed ({exc}); again")
                if time.monotonic() - t0 > 300:
                    raise
                continue
            moved = sum(1 for k in metrics if k.startswith(VALUES) and METRIC in k)
            progress(env.name, f"NATS mix: {moved}/{env.objects} objects serve the NATS metric")
            if moved >= env.objects or time.monotonic() - t0 > 300:
                break
            time.sleep(2.0)
        moved_s = time.monotonic() - t0
        time.sleep(5.0)
        pid = env.tidal_pid
        m0, j0, c0, w0 = env.scrape(), _jsz_served(server), cpu_seconds(pid), time.monotonic()
        progress(env.name, f"NATS mix: a {window:.0f} s window")
        time.sleep(window)
        m1, j1, c1, w1 = env.scrape(), _jsz_served(server), cpu_seconds(pid), time.monotonic()
        wall = w1 - w0
        out = {
            "objects": env.objects,
            "all_moved_s": round(moved_s, 1),
            "moved": moved,
            "window_s": round(wall, 1),
            "jsz_requests": j1 - j0,
            "jsz_per_s": (j1 - j0) / wall,
            "cpu_cores": round((c1 - c0) / wall, 3),
            **lateness_window(m0, m1),
        }
        progress(env.name, f"NATS mix: {out['jsz_per_s']:.2f} /jsz per s, CPU {out['cpu_cores']}")
        return out
    finally:
        server.stop()
