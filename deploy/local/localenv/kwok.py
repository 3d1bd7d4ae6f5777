"""kwok, the fake kubelet, against the local control plane: pods become Ready with loopback IPs.

No kubelet runs here, so kwok (built by deploy/local/build.sh into the tools cache, with the
stage configs it needs) stands in for one: it manages the fake Node `kwok-node-0` and, with the
"fast" stages, marks every pod bound to it Running and Ready about 0.2 s after creation, with a
pod IP from `--cidr`. The range is loopback (127.1.0.0/24 by default) so that a real HTTP server
bound to a pod's IP on this host answers for that pod. Pods are bound by putting
`spec.nodeName: kwok-node-0` in their template (no scheduler runs).

kube-apiserver refuses loopback addresses in EndpointSlices, so the endpointslice controller
cannot publish these pods: discovery that must work here reads Pods (see docs/http.md).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from localenv.controlplane import ControlPlane, KubeHTTPError
from localenv.paths import tools_dir
from localenv.process import ComponentError, ManagedProcess

KWOK_VERSION = "v0.8.0"
NODE_NAME = "kwok-node-0"
DEFAULT_CIDR = "127.1.0.1/24"
STAGES = (
    "node-fast-node-initialize.yaml",
    "node-heartbeat-node-heartbeat.yaml",
    "pod-fast-pod-ready.yaml",
    "pod-fast-pod-complete.yaml",
    "pod-fast-pod-delete.yaml",
)


def kwok_dir() -> Path:
    return tools_dir() / f"kwok-{KWOK_VERSION}"


def pod_addresses(cidr: str = DEFAULT_CIDR) -> list[str]:
    """Every address kwok may give a pod from `cidr` (the hosts of its network)."""
    network = ipaddress.ip_network(cidr, strict=False)
    return [str(host) for host in network.hosts()]


def fake_node(name: str = NODE_NAME) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake"},
            "labels": {"type": "kwok", "kubernetes.io/hostname": name},
        },
    }


class Kwok:
    """kwok managing one fake Node of `plane`; pods bound to `node` get IPs from `cidr`."""

    def __init__(
        self, plane: ControlPlane, *, cidr: str = DEFAULT_CIDR, node: str = NODE_NAME
    ) -> None:
        self.plane = plane
        self.cidr = cidr
        self.node = node
        self.dir = plane.dir / "kwok"
        self.process: ManagedProcess | None = None

    def argv(self) -> list[str]:
        base = kwok_dir()
        binary = base / "kwok"
        if not binary.exists():
            raise ComponentError(
                "kwok",
                self.dir / "kwok.log",
                f"is not built ({binary} missing): run deploy/local/build.sh kwok",
            )
        return [
            str(binary),
            f"--kubeconfig={self.plane.kubeconfig}",
            "--manage-all-nodes=true",
            f"--cidr={self.cidr}",
            *(f"--config={base / 'stages' / stage}" for stage in STAGES),
        ]

    def node_ready(self) -> bool:
        node = self.plane.request("GET", f"/api/v1/nodes/{self.node}")
        conditions = (node.get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    def start(self) -> Kwok:
        self.dir.mkdir(parents=True, exist_ok=True)
        argv = self.argv()
        try:
            self.plane.request("POST", "/api/v1/nodes", fake_node(self.node))
        except KubeHTTPError as exc:
            if exc.status != 409:
                raise
        self.process = ManagedProcess("kwok", argv, self.dir, ready=self.node_ready, timeout=60)
        self.process.start()
        print(f"[localenv] kwok ready in {self.process.started_in:.1f} s (pods get {self.cidr})")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
