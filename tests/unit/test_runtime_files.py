"""What Tidal writes at run time, and where: PEM files for its own certificates (metrics_api
PemDir: private directory, 0600, atomic), and triggers' client certificates (memory only)."""

from __future__ import annotations

import os
import ssl
import stat
import tempfile
from pathlib import Path

import pytest

import scaler.clients as clients
from localenv.certs import issue, new_ca
from metrics_api.pemfiles import PemDir
from scaler.clients import ssl_context_from_pem

CA = new_ca("runtime-files-ca")
CLIENT = issue(CA, "client", client=True)


@pytest.fixture
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty directory that `tempfile` uses as the temp dir for the test."""
    d = tmp_path / "tmp"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_pem_dir_is_private_inside_its_base(tmp_path: Path) -> None:
    pem = PemDir(tmp_path / "certs")
    cert, key = pem.write_pair("CERT", "KEY")
    assert pem.path.parent == tmp_path / "certs"
    assert stat.S_IMODE(pem.path.stat().st_mode) == 0o700
    for f in (cert, key):
        assert f.parent == pem.path
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert (cert.read_text(), key.read_text()) == ("CERT", "KEY")


def test_pem_dir_replaces_atomically_and_prunes(tmp_path: Path) -> None:
    pem = PemDir(tmp_path)
    first = pem.write_pair("A", "a")
    inode = first[0].stat().st_ino
    second = pem.write_pair("B", "b")
    assert second != first
    assert first[0].stat().st_ino == inode  # the pair in use is never rewritten in place
    pem.prune(keep=second)
    assert sorted(p.name for p in pem.path.iterdir()) == sorted(p.name for p in second)
    again = pem.write("ca.crt", "1")
    assert pem.write("ca.crt", "2") == again
    assert again.read_text() == "2"
    assert not [p for p in pem.path.iterdir() if p.name.endswith(".tmp")]


def test_pem_dir_defaults_to_the_temp_dir_and_is_removed_on_close(temp_dir: Path) -> None:
    pem = PemDir()
    pem.write_pair("C", "K")
    assert pem.path.parent == temp_dir
    pem.close()
    assert _tree(temp_dir) == []


def test_trigger_client_certificate_loads_from_memory_writing_no_file(temp_dir: Path) -> None:
    ctx = ssl_context_from_pem(
        ca=CA.cert_pem.decode(), cert=CLIENT.cert_pem.decode(), key=CLIENT.key_pem.decode()
    )
    assert isinstance(ctx, ssl.SSLContext)
    assert _tree(temp_dir) == []
    assert not [e for e in os.listdir("/proc/self/fd") if "memfd" in _link(e)]  # all closed


def _link(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def test_without_memfd_the_pems_go_to_the_temp_dir_and_are_removed(
    temp_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(os, "memfd_create")
    seen: list[str] = []
    real = ssl.SSLContext.load_cert_chain

    def spy(self: ssl.SSLContext, certfile: str, keyfile: str, password: object = None) -> None:
        seen.append(certfile)
        real(self, certfile, keyfile, password)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", spy)
    clients.ssl_context_from_pem(cert=CLIENT.cert_pem.decode(), key=CLIENT.key_pem.decode())
    assert Path(seen[0]).is_relative_to(temp_dir)
    assert _tree(temp_dir) == []


def test_a_bad_client_key_is_a_value_error_without_the_pem(temp_dir: Path) -> None:
    with pytest.raises(ValueError, match="does not load") as exc:
        ssl_context_from_pem(cert=CLIENT.cert_pem.decode(), key="-----BEGIN PRIVATE KEY-----x")
    assert "PRIVATE" not in str(exc.value)
    assert _tree(temp_dir) == []
