"""Tidal's Helm chart: the helm binary, rendering, and the files rendered from the chart.

The chart (deploy/helm/tidal) is the source of the plain manifests (deploy/manifests/tidal.yaml);
the CRDs (deploy/crds) and the Grafana dashboard (deploy/grafana) have their source outside the
chart and are copied in, because a packaged chart cannot reach files outside its directory.
`python -m localenv.helm` (`make manifests`) writes all of them; tests/deploy fails when any of
them differs from what this module renders.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from localenv.paths import REPO, helm_bin

CHART = REPO / "deploy" / "helm" / "tidal"
MANIFESTS = REPO / "deploy" / "manifests"
RELEASE = "tidal"
NAMESPACE = "tidal-system"
MANIFEST_HEADER = """\
# Tidal, as plain manifests: rendered from the Helm chart (deploy/helm/tidal, default values) by
# `make manifests`; do not edit (a test fails when this file and the chart disagree).
# Apply the CRDs first, then this file:  kubectl apply -f deploy/crds/ && kubectl apply -f THIS
"""
NAMESPACE_DOC = f"""\
apiVersion: v1
kind: Namespace
metadata:
  name: {NAMESPACE}
  labels:
    app.kubernetes.io/part-of: tidal
"""


class HelmError(RuntimeError):
    pass


def helm(*args: str | Path, kubeconfig: Path | None = None, timeout: float = 300.0) -> str:
    """Run helm; returns stdout, raises HelmError with stderr on failure."""
    binary = helm_bin()
    if not binary.exists():
        raise HelmError(f"helm not found at {binary}; run `bash deploy/local/build.sh helm`")
    argv = [str(binary), *(str(a) for a in args)]
    if kubeconfig is not None:
        argv += ["--kubeconfig", str(kubeconfig)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise HelmError(f"{' '.join(argv[:3])} ... failed ({proc.returncode}): {proc.stderr}")
    return proc.stdout


def set_args(values: Mapping[str, object]) -> list[str]:
    """`--set-json k=v` for each value (JSON keeps types: "true" stays a string, 2 an int)."""
    out: list[str] = []
    for key, value in values.items():
        out += ["--set-json", f"{key}={json.dumps(value)}"]
    return out


def template(
    values: Mapping[str, object] | None = None,
    *,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    extra: Sequence[str] = (),
) -> str:
    """`helm template` of the chart (without its CRDs)."""
    return helm(
        "template", release, CHART, "--namespace", namespace, *set_args(values or {}), *extra
    )


def copies() -> dict[Path, Path]:
    """Chart file -> its source outside the chart."""
    out = {CHART / "crds" / p.name: p for p in sorted((REPO / "deploy" / "crds").glob("*.yaml"))}
    dashboard = REPO / "deploy" / "grafana" / "tidal-dashboard.json"
    out[CHART / "files" / dashboard.name] = dashboard
    return out


def rendered_manifest() -> str:
    """deploy/manifests/tidal.yaml as it must be: the Namespace, then the chart's objects."""
    return f"{MANIFEST_HEADER}---\n{NAMESPACE_DOC}{template()}"


def expected_files() -> dict[Path, bytes]:
    """Every file rendered or copied from a source, with the content it must have. The copies
    come first: the manifest renders the chart, which reads them."""
    out = {dst: src.read_bytes() for dst, src in copies().items()}
    out[MANIFESTS / "tidal.yaml"] = rendered_manifest().encode()
    return out


def stale_files() -> list[Path]:
    """Files under deploy/manifests and the chart's crds/ that no source produces."""
    keep = set(expected_files())
    found = [*MANIFESTS.glob("*"), *(CHART / "crds").glob("*")]
    return sorted(p for p in found if p not in keep)


def write() -> None:
    for dst, src in copies().items():
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())
        print(f"[manifests] {dst.relative_to(REPO)} <- {src.relative_to(REPO)}")
    for path in stale_files():
        path.unlink()
        print(f"[manifests] removed {path.relative_to(REPO)} (no source)")
    MANIFESTS.mkdir(parents=True, exist_ok=True)
    target = MANIFESTS / "tidal.yaml"
    target.write_text(rendered_manifest())
    chart = CHART.relative_to(REPO)
    print(f"[manifests] {target.relative_to(REPO)} <- helm template {RELEASE} {chart}")


if __name__ == "__main__":
    try:
        write()
    except HelmError as exc:
        sys.exit(str(exc))


class Release:
    """One release of the chart in a control plane (admin kubeconfig); blocking calls."""

    def __init__(self, kubeconfig: Path, name: str, namespace: str) -> None:
        self.kubeconfig = kubeconfig
        self.name = name
        self.namespace = namespace

    def _helm(self, *args: str | Path) -> str:
        t0 = time.monotonic()
        out = helm(*args, "--namespace", self.namespace, kubeconfig=self.kubeconfig)
        if args[0] in ("install", "upgrade", "uninstall"):
            print(
                f"[helm] {args[0]} {self.name} -n {self.namespace}: {time.monotonic() - t0:.1f} s"
            )
        return out

    def install(self, values: Mapping[str, object] | None = None) -> str:
        """`helm install --create-namespace` (CRDs from the chart's crds/ when absent)."""
        return self._helm(
            "install", self.name, CHART, "--create-namespace", *set_args(values or {})
        )

    def upgrade(self, values: Mapping[str, object] | None = None) -> str:
        """`helm upgrade --reuse-values` with `values` on top."""
        return self._helm("upgrade", self.name, CHART, "--reuse-values", *set_args(values or {}))

    def uninstall(self) -> str:
        """`helm uninstall --wait`: returns once every object of the release is gone."""
        return self._helm("uninstall", self.name, "--wait", "--timeout", "120s")

    def installed(self) -> bool:
        return self.name in self._helm("list", "--short", "--all").split()

    def manifest(self) -> str:
        """The objects of the release's current revision, as helm applied them."""
        return self._helm("get", "manifest", self.name)
