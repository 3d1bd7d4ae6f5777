"""Shared setup of the scale benchmarks: a control plane, Redis, N Deployments, Tidal, N objects.

`ScaleEnv` starts (in this order) etcd + kube-apiserver (+ KCM), Redis, the CRDs, namespace
`bench` with N Deployments at 0 replicas, then Tidal as its own process (so its RSS and CPU are
read from /proc/<pid>) with /metrics and, when asked, the external metrics API registered behind
the aggregator. ScaledObjects are created afterwards by the benchmark, concurrently, through one
keep-alive aiohttp session as admin. Everything is stopped on exit (APIService first).

The admin user is in `system:masters`, whose requests API Priority and Fairness exempts; the
inflight limits are raised anyway so the apiserver never throttles the benchmark itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import signal
import ssl
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import redis

from benchmarks.common import ms, progress
from localenv.certs import extension_server_certs
from localenv.controlplane import ControlPlane
from localenv.crds import install_crds
from localenv.paths import new_run_dir
from localenv.process import ManagedProcess, free_port
from localenv.redis import RedisServer

NS = "bench"
TIDAL = Path(sys.executable).parent / "tidal"
APISERVER_ARGS = ("--max-requests-inflight=2000", "--max-mutating-requests-inflight=1000")
# The HPA controller resyncs every HPA each period; Tidal creates one HPA per object, all at 0
# replicas (ScalingDisabled). Kubernetes' default period keeps KCM from eating the 2 shared cores
# while Tidal's own CPU is measured; nothing here depends on the HPA acting.
HPA_SYNC = "15s"
CREATE_CONCURRENCY = 32
LATENESS = "tidal_scheduler_lateness_seconds"
# TIDAL_BENCH_PROFILE=cpu runs Tidal under pyinstrument (pip install pyinstrument), =mem under
# tracemalloc (started before Tidal's imports), =gc only times garbage collections; each covers
# only the benchmark's measured window (SIGUSR1 starts, SIGUSR2 stops) and writes into the run
# dir: tidal-profile.{txt,html} (cpu), tidal-memory.txt (mem: the top allocation sites still
# alive, by file and by line) and, always, tidal-gc.txt (collections and pauses per generation).
# TIDAL_BENCH_FRAMES=N (with =mem) keeps N frames per allocation and adds the top allocation
# tracebacks to tidal-memory.txt (slower; for finding who holds memory, not for figures).
# TIDAL_BENCH_MALLOCSTATS=1 (with any mode, e.g. gc) writes pymalloc's and glibc's own statistics
# at the window's end into tidal-mallocstats.txt (where resident memory that no object holds is).
# =freeze is an experiment, not a figure: like gc, plus gc.freeze() after Tidal's imports and
# again (after a full collection) when the window starts, i.e. once every object is loaded.
# =cpubuild profiles from Tidal's start to the first window (the objects' creation and builds)
# into tidal-build-profile-<pid>.txt (one per Tidal process: the push leg restarts it).
# TIDAL_BENCH_STALLS=1 also records event-loop stalls > 20 ms and /metrics renders (start,
# duration) into tidal-gc.txt.
# Profilers skew CPU, lateness and RSS: take figures from a run without one.
# TIDAL_BENCH_GC_THRESHOLD=g0,g1,g2 (with any TIDAL_BENCH_PROFILE, e.g. gc) sets the collector's
# thresholds before Tidal starts: an experiment for the daemon's own settings, not a figure.
PROFILE = os.environ.get("TIDAL_BENCH_PROFILE", "")
# TIDAL_BENCH_SOURCE=<dir> runs Tidal from another copy of the source tree (its scaler/, scalers/
# and metrics_api/ come first on PYTHONPATH), e.g. `git archive <commit>` unpacked, to measure a
# before/after on the same machine with the same benchmark code.
SOURCE = os.environ.get("TIDAL_BENCH_SOURCE", "")
PROFILE_WRAPPER = """
import gc, os, signal, sys, time, tracemalloc
mode, out = sys.argv.pop(1), sys.argv.pop(1)
if os.environ.get("TIDAL_BENCH_GC_THRESHOLD"):
    gc.set_threshold(*(int(x) for x in os.environ["TIDAL_BENCH_GC_THRESHOLD"].split(",")))
if mode == "mem":
    tracemalloc.start(int(os.environ.get("TIDAL_BENCH_FRAMES", "1")))
from scaler.cli import main
import scaler.exposition, scaler.health
stalls, renders = [], []
_render = scaler.exposition.render_latest
def timed_render(registry):
    t0 = time.perf_counter()
    try:
        return _render(registry)
    finally:
        if state["on"]:
            renders.append((t0, time.perf_counter() - t0))
scaler.health.render_latest = timed_render
def watch_loop():
    import asyncio
    async def ticker():
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            if state["on"] and now - last > 0.02:
                stalls.append((last, now - last))
            last = now
    asyncio.get_running_loop().create_task(ticker())
import asyncio as _asyncio
_orig_run = _asyncio.runners.Runner.run
def run_with_ticker(self, coro, **kw):
    async def wrapped():
        watch_loop()
        return await coro
    return _orig_run(self, wrapped(), **kw)
if os.environ.get("TIDAL_BENCH_STALLS"):
    _asyncio.runners.Runner.run = run_with_ticker
if mode in ("cpu", "cpubuild"):
    from pyinstrument import Profiler
    profiler = Profiler(interval=0.001, async_mode="disabled")
if mode == "cpubuild":
    profiler.start()
pauses = {0: [], 1: [], 2: []}
state = {"on": False, "began": 0.0}
def on_gc(phase, info):
    if phase == "start":
        state["began"] = time.perf_counter()
    elif state["on"]:
        pauses[info["generation"]].append(time.perf_counter() - state["began"])
gc.callbacks.append(on_gc)
if mode == "freeze":
    gc.freeze()
def start(*_):
    if mode == "cpubuild":  # the build phase ends where the window starts: write it now
        profiler.stop()
        with open(out + f"-build-profile-{os.getpid()}.txt", "w") as f:
            f.write(profiler.output_text(unicode=True, color=False, show_all=False))
        return
    if mode == "freeze":
        gc.collect()
        gc.freeze()
    state["on"] = True
    if mode == "cpu":
        profiler.start()
def stop(*_):
    state["on"] = False
    if mode == "cpu":
        profiler.stop()
        with open(out + "-profile.txt", "w") as f:
            f.write(profiler.output_text(unicode=True, color=False, show_all=False))
        with open(out + "-profile.html", "w") as f:
            f.write(profiler.output_html())
    if mode == "mem":
        snap = tracemalloc.take_snapshot()
        with open(out + "-memory.txt", "w") as f:
            total = sum(s.size for s in snap.statistics("filename"))
            f.write(f"traced total {total / 2**20:.1f} MiB\\n\\n== by file ==\\n")
            for stat in snap.statistics("filename")[:40]:
                f.write(f"{stat}\\n")
            f.write("\\n== by line ==\\n")
            for stat in snap.statistics("lineno")[:60]:
                f.write(f"{stat}\\n")
            if tracemalloc.get_traceback_limit() > 1:
                f.write("\\n== by traceback ==\\n")
                for stat in snap.statistics("traceback")[:30]:
                    f.write(f"{stat}\\n")
                    for line in stat.traceback.format(limit=tracemalloc.get_traceback_limit()):
                        f.write(f"    {line}\\n")
    if os.environ.get("TIDAL_BENCH_MALLOCSTATS"):
        import ctypes
        with open(out + "-mallocstats.txt", "w") as f:
            sys.stderr.flush()
            saved = os.dup(2)
            os.dup2(f.fileno(), 2)
            try:
                sys._debugmallocstats()
                ctypes.CDLL(None).malloc_stats()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
    with open(out + "-gc.tmp", "w") as f:
        for gen, times in pauses.items():
            if times:
                f.write(f"gen{gen}: {len(times)} collections, total {sum(times) * 1000:.0f} ms, "
                        f"max {max(times) * 1000:.1f} ms\\n")
        t0 = min([t for t, _ in stalls + renders], default=0.0)
        for t, d in sorted(stalls + [(t, -d) for t, d in renders]):
            kind = "render" if d < 0 else "stall"
            f.write(f"{kind} at {t - t0:8.3f} s: {abs(d) * 1000:.1f} ms\\n")
    os.rename(out + "-gc.tmp", out + "-gc.txt")
signal.signal(signal.SIGUSR1, start)
signal.signal(signal.SIGUSR2, stop)
sys.exit(main())
"""


def deployment(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/w:1"}]},
            },
        },
    }


def scaled_object(name: str, redis_address: str, polling: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "scaleTargetRef": {"name": name},
            "pollingInterval": polling,
            "cooldownPeriod": 30,
            "maxReplicaCount": 5,
            "triggers": [
                {
                    "type": "redis",
                    "metadata": {
                        "address": redis_address,
                        "listName": f"list-{name}",
                        "listLength": "5",
                    },
                }
            ],
        },
    }


def names(n: int) -> list[str]:
    return [f"w{i:04d}" for i in range(n)]


def _ready_url(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


# -- Prometheus text ------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def parse_metrics(text: str) -> dict[str, float]:
    """`name{labels}` → value for every sample line (labels kept verbatim as the key)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def sum_prefix(metrics: dict[str, float], name: str) -> float:
    """Sum of every sample of `name` (any labels)."""
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


def histogram_buckets(metrics: dict[str, float], name: str) -> list[tuple[float, float]]:
    """Cumulative (le, count) pairs of an unlabelled histogram, sorted by le."""
    out = []
    prefix = f'{name}_bucket{{le="'
    for key, value in metrics.items():
        if key.startswith(prefix):
            le = key[len(prefix) :].split('"', 1)[0]
            out.append((float("inf") if le == "+Inf" else float(le), value))
    return sorted(out)


def json_buckets(deltas: list[tuple[float, float]]) -> list[tuple[float | str, float]]:
    """Bucket pairs with the +Inf bound as a string (strict JSON has no Infinity)."""
    return [("+Inf" if math.isinf(le) else le, count) for le, count in deltas]


def le_text(seconds: float, last: float = 10.0) -> str:
    """A bucket bound as the tables show it: "≤ 2.0 ms", "> 10 s" (beyond the last bound,
    `last`: scaler/telemetry.py's LATENESS_BUCKETS end at 10 s; older code's at 5 s)."""
    if math.isnan(seconds):
        return "n/a"
    if math.isinf(seconds):
        return f"> {ms(last)}"
    return f"≤ {ms(seconds)}"


def lateness_window(m0: dict[str, float], m1: dict[str, float]) -> dict[str, Any]:
    """The `tidal_scheduler_lateness_seconds` histogram between two scrapes: polls, mean and
    bucket-bound p50/p99/max (the max is the bound of the highest non-empty bucket)."""
    b0 = dict(histogram_buckets(m0, LATENESS))
    deltas = [(le, count - b0.get(le, 0.0)) for le, count in histogram_buckets(m1, LATENESS)]
    polls = m1.get(f"{LATENESS}_count", 0.0) - m0.get(f"{LATENESS}_count", 0.0)
    lateness_sum = m1.get(f"{LATENESS}_sum", 0.0) - m0.get(f"{LATENESS}_sum", 0.0)
    top = max(
        (le for i, (le, c) in enumerate(deltas) if c > (deltas[i - 1][1] if i else 0)),
        default=float("nan"),
    )
    return {
        "polls": polls,
        "lateness_bucket_deltas": json_buckets(deltas),
        "lateness_mean_s": lateness_sum / polls if polls else None,
        "lateness_p50_le_s": bucket_percentile(deltas, 50),
        "lateness_p99_le_s": bucket_percentile(deltas, 99),
        "lateness_p50_interp_s": interpolated_percentile(deltas, 50),
        "lateness_p99_interp_s": interpolated_percentile(deltas, 99),
        "lateness_max_le_s": None if math.isnan(top) else top,
    }


def interpolated_percentile(deltas: list[tuple[float, float]], p: float) -> float | None:
    """The p-th percentile interpolated linearly inside its bucket (Prometheus'
    histogram_quantile); None when empty or beyond the last finite bound."""
    total = deltas[-1][1] if deltas else 0
    if total <= 0:
        return None
    want = p / 100 * total
    lower, below = 0.0, 0.0
    for le, count in deltas:
        if count >= want:
            if math.isinf(le):
                return None
            inside = count - below
            return lower + (le - lower) * ((want - below) / inside if inside else 1.0)
        lower, below = le, count
    return None


def bucket_percentile(deltas: list[tuple[float, float]], p: float) -> float:
    """Upper bound of the bucket holding the p-th percentile (cumulative bucket deltas)."""
    total = deltas[-1][1] if deltas else 0
    if total <= 0:
        return float("nan")
    want = p / 100 * total
    for le, count in deltas:
        if count >= want:
            return le
    return float("inf")


@dataclass
class ScaleEnv:
    """The whole setup for one benchmark run; use as a context manager."""

    name: str
    objects: int
    api: bool = False  # serve the external metrics API behind the aggregator
    polling: int = 1  # the objects' pollingInterval (seconds)
    run_dir: Path = field(default_factory=lambda: new_run_dir("bench"))
    plane: ControlPlane | None = None
    redis_server: RedisServer | None = None
    tidal: ManagedProcess | None = None
    metrics_port: int = 0
    api_port: int = 0
    serving_ca: Path | None = None
    _registered: bool = False
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    # -- lifecycle --------------------------------------------------------------------------------

    def __enter__(self) -> ScaleEnv:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start(self) -> None:
        progress(self.name, f"starting the control plane (logs: {self.run_dir}/kube)")
        self.plane = ControlPlane(
            self.run_dir, hpa_sync_period=HPA_SYNC, extra_apiserver_args=APISERVER_ARGS
        ).start()
        progress(self.name, "starting Redis")
        self.redis_server = RedisServer(self.run_dir).start()
        install_crds(self.plane)
        self.plane.apply(
            f"/api/v1/namespaces/{NS}",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
        )
        t0 = time.monotonic()
        progress(self.name, f"creating {self.objects} Deployments at 0 replicas")
        asyncio.run(self.create_all("/apis/apps/v1", "deployments", deployment))
        progress(self.name, f"{self.objects} Deployments created in {time.monotonic() - t0:.1f} s")
        self.start_tidal()

    def start_tidal(self) -> None:
        assert self.plane is not None
        self.metrics_port = free_port()
        argv: list[str | Path] = [TIDAL]
        if PROFILE:
            wrapper = self.run_dir / "profiled_tidal.py"
            wrapper.write_text(PROFILE_WRAPPER)
            argv = [sys.executable, wrapper, PROFILE, self.run_dir / "tidal"]
        argv += [
            "run",
            "--kubeconfig",
            self.plane.kubeconfig,
            "--leader-elect",
            "false",
            "--metrics-address",
            f"127.0.0.1:{self.metrics_port}",
            "--log-format",
            "json",
            "--watch-namespace",
            NS,
        ]
        certs = None
        if self.api:
            certs = extension_server_certs(["tidal-metrics.tidal-system.svc"])
            cert, key = certs.serving.write(self.run_dir, "tidal-serving")
            self.serving_ca = self.run_dir / "tidal-serving-ca.crt"
            self.serving_ca.write_bytes(certs.ca.cert_pem)
            self.api_port = free_port()
            argv += [
                "--api-address",
                f"127.0.0.1:{self.api_port}",
                "--tls-cert-file",
                cert,
                "--tls-key-file",
                key,
                "--requestheader-client-ca-file",
                self.plane.front_proxy_ca_path,
            ]
        progress(
            self.name,
            f"starting Tidal (log: {self.run_dir}/tidal.log, "
            f"metrics: http://127.0.0.1:{self.metrics_port}/metrics)",
        )
        port = self.metrics_port
        if SOURCE:
            progress(self.name, f"Tidal runs from {SOURCE} (TIDAL_BENCH_SOURCE)")
        self.tidal = ManagedProcess(
            "tidal",
            argv,
            self.run_dir,
            ready=lambda: _ready_url(f"http://127.0.0.1:{port}/readyz"),
            # A restart with 10,000 objects lists them all before /readyz says so.
            timeout=max(60.0, self.objects / 50),
            env={"PYTHONPATH": SOURCE} if SOURCE else None,
        ).start()
        if self.api and certs is not None:
            progress(self.name, "registering the APIService external.metrics.k8s.io → Tidal")
            self.plane.register_apiservice(port=self.api_port, ca_pem=certs.ca.cert_pem)
            self._registered = True

    def stop(self) -> None:
        progress(self.name, "stopping (APIService, Tidal, Redis, control plane)")
        if self.plane is not None and self._registered:
            with contextlib.suppress(Exception):
                self.plane.unregister_apiservice()
            self._registered = False
        if self.tidal is not None:
            self.tidal.stop()
        if self.redis_server is not None:
            self.redis_server.stop()
        if self.plane is not None:
            self.plane.stop()

    # -- access ---------------------------------------------------------------------------------

    @property
    def tidal_pid(self) -> int:
        assert self.tidal is not None
        assert self.tidal.proc is not None
        return self.tidal.proc.pid

    def profile(self, on: bool) -> None:
        """Start (on) or stop and write (off) the profile when TIDAL_BENCH_PROFILE is set."""
        if PROFILE:
            os.kill(self.tidal_pid, signal.SIGUSR1 if on else signal.SIGUSR2)
            if not on:
                deadline = time.monotonic() + 120
                while not (self.run_dir / "tidal-gc.txt").exists():
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.5)
                progress(self.name, f"profile ({PROFILE}): {self.run_dir}/tidal-*")

    def redis_client(self) -> redis.Redis:
        assert self.redis_server is not None
        return redis.Redis(port=self.redis_server.port)

    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def restart_tidal(self) -> None:
        """Stop Tidal and start it again (same flags, a new metrics port, the same log)."""
        assert self.tidal is not None
        self.tidal.stop()
        self.start_tidal()

    def scrape(self, timeout: float = 60.0) -> dict[str, float]:
        url = self.metrics_url()
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return parse_metrics(resp.read().decode())

    def admin_ssl(self) -> ssl.SSLContext:
        assert self.plane is not None
        ctx = ssl.create_default_context(cafile=str(self.plane.ca_path))
        crt, key = self.plane.admin_cert_paths
        ctx.load_cert_chain(str(crt), str(key))
        return ctx

    def session(self, limit: int = CREATE_CONCURRENCY) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(ssl=self.admin_ssl(), limit=limit)
        return aiohttp.ClientSession(connector=connector)

    async def create_all(
        self,
        api_prefix: str,
        plural: str,
        manifest: Callable[[str], dict[str, Any]],
        on_first: Callable[[], None] | None = None,
        *,
        patch: bool = False,
    ) -> float:
        """POST one object per name (or, with `patch`, merge-PATCH the object of that name),
        CREATE_CONCURRENCY at a time; returns the seconds taken."""
        assert self.plane is not None
        url = f"{self.plane.server}{api_prefix}/namespaces/{NS}/{plural}"
        queue = list(reversed(names(self.objects)))
        method, ok = ("PATCH", (200,)) if patch else ("POST", (201, 409))
        content_type = "application/merge-patch+json" if patch else "application/json"
        t0 = time.monotonic()
        async with self.session() as http:

            async def worker() -> None:
                while queue:
                    name = queue.pop()
                    body = json.dumps(manifest(name)).encode()
                    if on_first is not None:
                        on_first()
                    async with http.request(
                        method,
                        f"{url}/{name}" if patch else url,
                        data=body,
                        headers={"Content-Type": content_type},
                    ) as resp:
                        if resp.status not in ok:
                            text = await resp.text()
                            raise RuntimeError(f"{method} {plural} -> {resp.status}: {text[:300]}")
                        await resp.read()

            await asyncio.gather(*(worker() for _ in range(CREATE_CONCURRENCY)))
        return time.monotonic() - t0

    async def write_scaled_objects(
        self,
        manifest: Callable[[str], dict[str, Any]],
        on_first: Callable[[], None] | None = None,
        *,
        patch: bool = False,
    ) -> float:
        """`create_all` for the N ScaledObjects (POST, or merge-PATCH with `patch`)."""
        return await self.create_all(
            "/apis/keda.sh/v1alpha1", "scaledobjects", manifest, on_first, patch=patch
        )

    async def list_scaled_objects(self, http: aiohttp.ClientSession) -> list[dict[str, Any]]:
        assert self.plane is not None
        url = f"{self.plane.server}/apis/keda.sh/v1alpha1/namespaces/{NS}/scaledobjects"
        async with http.get(url) as resp:
            resp.raise_for_status()
            body = json.loads(await resp.read())
        return list(body.get("items", []))


def tcp_peers(pid: int) -> dict[int, int]:
    """Established TCP connections of process `pid` by remote port (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    peers: dict[int, int] = {}
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "01" and fields[9] in inodes:  # 01 = ESTABLISHED
                    port = int(fields[2].rsplit(":", 1)[1], 16)
                    peers[port] = peers.get(port, 0) + 1
    return peers


def ready_count(items: list[dict[str, Any]]) -> int:
    n = 0
    for item in items:
        for cond in (item.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "Ready" and cond.get("status") == "True":
                n += 1
                break
    return n


async def create_and_wait_ready(env: ScaleEnv, timeout: float, polling: int = 1) -> dict[str, Any]:
    """Create the N ScaledObjects concurrently, LIST every second (every N/1000 s above 1000
    objects: a LIST of 10,000 is ~20 MB the apiserver must serve while Tidal is measured) until
    all are Ready=True.

    Returns timings (from the first POST): creation done, all Ready, and the Ready curve.
    """
    period = max(1.0, env.objects / 1000)
    assert env.redis_server is not None
    address = env.redis_server.address
    first: list[float] = []

    def mark() -> None:
        if not first:
            first.append(time.monotonic())

    create_task = asyncio.create_task(
        env.write_scaled_objects(lambda name: scaled_object(name, address, polling), on_first=mark)
    )
    curve: list[tuple[float, int]] = []
    created_at: float | None = None
    async with env.session(limit=2) as http:
        while True:
            await asyncio.sleep(period if create_task.done() else period / 2)
            if create_task.done() and created_at is None:
                create_task.result()
                created_at = time.monotonic() - first[0]
                progress(env.name, f"{env.objects} ScaledObjects created in {created_at:.1f} s")
            if not first:
                continue
            try:
                items = await env.list_scaled_objects(http)
            except (aiohttp.ClientError, TimeoutError) as exc:
                # An overloaded apiserver answers a LIST of thousands with 504 after 60 s:
                # the next LIST tells, the run goes on.
                progress(env.name, f"LIST of scaledobjects failed ({type(exc).__name__}); again")
                if time.monotonic() - first[0] > timeout:
                    raise
                continue
            ready = ready_count(items)
            elapsed = time.monotonic() - first[0]
            curve.append((round(elapsed, 2), ready))
            progress(env.name, f"t={elapsed:5.1f} s: {len(items)} listed, {ready} Ready=True")
            if ready >= env.objects and created_at is not None:
                return {
                    "created_s": created_at,
                    "all_ready_s": elapsed,
                    "list_period_s": period,
                    "curve": curve,
                }
            if elapsed > timeout:
                await _finish(create_task)
                return {
                    "created_s": created_at,
                    "all_ready_s": None,
                    "ready_at_timeout": ready,
                    "curve": curve,
                }


async def _finish(task: Awaitable[Any]) -> None:
    with contextlib.suppress(Exception):
        await task
