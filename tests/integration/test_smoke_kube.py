"""Smoke tests proving the local control plane is real: KCM controllers, the aggregator, the HPA."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes_asyncio import client

from localenv.controlplane import ControlPlane
from localenv.process import ComponentError, ManagedProcess
from localenv.pytest_kube import ApiServiceRegistrar

from .metrics_stub import MetricsStub

pytestmark = pytest.mark.kube

T = TypeVar("T")
DEADLINE = 120.0
METRIC = "s0-stub-queue"


async def wait_until(
    read: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    what: str,
    timeout: float = DEADLINE,
) -> T:
    """Poll `read` until `done(value)`; fail naming `what` and the last value seen."""
    t0 = time.monotonic()
    value = await read()
    while not done(value):
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"{what}: not reached within {timeout:.0f} s; last value: {value!r}")
        await asyncio.sleep(0.2)
        value = await read()
    return value


def deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]},
            },
        },
    }


async def replica_counts(apps: client.AppsV1Api, name: str, ns: str) -> tuple[int, int]:
    """(spec.replicas, status.replicas) of a Deployment."""
    dep = await apps.read_namespaced_deployment(name, ns)
    return dep.spec.replicas, dep.status.replicas or 0


async def test_scale_subresource_and_replicaset_controller(
    kube_client: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(kube_client)
    core = client.CoreV1Api(kube_client)
    await apps.create_namespaced_deployment(namespace, deployment("web", 1))

    patched = await apps.patch_namespaced_deployment_scale(
        "web", namespace, {"spec": {"replicas": 3}}, _content_type="application/merge-patch+json"
    )
    assert patched.spec.replicas == 3
    scale = await apps.read_namespaced_deployment_scale("web", namespace)
    assert scale.spec.replicas == 3

    await wait_until(
        lambda: replica_counts(apps, "web", namespace),
        lambda counts: counts == (3, 3),
        "Deployment web (spec, status) replicas == (3, 3)",
    )
    pods = await core.list_namespaced_pod(namespace, label_selector="app=web")
    assert len(pods.items) == 3
    # No kubelet and no scheduler: pods exist (created by the ReplicaSet controller) but never run.
    assert {pod.status.phase for pod in pods.items} == {"Pending"}


@pytest.fixture
async def metrics_stub(control_plane: ControlPlane) -> AsyncIterator[MetricsStub]:
    stub = await MetricsStub(front_proxy_ca=control_plane.front_proxy_ca_path).start()
    try:
        yield stub
    finally:
        await stub.stop()


def hpa(name: str, target: str, metric: str) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "minReplicas": 1,
            "maxReplicas": 5,
            "metrics": [
                {
                    "type": "External",
                    "external": {
                        "metric": {"name": metric},
                        "target": {"type": "AverageValue", "averageValue": "2"},
                    },
                }
            ],
        },
    }


async def test_real_hpa_scales_from_external_metric_through_aggregator(
    kube_client: client.ApiClient,
    namespace: str,
    metrics_stub: MetricsStub,
    apiservice: ApiServiceRegistrar,
) -> None:
    assert metrics_stub.certs is not None
    name = await apiservice.register(port=metrics_stub.port, ca_pem=metrics_stub.certs.ca.cert_pem)
    assert name == "v1beta1.external.metrics.k8s.io"

    # The value the stub serves, read back through kube-apiserver's aggregator as admin.
    metrics_stub.values[METRIC] = 7
    custom = client.CustomObjectsApi(kube_client)
    answer = await custom.list_namespaced_custom_object(
        "external.metrics.k8s.io", "v1beta1", namespace, METRIC
    )
    assert answer["kind"] == "ExternalMetricValueList"
    assert [(i["metricName"], i["value"]) for i in answer["items"]] == [(METRIC, "7")]
    proxied = [r for r in metrics_stub.seen if r.path.endswith(f"/namespaces/{namespace}/{METRIC}")]
    assert proxied, "the metric request never reached the stub"
    assert proxied[-1].remote_user == "admin"
    assert "system:masters" in proxied[-1].remote_groups
    assert proxied[-1].client_cn == "front-proxy-client"  # verified against the front-proxy CA

    # The real HPA controller in KCM reads the same metric and scales the Deployment.
    apps = client.AppsV1Api(kube_client)
    autoscaling = client.AutoscalingV2Api(kube_client)
    await apps.create_namespaced_deployment(namespace, deployment("worker", 1))
    metrics_stub.values[METRIC] = 10
    await autoscaling.create_namespaced_horizontal_pod_autoscaler(
        namespace, hpa("worker", "worker", METRIC)
    )
    await wait_until(
        lambda: replica_counts(apps, "worker", namespace),
        lambda counts: counts == (5, 5),
        "HPA scale-up of worker to (spec, status) == (5, 5) at metric 10 / averageValue 2",
    )
    status = (
        await autoscaling.read_namespaced_horizontal_pod_autoscaler("worker", namespace)
    ).status
    assert status.desired_replicas == 5

    metrics_stub.values[METRIC] = 2
    await wait_until(
        lambda: replica_counts(apps, "worker", namespace),
        lambda counts: counts == (1, 1),
        "HPA scale-down of worker to (spec, status) == (1, 1) at metric 2 / averageValue 2",
    )
    hpa_calls = [r for r in metrics_stub.seen if r.path.endswith(f"/{METRIC}")]
    assert len(hpa_calls) > len(proxied)
    assert all(r.client_cn == "front-proxy-client" and r.remote_user for r in hpa_calls)

    await apiservice.unregister(name)  # before the stub stops (docs/design.md)


def test_component_exiting_at_once_is_reported_with_its_log(tmp_path: Path) -> None:
    process = ManagedProcess("doomed", ["false"], tmp_path, ready=lambda: False, timeout=30)
    with pytest.raises(ComponentError) as caught:
        process.start()
    error = caught.value
    assert error.name == "doomed"
    assert error.log == tmp_path / "doomed.log"
    assert "doomed exited with 1" in str(error)
    assert str(tmp_path / "doomed.log") in str(error)
    assert "start: false" in error.log.read_text()


def test_missing_binaries_tell_the_user_to_build_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIDAL_TOOLS_DIR", str(tmp_path / "no-tools"))
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    with pytest.raises(ComponentError, match="make env") as caught:
        ControlPlane(tmp_path).start()
    assert caught.value.name == "etcd"
    assert not (tmp_path / "kube" / "etcd.log").exists()


async def test_apiserver_restart_keeps_port_and_data(
    control_plane: ControlPlane, kube_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube_client)
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="kept"), data={"k": "v"})
    await core.create_namespaced_config_map(namespace, body)
    server = control_plane.server

    await asyncio.to_thread(control_plane.restart_apiserver)

    assert control_plane.server == server
    kept = await core.read_namespaced_config_map("kept", namespace)  # same client, same URL
    assert kept.data == {"k": "v"}
