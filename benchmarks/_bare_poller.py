"""The floor of daemon_scale: a bare Python poller doing Tidal's Redis reads and nothing else.

    python -m benchmarks._bare_poller --port P --lists N --interval S --script LUA --out FILE

N coroutines, one per list (the lists Tidal's objects read), each waking every `interval`
seconds at its own phase (i/N of the interval, like objects created one after another) and
reading its list with the SAME one-EVALSHA script as Tidal's redis trigger (TYPE + LLEN inside
Redis; the benchmark writes scalers/redis_lists.py's script to the file LUA: this process
imports nothing of Tidal, so its RSS is the floor's own). Reads issued in the same event-loop
iteration go out as one pipeline on one connection, as a naive asyncio + redis-py loop would
batch them. No Kubernetes, no metrics, no decisions:
what is left is the cost of the reads themselves in Python, which Tidal's CPU is compared with.

Lateness (start - due, like `tidal_scheduler_lateness_seconds`) is recorded per read. SIGUSR1
writes the figures since the previous SIGUSR1 as one JSON line to FILE and starts afresh, so the
benchmark brackets its steady window with two signals; SIGTERM ends the process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import resource
import signal
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis


class Batcher:
    """Reads asked for in one loop iteration share one pipeline."""

    def __init__(self, client: aioredis.Redis, sha: str) -> None:
        self.client = client
        self.sha = sha
        self.pending: list[tuple[str, asyncio.Future[Any]]] = []
        self.pipelines = 0
        self.tasks: set[asyncio.Future[None]] = set()

    async def read(self, key: str) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending.append((key, fut))
        if len(self.pending) == 1:
            asyncio.get_running_loop().call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        batch, self.pending = self.pending, []
        task = asyncio.ensure_future(self._send(batch))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _send(self, batch: list[tuple[str, asyncio.Future[Any]]]) -> None:
        self.pipelines += 1
        pipe = self.client.pipeline(transaction=False)
        for key, _ in batch:
            pipe.execute_command("EVALSHA", self.sha, 1, key)
        try:
            results = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            for _, fut in batch:
                fut.set_exception(exc)
            return
        for (_, fut), result in zip(batch, results, strict=True):
            fut.set_result(result)


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.lateness: list[float] = []
        self.errors = 0
        self.since = time.monotonic()
        self.cpu0 = _cpu()

    def report(self, pipelines: int) -> dict[str, Any]:
        wall = time.monotonic() - self.since
        ordered = sorted(self.lateness)

        def pct(p: float) -> float | None:
            if not ordered:
                return None
            return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]

        return {
            "window_s": round(wall, 2),
            "reads": len(ordered),
            "errors": self.errors,
            "pipelines_total": pipelines,
            "cpu_cores_self": round((_cpu() - self.cpu0) / wall, 4) if wall else None,
            "lateness_p50_s": pct(50),
            "lateness_p99_s": pct(99),
            "lateness_max_s": ordered[-1] if ordered else None,
            "lateness_mean_s": sum(ordered) / len(ordered) if ordered else None,
        }


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _one(key: str, phase: float, interval: float, batcher: Batcher, stats: Stats) -> None:
    loop = asyncio.get_running_loop()
    due = loop.time() + phase
    while True:
        await asyncio.sleep(max(0.0, due - loop.time()))
        started = loop.time()
        stats.lateness.append(max(0.0, started - due))
        try:
            await batcher.read(key)
        except Exception:
            stats.errors += 1
        due = started + interval  # like Tidal: the next one interval after this one started


async def main(args: argparse.Namespace, script: str) -> None:
    client = aioredis.Redis(host="127.0.0.1", port=args.port)
    sha = await client.script_load(script)
    batcher = Batcher(client, sha)
    stats = Stats()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def dump() -> None:
        with open(args.out, "a") as f:
            f.write(json.dumps(stats.report(batcher.pipelines)) + "\n")
        stats.reset()

    loop.add_signal_handler(signal.SIGUSR1, dump)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    keys = [f"{args.prefix}{i:04d}" for i in range(args.lists)]
    tasks = [
        asyncio.create_task(_one(k, i * args.interval / args.lists, args.interval, batcher, stats))
        for i, k in enumerate(keys)
    ]
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="benchmarks._bare_poller")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--lists", type=int, required=True)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--prefix", default="list-w")
    parser.add_argument("--script", required=True)
    parser.add_argument("--out", required=True)
    parsed = parser.parse_args()
    asyncio.run(main(parsed, Path(parsed.script).read_text()))
