"""Certificates for the local control plane and for extension API servers (PEM, ECDSA P-256).

Two separate CAs, as the aggregation layer requires: the cluster CA signs the apiserver's serving
cert and the admin client cert; the front-proxy CA signs only the client cert the aggregator
presents to extension servers (which verify it against that CA).
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=365)
LOOPBACK_NAMES = ("localhost",)
LOOPBACK_IPS = ("127.0.0.1", "::1")


@dataclass(frozen=True, slots=True)
class CertKey:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """Write `<stem>.crt` and `<stem>.key` (mode 0600) and return both paths."""
        directory.mkdir(parents=True, exist_ok=True)
        crt, key = directory / f"{stem}.crt", directory / f"{stem}.key"
        crt.write_bytes(self.cert_pem)
        key.touch(mode=0o600)
        key.write_bytes(self.key_pem)
        return crt, key


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, organizations: Sequence[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def new_ca(common_name: str) -> CertKey:
    """A self-signed CA certificate with a fresh key."""
    key = _new_key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertKey(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue(
    ca: CertKey,
    common_name: str,
    *,
    organizations: Sequence[str] = (),
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    server: bool = False,
    client: bool = False,
) -> CertKey:
    """Issue a leaf certificate signed by `ca` (server and/or client usage, optional SANs)."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError("CA key must be an EC key issued by new_ca()")
    key = _new_key()
    now = datetime.datetime.now(datetime.UTC)
    usages = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organizations))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return CertKey(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


@dataclass(frozen=True, slots=True)
class ClusterCerts:
    """Paths of every file the control plane's processes and the admin kubeconfig read."""

    ca_crt: Path
    ca_key: Path
    apiserver_crt: Path
    apiserver_key: Path
    admin_crt: Path
    admin_key: Path
    sa_key: Path
    sa_pub: Path
    front_proxy_ca_crt: Path
    front_proxy_client_crt: Path
    front_proxy_client_key: Path


def write_cluster_certs(directory: Path) -> ClusterCerts:
    """Generate the cluster's CAs, certs and service-account keys into `directory`."""
    ca = new_ca("tidal-local-ca")
    ca_crt, ca_key = ca.write(directory, "ca")
    apiserver = issue(
        ca,
        "kube-apiserver",
        dns_names=(
            *LOOPBACK_NAMES,
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ),
        ip_addresses=LOOPBACK_IPS,
        server=True,
    )
    apiserver_crt, apiserver_key = apiserver.write(directory, "apiserver")
    admin = issue(ca, "admin", organizations=("system:masters",), client=True)
    admin_crt, admin_key = admin.write(directory, "admin")

    sa = _new_key()
    sa_key = directory / "sa.key"
    sa_key.touch(mode=0o600)
    sa_key.write_bytes(_key_pem(sa))
    sa_pub = directory / "sa.pub"
    sa_pub.write_bytes(
        sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )

    front_proxy_ca = new_ca("tidal-local-front-proxy-ca")
    front_proxy_ca_crt, _ = front_proxy_ca.write(directory, "front-proxy-ca")
    front_proxy_client = issue(front_proxy_ca, "front-proxy-client", client=True)
    fp_crt, fp_key = front_proxy_client.write(directory, "front-proxy-client")
    return ClusterCerts(
        ca_crt=ca_crt,
        ca_key=ca_key,
        apiserver_crt=apiserver_crt,
        apiserver_key=apiserver_key,
        admin_crt=admin_crt,
        admin_key=admin_key,
        sa_key=sa_key,
        sa_pub=sa_pub,
        front_proxy_ca_crt=front_proxy_ca_crt,
        front_proxy_client_crt=fp_crt,
        front_proxy_client_key=fp_key,
    )


@dataclass(frozen=True, slots=True)
class ServingCerts:
    """A serving cert for an extension API server and the CA that signed it (the caBundle)."""

    ca: CertKey
    serving: CertKey


def extension_server_certs(dns_names: Sequence[str]) -> ServingCerts:
    """A fresh CA and a serving cert for `dns_names` + localhost + 127.0.0.1 + ::1.

    The aggregator checks the name `<service>.<namespace>.svc`, so pass that (for example
    `tidal-metrics.tidal-system.svc`); the loopback names let tests call the server directly.
    """
    ca = new_ca("tidal-extension-server-ca")
    names = tuple(dict.fromkeys((*dns_names, *LOOPBACK_NAMES)))
    serving = issue(
        ca, names[0], dns_names=names, ip_addresses=LOOPBACK_IPS, server=True, client=False
    )
    return ServingCerts(ca=ca, serving=serving)
