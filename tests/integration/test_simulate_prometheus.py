"""`tidal simulate --from-prometheus`: a real Prometheus scraping a gauge every second answers the
range query the command makes, and the command replays it (RFC 3339 times, one series)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from localenv.process import free_port
from localenv.prometheus import PrometheusServer

SCRAPED_WITHIN = 60.0  # seconds for a value to land in Prometheus (a wait, not an assertion)


@pytest.fixture
def gauge() -> Iterator[tuple[str, Gauge]]:
    registry = CollectorRegistry()
    depth = Gauge("tidal_sim_queue_depth", "queue depth", ["shard"], registry=registry)
    depth.labels("a").set(0)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    yield f"127.0.0.1:{port}", depth
    server.shutdown()
    server.server_close()
    thread.join(5)


def _wait_for(url: str, query: str, value: float) -> None:
    deadline = time.monotonic() + SCRAPED_WITHIN
    while time.monotonic() < deadline:
        q = urllib.parse.urlencode({"query": query})
        with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=5) as resp:
            result = json.loads(resp.read())["data"]["result"]
        if result and float(result[0]["value"][1]) == value:
            return
        time.sleep(0.25)
    raise AssertionError(f"Prometheus at {url} never had {query} = {value}")


def _simulate(tmp_path: Path, url: str, query: str) -> subprocess.CompletedProcess[str]:
    manifest = tmp_path / "worker.json"
    trigger = {
        "type": "prometheus",
        "metadata": {"serverAddress": url, "query": query, "threshold": "10"},
    }
    manifest.write_text(
        json.dumps(
            {
                "apiVersion": "keda.sh/v1alpha1",
                "kind": "ScaledObject",
                "metadata": {"name": "worker"},
                "spec": {
                    "scaleTargetRef": {"name": "worker"},
                    "pollingInterval": 1,
                    "triggers": [trigger],
                },
            }
        )
    )
    argv = [sys.executable, "-m", "scaler.cli", "simulate", str(manifest)]
    argv += ["--from-prometheus", url, query, "--since", "2m", "--step", "1s"]
    argv += ["--hpa-sync-period", "1s", "--until", "60", "-o", "json"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_simulates_a_prometheus_range_query(
    prometheus_factory: Callable[..., PrometheusServer],
    gauge: tuple[str, Gauge],
    tmp_path: Path,
) -> None:
    target, depth = gauge
    prometheus = prometheus_factory([target])
    _wait_for(prometheus.url, "max(tidal_sim_queue_depth)", 0)
    time.sleep(2)
    depth.labels("a").set(35)
    _wait_for(prometheus.url, "max(tidal_sim_queue_depth)", 35)
    time.sleep(1.5)

    done = _simulate(tmp_path, prometheus.url, "max(tidal_sim_queue_depth)")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["epoch"] is not None  # the series has the samples' own times
    (timeline,) = body["timelines"]
    steps = [(c["who"], c["after"]) for c in timeline["changes"]]
    assert steps[:2] == [("tidal", 1), ("hpa", 4)], steps  # ceil(35 / 10), in one step from 1
    assert all(c["at"].endswith("Z") for c in timeline["changes"])

    depth.labels("b").set(1)  # a second series: the query must be aggregated
    _wait_for(prometheus.url, "count(tidal_sim_queue_depth)", 2)
    done = _simulate(tmp_path, prometheus.url, "tidal_sim_queue_depth")
    assert done.returncode == 1
    assert "returned 2 series; aggregate it to one" in done.stderr
