"""scaler.values: the one copy of each Kubernetes / Go value helper, table by table."""

from __future__ import annotations

import math

import pytest

from metrics_api import quantity as metrics_api_quantity
from scaler.values import (
    group_version_string,
    gvk_string,
    milli_quantity,
    parse_bool,
    parse_bool_or,
    parse_duration,
    parse_group_version,
    parse_gvk,
)

# --------------------------------------------------------------------------- quantities


@pytest.mark.parametrize(
    ("value", "quantity"),
    [
        pytest.param(2.0, "2", id="whole"),
        pytest.param(5, "5", id="int"),
        pytest.param(1.5, "1500m", id="fraction"),
        pytest.param(0.1, "100m", id="tenth"),
        # The two values on which Tidal's metrics API and HPA writer used to disagree ("1m" vs
        # "2m", "2" vs "2001m"): KEDA rounds with %.3f (#7534), the apiserver shows the canonical
        # milli spelling.
        pytest.param(0.0015, "2m", id="half-milli-rounds-up"),
        pytest.param(2.0007, "2001m", id="sub-milli-rounds-to-milli"),
        pytest.param(0.0005, "1m", id="binary-above-half"),
        pytest.param(0.0625, "62m", id="exact-tie-to-even"),
        pytest.param(0.0004, "0", id="below-half-milli"),
        pytest.param(123456.789, "123456789m", id="large-fraction"),
        pytest.param(1500, "1500", id="exponent-not-multiple-of-3"),
        pytest.param(2000, "2k", id="kilo"),
        pytest.param(1e6, "1M", id="mega"),
        pytest.param(1.5e6, "1500k", id="lowered-to-multiple-of-3"),
        pytest.param(2e18, "2E", id="exa"),
        pytest.param(0.0, "0", id="zero"),
        pytest.param(-0.0, "0", id="negative-zero"),
        pytest.param(-3.0, "0", id="negative-is-0-keda-7889"),
        pytest.param(math.nan, "0", id="nan"),
        pytest.param(math.inf, "0", id="inf"),
        pytest.param(-math.inf, "0", id="minus-inf"),
    ],
)
def test_milli_quantity(value: float, quantity: str) -> None:
    assert milli_quantity(value) == quantity


def test_metrics_api_serves_the_same_quantity() -> None:
    assert metrics_api_quantity.milli_quantity is milli_quantity


# --------------------------------------------------------------------------- booleans

_GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_GO_FALSE = ("0", "f", "F", "FALSE", "false", "False")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        *(pytest.param(t, True, id=f"true-{t}") for t in _GO_TRUE),
        *(pytest.param(t, False, id=f"false-{t}") for t in _GO_FALSE),
    ],
)
def test_parse_bool_is_strconv(text: str, expected: bool) -> None:
    assert parse_bool(text) is expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("yes", id="yes"),
        pytest.param("on", id="on"),
        pytest.param("tRuE", id="mixed-case"),
        pytest.param("flase", id="typo"),
        pytest.param(" true", id="padded"),
        pytest.param("2", id="two"),
        pytest.param("", id="empty"),
    ],
)
def test_parse_bool_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"strconv\.ParseBool: parsing .*: invalid syntax"):
        parse_bool(text)


@pytest.mark.parametrize(
    ("text", "invalid", "expected"),
    [
        pytest.param("yes", True, True, id="paused-non-bool-is-true"),
        pytest.param("false", True, False, id="paused-false"),
        pytest.param("yes", False, False, id="force-activation-non-bool-is-false"),
        pytest.param("T", False, True, id="force-activation-true"),
    ],
)
def test_parse_bool_or(text: str, invalid: bool, expected: bool) -> None:
    assert parse_bool_or(text, invalid=invalid) is expected


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("300ms", 0.3, id="ms"),
        pytest.param("1.5h", 5400.0, id="fractional-hours"),
        pytest.param("2h45m", 9900.0, id="h-m"),
        pytest.param("1m", 60.0, id="minute"),
        pytest.param("1m30s", 90.0, id="m-s"),
        pytest.param("-1s", -1.0, id="negative"),
        pytest.param("+5s", 5.0, id="plus"),
        pytest.param("0", 0.0, id="bare-zero"),
        pytest.param("-0", 0.0, id="minus-zero"),
        pytest.param(".5s", 0.5, id="leading-dot"),
        pytest.param("1.s", 1.0, id="trailing-dot"),
        pytest.param("10ns", 1e-8, id="ns"),
        pytest.param("1us", 1e-6, id="us"),
        pytest.param("1\u00b5s", 1e-6, id="micro-sign"),
        pytest.param("1\u03bcs", 1e-6, id="greek-mu"),
        pytest.param("1h1m1s1ms", 3661.001, id="every-unit"),
        pytest.param("2562047h", 2562047 * 3600.0, id="just-below-int64"),
    ],
)
def test_parse_duration_is_go(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("", "invalid duration", id="empty"),
        pytest.param("15", "missing unit", id="bare-number"),
        pytest.param("s", "invalid duration", id="unit-only"),
        pytest.param(".s", "invalid duration", id="dot-only"),
        pytest.param("-", "invalid duration", id="sign-only"),
        pytest.param("1x", "unknown unit", id="unknown-unit"),
        pytest.param("1h-5m", 'unknown unit "h-"', id="inner-sign"),
        pytest.param("1.5.5s", "missing unit", id="two-dots"),
        pytest.param(" 1s", "invalid duration", id="padded"),
        pytest.param("2562048h", "invalid duration", id="overflows-int64"),
    ],
)
def test_parse_duration_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "unit", "seconds"),
    [
        pytest.param("500", 1e-3, 0.5, id="keda-trigger-ms"),
        pytest.param("1.5", 1e-3, 0.0015, id="keda-trigger-fraction-ms"),
        pytest.param("15", 1.0, 15.0, id="settings-seconds"),
        pytest.param(".5", 1.0, 0.5, id="settings-leading-dot"),
        pytest.param("1m", 1.0, 60.0, id="unit-still-wins"),
    ],
)
def test_parse_duration_bare_number_unit(text: str, unit: float, seconds: float) -> None:
    assert parse_duration(text, bare_number_unit=unit) == pytest.approx(seconds)


def test_parse_duration_bare_number_unit_is_still_strict() -> None:
    with pytest.raises(ValueError, match="unknown unit"):
        parse_duration("1e3", bare_number_unit=1.0)


# --------------------------------------------------------------------------- group/version/kind


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("apps/v1", ("apps", "v1"), id="group"),
        pytest.param("v1", ("", "v1"), id="core"),
        pytest.param("", ("", ""), id="empty"),
        pytest.param("/", ("", ""), id="slash"),
        pytest.param("argoproj.io/v1alpha1", ("argoproj.io", "v1alpha1"), id="crd"),
    ],
)
def test_parse_group_version(text: str, expected: tuple[str, str]) -> None:
    assert parse_group_version(text) == expected


@pytest.mark.parametrize(
    ("api_version", "kind", "expected"),
    [
        pytest.param("apps/v1", "Deployment", ("apps", "v1", "Deployment"), id="apps-v1"),
        pytest.param("", "", ("apps", "v1", "Deployment"), id="all-defaults"),
        pytest.param("/", "StatefulSet", ("apps", "v1", "StatefulSet"), id="slash-defaults"),
        pytest.param("v1", "ReplicationController", ("", "v1", "ReplicationController"), id="core"),
        pytest.param(
            "argoproj.io/v1alpha1", "Rollout", ("argoproj.io", "v1alpha1", "Rollout"), id="crd"
        ),
    ],
)
def test_parse_gvk(api_version: str, kind: str, expected: tuple[str, str, str]) -> None:
    assert parse_gvk(api_version, kind) == expected


@pytest.mark.parametrize(
    "text", [pytest.param("a/b/c", id="three-parts"), pytest.param("a//b", id="double-slash")]
)
def test_group_version_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="unexpected GroupVersion string"):
        parse_gvk(text, "X")


@pytest.mark.parametrize(
    ("group", "version", "kind", "api_version", "gvk"),
    [
        pytest.param("apps", "v1", "Deployment", "apps/v1", "apps/v1.Deployment", id="group"),
        pytest.param("", "v1", "Pod", "v1", "v1.Pod", id="core"),
    ],
)
def test_gvk_strings(group: str, version: str, kind: str, api_version: str, gvk: str) -> None:
    assert group_version_string(group, version) == api_version
    assert gvk_string(group, version, kind) == gvk
