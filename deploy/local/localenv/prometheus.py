"""A Prometheus server (Debian's `prometheus`) on 127.0.0.1 scraping loopback targets, either as
plain static targets or as a cluster's pod scrape would see them (`ScrapedPod`)."""

from __future__ import annotations

import json
import re
import shutil
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localenv.process import ComponentError, ManagedProcess, ProcessComponent, free_port

HOST = "127.0.0.1"
JOB = "tidal"
POD_JOB = "kubernetes-pods"

# The pod-scrape job as clusters configure it (Prometheus' example kubernetes-pods job, as the
# prometheus-community chart ships it, with `honor_labels: false`, Prometheus' default and
# kube-prometheus' PodMonitor default): keep annotated pods, take the port and path from the
# annotations, copy the pod's labels, and set `namespace` and `pod` target labels. A series'
# own `namespace` label then collides with the target's and is stored as `exported_namespace`.
POD_RELABEL_CONFIGS: list[dict[str, Any]] = [
    {
        "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
        "action": "keep",
        "regex": "true",
    },
    {
        "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scheme"],
        "action": "replace",
        "regex": "(https?)",
        "target_label": "__scheme__",
    },
    {
        "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_path"],
        "action": "replace",
        "target_label": "__metrics_path__",
        "regex": "(.+)",
    },
    {
        "source_labels": ["__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port"],
        "action": "replace",
        "regex": "([^:]+)(?::\\d+)?;(\\d+)",
        "replacement": "$1:$2",
        "target_label": "__address__",
    },
    {"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(.+)"},
    {
        "source_labels": ["__meta_kubernetes_namespace"],
        "action": "replace",
        "target_label": "namespace",
    },
    {"source_labels": ["__meta_kubernetes_pod_name"], "action": "replace", "target_label": "pod"},
    {
        "source_labels": ["__meta_kubernetes_pod_node_name"],
        "action": "replace",
        "target_label": "node",
    },
    {
        "source_labels": ["__meta_kubernetes_pod_phase"],
        "regex": "Pending|Succeeded|Failed|Completed",
        "action": "drop",
    },
]


def _meta_name(name: str) -> str:
    """Kubernetes service discovery's label-name sanitising: anything but [a-zA-Z0-9_] -> `_`."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


@dataclass(frozen=True)
class ScrapedPod:
    """A pod as Prometheus' kubernetes_sd `role: pod` discovers it: one target per container port
    (`podIP:port`) carrying the `__meta_kubernetes_*` labels that role sets. The local control plane
    has no kubelet, so no pod ever gets an IP or runs: the discovery is emulated through a file_sd
    file, and everything after it (relabelling, scraping, storage) is Prometheus' own."""

    address: str  # "127.0.0.1:port": the container port of the pod's IP
    namespace: str
    name: str
    container: str = "tidal"
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    def file_sd_entry(self) -> dict[str, Any]:
        ip, port = self.address.rsplit(":", 1)
        meta = {
            "__meta_kubernetes_namespace": self.namespace,
            "__meta_kubernetes_pod_name": self.name,
            "__meta_kubernetes_pod_ip": ip,
            "__meta_kubernetes_pod_node_name": "node-0",
            "__meta_kubernetes_pod_ready": "true",
            "__meta_kubernetes_pod_phase": "Running",
            "__meta_kubernetes_pod_container_name": self.container,
            "__meta_kubernetes_pod_container_init": "false",
            "__meta_kubernetes_pod_container_port_number": port,
            "__meta_kubernetes_pod_container_port_protocol": "TCP",
            "__meta_kubernetes_pod_controller_kind": "ReplicaSet",
        }
        for key, value in self.labels.items():
            meta[f"__meta_kubernetes_pod_label_{_meta_name(key)}"] = value
            meta[f"__meta_kubernetes_pod_labelpresent_{_meta_name(key)}"] = "true"
        for key, value in self.annotations.items():
            meta[f"__meta_kubernetes_pod_annotation_{_meta_name(key)}"] = value
            meta[f"__meta_kubernetes_pod_annotationpresent_{_meta_name(key)}"] = "true"
        return {"targets": [self.address], "labels": meta}


def _ready(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/-/ready", timeout=1.0) as resp:
        return int(resp.status) == 200


class PrometheusServer(ProcessComponent):
    """Scrapes `scrape_targets` ("host:port", path /metrics) as job "tidal"; lifecycle API on."""

    def __init__(
        self,
        run_dir: Path,
        scrape_targets: Sequence[str] = (),
        scrape_interval: str = "1s",
        *,
        pods: Sequence[ScrapedPod] = (),
        name: str = "prometheus",
        port: int | None = None,
    ) -> None:
        self.name = name
        self.host = HOST
        self.port = port or free_port()
        self.scrape_interval = scrape_interval
        self.home = run_dir / name
        self.home.mkdir(parents=True, exist_ok=True)
        self.config = self.home / "prom.yml"
        self.pods_file = self.home / "pods.json"
        self.pods = list(pods)
        self.targets: list[str] = []
        self._write_config(scrape_targets)
        argv = [
            shutil.which("prometheus") or "prometheus",
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.home / 'data'}",
            f"--web.listen-address={HOST}:{self.port}",
            "--web.enable-lifecycle",
        ]
        self._proc = ManagedProcess(
            name, argv, run_dir, ready=lambda: _ready(self.url), timeout=60.0, cwd=self.home
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _write_config(self, targets: Sequence[str]) -> None:
        self.targets = list(targets)
        scrape_configs = []
        if self.targets:
            scrape_configs.append({"job_name": JOB, "static_configs": [{"targets": self.targets}]})
        if self.pods:
            self.pods_file.write_text(json.dumps([p.file_sd_entry() for p in self.pods], indent=2))
            scrape_configs.append(
                {
                    "job_name": POD_JOB,
                    "honor_labels": False,
                    "file_sd_configs": [{"files": [str(self.pods_file)], "refresh_interval": "1s"}],
                    "relabel_configs": POD_RELABEL_CONFIGS,
                }
            )
        config = {
            "global": {"scrape_interval": self.scrape_interval},
            "scrape_configs": scrape_configs,
        }
        # JSON is valid YAML, so no YAML library is needed.
        self.config.write_text(json.dumps(config, indent=2) + "\n")

    def set_targets(self, targets: Sequence[str]) -> None:
        """Scrape exactly `targets` from now on (rewrites prom.yml, then POST /-/reload)."""
        self._write_config(targets)
        if not self.running:
            return
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10.0) as resp:
                status = int(resp.status)
        except OSError as exc:
            raise ComponentError(self.name, self.log, f"config reload failed: {exc}") from exc
        if status != 200:
            raise ComponentError(self.name, self.log, f"config reload answered {status}")

    def __repr__(self) -> str:
        return f"PrometheusServer({self.url}, targets={self.targets}, pods={len(self.pods)})"
