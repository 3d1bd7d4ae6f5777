"""KubeClient's transports against the real kube-apiserver: the direct aiohttp session (client
certificate, a service account's bearer token, the in-cluster layout) and kubernetes_asyncio's
ApiClient for a kubeconfig whose user runs an exec credential plugin.

The in-cluster layout (KUBERNETES_SERVICE_HOST/PORT and the token and CA files the kubelet
mounts) is written by the test: no pod runs here, so that is the only way to have one.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from localenv.controlplane import ControlPlane, KubeHTTPError
from scaler.kube.client import DirectTransport, KubeClient, LibraryTransport
from scaler.kube.connection import in_cluster

pytestmark = pytest.mark.kube


SA = "tidal-transport-test"


def _sa_token(plane: ControlPlane, namespace: str = "default", name: str = SA) -> str:
    """A TokenRequest token of a service account made for the test (created when missing)."""
    try:
        plane.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts",
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
        )
    except KubeHTTPError as exc:
        if exc.status != 409:
            raise
    review = plane.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
    )
    return str(review["status"]["token"])


async def _whoami(kube: KubeClient) -> str:
    review = await kube.create(
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    return str(review["status"]["userInfo"]["username"])


async def test_a_client_certificate_kubeconfig_goes_direct(control_plane: ControlPlane) -> None:
    kube = await KubeClient.from_kubeconfig(str(control_plane.kubeconfig))
    try:
        assert isinstance(kube._transport, DirectTransport)
        assert kube.host == control_plane.server
        ns = await kube.get("/api/v1/namespaces/default")
        assert ns["metadata"]["name"] == "default"
        assert await _whoami(kube) == "admin"
    finally:
        await kube.aclose()


def _service_account_dir(plane: ControlPlane, directory: Path) -> Path:
    """What the kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount."""
    ca = json.loads(plane.kubeconfig.read_text())["clusters"][0]["cluster"]
    (directory / "ca.crt").write_bytes(Path(ca["certificate-authority"]).read_bytes())
    (directory / "token").write_text(_sa_token(plane))
    return directory


async def test_the_in_cluster_layout_with_a_service_account_token(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    mounted = _service_account_dir(control_plane, tmp_path)
    host, port = control_plane.server.removeprefix("https://").rsplit(":", 1)
    env = {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
    kube = KubeClient(DirectTransport(in_cluster(env, mounted)))
    try:
        assert await _whoami(kube) == f"system:serviceaccount:default:{SA}"
    finally:
        await kube.aclose()


async def test_an_exec_plugin_kubeconfig_goes_through_the_library(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    token = _sa_token(control_plane)
    plugin = tmp_path / "credential-plugin"
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": token},
    }
    plugin.write_text(f"#!{sys.executable}\nprint({json.dumps(json.dumps(credential))})\n")
    plugin.chmod(plugin.stat().st_mode | stat.S_IEXEC)
    doc = json.loads(control_plane.kubeconfig.read_text())
    doc["users"][0]["user"] = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": str(plugin),
            "interactiveMode": "Never",
        }
    }
    config = tmp_path / "config"
    config.write_text(json.dumps(doc))
    kube = await KubeClient.from_kubeconfig(str(config))
    try:
        assert isinstance(kube._transport, LibraryTransport)
        assert await _whoami(kube) == f"system:serviceaccount:default:{SA}"
    finally:
        await kube.aclose()


def test_importing_the_daemon_does_not_import_the_generated_client() -> None:
    """The direct path is the point: kubernetes_asyncio's client package costs ~37 MiB."""
    code = (
        "import sys, scaler.service, scaler.kube.client;"
        "print(sorted(m for m in sys.modules if m.startswith('kubernetes_asyncio')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
