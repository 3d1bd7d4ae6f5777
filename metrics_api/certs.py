"""Issuing the metrics API's certificates: a CA, and serving certificates it signs (ECDSA P-256).

Used by the managed certificate (scaler.servingcert decides when) and by the development
self-signed path. Time is a parameter (seconds since the epoch); `notBefore` is set a little in
the past (1 % of the lifetime, 5 minutes at most) to absorb clock skew between the replica that
issues and the apiserver that verifies.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

MAX_BACKDATE = 300.0


def backdate(validity: float) -> float:
    """How far before its issue time a certificate of this validity starts."""
    return min(MAX_BACKDATE, validity / 100)


def _time(t: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(t), dt.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(names)


def issue_ca(now: float, validity: float, name: str = "") -> tuple[str, str]:
    """A new CA: (certificate PEM, key PEM). Its default name carries the issue time, so
    successive CAs have distinct subjects."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name or f"tidal-ca@{int(now)}")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_time(now - backdate(validity)))
        .not_valid_after(_time(now + validity))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert_pem(cert), _key_pem(key)


def issue_serving(
    ca_cert_pem: str, ca_key_pem: str, hosts: Sequence[str], now: float, validity: float
) -> tuple[str, str]:
    """A serving certificate for `hosts` (DNS names or IP addresses) signed by the CA:
    (certificate PEM, key PEM). It never outlives its CA."""
    return _issue(
        ca_cert_pem, ca_key_pem, hosts[0], hosts, ExtendedKeyUsageOID.SERVER_AUTH, now, validity
    )


def issue_client(
    ca_cert_pem: str, ca_key_pem: str, name: str, now: float, validity: float
) -> tuple[str, str]:
    """A client certificate with common name `name` signed by the CA (replicas calling each
    other, docs/sharding.md): (certificate PEM, key PEM). It never outlives its CA."""
    return _issue(ca_cert_pem, ca_key_pem, name, (), ExtendedKeyUsageOID.CLIENT_AUTH, now, validity)


def _issue(
    ca_cert_pem: str,
    ca_key_pem: str,
    name: str,
    hosts: Sequence[str],
    usage: x509.ObjectIdentifier,
    now: float,
    validity: float,
) -> tuple[str, str]:
    ca = x509.load_pem_x509_certificate(ca_cert_pem.encode())
    ca_key = serialization.load_pem_private_key(ca_key_pem.encode(), password=None)
    ca_public = ca.public_key()
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey) or not isinstance(
        ca_public, ec.EllipticCurvePublicKey
    ):
        raise ValueError("the CA key is not an ECDSA key")
    key = ec.generate_private_key(ec.SECP256R1())
    not_after = min(now + validity, ca.not_valid_after_utc.timestamp())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_time(now - backdate(validity)))
        .not_valid_after(_time(not_after))
    )
    if hosts:
        builder = builder.add_extension(_san(hosts), critical=False)
    cert = (
        builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public), False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert_pem(cert), _key_pem(key)
