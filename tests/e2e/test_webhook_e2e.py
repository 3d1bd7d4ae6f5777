"""The admission webhook through the real kube-apiserver: a ValidatingWebhookConfiguration
whose Service is `ExternalName: localhost` (the apiserver dials only loopback), caBundle
filled in by Tidal from its managed CA (--cert-webhook), then `kubectl apply` of bad objects
fails with KEDA's message, a good one applies, and with the webhook down and
failurePolicy Ignore applies go through (with Fail they don't)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from localenv.controlplane import ControlPlane
from localenv.paths import k8s_bin
from localenv.process import free_port
from scaler.service import Service
from scaler.settings import ServeSettings, WatchSettings
from tests.e2e.harness import (
    Cluster,
    deployment,
    eventually,
    redis_trigger,
    running_service,
    scaled_object,
)
from tests.e2e.serving_helpers import loopback_service, secret_data

SERVICE_NS, SERVICE = "tidal-system", "tidal-webhook"  # ExternalName -> localhost
CONFIGS = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
REDIS = "127.0.0.1:1"  # never dialled for what these tests assert


def _webhook_configuration(name: str, namespace: str, port: int, policy: str) -> dict[str, Any]:
    def hook(hook_name: str, resource: str, path: str) -> dict[str, Any]:
        return {
            "name": hook_name,
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": policy,
            "timeoutSeconds": 5,
            # Only this test's namespace: other tests never meet this webhook.
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "clientConfig": {
                "service": {"name": SERVICE, "namespace": SERVICE_NS, "port": port, "path": path}
            },
            "rules": [
                {
                    "apiGroups": ["keda.sh"],
                    "apiVersions": ["v1alpha1"],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": [resource],
                    "scope": "Namespaced",
                }
            ],
        }

    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            hook(
                "vscaledobject.tidal.dev",
                "scaledobjects",
                "/validate-keda-sh-v1alpha1-scaledobject",
            ),
            hook(
                "vtriggerauthentication.tidal.dev",
                "triggerauthentications",
                "/validate-keda-sh-v1alpha1-triggerauthentication",
            ),
        ],
    }


@contextlib.contextmanager
def webhook_configuration(
    plane: ControlPlane, namespace: str, port: int, policy: str = "Ignore"
) -> Iterator[str]:
    """The configuration as the chart installs it: no caBundle (Tidal fills it in)."""
    loopback_service(plane, SERVICE_NS, SERVICE)
    name = f"tidal-{namespace}"
    plane.request("POST", CONFIGS, _webhook_configuration(name, namespace, port, policy))
    try:
        yield name
    finally:
        plane.delete(f"{CONFIGS}/{name}")


async def kubectl_apply(
    plane: ControlPlane, namespace: str, manifest: dict[str, Any]
) -> tuple[int, str]:
    """`kubectl apply` in a thread: Tidal answers the webhook from this test's event loop."""
    kubectl = str(k8s_bin("kubectl"))
    done = await asyncio.to_thread(
        subprocess.run,
        [kubectl, "--kubeconfig", str(plane.kubeconfig), "-n", namespace, "apply", "-f", "-"],
        input=json.dumps(manifest),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


@contextlib.asynccontextmanager
async def tidal(kubeconfig: Path, namespace: str, port: int, config: str) -> AsyncIterator[Service]:
    serve = ServeSettings(
        metrics_address="127.0.0.1:0",
        api_address=f"127.0.0.1:{port}",
        cert_secret=f"{namespace}/tidal-serving",
        cert_service=f"{SERVICE_NS}/{SERVICE}",
        cert_apiservice="",
        cert_webhook=config,
        metrics_authorization="none",
    )
    watch = WatchSettings(namespace=namespace, cluster_object_namespace=namespace)
    async with running_service(kubeconfig, serve=serve, watch=watch) as svc:
        yield svc


async def test_kubectl_apply_of_a_bad_object_fails_with_the_message(
    control_plane: ControlPlane, crds: ControlPlane, cluster: Cluster, namespace: str
) -> None:
    port = free_port()
    with webhook_configuration(control_plane, namespace, port) as config:
        async with tidal(control_plane.kubeconfig, namespace, port, config) as svc:
            # Tidal put its CA into the configuration (it had none).
            body = control_plane.request("GET", f"{CONFIGS}/{config}")
            ca = secret_data(control_plane, namespace, "tidal-serving")["ca.crt"]
            bundles = {w["clientConfig"].get("caBundle") for w in body["webhooks"]}
            assert bundles == {base64.b64encode(ca.encode()).decode()}

            await cluster.create_deployment(deployment("web"))
            bare = deployment("bare")  # no resource requests
            await cluster.create_deployment(bare)
            code, out = await kubectl_apply(
                control_plane, namespace, scaled_object("first", "web", [redis_trigger(REDIS, "a")])
            )
            assert code == 0, out
            daemon = svc.daemon
            assert daemon is not None

            async def admitted() -> bool:
                return daemon.objects.get((namespace, "first")) is not None

            await eventually(admitted, bool, timeout=20, what="the first object in the table")

            async def bare_watched() -> bool:
                watcher = daemon.targets.watchers[("apps", "deployments")]
                return (namespace, "bare") in watcher.objects

            await eventually(bare_watched, bool, timeout=20, what="the bare Deployment watched")

            bad = {
                "second ScaledObject on the workload": (
                    scaled_object("second", "web", [redis_trigger(REDIS, "b")]),
                    "spec.scaleTargetRef: the workload 'web' of type 'apps/v1.Deployment' is "
                    "already managed by the ScaledObject 'first'",
                ),
                "fallback without an external trigger": (
                    scaled_object(
                        "fallback",
                        "other",
                        [{"type": "cpu", "metricType": "Utilization", "metadata": {"value": "50"}}],
                        minReplicaCount=1,
                        fallback={"failureThreshold": 3, "replicas": 2},
                    ),
                    "spec.fallback: at least one trigger (that is not cpu or memory) has to be "
                    "defined to use fallback",
                ),
                "metadata that does not parse": (
                    scaled_object("meta", "other2", [redis_trigger(REDIS, "d", listLength="many")]),
                    "spec.triggers[0].metadata.listLength: error parsing 'listLength': invalid "
                    "value 'many'",
                ),
                "cpu trigger without requests": (
                    scaled_object(
                        "cpu",
                        "bare",
                        [{"type": "cpu", "metricType": "Utilization", "metadata": {"value": "50"}}],
                        minReplicaCount=1,
                    ),
                    "the scaledobject has a cpu trigger but the container app doesn't have the "
                    "cpu request defined",
                ),
            }
            for what, (manifest, message) in bad.items():
                code, out = await kubectl_apply(control_plane, namespace, manifest)
                assert code != 0, f"{what}: applied\n{out}"
                assert "denied the request" in out, f"{what}: {out}"
                assert message in out, f"{what}: {out}"

            # min > max (and idle >= min): KEDA's CRD (its CEL rules) refuses it before any
            # webhook is asked; `tidal check` reports it in the webhook's words.
            bounds = scaled_object(
                "minmax", "other", [redis_trigger(REDIS, "c")], minReplicaCount=5, maxReplicaCount=2
            )
            code, out = await kubectl_apply(control_plane, namespace, bounds)
            assert code != 0, out
            assert "minReplicaCount must be less than or equal to maxReplicaCount" in out, out

            auth = {
                "apiVersion": "keda.sh/v1alpha1",
                "kind": "TriggerAuthentication",
                "metadata": {"name": "vault"},
                "spec": {"hashiCorpVault": {"address": "https://vault:8200"}},
            }
            code, out = await kubectl_apply(control_plane, namespace, auth)
            assert code != 0, out
            assert "'hashiCorpVault' is not supported by Tidal" in out, out

            good = scaled_object("good", "other3", [redis_trigger(REDIS, "e")], maxReplicaCount=3)
            code, out = await kubectl_apply(control_plane, namespace, good)
            assert code == 0, out
            # Editing the first object (the oldest owner of 'web') is allowed.
            first = scaled_object("first", "web", [redis_trigger(REDIS, "a2")])
            code, out = await kubectl_apply(control_plane, namespace, first)
            assert code == 0, out
            assert svc.validator is not None
            denied = svc.validator.reviews.labels("ScaledObject", "false")._value.get()
            assert denied == 4


@pytest.mark.parametrize(
    ("policy", "applies"),
    [
        pytest.param("Ignore", True, id="ignore-applies"),
        pytest.param("Fail", False, id="fail-refuses"),
    ],
)
async def test_webhook_down(
    control_plane: ControlPlane,
    crds: ControlPlane,
    namespace: str,
    policy: str,
    applies: bool,
) -> None:
    """Nothing listens on the webhook's port: failurePolicy alone decides."""
    port = free_port()
    with webhook_configuration(control_plane, namespace, port, policy):
        bounds = scaled_object("down", "web", [redis_trigger(REDIS, "x", listLength="many")])
        code, out = await kubectl_apply(control_plane, namespace, bounds)
        if applies:
            assert code == 0, out
        else:
            assert code != 0, out
            assert "failed calling webhook" in out, out
