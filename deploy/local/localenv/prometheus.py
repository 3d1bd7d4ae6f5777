"""A Prometheus server (Debian's `prometheus`) on 127.0.0.1 scraping loopback targets."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from localenv.process import ComponentError, ManagedProcess, ProcessComponent, free_port

HOST = "127.0.0.1"
JOB = "tidal"


def _ready(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/-/ready", timeout=1.0) as resp:
        return int(resp.status) == 200


class PrometheusServer(ProcessComponent):
    """Scrapes `scrape_targets` ("host:port", path /metrics) as job "tidal"; lifecycle API on."""

    def __init__(
        self,
        run_dir: Path,
        scrape_targets: Sequence[str] = (),
        scrape_interval: str = "1s",
        *,
        name: str = "prometheus",
        port: int | None = None,
    ) -> None:
        self.name = name
        self.host = HOST
        self.port = port or free_port()
        self.scrape_interval = scrape_interval
        self.home = run_dir / name
        self.home.mkdir(parents=True, exist_ok=True)
        self.config = self.home / "prom.yml"
        self.targets: list[str] = []
        self._write_config(scrape_targets)
        argv = [
            shutil.which("prometheus") or "prometheus",
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.home / 'data'}",
            f"--web.listen-address={HOST}:{self.port}",
            "--web.enable-lifecycle",
        ]
        self._proc = ManagedProcess(
            name, argv, run_dir, ready=lambda: _ready(self.url), timeout=60.0, cwd=self.home
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _write_config(self, targets: Sequence[str]) -> None:
        self.targets = list(targets)
        scrape_configs = []
        if self.targets:
            scrape_configs.append({"job_name": JOB, "static_configs": [{"targets": self.targets}]})
        config = {
            "global": {"scrape_interval": self.scrape_interval},
            "scrape_configs": scrape_configs,
        }
        # JSON is valid YAML, so no YAML library is needed.
        self.config.write_text(json.dumps(config, indent=2) + "\n")

    def set_targets(self, targets: Sequence[str]) -> None:
        """Scrape exactly `targets` from now on (rewrites prom.yml, then POST /-/reload)."""
        self._write_config(targets)
        if not self.running:
            return
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10.0) as resp:
                status = int(resp.status)
        except OSError as exc:
            raise ComponentError(self.name, self.log, f"config reload failed: {exc}") from exc
        if status != 200:
            raise ComponentError(self.name, self.log, f"config reload answered {status}")

    def __repr__(self) -> str:
        return f"PrometheusServer({self.url}, targets={self.targets})"
