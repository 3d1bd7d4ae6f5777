"""`tidal simulate` against the real thing: one Redis list-length series driven through Tidal and
the real HPA controller (kube-controller-manager, 1 s sync, through the aggregator), and through
the command; the replica timelines agree (docs/simulate.md).

The series exercises both controllers: 0 -> 1 on activation (Tidal), 1 -> 3 (HPA, AverageValue),
3 -> 5 capped by the default scale-up policy (4 pods per 15 s counted from the period's start),
5 -> 6 once the first scale-up leaves that period, 6 -> 1 after the 4 s scale-down window
(HPA), 1 -> 0 after cooldownPeriod (Tidal).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

import redis.asyncio as aioredis

from localenv.pytest_kube import ApiServiceRegistrar
from localenv.redis import RedisServer
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
POLL = 1  # pollingInterval
# (seconds from the start, list length): listLength 2, so 6 items ask for 3 pods, 12 for 6.
SCHEDULE = ((0.0, 0), (3.0, 6), (12.0, 12), (26.0, 0))
END = 38.0  # the simulated span; the real run waits for 0 replicas
BEHAVIOR = {
    "scaleDown": {
        "stabilizationWindowSeconds": 4,
        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 1}],
    }
}


async def _set_length(r: aioredis.Redis, n: int) -> None:
    async with r.pipeline(transaction=True) as pipe:
        pipe.delete("jobs")
        if n:
            pipe.rpush("jobs", *[str(i) for i in range(n)])
        await pipe.execute()


async def _simulate(manifest: Path, series: Path) -> list[tuple[float, int]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scaler.cli",
        "simulate",
        str(manifest),
        "--series",
        str(series),
        "--hpa-sync-period",
        f"{SYNC:g}s",
        "--downscale-stabilization",
        "0s",
        "--until",
        f"{END:g}",
        "-o",
        "json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    (timeline,) = json.loads(out)["timelines"]
    return [(c["t"], c["after"]) for c in timeline["changes"]]


async def test_simulated_timeline_matches_the_real_control_plane(
    cluster: Cluster,
    kubeconfig: Path,
    redis_factory: Callable[..., RedisServer],
    apiservice: ApiServiceRegistrar,
    tmp_path: Path,
) -> None:
    server = redis_factory()
    r = aioredis.from_url(server.url)
    body = scaled_object(
        "worker",
        "worker",
        [redis_trigger(server.address, "jobs", listLength="2")],
        pollingInterval=POLL,
        cooldownPeriod=3,
        maxReplicaCount=8,
        advanced={"horizontalPodAutoscalerConfig": {"behavior": BEHAVIOR}},
    )
    manifest = tmp_path / "worker.json"
    manifest.write_text(json.dumps(body))
    series = tmp_path / "jobs.csv"
    series.write_text("t,value\n" + "".join(f"{t:g},{n}\n" for t, n in SCHEDULE))
    simulated = await _simulate(manifest, series)

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
            for at, length in SCHEDULE:
                await asyncio.sleep(max(0.0, start + at - loop.time()))
                await _set_length(r, length)
            await eventually(
                lambda: cluster.replicas("worker"), lambda n: n == 0, timeout=30, what="-> 0"
            )
        finally:
            await apiservice.unregister(name)
            await r.aclose()
            recorder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await recorder

    real = [(round(t - start, 2), n) for t, n in history if t >= start]
    slack = SYNC + POLL  # one HPA sync plus one poll: neither clock's phase is known
    report = f"simulated {simulated}\nreal      {real}"
    print(report)
    assert [n for _, n in simulated] == [1, 3, 5, 6, 1, 0], report
    assert [n for _, n in real] == [n for _, n in simulated], report
    for (ts, n), (tr, _) in zip(simulated, real, strict=True):
        assert abs(ts - tr) <= slack, f"-> {n}: simulated {ts}s, real {tr}s\n{report}"
