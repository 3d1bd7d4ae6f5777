"""Installing the project's CRDs (deploy/crds) into a local control plane."""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from localenv.controlplane import ControlPlane
from localenv.paths import REPO

CRD_DIR = REPO / "deploy" / "crds"


def install_crds(plane: ControlPlane, directory: Path = CRD_DIR, timeout: float = 30.0) -> None:
    """Server-side apply every CRD in `directory` and wait until each is Established."""
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            name = doc["metadata"]["name"]
            url = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
            plane.apply(url, doc)
            deadline = time.monotonic() + timeout
            while True:
                crd = plane.request("GET", url)
                conditions = (crd.get("status") or {}).get("conditions") or []
                if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"CRD {name} not Established after {timeout:.0f} s")
                time.sleep(0.2)
