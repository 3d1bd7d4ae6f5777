"""Selector parsing, quantity formatting and error bodies of the external metrics API."""

from __future__ import annotations

import pytest

from metrics_api.app import status_body
from scaler.values import SelectorError, parse_selector

SO = "scaledobject.keda.sh/name"


@pytest.mark.parametrize(
    ("text", "labels", "matches"),
    [
        pytest.param(f"{SO}=web", {SO: "web"}, True, id="equality-match"),
        pytest.param(f"{SO}==web", {SO: "web"}, True, id="double-equals"),
        pytest.param(f"{SO}=web", {SO: "api"}, False, id="equality-mismatch"),
        pytest.param("a!=b", {"a": "c"}, True, id="inequality-other-value"),
        pytest.param("a!=b", {}, True, id="inequality-missing-key"),
        pytest.param("a in (x, y)", {"a": "y"}, True, id="set-in"),
        pytest.param("a notin (x,y)", {"a": "y"}, False, id="set-notin"),
        pytest.param("a", {"a": ""}, True, id="exists"),
        pytest.param("!a", {"a": "1"}, False, id="not-exists"),
        pytest.param(f"{SO}=web,tier in (a,b),!legacy", {SO: "web", "tier": "b"}, True, id="mixed"),
        pytest.param("", {"x": "y"}, True, id="empty-matches-everything"),
    ],
)
def test_selector_matching(text: str, labels: dict[str, str], matches: bool) -> None:
    assert parse_selector(text).matches(labels) is matches


@pytest.mark.parametrize(
    ("text", "value"),
    [
        pytest.param(f"{SO}=web", "web", id="equality"),
        pytest.param(f"{SO} in (web)", "web", id="single-value-set"),
        pytest.param(f"{SO} in (web,api)", None, id="two-values-ambiguous"),
        pytest.param(f"{SO}!=web", None, id="inequality-is-no-name"),
        pytest.param("other=web", None, id="other-key"),
    ],
)
def test_selector_object_name(text: str, value: str | None) -> None:
    assert parse_selector(text).equals_value(SO) == value


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("a=(", id="open-paren"),
        pytest.param("a in (b", id="unclosed-set"),
        pytest.param("=b", id="no-key"),
        pytest.param("a b c", id="garbage"),
        pytest.param("a in (b c)", id="space-in-value"),
        pytest.param("a)", id="stray-close"),
    ],
)
def test_selector_rejects(text: str) -> None:
    with pytest.raises(SelectorError):
        parse_selector(text)


def test_status_body_is_metav1_status() -> None:
    body = status_body(404, "NotFound", "no metric")
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "no metric",
        "reason": "NotFound",
        "code": 404,
    }
