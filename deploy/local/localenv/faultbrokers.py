"""Brokers set up for fault injection (tests/reliability): credentials, proxied listeners, TLS.

* `AuthNatsServer`: NATS with JetStream that requires a user name and password from clients (the
  monitoring port stays open, as in nats-server).
* `BasicAuthPrometheus`: Prometheus whose HTTP API requires basic auth (`--web.config.file`).
* `add_kafka_listeners`: extra PLAINTEXT listeners on a `KafkaBroker`, each advertised at
  another address (a `FaultProxy` in front of it), so every connection a client makes after
  bootstrapping through the proxy goes through it too.
* `tls_server_context`: a server-side TLS context for 127.0.0.1/localhost signed by a CA (for a
  `FaultProxy` in ``tls`` mode).
* `redis_acl_user`: a Redis ACL user with a password (standalone or each cluster node).
"""

from __future__ import annotations

import json
import ssl
import tempfile
import urllib.request
import warnings
from base64 import b64encode
from collections.abc import Mapping
from pathlib import Path

from localenv.certs import LOOPBACK_IPS, LOOPBACK_NAMES, CertKey, issue
from localenv.kafka import KafkaBroker
from localenv.nats import NatsServer
from localenv.prometheus import PrometheusServer
from localenv.redis_cluster import command

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # bcrypt through libxcrypt; no bcrypt package is installed


class AuthNatsServer(NatsServer):
    """`nats-server -js --user U --pass P` (clients must authenticate; /jsz stays open)."""

    def __init__(self, run_dir: Path, *, user: str, password: str, name: str = "nats") -> None:
        super().__init__(run_dir, name=name)
        self.user = user
        self.password = password
        self._proc.argv += ["--user", user, "--pass", password]

    @property
    def client_url(self) -> str:
        """nats://user:password@host:port — holds the password: never log it."""
        return f"nats://{self.user}:{self.password}@{self.host}:{self.port}"


def _bcrypt(password: str) -> str:
    # The lowest bcrypt cost: Prometheus checks the hash on every request.
    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))


class BasicAuthPrometheus(PrometheusServer):
    """Prometheus whose every endpoint requires basic auth as `user`/`password`."""

    def __init__(self, run_dir: Path, *, user: str, password: str, name: str = "prometheus"):
        super().__init__(run_dir, name=name)
        self.user = user
        self.password = password
        web_config = self.home / "web.yml"
        # JSON is YAML: no YAML library needed.
        web_config.write_text(json.dumps({"basic_auth_users": {user: _bcrypt(password)}}) + "\n")
        self._proc.argv.append(f"--web.config.file={web_config}")
        token = b64encode(f"{user}:{password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}"}
        self._proc.ready = self._ready

    def _ready(self) -> bool:
        request = urllib.request.Request(f"{self.url}/-/ready", headers=self.headers)
        with urllib.request.urlopen(request, timeout=1.0) as resp:
            return int(resp.status) == 200


def add_kafka_listeners(broker: KafkaBroker, listeners: Mapping[str, tuple[int, int]]) -> None:
    """Add PLAINTEXT listeners NAME → (port the broker binds, port it advertises) to the
    broker's server.properties (before start). A client bootstrapping through the advertised
    port is told that port for every later connection."""
    lines = broker.config.read_text().splitlines()
    props = dict(line.split("=", 1) for line in lines if "=" in line)
    for name, (bind, advertised) in listeners.items():
        props["listeners"] += f",{name}://{broker.host}:{bind}"
        props["advertised.listeners"] += f",{name}://{broker.host}:{advertised}"
        props["listener.security.protocol.map"] += f",{name}:PLAINTEXT"
    broker.config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))


def tls_server_context(ca: CertKey, name: str = "fault-proxy") -> ssl.SSLContext:
    """A server context with a certificate for localhost/127.0.0.1/::1 issued by `ca`."""
    leaf = issue(ca, name, dns_names=LOOPBACK_NAMES, ip_addresses=LOOPBACK_IPS, server=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as tmp:
        crt, key = leaf.write(Path(tmp), name)
        ctx.load_cert_chain(str(crt), str(key))
    return ctx


def redis_acl_user(port: int, user: str, password: str) -> None:
    """Create (or reset) ACL user `user` with full access on the Redis at 127.0.0.1:`port`."""
    command(port, "ACL", "SETUSER", user, "reset", "on", f">{password}", "~*", "&*", "+@all")
