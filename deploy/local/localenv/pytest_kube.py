"""Pytest fixtures for the real Kubernetes control plane (star-imported by tests/conftest.py).

* `control_plane` (session): etcd + kube-apiserver + kube-controller-manager on 127.0.0.1.
* `kubeconfig` (session): the admin kubeconfig's path.
* `kube_client` (function): a kubernetes_asyncio ApiClient for that kubeconfig.
* `namespace` (function): a fresh namespace `t-<8 hex>`, deleted afterwards.
* `apiservice` (function): registers aggregated API servers; unregisters them at teardown.
  Request it AFTER the fixture that runs the server, so it is torn down first.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.rest import ApiException

from localenv.controlplane import ControlPlane
from localenv.pytest_common import run_dir

__all__ = [
    "ApiServiceRegistrar",
    "apiservice",
    "control_plane",
    "kube_client",
    "kubeconfig",
    "namespace",
    "run_dir",
]


@pytest.fixture(scope="session")
def control_plane(run_dir: Path) -> Iterator[ControlPlane]:
    """The session's control plane (HPA sync 1 s, no downscale stabilization)."""
    plane = ControlPlane(run_dir).start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def kubeconfig(control_plane: ControlPlane) -> Path:
    return control_plane.kubeconfig


@pytest.fixture
async def kube_client(kubeconfig: Path) -> AsyncIterator[client.ApiClient]:
    api = await config.new_client_from_config(config_file=str(kubeconfig))
    try:
        yield api
    finally:
        await api.close()


@pytest.fixture
async def namespace(kube_client: client.ApiClient) -> AsyncIterator[str]:
    """A unique namespace for one test; its deletion is requested, not awaited."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube_client)
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        try:
            await core.delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise


class ApiServiceRegistrar:
    """Registers aggregated API servers from async tests (the blocking calls run in a thread,
    so a server on the test's own event loop can answer the availability probes)."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self._registered: dict[str, dict[str, str]] = {}

    async def register(
        self,
        *,
        port: int,
        ca_pem: bytes,
        group: str = "external.metrics.k8s.io",
        version: str = "v1beta1",
        service_name: str = "tidal-metrics",
        namespace: str = "tidal-system",
        timeout: float = 60.0,
    ) -> str:
        where = {
            "group": group,
            "version": version,
            "service_name": service_name,
            "namespace": namespace,
        }
        name = f"{version}.{group}"
        self._registered[name] = where
        await asyncio.to_thread(
            lambda: self.plane.register_apiservice(
                port=port, ca_pem=ca_pem, timeout=timeout, **where
            )
        )
        return name

    async def unregister(self, name: str) -> None:
        where = self._registered.pop(name, None)
        if where is not None:
            await asyncio.to_thread(lambda: self.plane.unregister_apiservice(**where))

    async def unregister_all(self) -> None:
        for name in list(self._registered):
            await self.unregister(name)


@pytest.fixture
async def apiservice(control_plane: ControlPlane) -> AsyncIterator[ApiServiceRegistrar]:
    registrar = ApiServiceRegistrar(control_plane)
    try:
        yield registrar
    finally:
        await registrar.unregister_all()
