"""Fixtures shared by the kube and broker fixture modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from localenv.paths import new_run_dir


@pytest.fixture(scope="session")
def run_dir() -> Path:
    """One directory per test run holding every component's log and data."""
    path = new_run_dir("pytest")
    print(f"\n[localenv] component logs for this run: {path}")
    return path
