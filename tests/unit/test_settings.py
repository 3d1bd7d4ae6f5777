"""Flags and environment variables of `tidal run`, and the CLI's top-level commands."""

from __future__ import annotations

import pytest

from scaler.cli import main
from scaler.settings import settings_from_args


def test_defaults_match_keda() -> None:
    s = settings_from_args([], env={})
    assert s.leader.enabled is True
    assert (s.leader.lease_duration, s.leader.renew_deadline, s.leader.retry_period) == (
        15.0,
        10.0,
        2.0,
    )
    assert s.poll.http_timeout == 3.0
    assert s.watch.namespace == ""
    assert s.watch.cluster_object_namespace == "tidal-system"
    assert s.serve.api_address == ""
    assert s.serve.allowed_names == ("front-proxy-client",)


@pytest.mark.parametrize(
    ("env", "field", "expected"),
    [
        pytest.param(
            {"WATCH_NAMESPACE": "team-a"},
            ("watch", "namespace"),
            "team-a",
            id="keda-watch-namespace",
        ),
        pytest.param(
            {"KEDA_HTTP_DEFAULT_TIMEOUT": "1500"},
            ("poll", "http_timeout"),
            1.5,
            id="keda-http-timeout-ms",
        ),
        pytest.param(
            {"KEDA_OPERATOR_LEADER_ELECTION_LEASE_DURATION": "30s"},
            ("leader", "lease_duration"),
            30.0,
            id="keda-lease-duration-with-unit",
        ),
        pytest.param(
            {"POD_NAMESPACE": "ops"},
            ("watch", "cluster_object_namespace"),
            "ops",
            id="pod-namespace-for-cluster-auth",
        ),
        pytest.param(
            {"KEDA_CLUSTER_OBJECT_NAMESPACE": "keda", "POD_NAMESPACE": "ops"},
            ("watch", "cluster_object_namespace"),
            "keda",
            id="keda-cluster-object-namespace-wins",
        ),
        pytest.param(
            {"POD_NAME": "tidal-0"}, ("leader", "identity"), "tidal-0", id="pod-name-is-identity"
        ),
        pytest.param(
            {"TIDAL_LEADER_ELECT": "false"}, ("leader", "enabled"), False, id="leader-election-off"
        ),
    ],
)
def test_environment(env: dict[str, str], field: tuple[str, str], expected: object) -> None:
    s = settings_from_args([], env=env)
    assert getattr(getattr(s, field[0]), field[1]) == expected


def test_flags_win_over_environment() -> None:
    s = settings_from_args(
        ["--watch-namespace", "b", "--http-timeout-ms", "250", "--leader-elect", "no"],
        env={"WATCH_NAMESPACE": "a", "KEDA_HTTP_DEFAULT_TIMEOUT": "9000"},
    )
    assert s.watch.namespace == "b"
    assert s.poll.http_timeout == 0.25
    assert s.leader.enabled is False


def test_bad_flag_value_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        settings_from_args(["--log-format", "xml"], env={})
    assert exc.value.code == 2
    assert "invalid choice: 'xml'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "code", "text"),
    [
        pytest.param(["version"], 0, "tidal 0.1.0", id="version"),
        pytest.param([], 2, "usage: tidal run", id="no-command"),
        pytest.param(["frobnicate"], 2, "unknown command 'frobnicate'", id="unknown-command"),
        pytest.param(["run", "--help"], 0, "--watch-namespace", id="run-help-lists-flags"),
    ],
)
def test_cli(argv: list[str], code: int, text: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == code
    out = capsys.readouterr()
    assert text in out.out + out.err
