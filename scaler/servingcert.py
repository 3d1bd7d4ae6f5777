"""The managed serving CA and certificate: issuing them, and deciding when to replace them.

Pure functions of (what the Secret holds, the wanted DNS names, now, the policy): every replica
runs the same decision on the same Secret, so they agree on what to write, and whichever write
reaches the apiserver first wins (the others see a conflict, re-read and find nothing to do).

Rotation, without the aggregator ever meeting a certificate it cannot verify:

* the serving certificate is renewed when less than `renew_fraction` of its lifetime is left;
* the CA is replaced when less than `renew_fraction` of its lifetime is left: the new CA joins
  the bundle (``ca.crt``, the APIService's caBundle) first, in front of the old one, while the
  serving certificate stays signed by the old CA;
* once the new CA has been in the bundle for `overlap`, the serving certificate is re-issued by
  it; once that certificate has been out for `overlap` (every replica has loaded it), the old
  CA leaves the bundle (it also leaves when it expires).

Time is a parameter (seconds since the epoch); nothing here reads the wall clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from metrics_api.certs import backdate, cert_pem, issue_ca, issue_serving
from scaler.errors import ConfigError

# Secret keys (kubernetes.io/tls names plus the CA's).
CA_BUNDLE_KEY = "ca.crt"  # the current CA first, then CAs still trusted during an overlap
CA_KEY_KEY = "ca.key"
CERT_KEY = "tls.crt"
KEY_KEY = "tls.key"


@dataclass(frozen=True, slots=True)
class CertPolicy:
    cert_validity: float = 365 * 86400.0
    ca_validity: float = 5 * 365 * 86400.0
    overlap: float = 600.0
    renew_fraction: float = 1 / 3


@dataclass(frozen=True, slots=True, repr=False)
class CertMaterial:
    """PEM text as stored in the Secret; `bundle` starts with the CA that signs now."""

    bundle: str
    ca_key: str
    cert: str
    key: str

    def secret_data(self) -> dict[str, str]:
        return {
            CA_BUNDLE_KEY: self.bundle,
            CA_KEY_KEY: self.ca_key,
            CERT_KEY: self.cert,
            KEY_KEY: self.key,
        }

    @classmethod
    def from_secret_data(cls, data: dict[str, str]) -> CertMaterial | None:
        """None when a key is missing (an empty Secret the installer made, say)."""
        if not all(data.get(k) for k in (CA_BUNDLE_KEY, CA_KEY_KEY, CERT_KEY, KEY_KEY)):
            return None
        return cls(data[CA_BUNDLE_KEY], data[CA_KEY_KEY], data[CERT_KEY], data[KEY_KEY])

    def __repr__(self) -> str:  # never the keys
        return "CertMaterial(...)"


@dataclass(frozen=True, slots=True)
class Change:
    """What `plan` decided: the material to write and why (a log/metric label)."""

    material: CertMaterial
    reason: str  # created | replaced-invalid | ca-rotated | cert-renewed | cert-reissued | ...


def service_hosts(service: str) -> tuple[str, ...]:
    """DNS names of a Service "NAMESPACE/NAME": name, name.ns, name.ns.svc, ...cluster.local."""
    namespace, sep, name = service.partition("/")
    if not (sep and namespace and name) or "/" in name:
        raise ConfigError(f"--cert-service must be NAMESPACE/NAME, not {service!r}")
    return (
        name,
        f"{name}.{namespace}",
        f"{name}.{namespace}.svc",
        f"{name}.{namespace}.svc.cluster.local",
    )


def new_material(hosts: Sequence[str], now: float, policy: CertPolicy) -> CertMaterial:
    ca_pem, ca_key = issue_ca(now, policy.ca_validity)
    cert, key = issue_serving(ca_pem, ca_key, hosts, now, policy.cert_validity)
    return CertMaterial(ca_pem, ca_key, cert, key)


# -- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Parsed:
    cas: tuple[x509.Certificate, ...]  # cas[0] signs now
    cert: x509.Certificate


def _parse(m: CertMaterial) -> _Parsed | None:
    """The material's certificates, or None when it is unusable (does not load, keys do not
    match their certificates, the certificate is not signed by a CA of the bundle)."""
    try:
        cas = tuple(x509.load_pem_x509_certificates(m.bundle.encode()))
        cert = x509.load_pem_x509_certificate(m.cert.encode())
        ca_key = serialization.load_pem_private_key(m.ca_key.encode(), password=None)
        key = serialization.load_pem_private_key(m.key.encode(), password=None)
    except ValueError:
        return None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):  # Tidal issues only with its own
        return None
    if not cas or ca_key.public_key() != cas[0].public_key():
        return None
    if key.public_key() != cert.public_key():
        return None
    if _signer(cert, cas) is None:
        return None
    return _Parsed(cas, cert)


def _signer(cert: x509.Certificate, cas: Sequence[x509.Certificate]) -> int | None:
    for i, ca in enumerate(cas):
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return i
    return None


def _start(c: x509.Certificate) -> float:
    return c.not_valid_before_utc.timestamp()


def _end(c: x509.Certificate) -> float:
    return c.not_valid_after_utc.timestamp()


def _issued(c: x509.Certificate) -> float:
    """When it was issued: notBefore plus the backdate `issue_*` applied."""
    return _start(c) + backdate((_end(c) - _start(c)) / 1.01)


def _renew_at(c: x509.Certificate, fraction: float) -> float:
    return _end(c) - fraction * (_end(c) - _start(c))


def _hosts(c: x509.Certificate) -> frozenset[str]:
    try:
        san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset(san.get_values_for_type(x509.DNSName))


def ca_certificates(material: CertMaterial) -> tuple[str, ...]:
    """The bundle's CAs, one PEM each, current first."""
    return tuple(cert_pem(c) for c in x509.load_pem_x509_certificates(material.bundle.encode()))


def expiries(material: CertMaterial) -> tuple[float, float]:
    """(serving certificate notAfter, current CA notAfter), seconds since the epoch."""
    cas = x509.load_pem_x509_certificates(material.bundle.encode())
    return _end(x509.load_pem_x509_certificate(material.cert.encode())), _end(cas[0])


def serving_fingerprint(pem: str) -> str:
    return x509.load_pem_x509_certificate(pem.encode()).fingerprint(hashes.SHA256()).hex()


# -- deciding ---------------------------------------------------------------------------------


def plan(
    current: CertMaterial | None, hosts: Sequence[str], now: float, policy: CertPolicy
) -> Change | None:
    """The one change to make now, or None when the material is good as it is. Applied
    repeatedly, reaches a fixed point (each step is one Secret update)."""
    if current is None:
        return Change(new_material(hosts, now, policy), "created")
    p = _parse(current)
    if p is None or now >= _end(p.cas[0]):
        return Change(new_material(hosts, now, policy), "replaced-invalid")
    ca, cert = p.cas[0], p.cert
    signed_by_current = _signer(cert, p.cas[:1]) == 0
    if now >= _renew_at(ca, policy.renew_fraction) and signed_by_current:
        ca_pem, ca_key = issue_ca(now, policy.ca_validity)
        bundle = ca_pem + "".join(cert_pem(c) for c in p.cas if _end(c) > now)
        return Change(CertMaterial(bundle, ca_key, current.cert, current.key), "ca-rotated")
    reason = ""
    if now >= _end(cert) or _hosts(cert) != frozenset(hosts):
        reason = "cert-reissued"  # expired or for other names: cannot wait for an overlap
    elif not signed_by_current and now >= _issued(ca) + policy.overlap:
        reason = "cert-resigned"  # the new CA has been trusted long enough
    elif signed_by_current and now >= _renew_at(cert, policy.renew_fraction):
        reason = "cert-renewed"
    if reason:
        new_cert, new_key = issue_serving(
            cert_pem(ca), current.ca_key, hosts, now, policy.cert_validity
        )
        return Change(CertMaterial(current.bundle, current.ca_key, new_cert, new_key), reason)
    kept = [ca, *(c for c in p.cas[1:] if _keep_old_ca(c, cert, signed_by_current, now, policy))]
    if len(kept) < len(p.cas):
        bundle = "".join(cert_pem(c) for c in kept)
        return Change(CertMaterial(bundle, current.ca_key, current.cert, current.key), "ca-retired")
    return None


def _keep_old_ca(
    old: x509.Certificate,
    cert: x509.Certificate,
    signed_by_current: bool,
    now: float,
    policy: CertPolicy,
) -> bool:
    if now >= _end(old):
        return False
    return not (signed_by_current and now >= _issued(cert) + policy.overlap)


def next_check(current: CertMaterial, now: float, policy: CertPolicy) -> float:
    """The earliest time at which `plan` may decide something new (now + 1 day at most)."""
    p = _parse(current)
    if p is None:
        return now
    ca, cert = p.cas[0], p.cert
    times = [
        _renew_at(ca, policy.renew_fraction),
        _renew_at(cert, policy.renew_fraction),
        _end(cert),
        _issued(ca) + policy.overlap,
        _issued(cert) + policy.overlap,
        *(_end(c) for c in p.cas),
        now + 86400.0,
    ]
    return min(t for t in times if t > now)
