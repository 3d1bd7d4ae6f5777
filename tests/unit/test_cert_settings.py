"""The flags of the managed certificate, the cert directory and the metrics API's authorization."""

from __future__ import annotations

import pytest

from scaler.commands.run_flags import settings_from_args


def test_defaults_are_unmanaged_certificates_and_delegated_authorization() -> None:
    s = settings_from_args([], env={"POD_NAMESPACE": "ops"}).serve
    assert s.cert_secret == ""
    assert s.cert_apiservice == "v1beta1.external.metrics.k8s.io"
    assert s.cert_service == "ops/tidal-metrics-api"
    assert s.cert_dir == ""
    assert s.metrics_authorization == "delegated"
    assert (s.cert_validity, s.cert_ca_validity, s.cert_overlap) == (
        365 * 86400.0,
        5 * 365 * 86400.0,
        600.0,
    )


@pytest.mark.parametrize(
    ("env", "attr", "expected"),
    [
        pytest.param(
            {"TIDAL_CERT_SECRET": "tidal/certs"}, "cert_secret", "tidal/certs", id="secret"
        ),
        pytest.param(
            {"TIDAL_CERT_APISERVICE": "v1.x.example.com"},
            "cert_apiservice",
            "v1.x.example.com",
            id="apiservice",
        ),
        pytest.param({"TIDAL_CERT_SERVICE": "a/b"}, "cert_service", "a/b", id="service"),
        pytest.param({"TIDAL_CERT_DIR": "/run/tidal"}, "cert_dir", "/run/tidal", id="dir"),
        pytest.param({"TIDAL_CERT_VALIDITY": "24h"}, "cert_validity", 86400.0, id="validity"),
        pytest.param({"TIDAL_CERT_OVERLAP": "90s"}, "cert_overlap", 90.0, id="overlap"),
        pytest.param(
            {"TIDAL_METRICS_AUTHORIZATION": "none"}, "metrics_authorization", "none", id="authz"
        ),
    ],
)
def test_environment(env: dict[str, str], attr: str, expected: object) -> None:
    assert getattr(settings_from_args([], env=env).serve, attr) == expected


def test_flag_wins_over_environment() -> None:
    s = settings_from_args(["--cert-secret", "x/y"], env={"TIDAL_CERT_SECRET": "a/b"})
    assert s.serve.cert_secret == "x/y"


def test_an_empty_apiservice_flag_leaves_apiservices_alone() -> None:
    assert settings_from_args(["--cert-apiservice="], env={}).serve.cert_apiservice == ""


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["--cert-secret", "no-namespace"], id="secret-without-namespace"),
        pytest.param(["--cert-service", "a/b/c"], id="service-two-slashes"),
        pytest.param(["--metrics-authorization", "webhook"], id="unknown-authorization"),
        pytest.param(["--cert-validity", "soon"], id="bad-duration"),
    ],
)
def test_bad_values_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        settings_from_args(argv, env={})
    assert exc.value.code == 2
    assert argv[0] in capsys.readouterr().err
