"""`make demo` keeps working: one full cycle 0 → 1 → N → 1 → 0 on its own environment."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_demo_runs_one_full_cycle(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "localenv.demo", "--cycles", "1"],
        cwd=REPO,
        env={
            "PYTHONPATH": str(REPO / "deploy" / "local"),
            "TIDAL_RUN_DIR": str(tmp_path),
            "PATH": "/usr/bin:/bin",
            "HOME": str(Path.home()),
        },
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "did not reach" not in out.stdout, out.stdout
    assert "cycle 1 complete" in out.stdout
    moves = re.findall(r"replicas (\d+) → (\d+)", out.stdout)
    assert ("0", "1") in moves
    assert max(int(b) for _, b in moves) == 5  # the HPA took it to maxReplicaCount
    assert moves[-1][1] == "0"
