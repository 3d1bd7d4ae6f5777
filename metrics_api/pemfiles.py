"""Run-time PEM files: Python's ssl loads a certificate chain only from files.

Every file Tidal writes at run time goes into one private directory (mode 0700) created inside a
writable base directory (`--cert-dir`, by default the temp dir, which the chart mounts as a
memory-backed emptyDir), never into the package or the working directory, so the root
filesystem can be read-only. Files are created 0600 with O_EXCL under a fresh name and renamed
into place, so a reader never sees half a file. The directory goes when the process stops.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
from pathlib import Path


class PemDir:
    """This process's private directory for PEM files."""

    def __init__(self, base: Path | None = None) -> None:
        if base is not None:
            base.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix="tidal-", dir=base))  # mode 0700
        self._seq = itertools.count()

    def write(self, name: str, text: str) -> Path:
        """Writes `name` (replacing it atomically); returns its path."""
        final = self.path / name
        tmp = self.path / f".{name}.{next(self._seq)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, final)
        return final

    def write_pair(self, cert_pem: str, key_pem: str) -> tuple[Path, Path]:
        """A certificate and its key under fresh names (a reload never mixes two pairs); the
        previous pair's files are removed by `prune` once the new pair is loaded."""
        n = next(self._seq)
        return self.write(f"tls-{n}.crt", cert_pem), self.write(f"tls-{n}.key", key_pem)

    def prune(self, keep: tuple[Path, ...]) -> None:
        """Removes every file except `keep`."""
        for entry in self.path.iterdir():
            if entry not in keep:
                with contextlib.suppress(OSError):
                    entry.unlink()

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
