"""Finding the API server and its credentials without kubernetes_asyncio's generated client
(scaler/kube/connection.py): kubeconfig variants, in-cluster, and when the library is needed.

Against the real apiserver: tests/integration/test_kube_transport.py.
"""

from __future__ import annotations

import base64
import json
import ssl
from pathlib import Path
from typing import Any

import pytest

from localenv.certs import issue, new_ca
from scaler.errors import KubeError
from scaler.kube.connection import (
    TOKEN_REREAD_AFTER,
    NeedsLibrary,
    TokenFile,
    from_kubeconfig,
    in_cluster,
    kubeconfig_path,
)

CA = new_ca("connection-test-ca")
CLIENT = issue(CA, "someone", client=True)


def write(tmp_path: Path, user: dict[str, Any], cluster: dict[str, Any] | None = None) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster or {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
    }
    path = tmp_path / "config"
    path.write_text(json.dumps(doc))
    return path


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    "form",
    [
        pytest.param("data", id="inline-data"),
        pytest.param("relative-files", id="files-relative-to-the-kubeconfig"),
    ],
)
def test_client_certificate_and_ca(tmp_path: Path, form: str) -> None:
    if form == "data":
        user = {
            "client-certificate-data": b64(CLIENT.cert_pem),
            "client-key-data": b64(CLIENT.key_pem),
        }
        cluster = {
            "server": "https://127.0.0.1:6443",
            "certificate-authority-data": b64(CA.cert_pem),
        }
    else:
        (tmp_path / "pki").mkdir()
        (tmp_path / "pki" / "c.crt").write_bytes(CLIENT.cert_pem)
        (tmp_path / "pki" / "c.key").write_bytes(CLIENT.key_pem)
        (tmp_path / "pki" / "ca.crt").write_bytes(CA.cert_pem)
        user = {"client-certificate": "pki/c.crt", "client-key": "pki/c.key"}
        cluster = {"server": "https://127.0.0.1:6443/", "certificate-authority": "pki/ca.crt"}
    conn = from_kubeconfig(write(tmp_path, user, cluster))
    assert conn.host == "https://127.0.0.1:6443"
    assert isinstance(conn.ssl_context, ssl.SSLContext)
    assert conn.ssl_context.verify_mode == ssl.CERT_REQUIRED
    # Only the cluster's CA is trusted (as client-go), not the system store.
    assert [c["subject"] for c in conn.ssl_context.get_ca_certs()] == [
        ((("commonName", "connection-test-ca"),),)
    ]
    assert conn.authorization() is None


def test_bearer_token_and_basic_auth(tmp_path: Path) -> None:
    assert from_kubeconfig(write(tmp_path, {"token": "abc"})).authorization() == "Bearer abc"
    basic = from_kubeconfig(write(tmp_path, {"username": "ann", "password": "pw"}))
    assert basic.authorization() == "Basic " + b64(b"ann:pw")


def test_a_token_file_is_reread_after_a_minute(tmp_path: Path) -> None:
    now = [0.0]
    token = tmp_path / "token"
    token.write_text("first\n")
    source = TokenFile(token, clock=lambda: now[0])
    assert source.token() == "first"
    token.write_text("second")
    now[0] = TOKEN_REREAD_AFTER - 1
    assert source.token() == "first"  # cached, as client-go
    now[0] = TOKEN_REREAD_AFTER
    assert source.token() == "second"
    token.unlink()
    now[0] = 2 * TOKEN_REREAD_AFTER
    assert source.token() == "second"  # a rotation in progress never fails a request


def test_a_missing_token_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KubeError, match=r"token file .*No such file"):
        TokenFile(tmp_path / "nope").token()


@pytest.mark.parametrize(
    "user",
    [
        pytest.param({"exec": {"command": "aws", "apiVersion": "x"}}, id="exec-plugin"),
        pytest.param({"auth-provider": {"name": "oidc"}}, id="auth-provider"),
    ],
)
def test_credential_plugins_are_left_to_the_library(tmp_path: Path, user: dict[str, Any]) -> None:
    with pytest.raises(NeedsLibrary):
        from_kubeconfig(write(tmp_path, user))


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        pytest.param("{}", "no current-context", id="no-context"),
        pytest.param("[1, 2]", "not a kubeconfig", id="not-a-mapping"),
        pytest.param("{a: [", "not YAML", id="not-yaml"),
        pytest.param(
            json.dumps({"current-context": "x", "contexts": []}),
            "no context named 'x'",
            id="unknown-context",
        ),
    ],
)
def test_broken_kubeconfigs_say_what_is_wrong(tmp_path: Path, doc: str, message: str) -> None:
    path = tmp_path / "config"
    path.write_text(doc)
    with pytest.raises(KubeError, match=message):
        from_kubeconfig(path)


def test_a_server_that_is_not_a_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KubeError, match="not an http"):
        from_kubeconfig(write(tmp_path, {"token": "t"}, {"server": "127.0.0.1:6443"}))


def test_kubeconfig_path_order(tmp_path: Path) -> None:
    assert kubeconfig_path("~/x", {}) == Path.home() / "x"
    assert kubeconfig_path(None, {"KUBECONFIG": "/a/config"}) == Path("/a/config")
    assert kubeconfig_path(None, {}) == Path.home() / ".kube" / "config"
    with pytest.raises(NeedsLibrary):
        kubeconfig_path(None, {"KUBECONFIG": "/a:/b"})


def test_in_cluster_reads_the_service_account(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "ca.crt").write_bytes(CA.cert_pem)
    env = {"KUBERNETES_SERVICE_HOST": "::1", "KUBERNETES_SERVICE_PORT": "443"}
    conn = in_cluster(env, tmp_path)
    assert conn.host == "https://[::1]:443"
    assert conn.authorization() == "Bearer sa-token"
    with pytest.raises(KubeError, match="not running in a cluster"):
        in_cluster({}, tmp_path)
