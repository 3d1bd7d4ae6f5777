"""The HPA's path through the real aggregator to Tidal's metrics API, served from the store."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from localenv.certs import extension_server_certs
from localenv.paths import k8s_bin
from localenv.pytest_kube import ApiServiceRegistrar
from localenv.redis import RedisServer
from scaler.settings import ServeSettings
from tests.e2e.harness import (
    Cluster,
    deployment,
    eventually,
    redis_trigger,
    running_service,
    scaled_object,
)

SO_LABEL = "scaledobject.keda.sh/name"


def _serving_files(tmp_path: Path) -> tuple[Path, Path, bytes]:
    certs = extension_server_certs(["tidal-metrics.tidal-system.svc"])
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(certs.serving.cert_pem)
    key.write_bytes(certs.serving.key_pem)
    return cert, key, certs.ca.cert_pem


def _serve(cert: Path, key: Path) -> ServeSettings:
    return ServeSettings(
        metrics_address="127.0.0.1:0",
        api_address="127.0.0.1:0",
        tls_cert_file=str(cert),
        tls_key_file=str(key),
    )


async def _hpa_replicas(cluster: Cluster) -> int:
    return await cluster.replicas("worker")


async def test_hpa_scales_through_the_aggregator_and_errors_never_read_as_zero(
    cluster: Cluster,
    kubeconfig: Path,
    redis_factory: Callable[..., RedisServer],
    apiservice: ApiServiceRegistrar,
    tmp_path: Path,
) -> None:
    """1 → N → 1 driven by the real HPA controller reading Tidal through kube-apiserver; a
    forged identity without a client certificate is refused; a dead source makes the HPA report
    FailedGetExternalMetric and keep its replicas."""
    server = redis_factory()
    r = aioredis.from_url(server.url)
    cert, key, ca_pem = _serving_files(tmp_path)
    await cluster.create_deployment(deployment("worker", replicas=1))
    await cluster.create_so(
        scaled_object(
            "worker",
            "worker",
            [redis_trigger(server.address, "jobs", listLength="2")],
            pollingInterval=1,
            cooldownPeriod=300,
            maxReplicaCount=5,
        )
    )
    metric = "s0-redis-jobs"
    async with running_service(kubeconfig, serve=_serve(cert, key)) as svc:
        name = await apiservice.register(port=svc.api_port, ca_pem=ca_pem)
        try:
            await r.rpush("jobs", *[str(i) for i in range(10)])
            await eventually(lambda: _hpa_replicas(cluster), lambda n: n == 5, what="1 -> 5")

            raw = await asyncio.to_thread(
                subprocess.run,
                [
                    str(k8s_bin("kubectl")),
                    "--kubeconfig",
                    str(kubeconfig),
                    "get",
                    "--raw",
                    f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{cluster.ns}/{metric}"
                    f"?labelSelector={SO_LABEL}%3Dworker",
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            body = json.loads(raw.stdout)
            assert body["kind"] == "ExternalMetricValueList"
            assert body["items"][0]["metricName"] == metric
            assert body["items"][0]["value"] == "10"

            # Straight to the server, no client certificate, a forged identity: refused.
            ctx = ssl.create_default_context(cadata=ca_pem.decode())
            async with (
                aiohttp.ClientSession() as http,
                http.get(
                    f"https://localhost:{svc.api_port}/apis/external.metrics.k8s.io/v1beta1"
                    f"/namespaces/{cluster.ns}/{metric}?labelSelector={SO_LABEL}=worker",
                    headers={"X-Remote-User": "system:admin", "X-Remote-Group": "system:masters"},
                    ssl=ctx,
                ) as resp,
            ):
                assert resp.status == 401
                assert (await resp.json())["reason"] == "Unauthorized"

            await r.ltrim("jobs", 0, 1)  # 2 items left: the HPA goes back to 1
            await eventually(lambda: _hpa_replicas(cluster), lambda n: n == 1, what="5 -> 1")

            await r.rpush("jobs", *[str(i) for i in range(6)])  # 8 → 4 replicas
            await eventually(lambda: _hpa_replicas(cluster), lambda n: n == 4, what="1 -> 4")
            server.kill()
            hpa = await eventually(
                lambda: cluster.hpa("keda-hpa-worker"),
                lambda h: (
                    h is not None
                    and any(
                        c["type"] == "ScalingActive" and c["reason"] == "FailedGetExternalMetric"
                        for c in h.get("status", {}).get("conditions", [])
                    )
                ),
                what="FailedGetExternalMetric",
            )
            assert hpa is not None
            await asyncio.sleep(3)  # several HPA syncs (1 s) with the source down
            assert await cluster.replicas("worker") == 4
        finally:
            await apiservice.unregister(name)
            await r.aclose()
