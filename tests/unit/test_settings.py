"""Flags and environment variables of `tidal run`, and the CLI's top-level commands."""

from __future__ import annotations

import pytest

from scaler.cli import main
from scaler.commands.run_flags import settings_from_args


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
        pytest.param(
            {"TIDAL_LEADER_ELECT": "F"}, ("leader", "enabled"), False, id="leader-elect-go-bool"
        ),
        pytest.param(
            {"KEDA_OPERATOR_LEADER_ELECTION_LEASE_DURATION": "1m"},
            ("leader", "lease_duration"),
            60.0,
            id="keda-lease-duration-go-minutes",
        ),
        pytest.param(
            {"KEDA_OPERATOR_LEADER_ELECTION_RENEW_DEADLINE": "1m30s"},
            ("leader", "renew_deadline"),
            90.0,
            id="keda-renew-deadline-go-compound",
        ),
        pytest.param(
            {"KEDA_OPERATOR_LEADER_ELECTION_RETRY_PERIOD": "500ms"},
            ("leader", "retry_period"),
            0.5,
            id="keda-retry-period-go-ms",
        ),
        pytest.param(
            {"KEDA_OPERATOR_LEADER_ELECTION_LEASE_DURATION": "20"},
            ("leader", "lease_duration"),
            20.0,
            id="plain-number-is-seconds",
        ),
    ],
)
def test_environment(env: dict[str, str], field: tuple[str, str], expected: object) -> None:
    s = settings_from_args([], env=env)
    assert getattr(getattr(s, field[0]), field[1]) == expected


def test_flags_win_over_environment() -> None:
    s = settings_from_args(
        ["--watch-namespace", "b", "--http-timeout-ms", "250", "--leader-elect", "false"],
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
    ("argv", "env", "text"),
    [
        pytest.param(
            ["--leader-elect=flase"],
            {},
            "argument --leader-elect: invalid boolean 'flase'",
            id="flag-typo",
        ),
        pytest.param(
            ["--leader-elect", "yes"],
            {},
            "argument --leader-elect: invalid boolean 'yes'",
            id="flag-yes",
        ),
        pytest.param(
            [],
            {"TIDAL_LEADER_ELECT": "flase"},
            "argument --leader-elect: invalid boolean 'flase'",
            id="env-typo",
        ),
        pytest.param(
            ["--lease-duration", "1x"],
            {},
            "argument --lease-duration: invalid duration '1x'",
            id="flag-duration",
        ),
        pytest.param(
            [],
            {"KEDA_OPERATOR_LEADER_ELECTION_RETRY_PERIOD": "soon"},
            "argument --retry-period: invalid duration 'soon'",
            id="env-duration",
        ),
        pytest.param(
            [],
            {"KEDA_HTTP_DEFAULT_TIMEOUT": "3s"},
            "argument --http-timeout-ms: invalid int value: '3s'",
            id="env-int",
        ),
    ],
)
def test_bad_values_are_usage_errors_never_defaults(
    argv: list[str], env: dict[str, str], text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        settings_from_args(argv, env=env)
    assert exc.value.code == 2
    assert text in capsys.readouterr().err


def test_flag_duration_accepts_go_syntax() -> None:
    s = settings_from_args(["--lease-duration", "1m", "--renew-deadline", "45"], env={})
    assert (s.leader.lease_duration, s.leader.renew_deadline) == (60.0, 45.0)


@pytest.mark.parametrize(
    "env",
    [
        pytest.param({"KEDA_OPERATOR_LEADER_ELECTION_LEASE_DURATION": "1m"}, id="go-duration"),
        pytest.param({"KEDA_OPERATOR_LEADER_ELECTION_LEASE_DURATION": "soon"}, id="bad-duration"),
        pytest.param({"TIDAL_LEADER_ELECT": "flase"}, id="bad-bool"),
    ],
)
def test_run_help_whatever_the_environment(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["run", "--help"]) == 0
    assert "--lease-duration" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "code", "text"),
    [
        pytest.param(["version"], 0, "tidal 0.1.0", id="version"),
        pytest.param([], 2, "usage: tidal COMMAND", id="no-command"),
        pytest.param(["--help"], 0, "run        run the daemon", id="help-lists-commands"),
        pytest.param(["frobnicate"], 2, "unknown command 'frobnicate'", id="unknown-command"),
        pytest.param(["run", "--help"], 0, "--watch-namespace", id="run-help-lists-flags"),
    ],
)
def test_cli(argv: list[str], code: int, text: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == code
    out = capsys.readouterr()
    assert text in out.out + out.err
