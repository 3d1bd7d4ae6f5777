"""TLS on the proxy port: a server certificate from files, reloaded when the files change.

Kubernetes updates a mounted Secret by swapping a symlink, and cert-manager renews certificates
in place, so the interceptor looks at the files every `interval` seconds (size, mtime and inode
of the resolved paths) and loads them again into the same ``SSLContext`` when they changed: new
handshakes get the new certificate, connections already open keep theirs, and nothing restarts.
A pair that does not load (a half-written renewal, a key that does not match) is logged and the
previous certificate stays in use until the next change.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from scaler.errors import ConfigError

log = logging.getLogger(__name__)

RELOAD_INTERVAL = 10.0


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert: Path
    key: Path
    interval: float = RELOAD_INTERVAL


def _stamp(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)  # follows symlinks: a swapped Secret volume shows as a new inode
    return st.st_ino, st.st_size, st.st_mtime_ns


class ServerCert:
    """The proxy port's ``SSLContext`` and the files it reloads from."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.set_alpn_protocols(["http/1.1"])
        self._stamps = self._current()
        try:
            self.context.load_cert_chain(files.cert, files.key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load TLS certificate {files.cert}: {exc}") from exc
        self.loads = 1

    def _current(self) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
        try:
            return _stamp(self.files.cert), _stamp(self.files.key)
        except OSError:
            return None  # mid-swap: look again next time

    def check(self) -> bool:
        """Reload when the files changed since the last load; True when it reloaded."""
        stamps = self._current()
        if stamps is None or stamps == self._stamps:
            return False
        try:
            self.context.load_cert_chain(self.files.cert, self.files.key)
        except (OSError, ssl.SSLError) as exc:
            log.warning(
                "TLS certificate not reloaded",
                extra={"cert": str(self.files.cert), "error": str(exc)},
            )
            return False
        self._stamps = stamps
        self.loads += 1
        log.info("TLS certificate reloaded", extra={"cert": str(self.files.cert)})
        return True

    async def watch(self) -> None:
        """Check the files every `interval` seconds, until cancelled."""
        while True:
            await asyncio.sleep(self.files.interval)
            self.check()
