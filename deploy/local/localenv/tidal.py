"""Tidal itself as a process (`tidal run`), for the demo, benchmarks and multi-process tests."""

from __future__ import annotations

import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from localenv.process import ManagedProcess, free_port

TIDAL = Path(sys.executable).parent / "tidal"


def tidal_ready(port: int) -> bool:
    """Whether `tidal run`'s /readyz on 127.0.0.1:`port` answers 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def tidal_process(
    run_dir: Path,
    kubeconfig: Path,
    args: Sequence[str | Path] = (),
    *,
    name: str = "tidal",
    timeout: float = 60.0,
) -> tuple[ManagedProcess, int]:
    """A `tidal run` process (not started yet) with its /metrics port on 127.0.0.1."""
    port = free_port()
    argv: list[str | Path] = [
        TIDAL,
        "run",
        "--kubeconfig",
        kubeconfig,
        "--metrics-address",
        f"127.0.0.1:{port}",
        *args,
    ]
    proc = ManagedProcess(name, argv, run_dir, ready=lambda: tidal_ready(port), timeout=timeout)
    return proc, port
