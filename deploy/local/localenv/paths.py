"""Where built tools live and where a run keeps its logs and state."""

from __future__ import annotations

import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = REPO / "deploy" / "local" / "build.sh"

K8S_VERSION = "1.34.4"
ETCD_VERSION = "3.6.16"
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"
KAFKA_VERSIONS = ("3.9.1", "4.1.1")
HELM_VERSION = "v3.22.0"


def tools_dir() -> Path:
    return Path(os.environ.get("TIDAL_TOOLS_DIR", Path.home() / ".cache" / "tidal" / "tools"))


def k8s_bin(name: str) -> Path:
    """Path of a control-plane binary (etcd, kube-apiserver, ...); KUBEBUILDER_ASSETS wins."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets and (Path(assets) / name).exists():
        return Path(assets) / name
    if name == "etcd":
        return tools_dir() / f"etcd-v{ETCD_VERSION}" / "etcd"
    return tools_dir() / f"k8s-v{K8S_VERSION}" / name


def helm_bin() -> Path:
    return tools_dir() / f"helm-{HELM_VERSION}" / "helm"


def minio_bin() -> Path:
    return tools_dir() / f"minio-{MINIO_VERSION}" / "minio"


def kafka_libs(version: str) -> Path:
    return tools_dir() / f"kafka-{version}" / "libs"


def new_run_dir(label: str = "run") -> Path:
    """A fresh directory for one run's logs and data (TIDAL_RUN_DIR overrides the parent)."""
    parent = Path(os.environ.get("TIDAL_RUN_DIR", REPO / ".run"))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = parent / f"{label}-{stamp}-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path
