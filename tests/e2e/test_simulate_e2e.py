"""`tidal simulate` against the real thing: one Redis list-length series driven through Tidal and
the real HPA controller (kube-controller-manager, 1 s sync, through the aggregator), and through
the command; the replica timelines agree (docs/simulate.md).

Each change must be in both, in the same order, each within one HPA sync plus one
pollingInterval (neither clock's phase is known).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from localenv.pytest_kube import ApiServiceRegistrar
from localenv.redis import RedisServer
from scaler.kube.client import JSON
from tests.e2e.harness import (
    Cluster,
    deployment,
    eventually,
    redis_trigger,
    running_service,
    scaled_object,
)
from tests.e2e.test_metrics_api_e2e import _serve, _serving_files
from tests.e2e.test_scale_down_order import _record

SYNC = 1.0  # the local control plane's --horizontal-pod-autoscaler-sync-period
DOWNSCALE = "0s"  # and its --horizontal-pod-autoscaler-downscale-stabilization
POLL = 1  # pollingInterval
Schedule = tuple[tuple[float, int], ...]  # (seconds from the start, list length)


async def _set_length(r: aioredis.Redis, n: int) -> None:
    async with r.pipeline(transaction=True) as pipe:
        pipe.delete("jobs")
        if n:
            pipe.rpush("jobs", *[str(i) for i in range(n)])
        await pipe.execute()


async def _simulate(
    manifest: Path, series: Path, end: float, flags: Sequence[str]
) -> list[tuple[float, int]]:
    argv = [str(manifest), "--series", str(series), "--hpa-sync-period", f"{SYNC:g}s"]
    argv += ["--downscale-stabilization", DOWNSCALE, "--until", f"{end:g}", "-o", "json", *flags]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scaler.cli",
        "simulate",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    (timeline,) = json.loads(out)["timelines"]
    return [(c["t"], c["after"]) for c in timeline["changes"]]


async def _real(
    cluster: Cluster,
    kubeconfig: Path,
    apiservice: ApiServiceRegistrar,
    tmp_path: Path,
    body: JSON,
    r: aioredis.Redis,
    schedule: Schedule,
) -> list[tuple[float, int]]:
    """Play `schedule` on the Redis list with Tidal and the real HPA running; the Deployment's
    replica changes (seconds from the first point, count) until it is back at 0."""
    cert, key, ca_pem = _serving_files(tmp_path)
    await cluster.create_deployment(deployment("worker", replicas=0))
    await cluster.create_so(body)
    history: list[tuple[float, int]] = []
    recorder = asyncio.create_task(_record(cluster.kube, cluster.ns, history))
    loop = asyncio.get_running_loop()
    async with running_service(kubeconfig, serve=_serve(cert, key)) as svc:
        name = await apiservice.register(port=svc.api_port, ca_pem=ca_pem)
        try:
            await eventually(lambda: cluster.hpa("keda-hpa-worker"), lambda h: h is not None)
            await eventually(
                lambda: cluster.condition("worker", "Active"),
                lambda c: c is not None and c["status"] == "False",
                what="the first poll (inactive)",
            )
            start = loop.time()
            for at, length in schedule:
                await asyncio.sleep(max(0.0, start + at - loop.time()))
                await _set_length(r, length)
            await eventually(
                lambda: cluster.replicas("worker"), lambda n: n == 0, timeout=30, what="-> 0"
            )
        finally:
            await apiservice.unregister(name)
            recorder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await recorder
    return [(round(t - start, 2), n) for t, n in history if t >= start]


async def _compare(
    cluster: Cluster,
    kubeconfig: Path,
    redis_factory: Callable[..., RedisServer],
    apiservice: ApiServiceRegistrar,
    tmp_path: Path,
    schedule: Schedule,
    end: float,
    flags: Sequence[str] = (),
    metric_type: str = "AverageValue",
    **spec: Any,
) -> tuple[list[tuple[float, int]], list[tuple[float, int]]]:
    """(simulated, real) timelines of one ScaledObject (listLength 2) and one schedule."""
    server = redis_factory()
    trigger = {**redis_trigger(server.address, "jobs", listLength="2"), "metricType": metric_type}
    body = scaled_object("worker", "worker", [trigger], pollingInterval=POLL, **spec)
    manifest = tmp_path / "worker.json"
    manifest.write_text(json.dumps(body))
    series = tmp_path / "jobs.csv"
    series.write_text("t,value\n" + "".join(f"{t:g},{n}\n" for t, n in schedule))
    simulated = await _simulate(manifest, series, end, flags)
    r = aioredis.from_url(server.url)
    try:
        real = await _real(cluster, kubeconfig, apiservice, tmp_path, body, r, schedule)
    finally:
        await r.aclose()
    return simulated, real


def _assert_match(simulated: list[tuple[float, int]], real: list[tuple[float, int]]) -> None:
    slack = SYNC + POLL
    report = f"simulated {simulated}\nreal      {real}"
    print(report)
    assert [n for _, n in real] == [n for _, n in simulated], report
    for (ts, n), (tr, _) in zip(simulated, real, strict=True):
        assert abs(ts - tr) <= slack, f"-> {n}: simulated {ts}s, real {tr}s\n{report}"


async def test_both_controllers_policies_and_windows(
    cluster: Cluster,
    kubeconfig: Path,
    redis_factory: Callable[..., RedisServer],
    apiservice: ApiServiceRegistrar,
    tmp_path: Path,
) -> None:
    """0 -> 1 on activation (Tidal); 1 -> 3 (HPA, ceil(6 / 2)); 3 -> 5 capped by the default
    scale-up policy (4 pods per 15 s, counted from the period's start); 5 -> 6 once the first
    step leaves that period; 6 -> 1 after the 4 s scale-down window (HPA); 1 -> 0 after
    cooldownPeriod (Tidal)."""
    behavior = {
        "scaleDown": {
            "stabilizationWindowSeconds": 4,
            "policies": [{"type": "Percent", "value": 100, "periodSeconds": 1}],
        }
    }
    simulated, real = await _compare(
        cluster, kubeconfig, redis_factory, apiservice, tmp_path,
        ((0.0, 0), (3.0, 6), (12.0, 12), (26.0, 0)),
        38.0,
        cooldownPeriod=3,
        maxReplicaCount=8,
        advanced={"horizontalPodAutoscalerConfig": {"behavior": behavior}},
    )  # fmt: skip
    assert [n for _, n in simulated] == [1, 3, 5, 6, 1, 0]
    _assert_match(simulated, real)


async def test_unset_scale_down_window_is_the_controller_flag(
    cluster: Cluster,
    kubeconfig: Path,
    redis_factory: Callable[..., RedisServer],
    apiservice: ApiServiceRegistrar,
    tmp_path: Path,
) -> None:
    """A behavior that sets only scaleUp: the API leaves scaleDown's window unset and the
    controller uses its --horizontal-pod-autoscaler-downscale-stabilization (0 s on the local
    control plane), not 300 s: 4 -> 1 a sync or two after the list empties."""
    behavior = {"scaleUp": {"stabilizationWindowSeconds": 0}}
    simulated, real = await _compare(
        cluster, kubeconfig, redis_factory, apiservice, tmp_path,
        ((0.0, 0), (3.0, 8), (10.0, 0)),
        20.0,
        cooldownPeriod=3,
        maxReplicaCount=8,
        advanced={"horizontalPodAutoscalerConfig": {"behavior": behavior}},
    )  # fmt: skip
    live = await cluster.hpa("keda-hpa-worker")
    assert live is not None
    assert "stabilizationWindowSeconds" not in live["spec"]["behavior"]["scaleDown"], live
    assert [n for _, n in simulated] == [1, 4, 1, 0]
    _assert_match(simulated, real)


async def test_value_target_without_ready_pods(
    cluster: Cluster,
    kubeconfig: Path,
    redis_factory: Callable[..., RedisServer],
    apiservice: ApiServiceRegistrar,
    tmp_path: Path,
) -> None:
    """metricType Value: the HPA multiplies the ratio by the Ready pods, and a control plane
    without kubelets has none: ceil(8 / 2 x 0) = 0, held at minReplicas 1. The HPA never moves;
    `--no-ready-pods` says so (with Ready pods it would have been 1 -> 4)."""
    simulated, real = await _compare(
        cluster, kubeconfig, redis_factory, apiservice, tmp_path,
        ((0.0, 0), (3.0, 8), (10.0, 0)),
        20.0,
        ["--no-ready-pods"],
        "Value",
        cooldownPeriod=3,
        maxReplicaCount=8,
    )  # fmt: skip
    assert [n for _, n in simulated] == [1, 0]
    _assert_match(simulated, real)
