"""Fixtures of the deploy tests: the e2e suite's CRDs and per-namespace client, reused."""

from tests.e2e.conftest import cluster, crds

__all__ = ["cluster", "crds"]
