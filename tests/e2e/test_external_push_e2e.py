"""An `external-push` ScaledObject on the real control plane: the daemon opens a StreamIsActive
stream to a real gRPC ExternalScaler (served by the test on its own thread), and an
``isActive: true`` on that stream scales the Deployment 0 -> 1.

pollingInterval is 300 s, so only the push can explain the scale-up; the HPA carries KEDA's
metric name for the scaler's metric.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from localenv.certs import LOOPBACK_IPS, issue, new_ca
from scaler.kube.paths import namespaced
from tests.e2e.harness import Cluster, deployment, eventually, running_daemon, scaled_object
from tests.integration.test_scaler_external import Pki, ScalerState, ThreadedServer


def _gauge(gauge: Any) -> Any:
    async def probe() -> float:
        return float(gauge.get())

    return probe


async def test_external_push_scales_from_zero_on_a_push(cluster: Cluster, kubeconfig: Path) -> None:
    state = ScalerState(metric="pending-requests", target=5.0, values=[(0, 0.0)], active=False)
    with ThreadedServer(state) as scaler:
        await cluster.create_deployment(deployment("worker", replicas=0))
        trigger = {
            "type": "external-push",
            "metadata": {"scalerAddress": scaler.address, "interceptorRoute": "worker"},
        }
        await cluster.create_so(
            scaled_object("worker", "worker", [trigger], pollingInterval=300, cooldownPeriod=300)
        )
        async with running_daemon(kubeconfig) as daemon:
            await eventually(
                lambda: cluster.condition("worker", "Ready"),
                lambda c: c is not None and c["status"] == "True",
                what="Ready=True",
            )
            gauge = daemon.telemetry.push_connected.labels(cluster.ns, "worker", "0")
            await eventually(_gauge(gauge), lambda v: v == 1, what="stream up")
            assert await cluster.replicas("worker") == 0

            def activate() -> None:
                state.active, state.values = True, [(0, 12.0)]
                state.push(True)

            scaler.call(activate)
            await eventually(lambda: cluster.replicas("worker"), lambda n: n == 1, what="0 -> 1")

            hpa = await eventually(
                lambda: cluster.hpa("keda-hpa-worker"), lambda h: h is not None, what="HPA"
            )
            metric = hpa["spec"]["metrics"][0]["external"]
            assert metric["metric"]["name"] == "s0-pending-requests"
            assert metric["target"] == {"type": "AverageValue", "averageValue": "5"}
            refs = [r for r in state.refs if r.name == "worker"]
            assert refs
            assert all(r.namespace == cluster.ns for r in refs)
            assert all(dict(r.scalerMetadata)["interceptorRoute"] == "worker" for r in refs)


async def test_unreachable_scaler_at_build_is_ready_false_then_recovers(
    cluster: Cluster, kubeconfig: Path
) -> None:
    """GetMetricSpec fails while the object is built: Ready=False naming the call, and the
    object is built again (not blocked until edited) once the scaler answers."""
    state = ScalerState(metric="queue", target=2.0, values=[(0, 0.0)], active=False)
    scaler = ThreadedServer(state)  # its port is chosen; nothing listens on it yet
    await cluster.create_deployment(deployment("worker", replicas=0))
    trigger = {"type": "external", "metadata": {"scalerAddress": scaler.address}}
    await cluster.create_so(
        scaled_object("worker", "worker", [trigger], pollingInterval=1, cooldownPeriod=300)
    )
    async with running_daemon(kubeconfig):
        ready = await eventually(
            lambda: cluster.condition("worker", "Ready"),
            lambda c: c is not None and c["status"] == "False",
            what="Ready=False",
        )
        assert "GetMetricSpec failed: UNAVAILABLE" in ready["message"]
        with scaler:
            await eventually(
                lambda: cluster.condition("worker", "Ready"),
                lambda c: c is not None and c["status"] == "True",
                what="Ready=True once the scaler answers",
            )
            scaler.call(lambda: setattr(state, "active", True))
            await eventually(lambda: cluster.replicas("worker"), lambda n: n == 1, what="0 -> 1")


async def test_external_over_mutual_tls_from_a_trigger_authentication(
    cluster: Cluster, kubeconfig: Path
) -> None:
    """KEDA's certificate example: caCert, tlsClientCert and tlsClientKey read from a Secret by
    a TriggerAuthentication; the scaler requires the client certificate."""
    ca = new_ca("tidal-e2e-external-ca")
    pki = Pki(
        ca,
        issue(ca, "external-scaler", ip_addresses=LOOPBACK_IPS, server=True),
        issue(ca, "tidal", client=True),
        new_ca("unused"),
    )
    state = ScalerState(metric="jobs", target=3.0, values=[(0, 0.0)], active=False)
    with ThreadedServer(state, tls=pki, mtls=True) as scaler:
        await cluster.kube.create(
            namespaced("", "v1", "secrets", cluster.ns),
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "certificate"},
                "stringData": {
                    "ca.crt": pki.ca.cert_pem.decode(),
                    "tls.crt": pki.client.cert_pem.decode(),
                    "tls.key": pki.client.key_pem.decode(),
                },
            },
        )
        refs = [("caCert", "ca.crt"), ("tlsClientCert", "tls.crt"), ("tlsClientKey", "tls.key")]
        await cluster.kube.create(
            namespaced("keda.sh", "v1alpha1", "triggerauthentications", cluster.ns),
            {
                "apiVersion": "keda.sh/v1alpha1",
                "kind": "TriggerAuthentication",
                "metadata": {"name": "keda-trigger-auth"},
                "spec": {
                    "secretTargetRef": [
                        {"parameter": p, "name": "certificate", "key": k} for p, k in refs
                    ]
                },
            },
        )
        await cluster.create_deployment(deployment("worker", replicas=0))
        trigger = {
            "type": "external",
            "metadata": {"scalerAddress": scaler.address, "extraKey": "demo"},
            "authenticationRef": {"name": "keda-trigger-auth"},
        }
        await cluster.create_so(
            scaled_object("worker", "worker", [trigger], pollingInterval=1, cooldownPeriod=300)
        )
        async with running_daemon(kubeconfig):
            await eventually(
                lambda: cluster.condition("worker", "Ready"),
                lambda c: c is not None and c["status"] == "True",
                what="Ready=True",
            )
            scaler.call(lambda: setattr(state, "active", True))
            await eventually(lambda: cluster.replicas("worker"), lambda n: n == 1, what="0 -> 1")
        metadata = dict(state.refs[-1].scalerMetadata)
        assert metadata == {"scalerAddress": scaler.address, "extraKey": "demo"}
