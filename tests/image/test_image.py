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

import json
import re
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from scaler.service import VERSION

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


_READ_ONLY_ROOT = r"""
set -eu
rootfs=$1 mnt=$2 user=$3; shift 3
mount --make-rprivate /
mount --bind "$rootfs" "$mnt"
mount -o remount,bind,ro "$mnt"
mount -t tmpfs -o mode=1777,size=64m tmpfs "$mnt/tmp"
mount -t proc proc "$mnt/proc"
mount --rbind /dev "$mnt/dev"
exec chroot --userspec="$user" "$mnt" "$@"
"""


def _read_only(image: Image, tmp: Path, *argv: str, user: str = f"{UID}:{UID}") -> str:
    """argv in the image's root filesystem mounted read-only, /tmp a fresh tmpfs, with the
    image's environment only (in a private mount namespace: nothing leaks to the host)."""
    env = [str(e) for e in image.config["Env"]]  # type: ignore[attr-defined]
    mnt = tmp / "root"
    mnt.mkdir(exist_ok=True)
    script = ["unshare", "--mount", "--fork", "sh", "-c", _READ_ONLY_ROOT, "sh"]
    return _run([*script, str(image.rootfs), str(mnt), user, "/usr/bin/env", "-i", *env, *argv])


def test_build_reports_the_image_and_its_size(image: Image) -> None:
    """The build names the image and its size; the size stays within its budget."""
    size = re.search(
        rf"^\[image\] {image.tag}: ([0-9.]+ [kMG]B) \(recorded in ", image.build_output, re.M
    )
    assert size is not None, image.build_output
    used = int(_run(["du", "-sm", "--one-file-system", str(image.rootfs)]).split()[0])
    assert used <= SIZE_BUDGET_MB, f"image root filesystem {used} MB > budget {SIZE_BUDGET_MB} MB"


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
    for trigger in ("kafka", "nats-jetstream", "redis", "aws-s3", "cron", "prometheus"):
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
