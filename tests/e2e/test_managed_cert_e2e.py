"""Tidal's managed serving certificate (--cert-secret) on the real control plane: two replicas
agree on one CA and certificate; the APIService turns Available with Tidal's CA (no
insecureSkipTLSVerify) and stays Available, answering, across certificate and CA rotations."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

import scaler.certmanager as certmanager
from localenv.controlplane import ControlPlane
from localenv.process import free_port
from localenv.redis import RedisServer
from scaler.service import Service
from scaler.servingcert import ca_certificates
from scaler.settings import LeaderSettings, ServeSettings, WatchSettings
from tests.e2e.harness import (
    Cluster,
    deployment,
    eventually,
    redis_trigger,
    running_service,
    scaled_object,
)
from tests.e2e.serving_helpers import (
    APISERVICE,
    SERVICE,
    SERVICE_NS,
    apiservice,
    create_apiservice_without_ca,
    pem_to_der,
    secret_data,
    served_cert,
)

SO_LABEL = "scaledobject.keda.sh/name"


def _serve(namespace: str, port: int = 0, **overrides: Any) -> ServeSettings:
    return ServeSettings(
        metrics_address="127.0.0.1:0",
        api_address=f"127.0.0.1:{port}",
        cert_secret=f"{namespace}/tidal-serving",
        cert_service=f"{SERVICE_NS}/{SERVICE}",
        **overrides,
    )


async def test_two_replicas_starting_together_agree_on_one_certificate(
    control_plane: ControlPlane, crds: ControlPlane, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both read "no Secret" and both create (a barrier holds each create until the other has
    read): exactly one create succeeds, the other gets 409, re-reads and serves what won."""
    kubeconfig = control_plane.user_kubeconfig("tidal-cert-race")
    barrier = asyncio.Barrier(2)
    real_create = certmanager.create_secret

    async def create_together(*args: Any) -> Any:
        async with asyncio.timeout(20):
            await barrier.wait()
        return await real_create(*args)

    monkeypatch.setattr(certmanager, "create_secret", create_together)
    offset = control_plane.audit_offset()

    def replica(identity: str) -> contextlib.AbstractAsyncContextManager[Service]:
        return running_service(
            kubeconfig,
            serve=_serve(namespace, cert_apiservice=""),
            watch=WatchSettings(namespace=namespace, cluster_object_namespace=namespace),
            leader=LeaderSettings(namespace=namespace, name="tidal-leader", identity=identity),
        )

    async with contextlib.AsyncExitStack() as stack:
        a, b = await asyncio.gather(
            stack.enter_async_context(replica("a")), stack.enter_async_context(replica("b"))
        )
        creates = [
            e
            for e in control_plane.audit_events(offset, user="tidal-cert-race")
            if e["verb"] == "create" and e["objectRef"].get("resource") == "secrets"
        ]
        codes = sorted(e["responseStatus"]["code"] for e in creates)
        assert codes == [201, 409], codes
        assert a.certificate is not None
        assert b.certificate is not None
        assert a.certificate.changes + b.certificate.changes == 1
        data = secret_data(control_plane, namespace, "tidal-serving")
        assert sorted(data) == ["ca.crt", "ca.key", "tls.crt", "tls.key"]
        want = pem_to_der(data["tls.crt"])
        assert await served_cert(a.api_port) == want
        assert await served_cert(b.api_port) == want
        expiry = a.telemetry.registry.get_sample_value(
            "tidal_serving_certificate_expiry_timestamp_seconds", {"certificate": "serving"}
        )
        assert expiry is not None
        assert abs(expiry - (time.time() + 365 * 86400)) < 3600
        for svc in (a, b):  # the PEM files are private, in the temp dir, nowhere else
            assert svc.pem_dir is not None
            files = sorted(p.name for p in svc.pem_dir.path.iterdir())
            assert [f.rsplit(".", 1)[1] for f in files] == ["crt", "key"]
            assert all((svc.pem_dir.path / f).stat().st_mode & 0o777 == 0o600 for f in files)


async def test_a_secret_edited_by_hand_is_reloaded_by_every_replica(
    control_plane: ControlPlane, crds: ControlPlane, kubeconfig: Path, namespace: str
) -> None:
    """Deleting the CA key from the Secret (an operator forcing a new CA): a replica refills
    the Secret, both serve the new certificate without a restart."""
    settings: dict[str, Any] = {
        "serve": _serve(namespace, cert_apiservice=""),
        "watch": WatchSettings(namespace=namespace, cluster_object_namespace=namespace),
    }
    async with (
        running_service(kubeconfig, **settings) as a,
        running_service(kubeconfig, **settings) as b,
    ):
        old = secret_data(control_plane, namespace, "tidal-serving")
        await asyncio.to_thread(
            control_plane.request,
            "PATCH",
            f"/api/v1/namespaces/{namespace}/secrets/tidal-serving",
            [{"op": "remove", "path": "/data/ca.key"}],
            "application/json-patch+json",
        )

        async def served() -> tuple[bytes, bytes]:
            return await served_cert(a.api_port), await served_cert(b.api_port)

        new = await eventually(
            served,
            lambda pair: pair[0] == pair[1] and pair[0] != pem_to_der(old["tls.crt"]),
            timeout=20,
            what="both replicas serving a new certificate",
        )
        data = secret_data(control_plane, namespace, "tidal-serving")
        assert new[0] == pem_to_der(data["tls.crt"])
        assert data["ca.crt"] != old["ca.crt"]


async def _metric_through_aggregator(plane: ControlPlane, namespace: str) -> int:
    try:
        body = await asyncio.to_thread(
            plane.request,
            "GET",
            f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/s0-redis-jobs"
            f"?labelSelector={SO_LABEL}%3Dworker",
        )
    except Exception:
        return -1
    return int(body["items"][0]["value"])


async def test_apiservice_available_with_the_managed_ca_across_rotations(
    control_plane: ControlPlane,
    cluster: Cluster,
    kubeconfig: Path,
    redis_factory: Callable[..., RedisServer],
) -> None:
    """A serving certificate valid 8 s and a CA valid 24 s (a new CA every ~16 s, trusted 2 s
    before it signs): over 30 s the metric is read through kube-apiserver every 0.2 s and the
    APIService's Available condition is watched; neither may fail once."""
    server = redis_factory()
    r = aioredis.from_url(server.url)
    await r.rpush("jobs", *[str(i) for i in range(7)])
    await cluster.create_deployment(deployment("worker", replicas=1))
    await cluster.create_so(
        scaled_object(
            "worker", "worker", [redis_trigger(server.address, "jobs")], pollingInterval=1
        )
    )
    port = free_port()
    await asyncio.to_thread(create_apiservice_without_ca, control_plane, port)
    serve = _serve(cluster.ns, port, cert_validity=8.0, cert_ca_validity=24.0, cert_overlap=2.0)
    try:
        async with running_service(kubeconfig, serve=serve) as svc:
            assert svc.certificate is not None
            await asyncio.to_thread(control_plane.wait_apiservice_available, APISERVICE, 30)
            spec = (await asyncio.to_thread(apiservice, control_plane))["spec"]
            assert "insecureSkipTLSVerify" not in spec
            assert spec["caBundle"]
            await eventually(
                lambda: _metric_through_aggregator(control_plane, cluster.ns),
                lambda v: v == 7,
                what="the metric through the aggregator",
            )
            reads = failures = unavailable = 0
            certs: set[bytes] = set()
            cas: set[str] = set()
            end = time.monotonic() + 30
            while time.monotonic() < end:
                value = await _metric_through_aggregator(control_plane, cluster.ns)
                reads += 1
                failures += value != 7
                cond = await asyncio.to_thread(control_plane.apiservice_condition, APISERVICE)
                unavailable += cond.get("status") != "True"
                certs.add(await served_cert(svc.api_port))
                if svc.certificate.material is not None:
                    cas.update(ca_certificates(svc.certificate.material))
                await asyncio.sleep(0.2)
            print(
                f"[rotation] {reads} reads, {failures} failed, {unavailable} unavailable, "
                f"{len(certs)} serving certs, {len(cas)} CAs"
            )
            assert failures == 0
            assert unavailable == 0
            assert len(certs) >= 4
            assert len(cas) >= 2
    finally:
        await asyncio.to_thread(control_plane.unregister_apiservice)
        await r.aclose()


async def test_an_empty_secret_made_by_the_installer_is_filled_in_place(
    control_plane: ControlPlane, crds: ControlPlane, kubeconfig: Path, namespace: str
) -> None:
    """The chart creates the Secret empty (so `helm uninstall` removes it): Tidal fills it with
    a conditional update, keeping its type and labels."""
    await asyncio.to_thread(
        control_plane.request,
        "POST",
        f"/api/v1/namespaces/{namespace}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "tidal-serving", "labels": {"app.kubernetes.io/name": "tidal"}},
            "type": "Opaque",
        },
    )
    serve = _serve(namespace, cert_apiservice="")
    watch = WatchSettings(namespace=namespace, cluster_object_namespace=namespace)
    async with running_service(kubeconfig, serve=serve, watch=watch) as svc:
        body = await asyncio.to_thread(
            control_plane.request, "GET", f"/api/v1/namespaces/{namespace}/secrets/tidal-serving"
        )
        assert body["type"] == "Opaque"
        assert body["metadata"]["labels"] == {"app.kubernetes.io/name": "tidal"}
        data = secret_data(control_plane, namespace, "tidal-serving")
        assert await served_cert(svc.api_port) == pem_to_der(data["tls.crt"])
