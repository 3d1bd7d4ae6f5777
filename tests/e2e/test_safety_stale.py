"""A value nothing refreshes any more is never served as fresh (safety rule 1).

When an object stops being sampled — its TriggerAuthentication deleted, its scale target gone —
the metrics API answers with an error at once, so the HPA reports FailedGetExternalMetric and
keeps its replicas instead of acting on an old number while the queue changes.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from pathlib import Path

import redis.asyncio as aioredis

from localenv.certs import extension_server_certs
from localenv.paths import k8s_bin
from localenv.pytest_kube import ApiServiceRegistrar
from localenv.redis import RedisServer
from scaler.kube.paths import namespaced
from scaler.settings import ServeSettings
from tests.e2e.harness import Cluster, deployment, eventually, running_service, scaled_object

SO_LABEL = "scaledobject.keda.sh/name"


def _serve(tmp_path: Path) -> tuple[ServeSettings, bytes]:
    certs = extension_server_certs(["tidal-metrics.tidal-system.svc"])
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(certs.serving.cert_pem)
    key.write_bytes(certs.serving.key_pem)
    serve = ServeSettings(
        metrics_address="127.0.0.1:0",
        api_address="127.0.0.1:0",
        tls_cert_file=str(cert),
        tls_key_file=str(key),
    )
    return serve, certs.ca.cert_pem


def _get_raw(kubeconfig: Path, ns: str, metric: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(k8s_bin("kubectl")),
            "--kubeconfig",
            str(kubeconfig),
            "get",
            "--raw",
            f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{metric}"
            f"?labelSelector={SO_LABEL}%3Dworker",
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def _failed_get(hpa: dict[str, object] | None) -> bool:
    if hpa is None:
        return False
    status = hpa.get("status")
    conditions = status.get("conditions", []) if isinstance(status, dict) else []
    return any(
        c.get("type") == "ScalingActive" and c.get("reason") == "FailedGetExternalMetric"
        for c in conditions
    )


async def test_deleted_trigger_authentication_stops_serving_the_old_value(
    cluster: Cluster,
    kubeconfig: Path,
    redis_factory: Callable[..., RedisServer],
    apiservice: ApiServiceRegistrar,
    tmp_path: Path,
) -> None:
    """The issue's probe: a working object at 5 replicas; its TriggerAuthentication is deleted
    and its list emptied. Before the fix `kubectl get --raw` kept answering the old value 10
    (and the HPA acted on it); now it errors at once and the HPA holds its replicas."""
    server = redis_factory()
    r = aioredis.from_url(server.url)
    serve, ca_pem = _serve(tmp_path)
    await cluster.create_address_auth("redis-ta", server.address)
    ta = namespaced("keda.sh", "v1alpha1", "triggerauthentications", cluster.ns)
    await cluster.create_deployment(deployment("worker", replicas=1))
    await cluster.create_so(
        scaled_object(
            "worker",
            "worker",
            [
                {
                    "type": "redis",
                    "metadata": {"listName": "jobs", "listLength": "2"},
                    "authenticationRef": {"name": "redis-ta"},
                }
            ],
            pollingInterval=1,
            cooldownPeriod=300,
            maxReplicaCount=5,
        )
    )
    metric = "s0-redis-jobs"
    async with running_service(kubeconfig, serve=serve) as svc:
        name = await apiservice.register(port=svc.api_port, ca_pem=ca_pem)
        try:
            await r.rpush("jobs", *[str(i) for i in range(10)])
            await eventually(lambda: cluster.replicas("worker"), lambda n: n == 5, what="1 -> 5")
            ok = await asyncio.to_thread(_get_raw, kubeconfig, cluster.ns, metric)
            assert ok.returncode == 0, ok.stderr

            await cluster.kube.delete(f"{ta}/redis-ta")
            await r.delete("jobs")
            await eventually(
                lambda: cluster.condition("worker", "Ready"),
                lambda c: c is not None and "redis-ta" in c["message"] and c["status"] == "False",
                what="Ready=False naming the TriggerAuthentication",
            )
            failed = await asyncio.to_thread(_get_raw, kubeconfig, cluster.ns, metric)
            assert failed.returncode != 0, f"served a value nothing refreshes: {failed.stdout}"
            assert '"value"' not in failed.stdout
            await eventually(lambda: cluster.hpa("keda-hpa-worker"), _failed_get, what="HPA error")
            await asyncio.sleep(3)  # several HPA syncs (1 s): it holds its replicas
            assert await cluster.replicas("worker") == 5
        finally:
            await apiservice.unregister(name)
            await r.aclose()
