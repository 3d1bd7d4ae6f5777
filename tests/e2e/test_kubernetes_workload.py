"""The `kubernetes-workload` trigger on the real control plane: pods matching a label selector
(set-based too) counted from a watch, Succeeded/Failed ones left out, activation above
activationValue, KEDA's metric name; a bad selector is a clear error.

No kubelet runs here, so the pods stay Pending: they count, as KEDA counts every pod that is
not Succeeded or Failed. A pod's phase is set to Failed through its status subresource."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scaler.kube.paths import namespaced
from scaler.settings import WatchSettings
from scaler.store import MetricUnavailableError, UnknownMetricError
from tests.e2e.harness import Cluster, deployment, eventually, running_daemon, scaled_object


def pod(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "registry.invalid/x:1"}]},
    }


async def test_pods_matching_the_selector_are_counted_and_activate(
    cluster: Cluster, kubeconfig: Path
) -> None:
    ns = cluster.ns
    pods = namespaced("", "v1", "pods", ns)
    await cluster.create_deployment(deployment("consumer", replicas=0))
    trigger = {
        "type": "kubernetes-workload",
        "metadata": {
            "podSelector": "app=producer, tier in (batch, stream)",
            "value": "2",
            "activationValue": "1",
        },
    }
    await cluster.create_so(
        scaled_object("consumer", "consumer", [trigger], pollingInterval=1, cooldownPeriod=0)
    )
    await cluster.kube.create(pods, pod("p1", {"app": "producer", "tier": "batch"}))
    await cluster.kube.create(pods, pod("other", {"app": "producer", "tier": "web"}))
    watch = WatchSettings(namespace=ns, cluster_object_namespace=ns)
    async with running_daemon(kubeconfig, watch=watch) as daemon:
        metric = f"s0-workload-{ns}"

        async def count() -> float | str:
            try:
                return daemon.store.metric_value_for_hpa(
                    ns, metric, "consumer", daemon.clock()
                ).value
            except (MetricUnavailableError, UnknownMetricError) as exc:  # not built yet
                return str(exc)

        await eventually(count, lambda v: v == 1.0, what="one matching pod")
        assert await cluster.replicas("consumer") == 0  # 1 is not above activationValue 1
        await cluster.kube.create(pods, pod("p2", {"app": "producer", "tier": "stream"}))
        await eventually(count, lambda v: v == 2.0, what="two matching pods")
        await eventually(lambda: cluster.replicas("consumer"), lambda n: n == 1, what="0 -> 1")
        # A Failed pod no longer counts.
        await cluster.kube.merge_patch(f"{pods}/p2/status", {"status": {"phase": "Failed"}})
        await eventually(count, lambda v: v == 1.0, what="the Failed pod left out")
        await cluster.kube.delete(f"{pods}/p1")
        await eventually(count, lambda v: v == 0.0, what="no matching pod")


async def test_a_bad_selector_is_ready_false(cluster: Cluster, kubeconfig: Path) -> None:
    ns = cluster.ns
    await cluster.create_deployment(deployment("bad", replicas=0))
    trigger = {"type": "kubernetes-workload", "metadata": {"podSelector": "app in (", "value": "1"}}
    await cluster.create_so(scaled_object("bad", "bad", [trigger]))
    watch = WatchSettings(namespace=ns, cluster_object_namespace=ns)
    async with running_daemon(kubeconfig, watch=watch):
        cond = await eventually(
            lambda: cluster.condition("bad", "Ready"),
            lambda c: c is not None and c["status"] == "False",
            what="Ready=False",
        )
        assert "error parsing pod selector" in cond["message"], cond
