"""TLS for the metrics API: serving cert, and client-cert trust for the aggregator.

kube-apiserver's aggregator calls us with its front-proxy client certificate, signed by the
requestheader CA published in ConfigMap kube-system/extension-apiserver-authentication. Only a
request over a connection whose client certificate chains to that CA, with an allowed CN, may
assert a user through X-Remote-User / X-Remote-Group. Certificates and CA are swapped at runtime
(file change, ConfigMap change) through an SNI callback that points each new handshake at the
current context, so reloads need no restart and never drop a connection.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from metrics_api.pemfiles import PemDir

log = logging.getLogger(__name__)
DEV_VALIDITY = 365 * 86400.0


@dataclass(frozen=True, slots=True)
class ClientTrust:
    ca_pem: str
    allowed_names: frozenset[str]  # empty = any CN signed by the CA


def self_signed(hosts: Sequence[str], directory: PemDir) -> tuple[Path, Path]:
    """A development serving certificate (1 year, from a throwaway CA) for the given DNS names /
    IPs, written into the process's private PEM directory."""
    # Imported here: cryptography costs ~8 MiB RSS, and production uses certificate files.
    from metrics_api.certs import issue_ca, issue_serving

    now = time.time()
    ca_pem, ca_key = issue_ca(now, DEV_VALIDITY, name="tidal-dev-ca")
    cert, key = issue_serving(ca_pem, ca_key, hosts or ("tidal",), now, DEV_VALIDITY)
    return directory.write_pair(cert, key)


class TlsManager:
    """Holds the current server SSLContext; `outer` is what the listening socket is given."""

    def __init__(self, cert_file: Path, key_file: Path, trust: ClientTrust | None = None) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.trust = trust
        self._stamp = self._files_stamp()
        self.current = self._build()
        # OpenSSL keeps the listening context's verify mode when the SNI callback swaps contexts,
        # so the outer context always asks for (but does not require) a client certificate; the
        # CA store used to verify it is the current context's.
        self.outer = self._build()
        self.outer.verify_mode = ssl.CERT_OPTIONAL
        self.outer.sni_callback = self._select

    def _files_stamp(self) -> tuple[int, ...]:
        # Inode and size too: cert-manager's Secret volume swaps a symlink to new files, and a
        # rewrite within one mtime tick must still count as a change.
        c, k = self.cert_file.stat(), self.key_file.stat()
        return (c.st_mtime_ns, c.st_ino, c.st_size, k.st_mtime_ns, k.st_ino, k.st_size)

    def _build(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert_file, self.key_file)
        ctx.set_alpn_protocols(["http/1.1"])
        if self.trust is not None:
            ctx.verify_mode = ssl.CERT_OPTIONAL
            ctx.load_verify_locations(cadata=self.trust.ca_pem)
        return ctx

    def _select(self, sslobj: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        sslobj.context = self.current

    def set_trust(self, trust: ClientTrust) -> None:
        if trust != self.trust:
            self.trust = trust
            self.current = self._build()
            log.info("client CA reloaded", extra={"allowed_names": sorted(trust.allowed_names)})

    def reload_if_changed(self) -> bool:
        """Re-reads the serving cert/key when their files changed; True when reloaded."""
        try:
            stamp = self._files_stamp()
        except OSError:
            return False
        if stamp == self._stamp:
            return False
        try:
            ctx = self._build()
        except (OSError, ssl.SSLError) as exc:
            log.warning("serving certificate not reloaded", extra={"error": str(exc)})
            return False
        self._stamp, self.current = stamp, ctx
        log.info("serving certificate reloaded", extra={"cert": str(self.cert_file)})
        return True

    def use_files(self, cert_file: Path, key_file: Path) -> None:
        """Serve another certificate from now on (new handshakes; open connections keep theirs).
        Raises OSError / ssl.SSLError, keeping the current one, when the pair does not load."""
        old = (self.cert_file, self.key_file)
        self.cert_file, self.key_file = cert_file, key_file
        try:
            ctx, stamp = self._build(), self._files_stamp()
        except (OSError, ssl.SSLError):
            self.cert_file, self.key_file = old
            raise
        self._stamp, self.current = stamp, ctx
        log.info("serving certificate loaded", extra={"cert": str(cert_file)})


def peer_common_name(peercert: object) -> str | None:
    """The CN of a verified peer certificate as returned by SSLObject.getpeercert()."""
    if not isinstance(peercert, dict):
        return None
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None
