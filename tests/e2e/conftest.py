"""Fixtures for end-to-end tests of the daemon on the real control plane."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from localenv.controlplane import ControlPlane
from localenv.crds import install_crds
from scaler.kube.client import KubeClient
from tests.e2e.harness import Cluster


@pytest.fixture(scope="session")
def crds(control_plane: ControlPlane) -> ControlPlane:
    install_crds(control_plane)
    return control_plane


@pytest.fixture
async def cluster(crds: ControlPlane, kubeconfig: Path, namespace: str) -> AsyncIterator[Cluster]:
    kube = await KubeClient.from_kubeconfig(str(kubeconfig))
    try:
        yield Cluster(kube, namespace)
    finally:
        await kube.aclose()
