"""The managed serving certificate's decisions (scaler.servingcert), on a clock the test sets.

A whole CA lifetime is walked through `plan` step by step: at every instant the serving
certificate must verify against the bundle the APIService would hold, and a new CA must have
been in the bundle for the overlap before it signs anything.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from scaler.errors import ConfigError
from scaler.servingcert import (
    CertMaterial,
    CertPolicy,
    ca_certificates,
    new_material,
    next_check,
    plan,
    service_hosts,
)

T0 = 1_900_000_000.0
DAY = 86400.0
HOSTS = service_hosts("tidal-system/tidal-metrics-api")
POLICY = CertPolicy(cert_validity=90 * DAY, ca_validity=900 * DAY, overlap=DAY)
REPO = Path(__file__).resolve().parents[2]


def test_the_daemon_loads_certificate_issuing_only_when_it_manages_a_certificate() -> None:
    """cryptography's x509 and key code is ~13 MiB resident: a daemon given its certificate
    files, or serving no metrics API, must not load it (redis-py imports the bare package, which
    holds none of that, to see whether it is installed)."""
    code = textwrap.dedent(
        """
        import sys
        import scaler.cli, scaler.service, scaler.commands.run, scalers.redis_lists
        heavy = ("cryptography.x509", "cryptography.hazmat")
        print(",".join(sorted(m for m in sys.modules if m.startswith(heavy))) or "none")
        import scaler.certmanager
        print("x509" if "cryptography.x509" in sys.modules else "none")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    before, after = out.stdout.splitlines()
    assert before == "none"
    assert after == "x509"


def _cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def _verifies(m: CertMaterial, bundle: str, at: float) -> bool:
    """Would a client trusting `bundle` accept `m.cert` at time `at` (signature and dates)?"""
    cert = _cert(m.cert)
    when = dt.datetime.fromtimestamp(at, dt.UTC)
    if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
        return False
    for ca in x509.load_pem_x509_certificates(bundle.encode()):
        try:
            cert.verify_directly_issued_by(ca)
        except Exception:
            continue
        if ca.not_valid_before_utc <= when <= ca.not_valid_after_utc:
            return True
    return False


def _settle(m: CertMaterial | None, now: float) -> tuple[CertMaterial, list[str]]:
    reasons = []
    for _ in range(5):
        change = plan(m, HOSTS, now, POLICY)
        if change is None:
            assert m is not None
            return m, reasons
        m, reasons = change.material, [*reasons, change.reason]
    raise AssertionError(f"plan did not settle: {reasons}")


def test_service_hosts_are_the_four_dns_names() -> None:
    assert service_hosts("tidal-system/tidal-metrics-api") == (
        "tidal-metrics-api",
        "tidal-metrics-api.tidal-system",
        "tidal-metrics-api.tidal-system.svc",
        "tidal-metrics-api.tidal-system.svc.cluster.local",
    )


@pytest.mark.parametrize(
    "bad", [pytest.param("noslash", id="no-slash"), pytest.param("a/b/c", id="two-slashes")]
)
def test_service_must_be_namespace_slash_name(bad: str) -> None:
    with pytest.raises(ConfigError):
        service_hosts(bad)


def test_created_material_is_a_ca_and_a_serving_cert_for_the_hosts() -> None:
    change = plan(None, HOSTS, T0, POLICY)
    assert change is not None
    assert change.reason == "created"
    m = change.material
    cert, ca = _cert(m.cert), _cert(m.bundle)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == list(HOSTS)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert cert.not_valid_after_utc.timestamp() == T0 + POLICY.cert_validity
    assert _verifies(m, m.bundle, T0)
    assert plan(m, HOSTS, T0 + 1, POLICY) is None
    assert "PRIVATE" not in repr(m)


@pytest.mark.parametrize(
    ("elapsed_fraction", "renewed"),
    [
        pytest.param(0.5, False, id="half-left"),
        pytest.param(0.66, False, id="just-over-a-third-left"),
        pytest.param(0.68, True, id="under-a-third-left"),
    ],
)
def test_serving_cert_is_renewed_when_a_third_of_its_life_is_left(
    elapsed_fraction: float, renewed: bool
) -> None:
    m, _ = _settle(None, T0)
    now = T0 + elapsed_fraction * POLICY.cert_validity
    change = plan(m, HOSTS, now, POLICY)
    assert (change is not None and change.reason == "cert-renewed") is renewed
    if change is not None:
        assert change.material.bundle == m.bundle  # same CA: nothing for the aggregator to learn
        assert _verifies(change.material, m.bundle, now)


def test_other_hosts_reissue_the_cert_at_once() -> None:
    m, _ = _settle(None, T0)
    change = plan(m, service_hosts("other/tidal"), T0 + 10, POLICY)
    assert change is not None
    assert change.reason == "cert-reissued"


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda m: CertMaterial("junk", m.ca_key, m.cert, m.key), id="bundle-junk"),
        pytest.param(
            lambda m: CertMaterial(m.bundle, m.ca_key, m.cert, new_material(HOSTS, T0, POLICY).key),
            id="key-of-another-cert",
        ),
        pytest.param(
            lambda m: CertMaterial(new_material(HOSTS, T0, POLICY).bundle, m.ca_key, m.cert, m.key),
            id="ca-of-another-key",
        ),
    ],
)
def test_unusable_material_is_replaced(corrupt: object) -> None:
    m, _ = _settle(None, T0)
    assert callable(corrupt)
    change = plan(corrupt(m), HOSTS, T0 + 5, POLICY)
    assert change is not None
    assert change.reason == "replaced-invalid"


def test_empty_secret_data_is_no_material() -> None:
    assert CertMaterial.from_secret_data({}) is None
    assert CertMaterial.from_secret_data({"ca.crt": "", "tls.crt": "x"}) is None


def test_a_ca_lifetime_never_leaves_the_aggregator_unable_to_verify() -> None:
    """Hour by hour... (coarsely: every 6 h) across 1.2 CA lifetimes, applying every decision
    at once and giving the aggregator the bundle only one step later (it lags the Secret)."""
    m, reasons = _settle(None, T0)
    aggregator_bundle = m.bundle
    seen: list[str] = list(reasons)
    now = T0
    while now < T0 + 1.2 * POLICY.ca_validity:
        now += 6 * 3600
        change = plan(m, HOSTS, now, POLICY)
        if change is not None:
            # The serving cert just written must already verify against the bundle the
            # aggregator had before this write (a CA change goes first, alone).
            if change.material.cert != m.cert:
                assert _verifies(change.material, aggregator_bundle, now), change.reason
            m = change.material
            seen.append(change.reason)
        assert _verifies(m, aggregator_bundle, now)
        aggregator_bundle = m.bundle
    assert "ca-rotated" in seen
    assert "cert-resigned" in seen
    assert "ca-retired" in seen
    assert seen.count("cert-renewed") >= 5
    i = seen.index("ca-rotated")
    assert seen[i : i + 3] == ["ca-rotated", "cert-resigned", "ca-retired"]
    assert len(ca_certificates(m)) == 1


def test_a_new_ca_signs_only_after_the_overlap() -> None:
    m, _ = _settle(None, T0)
    rotate_at = T0 + (2 / 3) * POLICY.ca_validity + DAY
    # bring the serving cert up to date first, so only the CA is due
    m, _ = _settle(m, rotate_at - 2 * DAY)
    change = plan(m, HOSTS, rotate_at, POLICY)
    assert change is not None
    assert change.reason == "ca-rotated"
    rotated = change.material
    assert len(ca_certificates(rotated)) == 2
    assert rotated.cert == m.cert
    assert plan(rotated, HOSTS, rotate_at + POLICY.overlap / 2, POLICY) is None
    assert next_check(rotated, rotate_at, POLICY) <= rotate_at + POLICY.overlap + 1
    resigned = plan(rotated, HOSTS, rotate_at + POLICY.overlap + 1, POLICY)
    assert resigned is not None
    assert resigned.reason == "cert-resigned"
    after = rotate_at + POLICY.overlap + 1
    assert plan(resigned.material, HOSTS, after + POLICY.overlap / 2, POLICY) is None
    retired = plan(resigned.material, HOSTS, after + POLICY.overlap + 1, POLICY)
    assert retired is not None
    assert retired.reason == "ca-retired"
    assert ca_certificates(retired.material) == ca_certificates(rotated)[:1]


def test_next_check_is_the_renewal_time_or_a_day_at_most() -> None:
    m, _ = _settle(None, T0)
    renew = T0 + (2 / 3) * POLICY.cert_validity
    assert next_check(m, T0 + POLICY.overlap + 1, POLICY) == T0 + POLICY.overlap + 1 + DAY
    assert abs(next_check(m, renew - 3600, POLICY) - renew) < 2 * 300
    assert next_check(m, renew + 1, POLICY) > renew + 1
