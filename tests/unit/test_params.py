"""Typed trigger metadata: sources, defaults, conversions, every problem at once, redaction."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pytest

from scaler.contract import TriggerContext
from scaler.errors import ConfigError
from scaler.params import Config, Param, parse, parse_maps, redact

PARAMS = (
    Param("listName", required=True),
    Param("listLength", "int", default=5, above=0),
    Param("ratio", "float", minimum=0),
    Param("enabled", "bool", default=False),
    Param("hosts", "list", aliases=("host",)),
    Param("headers", "map"),
    Param("timeout", "duration"),
    Param("mode", default="a", allowed=("a", "b")),
    Param("password", secret=True),
    Param("region", sources=("auth", "metadata")),
)


def _parse(
    metadata: Mapping[str, str],
    auth: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    return parse_maps(PARAMS, metadata=metadata, auth_params=auth, resolved_env=env)


def _problems(
    metadata: Mapping[str, str],
    auth: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as info:
        _parse(metadata, auth, env)
    return info.value.problems


def test_defaults_apply_when_absent() -> None:
    config = _parse({"listName": "jobs"})
    assert config.get_str("listName") == "jobs"
    assert config.get_int("listLength") == 5
    assert config.get_bool("enabled") is False
    assert config.get_str("mode") == "a"
    assert config.opt_float("ratio") is None
    assert config.get_list("hosts") == ()
    assert dict(config.get_map("headers")) == {}
    assert config.source_of("listLength") == "default"
    assert not config.has("listLength")
    assert config.has("listName")


@pytest.mark.parametrize(
    ("metadata", "name", "getter", "expected"),
    [
        pytest.param({"listLength": " 12 "}, "listLength", "get_int", 12, id="int-trimmed"),
        pytest.param({"listLength": "+7"}, "listLength", "get_int", 7, id="int-plus-sign"),
        pytest.param({"ratio": "2.5"}, "ratio", "get_float", 2.5, id="float"),
        pytest.param({"ratio": "1e3"}, "ratio", "get_float", 1000.0, id="float-exponent"),
        pytest.param({"enabled": "true"}, "enabled", "get_bool", True, id="bool-true"),
        pytest.param({"enabled": "T"}, "enabled", "get_bool", True, id="bool-go-T"),
        pytest.param({"enabled": "0"}, "enabled", "get_bool", False, id="bool-zero"),
        pytest.param({"enabled": "FALSE"}, "enabled", "get_bool", False, id="bool-upper"),
        pytest.param({"hosts": "a, b,,c "}, "hosts", "get_list", ("a", "b", "c"), id="list"),
        pytest.param({"host": "a"}, "hosts", "get_list", ("a",), id="list-alias"),
        pytest.param({"timeout": "1500"}, "timeout", "get_duration", 1.5, id="duration-ms"),
        pytest.param({"timeout": "30s"}, "timeout", "get_duration", 30.0, id="duration-s"),
        pytest.param({"timeout": "1m30s"}, "timeout", "get_duration", 90.0, id="duration-m-s"),
        pytest.param({"timeout": "250ms"}, "timeout", "get_duration", 0.25, id="duration-go-ms"),
        pytest.param({"timeout": "1.5h"}, "timeout", "get_duration", 5400.0, id="duration-h"),
        pytest.param({"mode": "b"}, "mode", "get_str", "b", id="allowed-value"),
    ],
)
def test_conversions(metadata: dict[str, str], name: str, getter: str, expected: object) -> None:
    config = _parse({"listName": "x", **metadata})
    assert getattr(config, getter)(name) == expected


def test_map_splits_pairs_on_the_first_equals_sign() -> None:
    config = _parse({"listName": "x", "headers": "X-A=1, X-B=a=b,"})
    assert dict(config.get_map("headers")) == {"X-A": "1", "X-B": "a=b"}


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        pytest.param(
            {},
            "missing required parameter 'listName' in [triggerMetadata authParams resolvedEnv]",
            id="missing-required",
        ),
        pytest.param(
            {"listName": "   "},
            "missing required parameter 'listName' in [triggerMetadata authParams resolvedEnv]",
            id="whitespace-is-absent",
        ),
        pytest.param(
            {"listName": "x", "listLength": "abc"},
            "error parsing 'listLength': invalid value 'abc' (expected an integer)",
            id="int-not-a-number",
        ),
        pytest.param(
            {"listName": "x", "listLength": "5.5"},
            "error parsing 'listLength': invalid value '5.5' (expected an integer)",
            id="int-with-fraction",
        ),
        pytest.param(
            {"listName": "x", "listLength": "0"},
            "error parsing 'listLength': invalid value '0' (must be greater than 0)",
            id="int-not-above",
        ),
        pytest.param(
            {"listName": "x", "ratio": "-1"},
            "error parsing 'ratio': invalid value '-1' (must be at least 0)",
            id="float-below-minimum",
        ),
        pytest.param(
            {"listName": "x", "ratio": "nan"},
            "error parsing 'ratio': invalid value 'nan' (expected a finite number)",
            id="float-nan",
        ),
        pytest.param(
            {"listName": "x", "enabled": "yes"},
            "error parsing 'enabled': invalid value 'yes' (expected true or false)",
            id="bool-yes",
        ),
        pytest.param(
            {"listName": "x", "mode": "c"},
            "error parsing 'mode': invalid value 'c' (must be one of [a b])",
            id="not-allowed",
        ),
        pytest.param(
            {"listName": "x", "headers": "novalue"},
            "error parsing 'headers': invalid value 'novalue'"
            " (expected comma-separated key=value pairs)",
            id="map-without-equals",
        ),
        pytest.param(
            {"listName": "x", "timeout": "5 minutes"},
            "error parsing 'timeout': invalid value '5 minutes'"
            " (expected milliseconds or a duration such as 500ms, 30s or 1m30s)",
            id="duration-words",
        ),
    ],
)
def test_invalid_values_are_reported_like_keda(metadata: dict[str, str], problem: str) -> None:
    assert _problems(metadata) == (problem,)


def test_every_problem_is_reported_at_once() -> None:
    problems = _problems({"listLength": "x", "enabled": "maybe", "mode": "z"})
    assert len(problems) == 4
    assert problems[0].startswith("missing required parameter 'listName'")
    assert {p.split("'")[1] for p in problems[1:]} == {"listLength", "enabled", "mode"}


def test_sources_in_order_metadata_then_auth_then_env() -> None:
    both = _parse({"listName": "meta"}, auth={"listName": "auth"})
    assert both.get_str("listName") == "meta"
    assert both.source_of("listName") == "metadata"
    from_auth = _parse({}, auth={"listName": "auth"})
    assert from_auth.get_str("listName") == "auth"
    assert from_auth.source_of("listName") == "auth"
    from_env = _parse({"listNameFromEnv": "QUEUE"}, env={"QUEUE": "from-env"})
    assert from_env.get_str("listName") == "from-env"
    assert from_env.source_of("listName") == "env"


def test_declared_source_order_is_respected() -> None:
    config = _parse({"listName": "x", "region": "meta"}, auth={"region": "auth"})
    assert config.get_str("region") == "auth"


def test_from_env_naming_a_missing_variable_is_explained() -> None:
    problems = _problems({"listNameFromEnv": "NOPE"}, env={})
    assert problems == (
        "missing required parameter 'listName' in [triggerMetadata authParams resolvedEnv]"
        " ('listNameFromEnv' names 'NOPE', which the target container's env does not set)",
    )


def test_from_env_missing_for_optional_param_is_a_warning() -> None:
    config = _parse({"listName": "x", "ratioFromEnv": "R"}, env={})
    assert config.opt_float("ratio") is None
    assert config.warnings == (
        "'ratioFromEnv' names 'R', which the target container's env does not set",
    )


def test_unknown_keys_are_listed_not_raised() -> None:
    config = _parse({"listName": "x", "listname": "typo", "hostFromEnv": "H", "bogus": "1"})
    assert config.unknown_keys == ("bogus", "listname")


def test_secret_values_never_appear_in_errors_or_repr() -> None:
    secret = "s3cr3t-Pa55"
    params = (Param("password", secret=True, allowed=("x",)), Param("n", "int"))
    with pytest.raises(ConfigError) as info:
        parse_maps(params, metadata={"n": secret}, auth_params={"password": secret})
    text = str(info.value)
    assert secret not in text
    assert "error parsing 'password': invalid value <redacted>" in text
    assert "error parsing 'n': invalid value '<redacted>'" in text
    config = _parse({"listName": "x"}, auth={"password": secret})
    assert secret not in repr(config)
    assert "<redacted>" in repr(config)
    assert config.get_str("password") == secret
    assert config.secret_values() == (secret,)


def test_redact_replaces_longest_secrets_first() -> None:
    assert redact("pw=abcdef and abc", ["abc", "abcdef", ""]) == "pw=<redacted> and <redacted>"


def test_deprecated_parameter_present_is_an_error() -> None:
    params = (Param("type", deprecated="use metricType"),)
    with pytest.raises(ConfigError) as info:
        parse_maps(params, metadata={"type": "Utilization"})
    assert info.value.problems == ("parameter 'type' is deprecated: use metricType",)
    assert parse_maps(params, metadata={}).opt_str("type") is None


def test_validate_hook_runs_only_after_fields_parse_and_gets_the_trigger() -> None:
    seen: list[str] = []

    def validate(config: Config, trigger: TriggerContext) -> Iterable[str]:
        seen.append(trigger.type)
        return [f"{config.get_str('listName')} is not allowed here"]

    trigger = TriggerContext("ns", "so", 0, "demo", "", {"listName": "q"})
    with pytest.raises(ConfigError) as info:
        parse(PARAMS, trigger, validate)
    assert info.value.problems == ("q is not allowed here",)
    assert seen == ["demo"]
    bad = TriggerContext("ns", "so", 0, "demo", "", {"listName": "q", "listLength": "-"})
    with pytest.raises(ConfigError):
        parse(PARAMS, bad, validate)
    assert seen == ["demo"]


def test_config_is_immutable_and_typed() -> None:
    config = _parse({"listName": "x"})
    with pytest.raises(AttributeError):
        config.unknown_keys = ()
    with pytest.raises(TypeError):
        config.get_int("listName")
    with pytest.raises(KeyError):
        config.get_str("undeclared")
    with pytest.raises(KeyError):
        config.get_float("ratio")


def test_param_declaration_errors_are_caught_early() -> None:
    with pytest.raises(ValueError, match="unknown parameter type"):
        Param("x", "decimal")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="required and has a default"):
        Param("x", required=True, default="y")
