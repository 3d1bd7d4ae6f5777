"""Where the API server is and how to authenticate to it: in-cluster service account, or a
kubeconfig — without importing kubernetes_asyncio's generated client.

Importing `kubernetes_asyncio.client` loads every generated model and API class: ~37 MiB of RSS
and ~0.35 s at start-up, for what Tidal uses it for — configuration and authentication — since
every request is raw JSON anyway (scaler/kube/client.py). This module covers what a daemon and
its operators use: the in-cluster service account (its token re-read every minute, as client-go
does, since the kubelet rotates bound tokens) and kubeconfig files whose user authenticates with
a client certificate, a bearer token, a token file or basic auth. A kubeconfig whose user runs an
`exec` credential plugin or an `auth-provider` (EKS, GKE, OIDC from a laptop) is left to
kubernetes_asyncio, imported only then (`needs_library`).
"""

from __future__ import annotations

import base64
import os
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scaler.clients import load_client_cert
from scaler.errors import KubeError

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD_AFTER = 60.0  # seconds, as client-go's cached token source


class NeedsLibrary(KubeError):
    """The kubeconfig's user authenticates in a way only kubernetes_asyncio implements."""


@dataclass(slots=True)
class TokenFile:
    """A bearer token read from a file and re-read after `TOKEN_REREAD_AFTER` seconds."""

    path: Path
    clock: Callable[[], float] = time.monotonic
    _token: str = ""
    _read_at: float = field(default=float("-inf"))

    def token(self) -> str:
        now = self.clock()
        if now - self._read_at >= TOKEN_REREAD_AFTER or not self._token:
            try:
                self._token = self.path.read_text().strip()
            except OSError as exc:
                if not self._token:
                    raise KubeError(f"token file {self.path}: {exc.strerror}") from exc
                # keep the last token: a rotation in progress must not fail a request
            self._read_at = now
        return self._token


@dataclass(frozen=True, slots=True)
class Connection:
    """The API server's URL, the TLS context to reach it, and the Authorization header."""

    host: str
    ssl_context: ssl.SSLContext | bool  # False: no verification (insecure-skip-tls-verify)
    token: str | TokenFile | None = None
    basic: tuple[str, str] | None = None

    def authorization(self) -> str | None:
        if isinstance(self.token, TokenFile):
            return f"Bearer {self.token.token()}"
        if self.token:
            return f"Bearer {self.token}"
        if self.basic is not None:
            raw = f"{self.basic[0]}:{self.basic[1]}".encode()
            return f"Basic {base64.b64encode(raw).decode()}"
        return None


def in_cluster(
    env: Mapping[str, str] | None = None, directory: Path = SERVICE_ACCOUNT_DIR
) -> Connection:
    """The pod's service account; KubeError when not running in a cluster."""
    env = os.environ if env is None else env
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    token = directory / "token"
    if not host or not port or not token.exists():
        raise KubeError("not running in a cluster (no KUBERNETES_SERVICE_HOST or token)")
    if ":" in host:
        host = f"[{host}]"
    ctx = ssl.create_default_context(cafile=str(directory / "ca.crt"))
    return Connection(f"https://{host}:{port}", ctx, token=TokenFile(token))


def kubeconfig_path(explicit: str | None, env: Mapping[str, str] | None = None) -> Path:
    """The kubeconfig to read: the flag, else $KUBECONFIG (one file), else ~/.kube/config."""
    env = os.environ if env is None else env
    if explicit:
        return Path(explicit).expanduser()
    listed = env.get("KUBECONFIG", "")
    if listed:
        paths = [p for p in listed.split(os.pathsep) if p]
        if len(paths) > 1:
            raise NeedsLibrary("KUBECONFIG lists several files (merged by kubernetes_asyncio)")
        return Path(paths[0]).expanduser()
    return Path.home() / ".kube" / "config"


def from_kubeconfig(path: Path, context: str | None = None) -> Connection:
    """The connection of `context` (default: current-context) in the kubeconfig at `path`."""
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise KubeError(f"kubeconfig {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise KubeError(f"kubeconfig {path}: not YAML ({type(exc).__name__})") from exc
    if not isinstance(doc, dict):
        raise KubeError(f"kubeconfig {path}: not a kubeconfig")
    name = context or doc.get("current-context")
    if not name:
        raise KubeError(f"kubeconfig {path}: no current-context and no context given")
    ctx = _named(doc, "contexts", name, "context", path)
    cluster = _named(doc, "clusters", ctx.get("cluster"), "cluster", path)
    user = _named(doc, "users", ctx.get("user"), "user", path) if ctx.get("user") else {}
    if user.get("exec") or user.get("auth-provider"):
        raise NeedsLibrary(f"kubeconfig {path}: user authenticates through a plugin")
    server = str(cluster.get("server") or "")
    if not server.startswith(("https://", "http://")):
        raise KubeError(f"kubeconfig {path}: cluster server {server!r} is not an http(s) URL")
    base = path.parent
    tls: ssl.SSLContext | bool = True
    if server.startswith("https://"):
        tls = _tls_context(cluster, user, base, path)
    token: str | TokenFile | None = None
    if user.get("token"):
        token = str(user["token"])
    elif user.get("tokenFile"):
        token = TokenFile(_resolve(base, str(user["tokenFile"])))
    basic = None
    if user.get("username") and user.get("password"):
        basic = (str(user["username"]), str(user["password"]))
    return Connection(server.rstrip("/"), tls, token=token, basic=basic)


def _named(doc: Mapping[str, Any], section: str, name: object, key: str, path: Path) -> Any:
    for entry in doc.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            value = entry.get(key) or {}
            if isinstance(value, dict):
                return value
    raise KubeError(f"kubeconfig {path}: no {key} named {name!r}")


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _pem(entry: Mapping[str, Any], key: str, base: Path) -> str | None:
    """PEM text from `<key>-data` (base64) or the file named by `<key>`."""
    data = entry.get(f"{key}-data")
    if data:
        return base64.b64decode(str(data)).decode()
    name = entry.get(key)
    if name:
        return _resolve(base, str(name)).read_text()
    return None


def _tls_context(
    cluster: Mapping[str, Any], user: Mapping[str, Any], base: Path, path: Path
) -> ssl.SSLContext | bool:
    try:
        ca = _pem(cluster, "certificate-authority", base)
        cert = _pem(user, "client-certificate", base)
        key = _pem(user, "client-key", base)
    except (OSError, ValueError) as exc:
        raise KubeError(f"kubeconfig {path}: {type(exc).__name__}: {exc}") from exc
    if cluster.get("insecure-skip-tls-verify") is True:
        if not (cert and key):
            return False
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        # Only the cluster's CA when it names one (as client-go); else the system store.
        ctx = ssl.create_default_context(cadata=ca) if ca else ssl.create_default_context()
        server_name = cluster.get("tls-server-name")
        if server_name:
            raise NeedsLibrary(f"kubeconfig {path}: tls-server-name is not handled here")
    if cert and key:
        try:
            load_client_cert(ctx, cert, key)
        except ValueError as exc:
            raise KubeError(f"kubeconfig {path}: {exc}") from exc
    elif cert or key:
        raise KubeError(f"kubeconfig {path}: a client certificate needs both cert and key")
    return ctx
