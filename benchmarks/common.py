"""What every benchmark module shares: the result shape, percentiles, RSS, progress lines.

A benchmark is a module `benchmarks/<name>.py` with

    NAME = "<name>"
    def run(out: Path, quick: bool) -> Result

`benchmarks.run` calls each one, writes `benchmarks/results/<name>.json` and rewrites the table
between the `<!-- bench:start -->` / `<!-- bench:end -->` markers of README.md. `quick` is for
a smoke run (fewer repetitions); published figures come from full runs.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Row:
    what: str  # e.g. "event -> replicas 1 (redis push), p50"
    value: str  # formatted measurement, e.g. "41 ms"
    budget: str = ""  # the budget in docs/design.md, e.g. "<= 100 ms"
    keda: str = ""  # KEDA 2.20.2 measured on this machine kind (docs/design.md)
    ok: bool | None = None  # within budget?


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    rows: Sequence[Row]
    raw: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
            "rows": [asdict(r) for r in self.rows],
            "raw": self.raw,
        }


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def rss_mib(pid: int | None = None) -> float:
    """Resident set size of a process (this one by default), MiB, from /proc."""
    status = Path(f"/proc/{pid or 'self'}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc status")


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds used so far by a process (this one by default)."""
    fields = Path(f"/proc/{pid or 'self'}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def progress(name: str, message: str) -> None:
    print(f"[bench {name}] {time.strftime('%H:%M:%S')} {message}", flush=True)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"
