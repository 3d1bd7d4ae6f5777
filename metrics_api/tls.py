"""TLS for the metrics API: serving cert, and client-cert trust for the aggregator.

kube-apiserver's aggregator calls us with its front-proxy client certificate, signed by the
requestheader CA published in ConfigMap kube-system/extension-apiserver-authentication. Only a
request over a connection whose client certificate chains to that CA, with an allowed CN, may
assert a user through X-Remote-User / X-Remote-Group. Certificates and CA are swapped at runtime
(file change, ConfigMap change) through an SNI callback that points each new handshake at the
current context, so reloads need no restart and never drop a connection.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ClientTrust:
    ca_pem: str
    allowed_names: frozenset[str]  # empty = any CN signed by the CA


def self_signed(hosts: Sequence[str], directory: Path) -> tuple[Path, Path]:
    """A development serving certificate (ECDSA P-256, 1 year) for the given DNS names / IPs."""
    # Imported here: cryptography costs ~8 MiB RSS, and production uses certificate files.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else "tidal")])
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(key_path, 0o600)
    return cert_path, key_path


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

    def _files_stamp(self) -> tuple[float, float]:
        return (self.cert_file.stat().st_mtime, self.key_file.stat().st_mtime)

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


def peer_common_name(peercert: object) -> str | None:
    """The CN of a verified peer certificate as returned by SSLObject.getpeercert()."""
    if not isinstance(peercert, dict):
        return None
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def dev_cert_dir() -> Path:
    return Path(tempfile.gettempdir()) / "tidal-dev-cert"
