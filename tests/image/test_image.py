"""The container image, run the way a cluster runs it: `make image`'s build script builds
tidal:<version> (once per session; the script reuses its cached base root filesystem, wheels and
an image built from the same inputs), then these tests run the image's own root filesystem.

Two ways in: `buildah run --isolation chroot` (the image's configured user, environment and
working directory, as a container runtime applies them), and a chroot into the container's root
filesystem bind-mounted read-only with a tmpfs on /tmp, as the Deployment runs it
(`readOnlyRootFilesystem: true`, an emptyDir on /tmp). No Docker daemon and no registry exist
here; buildah with the vfs storage driver needs neither.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import subprocess
import tarfile
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from localenv.controlplane import ControlPlane
from localenv.crds import install_crds
from localenv.process import free_port
from localenv.redis import RedisServer
from scaler.kube.client import KubeClient
from scaler.service import VERSION
from tests.e2e.harness import Cluster, deployment, eventually, redis_trigger, scaled_object

pytestmark = pytest.mark.timeout(1800)  # a cold build: debootstrap, wheels, buildah (~2-3 min)

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "deploy" / "image" / "build.sh"
BUILDAH = ("buildah", "--storage-driver", "vfs")
UID = 65532
SIZE_BUDGET_MB = 300  # 253 MB measured (Debian minbase + Python 3.11 + tidal[all])


@dataclass(frozen=True)
class Image:
    tag: str
    container: str  # a buildah working container of the image
    rootfs: Path  # that container's root filesystem (buildah mount)
    config: dict[str, object]  # the image's OCI config (User, Env, Entrypoint, Cmd, ...)
    build_output: str


def _run(argv: Sequence[str], *, timeout: float = 120, check: bool = True) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        pytest.fail(
            f"{' '.join(argv)} exited {proc.returncode}\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}",
            pytrace=False,
        )
    return proc.stdout


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    """Builds (or finds) tidal:<version> with deploy/image/build.sh and opens a container of it.
    A failed build fails every test here with the script's output, which names its log file."""
    proc = subprocess.run(
        ["bash", str(BUILD)], capture_output=True, text=True, timeout=1700, check=False
    )
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        pytest.fail(
            f"deploy/image/build.sh exited {proc.returncode}; its output (logs named there):\n"
            f"{output[-6000:]}",
            pytrace=False,
        )
    tag = f"tidal:{VERSION}"
    name = f"tidal-test-{uuid.uuid4().hex[:8]}"
    _run([*BUILDAH, "from", "--pull-never", "--name", name, tag])
    try:
        rootfs = Path(_run([*BUILDAH, "mount", name]).strip())
        inspect = json.loads(_run([*BUILDAH, "inspect", "--type", "image", tag]))
        yield Image(tag, name, rootfs, inspect["OCIv1"]["config"], output)
    finally:
        _run([*BUILDAH, "rm", name], check=False)


def _in_container(image: Image, *argv: str) -> str:
    """argv in the image through `buildah run`: the image's own user, environment and workdir."""
    return _run([*BUILDAH, "run", "--isolation", "chroot", image.container, "--", *argv])


# The chart's pod, in a private mount namespace: the image's root read-only, a fresh tmpfs on
# /tmp (the chart's emptyDir; `files` are copied into it, as a mounted Secret would appear), /proc
# and /dev. The mounts vanish with the namespace's last process.
_READ_ONLY_ROOT = r"""
set -eu
rootfs=$1 mnt=$2 user=$3 files=$4; shift 4
mount --make-rprivate /
mount --bind "$rootfs" "$mnt"
mount -o remount,bind,ro "$mnt"
mount -t tmpfs -o mode=1777,size=16m tmpfs "$mnt/tmp"
cp -R "$files"/. "$mnt/tmp/" && chown -R "$user" "$mnt/tmp"
mount -t proc proc "$mnt/proc"
mount --rbind /dev "$mnt/dev"
exec chroot --userspec="$user" "$mnt" "$@"
"""


def _read_only_argv(
    image: Image, tmp: Path, *argv: str, user: str = f"{UID}:{UID}", files: Path | None = None
) -> list[str]:
    """argv in the image's root filesystem mounted read-only with /tmp a fresh tmpfs, with the
    image's environment only; unshare's child gets SIGTERM when unshare dies."""
    env = [str(e) for e in image.config["Env"]]  # type: ignore[attr-defined]
    mnt = tmp / "root"
    mnt.mkdir(exist_ok=True)
    if files is None:
        files = tmp / "no-files"
        files.mkdir(exist_ok=True)
    script = ["unshare", "--mount", "--fork", "--kill-child=SIGTERM", "sh", "-c", _READ_ONLY_ROOT]
    where = [str(image.rootfs), str(mnt), user, str(files)]
    return [*script, "sh", *where, "/usr/bin/env", "-i", *env, *argv]


def _read_only(image: Image, tmp: Path, *argv: str, user: str = f"{UID}:{UID}") -> str:
    return _run(_read_only_argv(image, tmp, *argv, user=user))


def test_build_reports_the_image_and_its_size(image: Image) -> None:
    """The build names the image and its size; the size stays within its budget."""
    size = re.search(
        rf"^\[image\] {image.tag}: ([0-9.]+ [kMG]B) \(recorded in ", image.build_output, re.M
    )
    assert size is not None, image.build_output
    used = int(_run(["du", "-sm", "--one-file-system", str(image.rootfs)]).split()[0])
    assert used <= SIZE_BUDGET_MB, f"image root filesystem {used} MB > budget {SIZE_BUDGET_MB} MB"


def test_exports_an_oci_archive(image: Image, tmp_path: Path) -> None:
    """`--oci-archive FILE` writes the image as an OCI archive named tidal:<version>, with the
    image's own config, for clusters that cannot pull it from a registry."""
    archive = tmp_path / "tidal.oci.tar"
    _run(["bash", str(BUILD), "--oci-archive", str(archive)], timeout=600)
    with tarfile.open(archive) as tar:

        def blob(digest: str) -> dict[str, Any]:
            member = tar.extractfile(f"blobs/sha256/{digest.removeprefix('sha256:')}")
            assert member is not None, digest
            return dict(json.load(member))

        index_file = tar.extractfile("index.json")
        assert index_file is not None
        (entry,) = json.load(index_file)["manifests"]
        assert entry["annotations"]["org.opencontainers.image.ref.name"] == image.tag
        config = blob(blob(entry["digest"])["config"]["digest"])["config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["tidal"]


def test_image_config_runs_tidal_as_non_root(image: Image) -> None:
    """ENTRYPOINT tidal, CMD run, a numeric non-root user (runAsNonRoot can check it), and HOME
    and TMPDIR on /tmp, the only writable place under a read-only root."""
    cfg = image.config
    assert cfg["Entrypoint"] == ["tidal"]
    assert cfg["Cmd"] == ["run"]
    assert cfg["User"] == f"{UID}:{UID}"
    env = dict(str(e).split("=", 1) for e in cfg["Env"])  # type: ignore[attr-defined]
    assert env["HOME"] == "/tmp"
    assert env["TMPDIR"] == "/tmp"
    assert env["PATH"].startswith("/opt/tidal/bin:")
    assert cfg["Labels"]["org.opencontainers.image.version"] == VERSION  # type: ignore[index]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param(("tidal", "version"), [f"tidal {VERSION}"], id="tidal-version"),
        pytest.param(
            ("tidal", "run", "--help"),
            ["usage: tidal run", "--kubeconfig", "--api-address", "--metrics-address"],
            id="tidal-run-help",
        ),
        pytest.param(("id", "-u"), [str(UID)], id="uid"),
        pytest.param(("sh", "-c", "echo $HOME:$TMPDIR:$PWD"), ["/tmp:/tmp:/tmp"], id="home-tmp"),
    ],
)
def test_runs_in_the_image_as_its_user(
    image: Image, argv: tuple[str, ...], expected: list[str]
) -> None:
    """`buildah run` without --user: the image's own USER, environment and workdir."""
    out = _in_container(image, *argv)
    for text in expected:
        assert text in out, (argv, out)


def test_every_scaler_and_its_system_data_load(image: Image, tmp_path: Path) -> None:
    """Every built-in trigger type's module and client library import (all extras are in), the
    cron trigger finds IANA time zones (tzdata) and TLS finds the system CA bundle."""
    probe = (
        "import os, ssl, zoneinfo\n"
        "from scaler.registry import default_registry\n"
        "r = default_registry()\n"
        "types = r.known_types()\n"
        "for t in types: r.load(t)\n"
        "zoneinfo.ZoneInfo('America/New_York')\n"
        "ctx = ssl.create_default_context()\n"
        "capath = ssl.get_default_verify_paths().capath\n"
        "assert ctx.cert_store_stats()['x509_ca'] > 0 or os.listdir(capath)\n"
        "print('loaded', len(types), sorted(types))\n"
    )
    out = _read_only(image, tmp_path, "python3", "-c", probe)
    for trigger in (
        "kafka",
        "nats-jetstream",
        "redis",
        "aws-s3",
        "cron",
        "prometheus",
        "postgresql",
        "mysql",
        "rabbitmq",
    ):
        assert f"'{trigger}'" in out, out


def test_read_only_root_with_tmp_emptydir(image: Image, tmp_path: Path) -> None:
    """As the chart runs it: read-only root, /tmp writable. `tidal version` and `tidal run --help`
    work, the user can write only /tmp, and the root really is read-only (even for root)."""
    assert f"tidal {VERSION}" in _read_only(image, tmp_path, "tidal", "version")
    assert "--kubeconfig" in _read_only(image, tmp_path, "tidal", "run", "--help")
    out = _read_only(
        image,
        tmp_path,
        "sh",
        "-c",
        "id -u; touch /tmp/ok && echo tmp-writable; touch /opt/tidal/x 2>&1 || echo opt-refused",
    )
    assert out.split()[0] == str(UID)
    assert "tmp-writable" in out
    assert "opt-refused" in out
    as_root = _read_only(image, tmp_path, "sh", "-c", "touch /x 2>&1 || true", user="0:0")
    assert "Read-only file system" in as_root


def test_final_stage_has_no_build_tools(image: Image) -> None:
    """No pip (neither module nor wheel), no setuptools, no compiler, no wheels left behind."""
    root = image.rootfs
    found = [
        str(p.relative_to(root))
        for pattern in (
            "usr/bin/gcc*",
            "usr/bin/cc",
            "usr/bin/make",
            "usr/bin/pip*",
            "opt/tidal/bin/pip*",
            "opt/tidal/lib/python3*/site-packages/pip",
            "opt/tidal/lib/python3*/site-packages/setuptools",
            "usr/lib/python3/dist-packages/pip",
            "usr/share/python-wheels/*.whl",
            "wheels",
        )
        for p in root.glob(pattern)
    ]
    assert found == []
    out = _in_container(
        image, "python3", "-c", "import importlib.util as u; print(u.find_spec('pip'))"
    )
    assert out.strip() == "None"


def _embedded_kubeconfig(src: Path, dst: Path) -> None:
    """The admin kubeconfig with its certificate files inlined (`*-data`): inside the image the
    host's paths do not exist, as in a pod."""
    config = json.loads(src.read_text())
    inline = {"certificate-authority", "client-certificate", "client-key"}
    for entry in [c["cluster"] for c in config["clusters"]] + [u["user"] for u in config["users"]]:
        for key in inline & set(entry):
            entry[f"{key}-data"] = base64.b64encode(Path(entry.pop(key)).read_bytes()).decode()
    dst.write_text(json.dumps(config))


async def _status(url: str) -> int:
    try:
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            return resp.status
    except aiohttp.ClientError:
        return 0


def _child(parent: int) -> int:
    """The pid of `parent`'s only child: unshare's, the chrooted tidal (sh, chroot and env exec
    into it). unshare --fork ignores SIGTERM, and chroot's change of user clears the child's
    parent-death signal, so the test signals tidal itself."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def _uid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(ln for ln in status.splitlines() if ln.startswith("Uid:")).split()[1])


async def test_daemon_from_the_image_scales_on_a_read_only_root(
    image: Image,
    tmp_path: Path,
    control_plane: ControlPlane,
    kubeconfig: Path,
    namespace: str,
    redis_server: RedisServer,
) -> None:
    """`tidal run` from the image as the chart runs it — user 65532, read-only root, /tmp a small
    tmpfs, a kubeconfig with inlined credentials, the metrics API on (its development
    certificate written at run time) — gets ready and scales a Deployment 0 -> 1 on the local
    control plane, then stops on SIGTERM."""
    install_crds(control_plane)
    files = tmp_path / "files"
    files.mkdir()
    _embedded_kubeconfig(kubeconfig, files / "kubeconfig")
    health, api = free_port(), free_port()
    argv = _read_only_argv(
        image,
        tmp_path,
        "tidal",
        "run",
        "--kubeconfig=/tmp/kubeconfig",
        f"--metrics-address=127.0.0.1:{health}",
        f"--api-address=127.0.0.1:{api}",
        "--leader-elect=false",
        f"--watch-namespace={namespace}",
        f"--cluster-object-namespace={namespace}",
        "--log-format=json",
        files=files,
    )
    log = tmp_path / "tidal.log"
    kube = await KubeClient.from_kubeconfig(str(kubeconfig))
    cluster = Cluster(kube, namespace)
    with log.open("w") as out:
        proc = await asyncio.create_subprocess_exec(*argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        await eventually(
            lambda: _status(f"http://127.0.0.1:{health}/readyz"),
            lambda s: s == 200 or proc.returncode is not None,
            timeout=60,
            what=f"/readyz of tidal in the image (log: {log})",
        )
        assert proc.returncode is None, log.read_text()[-4000:]
        tidal = _child(proc.pid)
        assert _uid(tidal) == UID

        list_name = f"jobs-{namespace}"
        await cluster.create_deployment(deployment("worker", replicas=0))
        await cluster.create_so(
            scaled_object(
                "worker",
                "worker",
                [redis_trigger(redis_server.address, list_name)],
                pollingInterval=1,
            )
        )
        r = aioredis.from_url(redis_server.url)
        await r.rpush(list_name, "a")
        await r.aclose()
        await eventually(
            lambda: cluster.replicas("worker"),
            lambda n: n == 1,
            what=f"0 -> 1 by tidal in the image (log: {log})",
        )
    finally:
        if proc.returncode is None:
            os.kill(_child(proc.pid), signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
        await kube.aclose()
    text = await eventually(
        _later(log.read_text),
        lambda t: '"msg": "stopped"' in t,
        timeout=30,
        what=f"tidal's clean stop (log: {log})",
    )
    assert "Read-only file system" not in text
    assert "Traceback" not in text


async def _await(value: str) -> str:
    return value


def _later(read: Callable[[], str]) -> Callable[[], Awaitable[str]]:
    return lambda: _await(read())
