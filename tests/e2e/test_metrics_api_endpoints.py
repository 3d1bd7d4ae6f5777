"""The metrics-api trigger's aggregateFromKubeServiceEndpoints on the real control plane: every
ready endpoint of the Service's EndpointSlices is asked, the values aggregated as KEDA does, the
endpoints followed by a watch; a failing endpoint fails the sample (never a lower sum).

kube-apiserver refuses loopback addresses in EndpointSlices, so the slices here carry addresses
of the documentation range 192.0.2.0/24 (never dialled) and Tidal runs with
--endpoint-address-map rewriting each to the loopback address its backend listens on — the
path a local cluster uses (docs/scalers.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from localenv.process import free_port
from scaler.kube.paths import namespaced
from scaler.settings import PollSettings, WatchSettings
from scaler.store import MetricUnavailableError, UnknownMetricError
from tests.e2e.harness import Cluster, deployment, eventually, running_daemon, scaled_object

BACKENDS = {"192.0.2.11": "127.0.0.11", "192.0.2.12": "127.0.0.12", "192.0.2.13": "127.0.0.13"}


class Backends:
    """One HTTP server per loopback address, all on one port, each answering {"queue": n}."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.values: dict[str, Any] = {ip: 0 for ip in BACKENDS.values()}
        self.runners: list[web.AppRunner] = []

    async def start(self) -> None:
        for ip in BACKENDS.values():
            app = web.Application()
            app.router.add_get("/stats", self._handler(ip))
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, ip, self.port).start()
            self.runners.append(runner)

    def _handler(self, ip: str) -> Any:
        async def handle(_: web.Request) -> web.Response:
            value = self.values[ip]
            if value == "fail":
                return web.Response(status=500, text="broken")
            return web.json_response({"queue": value})

        return handle

    async def stop(self) -> None:
        for runner in self.runners:
            await runner.cleanup()


@pytest.fixture
async def backends() -> AsyncIterator[Backends]:
    b = Backends(free_port())
    await b.start()
    try:
        yield b
    finally:
        await b.stop()


def endpoint_slice(name: str, port: int, ready: dict[str, bool]) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/service-name": "stats",
                "endpointslice.kubernetes.io/managed-by": "tests.tidal",
            },
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": r}} for ip, r in ready.items()],
    }


@pytest.mark.parametrize(
    ("aggregation", "want"),
    [
        pytest.param("sum", 7.0, id="sum"),
        pytest.param("average", 3.5, id="average"),
        pytest.param("max", 4.0, id="max"),
        pytest.param("min", 3.0, id="min"),
    ],
)
async def test_every_ready_endpoint_is_asked_and_aggregated(
    cluster: Cluster, kubeconfig: Path, backends: Backends, aggregation: str, want: float
) -> None:
    ns = cluster.ns
    backends.values.update({"127.0.0.11": 3, "127.0.0.12": 4, "127.0.0.13": 100})
    await cluster.kube.create(
        namespaced("", "v1", "services", ns),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "stats"},
            "spec": {"ports": [{"name": "http", "port": backends.port}]},
        },
    )
    slices = namespaced("discovery.k8s.io", "v1", "endpointslices", ns)
    ready = {"192.0.2.11": True, "192.0.2.12": True, "192.0.2.13": False}
    await cluster.kube.create(slices, endpoint_slice("stats-a", backends.port, ready))
    await cluster.create_deployment(deployment("worker", replicas=1))
    trigger = {
        "type": "metrics-api",
        "metadata": {
            "url": f"http://stats.{ns}.svc.cluster.local:{backends.port}/stats",
            "valueLocation": "queue",
            "targetValue": "10",
            "aggregateFromKubeServiceEndpoints": "true",
            "aggregationType": aggregation,
        },
    }
    await cluster.create_so(scaled_object("worker", "worker", [trigger], pollingInterval=1))
    poll = PollSettings(http_timeout=2.0, endpoint_address_map=tuple(BACKENDS.items()))
    watch = WatchSettings(namespace=ns, cluster_object_namespace=ns)
    async with running_daemon(kubeconfig, watch=watch, poll=poll) as daemon:
        metric = "s0-metric-api-queue"

        async def value() -> float | str:
            try:
                return daemon.store.metric_value_for_hpa(ns, metric, "worker", daemon.clock()).value
            except (MetricUnavailableError, UnknownMetricError) as exc:  # not built yet
                return str(exc)

        # The not-ready endpoint (100) is left out.
        await eventually(value, lambda v: v == want, timeout=30, what=f"{aggregation} = {want}")
        if aggregation != "sum":
            return
        # The slices are watched: a third endpoint turning ready is asked from the next poll.
        body = await cluster.kube.get(f"{slices}/stats-a")
        body["endpoints"][2]["conditions"]["ready"] = True
        await cluster.kube.replace(f"{slices}/stats-a", body)
        await eventually(value, lambda v: v == 107.0, timeout=30, what="sum with the third")
        # One endpoint failing fails the sample: never a sum of those that answered.
        backends.values["127.0.0.12"] = "fail"
        failed = await eventually(value, lambda v: isinstance(v, str), timeout=30, what="error")
        assert "encountered error" in str(failed), failed
        assert "endpoint 127.0.0.12" in str(failed), failed
