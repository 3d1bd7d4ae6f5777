"""Fixtures of the KEDA compatibility corpus (the components come from tests/conftest.py)."""

from __future__ import annotations

import pytest

from localenv.controlplane import ControlPlane
from localenv.crds import install_crds


@pytest.fixture(scope="session")
def crds(control_plane: ControlPlane) -> ControlPlane:
    """The session control plane with the ScaledObject/TriggerAuthentication CRDs installed."""
    install_crds(control_plane)
    return control_plane
