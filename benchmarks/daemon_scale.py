"""Tidal on one replica at 1000 and 5000 redis-list objects x 1 s and 10,000 x 30 s (issue 19).

Each scenario is one setup (benchmarks/_scale_env.py): control plane + Redis, N Deployments at
0 replicas, Tidal running (its own process), then the N ScaledObjects POSTed 32 at a time; every
list is empty, so nothing scales. In order:

1. created → all Ready=True: from the first POST until one LIST of scaledobjects shows
   Ready=True on every object (LISTed every max(1, N/1000) s: the figure is late by up to that);
2. push off (Redis' default ``notify-keyspace-events ""``: Tidal polls and re-checks push now
   and then): settle 10 s, then a steady window;
3. push on (1 s scenarios): ``CONFIG SET notify-keyspace-events Kl``, Tidal restarted so every
   object subscribes at once (waiting up to Tidal's 60 s push re-check would be idle time), wait
   until ``tidal_push_subscription_up`` counts N, settle, a second steady window; then
   event → replicas 1: an LPUSH to each of K idle objects' lists, one after another, timed to
   the Deployment watch event showing replicas >= 1 -- push-woken objects while all others poll;
4. NATS mix (the 1000 scenario): the same N objects merge-PATCHed to nats-jetstream triggers
   in monitoring mode on one account (N durable consumers), a window counting the ``/jsz``
   requests the NATS server itself served (its ``/varz`` ``http_req_stats``).

In every window: Tidal's RSS (max of samples every 5 s), CPU (/proc utime+stime delta / wall),
scheduler lateness p50/p99/max from the `tidal_scheduler_lateness_seconds` histogram deltas
(bucket upper bounds, 1 ms steps up to 5 ms; interpolated figures in the JSON), Redis commands
per poll (`INFO commandstats` deltas), `tidal_api_writes_total` delta (should be 0). Throughout,
/metrics is scraped every 5 s as a Prometheus would, and the *floor* runs: a bare Python
asyncio + redis-py poller (benchmarks/_bare_poller.py, its own process) making the same reads
of the same lists at the same interval; Tidal's CPU is quoted as a multiple of its CPU in the
same window, and its lateness (exact) and RSS are shown beside Tidal's.

quick=True: 100 objects x 1 s only, 10 s windows. TIDAL_BENCH_SCALE=1000,5000,10000 picks
scenarios (default all; about 20 minutes); TIDAL_BENCH_NATS=0 leaves the NATS mix out.
Figures come from a 2-core machine shared with other engineers' test runs: CPU and lateness
are upper bounds; compare Tidal with the floor.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._nats_mix import nats_mix
from benchmarks._scale_env import (
    ScaleEnv,
    create_and_wait_ready,
    lateness_window,
    le_text,
    sum_prefix,
    tcp_peers,
)
from benchmarks._scale_probes import Floor, Scraper, activation_latency
from benchmarks.common import Result, Row, cpu_seconds, ms, progress, rss_mib

NAME = "daemon_scale"
WRITES = "tidal_api_writes_total"
PUSH_UP = "tidal_push_subscription_up"
SETTLE_S = 10.0


@dataclass(frozen=True)
class Scenario:
    objects: int
    polling: int
    window: float
    push_leg: bool  # also measure with keyspace notifications on, and event → replicas 1
    events: int = 0  # K objects woken one after another
    nats: bool = False
    # budgets (issue 19's one-replica table)
    ready_s: float = 0.0
    rss_mib: float = 0.0
    cpu: str = ""  # "floor" (≤ 1.2x the bare poller) or a number of cores
    p99_s: float = 0.0
    event_p99_s: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.objects} x {self.polling} s"


FULL = (
    Scenario(1000, 1, 45.0, True, 40, True, 10.0, 100.0, "floor", 0.003, 0.025),
    Scenario(5000, 1, 30.0, True, 40, False, 60.0, 250.0, "1", 0.005, 0.050),
    Scenario(10000, 30, 60.0, False, 0, False, 0.0, 0.0, ""),
)
QUICK = (Scenario(100, 1, 10.0, True, 10, True, 10.0, 100.0, "floor", 0.003, 0.025),)


def _commandstats(env: ScaleEnv) -> dict[str, int]:
    client = env.redis_client()
    info = client.info("commandstats")
    out = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}
    out["(connections received)"] = int(client.info("stats")["total_connections_received"])
    return out


def _steady(env: ScaleEnv, window: float, floor: Floor, scraper: Scraper) -> dict[str, Any]:
    """One measured window of Tidal and the floor side by side."""
    pid = env.tidal_pid
    progress(NAME, f"settling {SETTLE_S:.0f} s, then a {window:.0f} s steady window")
    time.sleep(SETTLE_S)
    env.profile(True)
    load0 = os.getloadavg()[0]
    scrapes0 = len(scraper.times)
    floor.mark()
    m0, r0, c0, t0 = env.scrape(), _commandstats(env), cpu_seconds(pid), time.monotonic()
    rss_samples = [rss_mib(pid)]
    deadline = t0 + window
    while time.monotonic() < deadline:
        time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        rss_samples.append(rss_mib(pid))
        floor.sample_rss()
        progress(
            NAME,
            f"window {time.monotonic() - t0:4.0f}/{window:.0f} s, RSS {rss_samples[-1]:.0f} MiB",
        )
    m1, r1, c1, t1 = env.scrape(), _commandstats(env), cpu_seconds(pid), time.monotonic()
    bare = floor.read()
    env.profile(False)
    assert env.plane is not None
    assert env.redis_server is not None
    peers = tcp_peers(pid)
    connections = {
        "kube-apiserver": peers.get(env.plane.apiserver_port, 0),
        "redis": peers.get(env.redis_server.port, 0),
        "other": sum(peers.values())
        - peers.get(env.plane.apiserver_port, 0)
        - peers.get(env.redis_server.port, 0),
    }
    wall = t1 - t0
    lateness = lateness_window(m0, m1)
    polls = lateness["polls"]
    commands = {k: r1.get(k, 0) - r0.get(k, 0) for k in r1}
    commands = {k: v for k, v in commands.items() if v}
    # INFO commandstats also counts the commands a script runs (TYPE, LLEN inside EVALSHA),
    # our own INFO and the floor's EVALSHAs: count what Tidal sent over the wire.
    inner = {"type", "llen", "zcard", "scard", "hlen"}
    wire = sum(v for k, v in commands.items() if k not in inner and k != "info" and k[0] != "(")
    wire -= bare["reads"]
    cpu = round((c1 - c0) / wall, 3)
    out = {
        "window_s": round(wall, 1),
        "machine_load_avg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "tidal_tcp_connections": connections,
        "rss_mib_samples": [round(x, 1) for x in rss_samples],
        "rss_mib_max": round(max(rss_samples), 1),
        "cpu_cores": cpu,
        **lateness,
        "polls_nominal": round(env.objects * wall / env.polling),
        "redis_commandstats_delta_with_floor": commands,
        "redis_wire_commands": wire,
        "redis_commands_per_object_poll": wire / polls if polls else None,
        "push_subscriptions_up": sum_prefix(m1, PUSH_UP),
        "api_writes_by_kind_delta": {
            k: m1[k] - m0.get(k, 0.0) for k in m1 if k.startswith(WRITES + "{")
        },
        "api_writes_delta": sum_prefix(m1, WRITES) - sum_prefix(m0, WRITES),
        **scraper.window(scrapes0),
        "floor": bare,
        "cpu_vs_floor": round(cpu / bare["cpu_cores"], 2) if bare["cpu_cores"] else None,
    }
    progress(
        NAME,
        f"Tidal CPU {cpu} cores ({out['cpu_vs_floor']}x the floor's {bare['cpu_cores']}), "
        f"RSS {out['rss_mib_max']} MiB, lateness p99 {le_text(lateness['lateness_p99_le_s'])}"
        f" (floor {ms(bare['lateness_p99_s'] or 0)})",
    )
    return out


def _wait_push(env: ScaleEnv, timeout: float) -> float | None:
    """Seconds until every object's push subscription is up (None: not within timeout)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            up = sum_prefix(env.scrape(), PUSH_UP)
        except OSError as exc:
            progress(NAME, f"scrape failed ({exc}); again")
            continue
        progress(NAME, f"push subscriptions up: {up:.0f}/{env.objects}")
        if up >= env.objects:
            return time.monotonic() - t0
        time.sleep(2.0)
    return None


def _scenario(sc: Scenario, quick: bool, raw: dict[str, Any]) -> None:
    """Run one scenario, filling `raw` as it goes (what was measured survives a failure)."""
    raw.update(objects=sc.objects, polling_interval_s=sc.polling)
    with ScaleEnv(NAME, sc.objects, polling=sc.polling) as env:
        assert env.redis_server is not None
        raw["run_dir"] = str(env.run_dir)
        raw["rss_mib_idle_before_objects"] = round(rss_mib(env.tidal_pid), 1)
        progress(NAME, f"{sc.label}: creating the ScaledObjects; Tidal pid {env.tidal_pid}")
        timeout = 120 if quick else 900
        raw["ready"] = asyncio.run(create_and_wait_ready(env, timeout, sc.polling))
        if raw["ready"]["all_ready_s"] is None:
            progress(NAME, f"not all Ready: {raw['ready'].get('ready_at_timeout')}")
        floor = Floor(env.run_dir, env.redis_server.port, sc.objects, sc.polling)
        scraper = Scraper(env.metrics_url)
        scraper.start()
        try:
            progress(NAME, f"{sc.label}, push off")
            raw["push_off"] = _steady(env, sc.window, floor, scraper)
            if sc.push_leg:
                progress(NAME, f"{sc.label}: keyspace notifications on, restarting Tidal")
                env.redis_client().config_set("notify-keyspace-events", "Kl")
                t0 = time.monotonic()
                env.restart_tidal()
                raw["restart_ready_s"] = round(time.monotonic() - t0, 1)
                push = _wait_push(env, 300)
                raw["push_up_after_restart_s"] = (
                    None if push is None else round(time.monotonic() - t0, 1)
                )
                progress(NAME, f"{sc.label}, push on")
                raw["push_on"] = _steady(env, sc.window, floor, scraper)
                raw["event_to_replicas"] = asyncio.run(activation_latency(env, sc.events))
            if sc.nats and os.environ.get("TIDAL_BENCH_NATS", "1") != "0":
                try:
                    raw["nats"] = nats_mix(env, 10.0 if quick else 30.0)
                except Exception as exc:  # the Redis figures above still count
                    progress(NAME, f"NATS mix failed: {exc!r}")
                    raw["nats_error"] = repr(exc)
        finally:
            scraper.stop()
            floor.stop()


def run(out: Path, quick: bool) -> Result:
    picked = os.environ.get("TIDAL_BENCH_SCALE", "")
    scenarios = QUICK if quick else FULL
    if picked:
        wanted = {int(x) for x in picked.split(",")}
        scenarios = tuple(s for s in scenarios if s.objects in wanted)
    raw: dict[str, Any] = {
        "machine_note": "2 cores shared with other engineers' test runs; figures are upper bounds",
    }
    rows: list[Row] = []
    t0 = time.monotonic()
    for i, sc in enumerate(scenarios, 1):
        progress(NAME, f"scenario {i}/{len(scenarios)}: {sc.label}")
        raw[sc.label] = data = {}
        try:
            _scenario(sc, quick, data)
        except Exception as exc:  # the other scenarios still run; the table says what failed
            progress(NAME, f"{sc.label} failed: {exc!r}")
            data["error"] = repr(exc)
        rows += _rows(sc, data)
    raw["total_s"] = round(time.monotonic() - t0)
    return Result(NAME, rows, raw)


# -- the table -------------------------------------------------------------------------------


def _legs(sc: Scenario, data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(k, data[k]) for k in ("push_off", "push_on") if k in data]


def _both(sc: Scenario, data: dict[str, Any], fmt: Any) -> str:
    return " / ".join(fmt(leg) for _, leg in _legs(sc, data))


def _floor_text(floor: dict[str, Any]) -> str:
    p99 = ms(floor["lateness_p99_s"] or 0)
    return f"{floor['cpu_cores']:.3f} cores, {floor['rss_mib_max']:.0f} MiB, {p99}"


def _cpu_budget(sc: Scenario) -> str:
    if sc.cpu == "floor":
        return "≤ 1.2x the bare poller"
    return f"≤ {sc.cpu} core" if sc.cpu else ""


def _rows(sc: Scenario, data: dict[str, Any]) -> list[Row]:
    n = sc.label
    if "push_off" not in data:
        return [Row(f"{n}: the run failed", str(data.get("error", "?"))[:200], "", "", False)]
    legs = [leg for _, leg in _legs(sc, data)]
    which = "push off / on" if len(legs) == 2 else "push off"
    ready = data["ready"]["all_ready_s"]
    keda = sc.objects == 1000
    rows = [
        Row(
            f"{sc.objects} objects created → all Ready=True",
            "not all Ready" if ready is None else f"{ready:.1f} s",
            f"≤ {sc.ready_s:.0f} s" if sc.ready_s else "",
            "498 s" if keda else "",
            None if not sc.ready_s else ready is not None and ready <= sc.ready_s,
        ),
        Row(
            f"RSS at {n}, {which}",
            _both(sc, data, lambda leg: f"{leg['rss_mib_max']:.0f}") + " MiB",
            f"≤ {sc.rss_mib:.0f} MiB" if sc.rss_mib else "",
            "390 MiB" if keda else "",
            None if not sc.rss_mib else all(leg["rss_mib_max"] <= sc.rss_mib for leg in legs),
        ),
    ]
    # A loop that fell behind spends little CPU on the few polls it makes: CPU counts only
    # when (nearly) every due poll ran.
    kept_up = all(leg["polls"] >= 0.95 * leg["polls_nominal"] for leg in legs)
    cpu_ok: bool | None = None
    if sc.cpu == "floor":
        cpu_ok = kept_up and all((leg["cpu_vs_floor"] or 99) <= 1.2 for leg in legs)
    elif sc.cpu:
        cpu_ok = kept_up and all(leg["cpu_cores"] <= float(sc.cpu) for leg in legs)
    rows += [
        Row(
            f"CPU at {n}, {which} (x the bare poller in the same window)",
            _both(sc, data, lambda leg: f"{leg['cpu_cores']:.3f}")
            + " cores ("
            + _both(sc, data, lambda leg: f"{leg['cpu_vs_floor']}x")
            + "; polls made: "
            + _both(sc, data, lambda leg: f"{100 * leg['polls'] / leg['polls_nominal']:.0f} %")
            + ")",
            _cpu_budget(sc),
            "0.26 cores" if keda else "",
            cpu_ok,
        ),
        Row(
            f"bare poller (floor) at {n}: CPU, RSS, lateness p99 (exact), {which}",
            _both(
                sc,
                data,
                lambda leg: _floor_text(leg["floor"]),
            ),
        ),
        Row(
            f"scheduler lateness p50 at {n}, {which} (bucket bound)",
            _both(sc, data, lambda leg: le_text(leg["lateness_p50_le_s"])),
            "",
            "0.5 ms" if keda else "",
        ),
        Row(
            f"scheduler lateness p99 at {n}, {which} (bucket bound)",
            _both(sc, data, lambda leg: le_text(leg["lateness_p99_le_s"])),
            f"≤ {ms(sc.p99_s)}" if sc.p99_s else "",
            "3.0 ms" if keda else "",
            None if not sc.p99_s else all(leg["lateness_p99_le_s"] <= sc.p99_s for leg in legs),
        ),
        Row(
            f"scheduler lateness max at {n}, {which} (bucket bound)",
            _both(sc, data, lambda leg: le_text(leg["lateness_max_le_s"] or float("nan"))),
            "",
            "16 ms" if keda else "",
        ),
    ]
    event = data.get("event_to_replicas")
    if event is not None:
        p99 = event["p99_s"]
        rows.append(
            Row(
                f"event → replicas 1 at {n}, redis push while the rest poll (n={event['n']})",
                "n/a"
                if p99 is None
                else f"p50 {ms(event['p50_s'])}, p99 {ms(p99)}"
                + (f", {len(event['missed'])} missed" if event["missed"] else ""),
                f"p99 ≤ {ms(sc.event_p99_s)}",
                "",
                p99 is not None and p99 <= sc.event_p99_s and not event["missed"],
            )
        )
    per = [leg["redis_commands_per_object_poll"] for leg in legs]
    rows += [
        Row(
            f"Redis commands per object per poll at {n} (all sent by Tidal), {which}",
            " / ".join("n/a" if p is None or p < 0 else f"{p:.2f}" for p in per),
            "1",
            "3" if keda else "",
            all(p is not None and 0 <= p <= 1.01 for p in per),
        ),
        Row(
            f"API writes in the steady window at {n} (nothing changed), {which}",
            _both(sc, data, lambda leg: f"{leg['api_writes_delta']:.0f}"),
            "0",
            "status patch every loop" if keda else "",
            all(leg["api_writes_delta"] == 0 for leg in legs),
        ),
    ]
    nats = data.get("nats")
    if nats is not None:
        rows += [
            Row(
                f"{nats['objects']} nats-jetstream objects x 1 s (monitoring, 1 account):"
                " /jsz requests per second at the server",
                f"{nats['jsz_per_s']:.2f}",
                "≤ 2 per server",
                f"{nats['objects']} /s (one per object per poll)",
                nats["jsz_per_s"] <= 2.0,
            ),
            Row(
                f"{nats['objects']} nats-jetstream objects x 1 s: CPU, lateness p99 (bucket bound)",
                f"{nats['cpu_cores']:.3f} cores, {le_text(nats['lateness_p99_le_s'])}",
            ),
        ]
    return rows
