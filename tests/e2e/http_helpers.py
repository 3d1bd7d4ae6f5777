"""Helpers for the HTTP scale-from-zero end-to-end tests.

The setup is real end to end: kube-apiserver + kube-controller-manager (Deployment, ReplicaSet,
HPA controllers), kwok making the workload's pods Ready with loopback pod IPs, HTTP servers bound
to those IPs (`pod_backends`), `tidal intercept` processes, the daemon in-process, and the
HTTPScaledObject reconciler (scaler/http_objects.py) as its own task.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from localenv.kwok import NODE_NAME
from scaler.daemon import Daemon
from scaler.http_objects import HttpObjects
from scaler.kube.client import JSON, KubeClient
from tests.e2e.harness import Cluster, deployment, eventually, running_daemon

HSO_API = "/apis/http.keda.sh/v1alpha1"


def workload(name: str, replicas: int = 0, node: str = NODE_NAME) -> JSON:
    """A Deployment whose pods kwok makes Ready (bound to kwok's node; `node` elsewhere: never)."""
    body = deployment(name, replicas)
    body["spec"]["template"]["spec"]["nodeName"] = node
    return body


def service(name: str, target_port: int | str, port: int = 80) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "selector": {"app": name},
            "ports": [{"name": "http", "port": port, "targetPort": target_port}],
        },
    }


def http_scaled_object(name: str, host: str, **spec: Any) -> JSON:
    """An HTTPScaledObject as the KEDA HTTP add-on documents it."""
    body: JSON = {
        "apiVersion": "http.keda.sh/v1alpha1",
        "kind": "HTTPScaledObject",
        "metadata": {"name": name},
        "spec": {
            "hosts": [host],
            "scaleTargetRef": {
                "name": name,
                "kind": "Deployment",
                "apiVersion": "apps/v1",
                "service": name,
                "port": 80,
            },
            "replicas": {"min": 0, "max": 3},
            "scaledownPeriod": 300,
            **spec,
        },
    }
    return body


async def create(kube: KubeClient, ns: str, body: JSON) -> JSON:
    paths = {
        "Deployment": f"/apis/apps/v1/namespaces/{ns}/deployments",
        "Service": f"/api/v1/namespaces/{ns}/services",
        "HTTPScaledObject": f"{HSO_API}/namespaces/{ns}/httpscaledobjects",
    }
    return await kube.create(paths[body["kind"]], body)


async def ready_pods(kube: KubeClient, ns: str, app: str) -> list[str]:
    """IPs of the Ready pods of `app`."""
    pods = await kube.get(f"/api/v1/namespaces/{ns}/pods", labelSelector=f"app={app}")
    out = []
    for pod in pods.get("items") or []:
        status = pod.get("status") or {}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        if ready and status.get("podIP"):
            out.append(str(status["podIP"]))
    return out


@contextlib.asynccontextmanager
async def scaling_stack(
    kubeconfig: Path, kube: KubeClient, ns: str, admin_addresses: Sequence[str]
) -> AsyncIterator[Daemon]:
    """The daemon (in-process) and the HTTPScaledObject reconciler for `ns`."""
    objects = HttpObjects(kube, lambda: True, interceptors=admin_addresses, namespace=ns, resync=5)
    task = asyncio.create_task(objects.run(), name="http-objects")
    try:
        async with running_daemon(kubeconfig) as daemon:
            yield daemon
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def wait_scaled_object_ready(cluster: Cluster, name: str) -> None:
    await eventually(
        lambda: cluster.condition(name, "Ready"),
        lambda c: c is not None and c["status"] == "True",
        what=f"ScaledObject {name} Ready",
    )


async def wait_push_up(daemon: Daemon, ns: str, name: str) -> None:
    gauge = daemon.telemetry.push_connected.labels(ns, name, "0")

    async def value() -> float:
        return float(gauge.get())

    await eventually(value, lambda v: v == 1, what="push subscription up")
