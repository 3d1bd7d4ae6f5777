"""What daemon_scale measures besides Tidal itself: the bare-poller floor, the 5 s scrapes, and
event → replicas 1 through a watch on the Deployments.

* `Floor` runs `benchmarks._bare_poller` (its own process) against the same Redis and lists as
  Tidal, during the same windows: Tidal's CPU is quoted as a ratio to it. Its CPU and RSS are
  read from /proc like Tidal's; its lateness (exact, per read) comes from its own report.
* `Scraper` GETs Tidal's /metrics every 5 s, as a Prometheus would, for the whole measured part
  of the run (its cost is in Tidal's CPU and lateness; the scrape times are reported).
* `activation_latency` LPUSHes one job to the lists of K idle objects, one after another, and
  times each LPUSH → the first watch event showing that object's Deployment at replicas >= 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from benchmarks._scale_env import NS, ScaleEnv, names
from benchmarks.common import cpu_seconds, percentile, progress, rss_mib
from scalers.redis_lists import LENGTH_SCRIPT

ROOT = Path(__file__).resolve().parents[1]
SCRAPE_EVERY_S = 5.0


class Floor:
    """The bare poller as a child process; `mark()` opens a window, `read()` closes it."""

    def __init__(self, run_dir: Path, redis_port: int, lists: int, interval: float) -> None:
        self.out = run_dir / "bare-poller.jsonl"
        self.log = run_dir / "bare-poller.log"
        script = run_dir / "bare-poller.lua"
        script.write_text(LENGTH_SCRIPT.source)  # Tidal's own read
        argv = [sys.executable, "-m", "benchmarks._bare_poller", "--port", str(redis_port)]
        argv += ["--script", str(script)]
        argv += ["--lists", str(lists), "--interval", str(interval), "--out", str(self.out)]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self._cpu0 = 0.0
        self._t0 = 0.0
        self._rss: list[float] = []

    @property
    def pid(self) -> int:
        return self.proc.pid

    def mark(self) -> None:
        """Start a window: the poller's lateness starts afresh, CPU is read from now."""
        self._lines = self._count()
        os.kill(self.pid, signal.SIGUSR1)
        self._wait_lines(self._lines + 1)
        self._lines += 1
        self._cpu0, self._t0 = cpu_seconds(self.pid), time.monotonic()
        self._rss = [rss_mib(self.pid)]

    def sample_rss(self) -> None:
        self._rss.append(rss_mib(self.pid))

    def read(self) -> dict[str, Any]:
        """End the window: the poller's report plus CPU and RSS as read for Tidal."""
        cpu1, t1 = cpu_seconds(self.pid), time.monotonic()
        self._rss.append(rss_mib(self.pid))
        os.kill(self.pid, signal.SIGUSR1)
        self._wait_lines(self._lines + 1)
        self._lines += 1
        report = json.loads(self.out.read_text().splitlines()[-1])
        report["cpu_cores"] = round((cpu1 - self._cpu0) / (t1 - self._t0), 4)
        report["rss_mib_max"] = round(max(self._rss), 1)
        return report

    def _count(self) -> int:
        return len(self.out.read_text().splitlines()) if self.out.exists() else 0

    def _wait_lines(self, n: int) -> None:
        deadline = time.monotonic() + 30
        while self._count() < n:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the bare poller did not report (log: {self.log})")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Scraper(threading.Thread):
    """GET /metrics every SCRAPE_EVERY_S (the URL is asked each time: Tidal may restart)."""

    def __init__(self, url: Callable[[], str]) -> None:
        super().__init__(daemon=True, name="scraper")
        self.url = url
        self.times: list[float] = []
        self.errors = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(SCRAPE_EVERY_S):
            t0 = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url(), timeout=30) as resp:
                    resp.read()
                self.times.append(time.perf_counter() - t0)
            except OSError:
                self.errors += 1

    def window(self, since: int) -> dict[str, Any]:
        times = self.times[since:]
        return {
            "scrapes": len(times),
            "scrape_p50_s": percentile(times, 50) if times else None,
            "scrape_max_s": max(times) if times else None,
            "scrape_errors_total": self.errors,
        }

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=35)


async def _watch_replicas(
    env: ScaleEnv,
    http: aiohttp.ClientSession,
    reached: dict[str, float],
    waiters: dict[str, asyncio.Event],
    ready: asyncio.Event,
) -> None:
    assert env.plane is not None
    base = f"{env.plane.server}/apis/apps/v1/namespaces/{NS}/deployments"
    async with http.get(f"{base}?limit=1") as resp:
        resp.raise_for_status()
        rv = json.loads(await resp.read())["metadata"]["resourceVersion"]
    url = f"{base}?watch=1&resourceVersion={rv}&timeoutSeconds=600"
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=None)) as resp:
        ready.set()
        async for line in resp.content:
            if not line.strip():
                continue
            now = time.perf_counter()
            obj = json.loads(line)["object"]
            if int((obj.get("spec") or {}).get("replicas") or 0) >= 1:
                name = obj["metadata"]["name"]
                reached.setdefault(name, now)
                if name in waiters:
                    waiters[name].set()


async def activation_latency(env: ScaleEnv, k: int) -> dict[str, Any]:
    """LPUSH to K idle objects' lists one after another; LPUSH → replicas >= 1, seconds."""
    assert env.redis_server is not None
    all_names = names(env.objects)
    step = max(1, len(all_names) // k)
    chosen = all_names[step // 2 :: step][:k]
    reached: dict[str, float] = {}
    waiters = {name: asyncio.Event() for name in chosen}
    out: list[float] = []
    missed: list[str] = []
    r = aioredis.Redis(port=env.redis_server.port)
    async with env.session(limit=4) as http:
        ready = asyncio.Event()
        watch = asyncio.create_task(_watch_replicas(env, http, reached, waiters, ready))
        await asyncio.wait_for(ready.wait(), 30)
        try:
            for name in chosen:
                t0 = time.perf_counter()
                await r.lpush(f"list-{name}", "job")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiters[name].wait(), 10.0)
                if name in reached:
                    out.append(reached[name] - t0)
                else:
                    missed.append(name)
                await asyncio.sleep(0.1 + random.random() * 0.2)  # independent events
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watch
            await r.aclose()
    progress(env.name, f"event → replicas 1: {len(out)} of {len(chosen)} measured")
    return {
        "n": len(out),
        "missed": missed,
        "p50_s": percentile(out, 50) if out else None,
        "p99_s": percentile(out, 99) if out else None,
        "max_s": max(out) if out else None,
        "samples_s": [round(x, 4) for x in out],
    }
