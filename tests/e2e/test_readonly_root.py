"""`tidal run` on a read-only root filesystem, as the chart runs it (readOnlyRootFilesystem, an
emptyDir of medium Memory for the certificate directory).

How it is emulated: the process starts in a mount namespace of its own (`unshare --mount`, with
a user namespace too when the test does not run as root). There, before `exec`, a shell remounts
read-only the root and every mount point on the way to, or below, the directories a Python
process may write to (the checkout, the virtualenv, the temp dir, the test's directories), mounts
a tmpfs on the certificate directory, checks that each of those directories now refuses a write
and the certificate directory takes one, and only then runs `tidal run` from a read-only working
directory. The namespace is private: nothing outside the process sees these mounts; the test
reads the process's certificate directory through /proc/PID/root.

The daemon manages its serving certificate in a Secret and polls a trigger that authenticates
with a client certificate (metrics-api, authModes: tls, against an HTTPS server that requires
one): everything it must write at run time has to fit in the certificate directory or memory.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
import tempfile
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

import scaler
from localenv.certs import CertKey, issue, new_ca
from localenv.controlplane import ControlPlane
from localenv.process import ManagedProcess, free_port
from localenv.tidal import TIDAL, tidal_ready
from tests.e2e.harness import Cluster, deployment, eventually, scaled_object
from tests.e2e.serving_helpers import SERVICE, SERVICE_NS, pem_to_der, secret_data, served_cert

SO_LABEL = "scaledobject.keda.sh/name"
READ_ONLY_SHELL = r"""
set -eu
cert_dir=$1; cwd=$2; mounts=$3; probes=$4; shift 4
for m in $mounts; do mount -o remount,bind,ro "$m"; done
mount -t tmpfs -o mode=0700,size=16m tidal-cert-dir "$cert_dir"
for p in $probes; do
  if touch "$p/.tidal-write-probe" 2>/dev/null; then echo "still writable: $p" >&2; exit 97; fi
done
touch "$cert_dir/.probe" && rm "$cert_dir/.probe"
cd "$cwd"
exec "$@"
"""


def _mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f]


def _read_only_plan(writable_paths: list[Path]) -> tuple[list[str], list[str]]:
    """(mount points to make read-only, directories that must then refuse writes)."""
    paths = [str(p.resolve()) for p in writable_paths]
    mounts = ["/"]
    for m in _mount_points():
        if m == "/" or m.startswith(("/proc", "/sys", "/dev")):
            continue
        if any(p == m or p.startswith(m + "/") or m.startswith(p + "/") for p in paths):
            mounts.append(m)
    return sorted(set(mounts)), paths


@pytest.fixture
async def client_cert_server(
    tmp_path: Path,
) -> AsyncIterator[tuple[int, CertKey, CertKey, list[str]]]:
    """An HTTPS server on 127.0.0.1 that requires a client certificate from its own CA and
    answers {"jobs": 6}; yields (port, its CA, a client certificate, CNs it saw)."""
    ca = new_ca("trigger-ca")
    server = issue(
        ca, "localhost", dns_names=["localhost"], ip_addresses=["127.0.0.1"], server=True
    )
    client = issue(ca, "tidal-trigger", client=True)
    crt, key = server.write(tmp_path, "trigger-server")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=ca.cert_pem.decode())
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(crt, key)
    seen: list[str] = []

    async def value(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        seen.extend(
            v for rdn in (peer or {}).get("subject", ()) for k, v in rdn if k == "commonName"
        )
        return web.json_response({"jobs": 6})

    app = web.Application()
    app.router.add_get("/value", value)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start()
    try:
        yield port, ca, client, seen
    finally:
        await runner.cleanup()


async def _tls_trigger(cluster: Cluster, port: int, ca: CertKey, client: CertKey) -> None:
    await cluster.kube.create(
        f"/api/v1/namespaces/{cluster.ns}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "trigger-tls"},
            "stringData": {
                "ca": ca.cert_pem.decode(),
                "cert": client.cert_pem.decode(),
                "key": client.key_pem.decode(),
            },
        },
    )
    await cluster.kube.create(
        f"/apis/keda.sh/v1alpha1/namespaces/{cluster.ns}/triggerauthentications",
        {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "TriggerAuthentication",
            "metadata": {"name": "trigger-tls"},
            "spec": {
                "secretTargetRef": [
                    {"parameter": p, "name": "trigger-tls", "key": p} for p in ("ca", "cert", "key")
                ]
            },
        },
    )
    await cluster.create_deployment(deployment("worker", replicas=1))
    trigger = {
        "type": "metrics-api",
        "metadata": {
            "url": f"https://localhost:{port}/value",
            "valueLocation": "jobs",
            "targetValue": "2",
            "authMode": "tls",
        },
        "authenticationRef": {"name": "trigger-tls"},
    }
    await cluster.create_so(scaled_object("worker", "worker", [trigger], pollingInterval=1))


def _metric(api_port: int, plane: ControlPlane, namespace: str, ca_pem: str) -> str:
    assert plane.certs is not None
    ctx = ssl.create_default_context(cadata=ca_pem)
    ctx.check_hostname = False  # 127.0.0.1 is not among the Service's names
    ctx.load_cert_chain(plane.certs.front_proxy_client_crt, plane.certs.front_proxy_client_key)
    req = urllib.request.Request(
        f"https://127.0.0.1:{api_port}/apis/external.metrics.k8s.io/v1beta1/namespaces/"
        f"{namespace}/s0-metric-api-jobs?labelSelector={SO_LABEL}%3Dworker",
        headers={"X-Remote-User": "admin", "X-Remote-Group": "system:masters"},
    )
    try:
        with urllib.request.urlopen(req, timeout=5, context=ctx) as resp:
            return str(json.loads(resp.read())["items"][0]["value"])
    except OSError as exc:
        return f"error: {exc}"


async def test_tidal_runs_with_a_read_only_root_writing_only_its_cert_dir(
    control_plane: ControlPlane,
    cluster: Cluster,
    run_dir: Path,
    tmp_path: Path,
    client_cert_server: tuple[int, CertKey, CertKey, list[str]],
) -> None:
    port, ca, client, seen = client_cert_server
    await _tls_trigger(cluster, port, ca, client)
    cert_dir, cwd = tmp_path / "cert-dir", tmp_path / "cwd"
    cert_dir.mkdir()
    cwd.mkdir()
    repo = Path(scaler.__file__).parent.parent
    writable = [
        repo,
        Path(scaler.__file__).parent,
        Path(sys.prefix),
        Path(tempfile.gettempdir()),
        tmp_path,
        cwd,
        run_dir,
    ]
    mounts, probes = _read_only_plan(writable)
    health, api = free_port(), free_port()
    kubeconfig = control_plane.user_kubeconfig("tidal-read-only")
    unshare = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        unshare[1:1] = ["--user", "--map-root-user"]
    argv = [
        *unshare,
        "sh",
        "-c",
        READ_ONLY_SHELL,
        "read-only-root",
        str(cert_dir),
        str(cwd),
        " ".join(mounts),
        " ".join(probes),
        TIDAL,
        "run",
        "--kubeconfig", str(kubeconfig),
        "--metrics-address", f"127.0.0.1:{health}",
        "--api-address", f"127.0.0.1:{api}",
        "--watch-namespace", cluster.ns,
        "--leader-elect", "false",
        "--cert-secret", f"{cluster.ns}/tidal-serving",
        "--cert-service", f"{SERVICE_NS}/{SERVICE}",
        "--cert-apiservice=",
        "--cert-dir", str(cert_dir),
    ]  # fmt: skip
    proc = ManagedProcess(
        "tidal-read-only",
        argv,
        run_dir,
        ready=lambda: tidal_ready(health),
        timeout=60,
        env={"TMPDIR": str(cert_dir), "PYTHONDONTWRITEBYTECODE": ""},
    )
    await asyncio.to_thread(proc.start)
    try:
        assert proc.proc is not None
        data = secret_data(control_plane, cluster.ns, "tidal-serving")
        assert await served_cert(api) == pem_to_der(data["tls.crt"])
        value = await eventually(
            lambda: asyncio.to_thread(_metric, api, control_plane, cluster.ns, data["ca.crt"]),
            lambda v: v == "6",
            what="the client-certificate trigger's value served by the metrics API",
        )
        assert value == "6"
        assert "tidal-trigger" in seen  # the trigger presented its client certificate

        # What the process wrote: one private directory in the cert dir, holding the serving
        # certificate and key (0600); the trigger's PEMs never touched a filesystem.
        inside = Path(f"/proc/{proc.proc.pid}/root") / str(cert_dir).lstrip("/")
        written = sorted(str(p.relative_to(inside)) for p in inside.rglob("*"))
        (private,) = [w for w in written if "/" not in w]
        assert private.startswith("tidal-")
        files = sorted(w.split("/", 1)[1] for w in written if "/" in w)
        assert [f.rsplit(".", 1)[1] for f in files] == ["crt", "key"], written
        assert (inside / private).stat().st_mode & 0o777 == 0o700
        assert all((inside / private / f).stat().st_mode & 0o777 == 0o600 for f in files)
        assert list(cert_dir.iterdir()) == []  # the tmpfs was the process's alone
    finally:
        await asyncio.to_thread(proc.stop)
    log = proc.log.read_text()
    assert "still writable: /" not in log
    assert "Read-only file system" not in log
    assert "Traceback" not in log
