"""advanced.scalingModifiers on the real control plane: the HPA Tidal writes reads one
`composite-metric`, the metrics API serves the formula over the triggers' values, the composite
decides activation (0 -> 1 only when a + b exceeds activationTarget), and a bad formula is a
Ready=False condition naming the problem."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from localenv.controlplane import ControlPlane
from localenv.redis import RedisServer
from scaler.settings import ServeSettings, WatchSettings
from tests.e2e.harness import Cluster, deployment, eventually, running_service, scaled_object
from tests.e2e.test_shards import SO_LABEL, metric_client


def modified(name: str, address: str, formula: str, **modifiers: str) -> dict[str, Any]:
    triggers = [
        {
            "type": "redis",
            "name": "queue_a",
            "metadata": {"address": address, "listName": f"{name}-a"},
        },
        {
            "type": "redis",
            "name": "queue_b",
            "metadata": {"address": address, "listName": f"{name}-b"},
        },
    ]
    return scaled_object(
        name,
        name,
        triggers,
        pollingInterval=1,
        cooldownPeriod=0,
        advanced={"scalingModifiers": {"formula": formula, **modifiers}},
    )


async def test_the_composite_metric_scales_and_is_served(
    control_plane: ControlPlane, cluster: Cluster, kubeconfig: Path, redis_server: RedisServer
) -> None:
    ns = cluster.ns
    name = "combo"
    r = aioredis.from_url(redis_server.url)
    await r.delete(f"{name}-a", f"{name}-b")
    await cluster.create_deployment(deployment(name, replicas=0))
    await cluster.create_so(
        modified(name, redis_server.address, "queue_a + queue_b", target="2", activationTarget="3")
    )
    serve = ServeSettings(
        metrics_address="127.0.0.1:0",
        api_address="127.0.0.1:0",
        metrics_authorization="none",
        webhook=False,
    )
    watch = WatchSettings(namespace=ns, cluster_object_namespace=ns)
    async with running_service(kubeconfig, watch=watch, serve=serve) as svc:
        hpa = await eventually(lambda: cluster.hpa(f"keda-hpa-{name}"), bool, what="the HPA")
        metrics = hpa["spec"]["metrics"]
        assert [m["external"]["metric"]["name"] for m in metrics] == ["composite-metric"]
        assert metrics[0]["external"]["target"] == {"type": "AverageValue", "averageValue": "2"}
        so = await eventually(
            lambda: cluster.get_so(name),
            lambda o: o.get("status", {}).get("compositeScalerName") == "composite-metric",
            what="status.compositeScalerName",
        )
        assert so["status"]["externalMetricNames"] == ["s0-redis-combo-a", "s1-redis-combo-b"]

        # a + b = 2: each trigger alone is active (> 0), the composite is not above 3.
        await r.rpush(f"{name}-a", "x", "y")
        await eventually(
            lambda: cluster.condition(name, "Active"),
            lambda c: c is not None and c["status"] == "False",
            what="inactive at a + b = 2",
        )
        assert await cluster.replicas(name) == 0
        # a + b = 4 > 3: activation.
        await r.rpush(f"{name}-b", "x", "y")
        await eventually(lambda: cluster.replicas(name), lambda n: n == 1, what="0 -> 1")

        url = (
            f"https://127.0.0.1:{svc.api_port}/apis/external.metrics.k8s.io/v1beta1/namespaces/"
            f"{ns}/composite-metric?labelSelector={SO_LABEL}%3D{name}"
        )
        async with metric_client(control_plane) as http:

            async def served() -> Any:
                async with http.get(url) as resp:
                    return resp.status, json.loads(await resp.text())

            _, body = await eventually(served, lambda sb: sb[0] == 200, what="the composite metric")
            assert body["items"][0]["metricName"] == "composite-metric"
            assert body["items"][0]["value"] == "4"
    await r.aclose()


async def test_a_bad_formula_is_ready_false_with_the_reason(
    cluster: Cluster, kubeconfig: Path, redis_server: RedisServer
) -> None:
    ns = cluster.ns
    await cluster.create_deployment(deployment("broken", replicas=0))
    await cluster.create_so(
        modified("broken", redis_server.address, "queue_a + queue_c", target="2")
    )
    watch = WatchSettings(namespace=ns, cluster_object_namespace=ns)
    async with running_service(kubeconfig, watch=watch):
        cond = await eventually(
            lambda: cluster.condition("broken", "Ready"),
            lambda c: c is not None and c["status"] == "False",
            what="Ready=False",
        )
        assert "unknown name(s) queue_c" in cond["message"], cond
        assert await cluster.hpa("keda-hpa-broken") is None
