"""Scale-out: 3 replicas with `--shards auto` x 5000 redis-list objects x 1 s, against one
replica holding all 5000 measured in the same run.

Setup (benchmarks/_scale_env.py): control plane + Redis, 5000 Deployments at 0 replicas, one
Tidal (the control), then the 5000 ScaledObjects; every list is empty, nothing scales.

1. one replica: all Ready, then a steady window (45 s; 10 s with --quick) of its CPU cores
   (/proc utime+stime delta / wall), RSS (max of samples) and polls per second (the scheduler's
   lateness count: one per poll started; 5000 are due per second) — a replica that cannot keep
   up polls less, so CPU alone would flatter it;
2. the control stops; three `tidal run --shards auto` start together (default Lease timing:
   15 s duration, 10 s renew deadline, 2 s retry; metrics API and peer listener on, managed
   certificate): time until the three own every object between them, then the same window
   per replica;
3. one replica is SIGKILLed: time until the two survivors own every object (its Lease must
   first go unrenewed for 15 s on their clocks; then each survivor reads and builds its part).

quick=True: 600 objects, 10 s windows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks._scale_env import NS, ScaleEnv, create_and_wait_ready, parse_metrics
from benchmarks.common import Result, Row, cpu_seconds, progress, rss_mib
from localenv.process import ManagedProcess, free_port
from localenv.tidal import tidal_process

NAME = "shards_scale"
REPLICAS = 3
LEASE = 15.0


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
        return parse_metrics(resp.read().decode())


def _owned(port: int) -> int:
    try:
        return int(_scrape(port).get("tidal_shard_owned_objects", 0))
    except OSError:
        return -1


POLLS = "tidal_scheduler_lateness_seconds_count"  # one count per poll started


def _window(pids: list[int], ports: list[int], seconds: float) -> list[dict[str, float]]:
    """CPU cores, max RSS and polls per second of each process over `seconds`."""
    p0 = [_scrape(port).get(POLLS, 0.0) for port in ports]
    c0, t0 = [cpu_seconds(p) for p in pids], time.monotonic()
    rss = [[rss_mib(p)] for p in pids]
    deadline = t0 + seconds
    while time.monotonic() < deadline:
        time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        for i, p in enumerate(pids):
            rss[i].append(rss_mib(p))
    wall = time.monotonic() - t0
    p1 = [_scrape(port).get(POLLS, 0.0) for port in ports]
    return [
        {
            "cpu_cores": (cpu_seconds(p) - c0[i]) / wall,
            "rss_mib": max(rss[i]),
            "polls_per_s": (p1[i] - p0[i]) / wall,
        }
        for i, p in enumerate(pids)
    ]


def _wait(what: str, check: Any, timeout: float) -> float:
    t0 = time.monotonic()
    while True:
        value = check()
        if value is True:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"{what}: not within {timeout:.0f} s (last {value})")
        progress(NAME, f"{what}: {value}")
        time.sleep(2.0)


def _sharded(env: ScaleEnv, identity: str) -> tuple[ManagedProcess, int]:
    assert env.plane is not None
    peer = f"127.0.0.1:{free_port()}"
    proc, port = tidal_process(
        env.run_dir,
        env.plane.kubeconfig,
        [
            "--watch-namespace",
            NS,
            "--leader-election-namespace",
            NS,
            "--identity",
            identity,
            "--shards",
            "auto",
            "--api-address",
            f"127.0.0.1:{free_port()}",
            "--shard-peer-address",
            peer,
            "--shard-advertise-address",
            peer,
            "--cert-secret",
            f"{NS}/tidal-serving",
            "--cert-apiservice",
            "",
            "--metrics-authorization",
            "none",
            "--log-format",
            "json",
        ],
        name=f"tidal-{identity}",
        timeout=300,
    )
    return proc, port


def run(out: Path, quick: bool) -> Result:
    objects = 600 if quick else 5000
    window = 10.0 if quick else 45.0
    raw: dict[str, Any] = {"objects": objects, "replicas": REPLICAS, "window_s": window}
    with ScaleEnv(NAME, objects) as env:
        ready = asyncio.run(create_and_wait_ready(env, timeout=600))
        raw["one_replica_ready_s"] = ready["all_ready_s"]
        progress(NAME, f"one replica: all Ready after {ready['all_ready_s']:.1f} s; settling 10 s")
        time.sleep(10)
        (single,) = _window([env.tidal_pid], [env.metrics_port], window)
        raw["one_replica"] = single
        progress(NAME, f"one replica: {single}")
        assert env.tidal is not None
        env.tidal.stop()
        env.tidal = None

        with contextlib.ExitStack() as stack:
            started = time.monotonic()
            procs = [_sharded(env, f"tidal-{i}") for i in range(REPLICAS)]
            for proc, _ in procs:
                stack.callback(proc.stop)
                proc.start()
            ports = [port for _, port in procs]

            def split() -> bool | list[int]:
                counts = [_owned(p) for p in ports]
                return True if sum(counts) == objects and min(counts) > 0 else counts

            _wait("three replicas own every object", split, 600)
            raw["sharded_owned_s"] = time.monotonic() - started
            raw["split"] = [_owned(p) for p in ports]
            progress(NAME, f"split {raw['split']} after {raw['sharded_owned_s']:.1f} s")
            time.sleep(10)
            pids = [p.proc.pid for p, _ in procs if p.proc is not None]
            per = _window(pids, ports, window)
            raw["sharded"] = per
            progress(NAME, f"three replicas: {per}")

            victim, survivors = procs[-1][0], ports[:-1]
            victim.kill()
            killed = time.monotonic()

            def taken() -> bool | list[int]:
                counts = [_owned(p) for p in survivors]
                return True if sum(counts) == objects else counts

            _wait("survivors own every object", taken, 300)
            raw["takeover_owned_s"] = time.monotonic() - killed
            raw["lease_s"] = LEASE
            progress(NAME, f"survivors own all {raw['takeover_owned_s']:.1f} s after SIGKILL")
            raw["survivor_split"] = [_owned(p) for p in survivors]
    return Result(NAME, rows_of(raw), raw)


def rows_of(raw: dict[str, Any]) -> list[Row]:
    """The README rows from a run's raw figures (also used to re-render a stored result)."""
    objects = int(raw["objects"])
    single, per = raw["one_replica"], raw["sharded"]
    one_cpu, one_rss = single["cpu_cores"], single["rss_mib"]
    one_polls = single.get("polls_per_s", 0.0)
    max_cpu = max(r["cpu_cores"] for r in per)
    max_rss = max(r["rss_mib"] for r in per)
    total_cpu = sum(r["cpu_cores"] for r in per)
    total_polls = sum(r.get("polls_per_s", 0.0) for r in per)
    label = f"{objects} x 1 s"

    def per_poll(cores: float, polls: float) -> str:
        return f"{1e6 * cores / polls:.0f} us" if polls else "n/a"

    return [
        Row(
            f"1 replica, {label}: CPU / RSS / polls per s (control)",
            f"{one_cpu:.2f} cores / {one_rss:.0f} MiB / {one_polls:.0f} "
            f"({100 * one_polls / objects:.0f} % of due)",
        ),
        Row(
            f"3 replicas (--shards auto), {label}: per-replica CPU / RSS (max of 3)",
            f"{max_cpu:.2f} cores / {max_rss:.0f} MiB",
            "",
            "one active operator at any size",
        ),
        Row(
            f"3 replicas, {label}: CPU / polls per s of all three",
            f"{total_cpu:.2f} cores / {total_polls:.0f} "
            f"({100 * total_polls / objects:.0f} % of due)",
        ),
        Row(
            f"CPU per poll at {label}: 1 replica / 3 replicas (2 shared cores)",
            f"{per_poll(one_cpu, one_polls)} / {per_poll(total_cpu, total_polls)}",
        ),
        Row(
            "3 replicas: started → every object owned",
            f"{raw['sharded_owned_s']:.1f} s ({'/'.join(map(str, raw['split']))})",
        ),
        Row(
            "SIGKILL one of 3 → survivors own its objects",
            f"{raw['takeover_owned_s']:.1f} s",
            f"lease {raw.get('lease_s', LEASE):.0f} s + retry 2 s + reads/builds",
            "standby takes over all (leader election)",
        ),
    ]
