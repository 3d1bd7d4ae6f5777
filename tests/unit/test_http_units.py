"""The HTTP interceptor's pure parts: routing, backend discovery, the push stream's coalescing,
the backend client's answer-head parsing, and the HTTPScaledObject -> ScaledObject mapping."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from multidict import CIMultiDict

from scaler.http_objects import scaled_object_for
from scalers.http.backends import BackendIndex
from scalers.http.feed import parse_addresses
from scalers.http.routes import RouteTable, ServiceRef, parse_duration, parse_route
from scalers.http.stats import RequestStats
from scalers.http.upstream import BackendError, _parse_head
from tests.http_examples import ADDON_DOC_EXAMPLE


def hso(name: str, hosts: list[str] | None, prefixes: list[str] | None = None, **spec: Any) -> Any:
    body: dict[str, Any] = {
        "metadata": {"namespace": "ns", "name": name, "uid": f"uid-{name}", "generation": 1},
        "spec": {"scaleTargetRef": {"name": name, "service": name, "port": 80}, **spec},
    }
    if hosts is not None:
        body["spec"]["hosts"] = hosts
    if prefixes is not None:
        body["spec"]["pathPrefixes"] = prefixes
    return body


@pytest.fixture
def table() -> RouteTable:
    t = RouteTable()
    t.put(parse_route(hso("exact", ["foo.bar.example.com"])))
    t.put(parse_route(hso("exact-api", ["foo.bar.example.com"], ["/api"])))
    t.put(parse_route(hso("wild", ["*.example.com"])))
    t.put(parse_route(hso("wild-deeper", ["*.bar.example.com"])))
    t.put(parse_route(hso("any", None)))
    return t


@pytest.mark.parametrize(
    ("host", "path", "expected"),
    [
        pytest.param("foo.bar.example.com", "/", "exact", id="exact-host"),
        pytest.param("FOO.bar.example.com:8080", "/x", "exact", id="case-and-port-ignored"),
        pytest.param("foo.bar.example.com", "/api/v1", "exact-api", id="longest-prefix"),
        pytest.param("foo.bar.example.com", "/api", "exact-api", id="prefix-itself"),
        pytest.param("foo.bar.example.com", "/apix", "exact-api", id="plain-string-prefix"),
        pytest.param("x.bar.example.com", "/", "wild-deeper", id="longer-wildcard"),
        pytest.param("x.example.com", "/", "wild", id="wildcard"),
        pytest.param("example.com", "/", "any", id="wildcard-needs-a-label"),
        pytest.param("elsewhere.org", "/", "any", id="catch-all"),
    ],
)
def test_routing_precedence(table: RouteTable, host: str, path: str, expected: str) -> None:
    route = table.match(host, path)
    assert route is not None
    assert route.key == ("ns", expected)


def test_no_catch_all_means_404_and_deleted_routes_stop_matching() -> None:
    t = RouteTable()
    t.put(parse_route(hso("a", ["a.example"], ["/only"])))
    assert t.match("a.example", "/other") is None
    assert t.match("b.example", "/only") is None
    t.delete(("ns", "a"))
    assert t.match("a.example", "/only") is None
    assert len(t) == 0


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        pytest.param({"scaleTargetRef": {"name": "x", "port": 80}}, "service", id="no-service"),
        pytest.param(
            {"scaleTargetRef": {"name": "x", "service": "s"}}, "exactly one", id="no-port"
        ),
        pytest.param(
            {"scaleTargetRef": {"service": "s", "port": 80, "portName": "http"}},
            "exactly one",
            id="both-ports",
        ),
    ],
)
def test_a_malformed_route_carries_its_problem(spec: dict[str, Any], problem: str) -> None:
    route = parse_route({"metadata": {"namespace": "ns", "name": "x"}, "spec": spec})
    assert any(problem in p for p in route.problems)


def test_wait_comes_from_condition_wait_or_the_failover_timeout() -> None:
    assert parse_route(hso("a", ["a"])).wait == 20.0
    assert parse_route(hso("a", ["a"], timeouts={"conditionWait": "1m30s"})).wait == 90.0
    failover = {"service": "f", "port": 80, "timeoutSeconds": 3}
    route = parse_route(hso("a", ["a"], coldStartTimeoutFailoverRef=failover))
    assert route.wait == 3.0
    assert route.failover == ServiceRef("ns", "f", 80, None)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("500ms", 0.5, id="ms"),
        pytest.param("2m", 120.0, id="minutes"),
        pytest.param("1h1s", 3601.0, id="mixed"),
        pytest.param(7, 7.0, id="number"),
        pytest.param("soon", 9.0, id="garbage-default"),
        pytest.param("5x", 9.0, id="bad-unit-default"),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text, 9.0) == seconds


def _service(target: object, selector: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": "web"},
        "spec": {
            "selector": {"app": "web"} if selector is None else selector,
            "ports": [{"name": "http", "port": 80, "targetPort": target}],
        },
    }


def _pod(name: str, ip: str, ready: bool = True, **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": name, "labels": labels or {"app": "web"}},
        "spec": {"containers": [{"name": "c", "ports": [{"name": "web", "containerPort": 9000}]}]},
        "status": {
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


REF = ServiceRef("ns", "web", 80, None)


def test_ready_pods_of_the_selector_are_backends_on_the_target_port() -> None:
    changed: list[str] = []
    index = BackendIndex(changed.append)
    index.set_service(_service(8080))
    index.set_pod(_pod("a", "127.1.0.2"))
    index.set_pod(_pod("b", "127.1.0.3", ready=False))
    index.set_pod(_pod("c", "127.1.0.4", app="other"))
    assert index.addresses(REF) == (("127.1.0.2", 8080),)
    index.set_pod(_pod("b", "127.1.0.3"))
    assert index.addresses(REF) == (("127.1.0.2", 8080), ("127.1.0.3", 8080))
    index.set_pod(_pod("a", "127.1.0.2"), deleted=True)
    assert index.addresses(REF) == (("127.1.0.3", 8080),)
    assert changed
    assert set(changed) == {"ns"}


def test_a_named_target_port_is_the_pods_container_port() -> None:
    index = BackendIndex()
    index.set_service(_service("web"))
    index.set_pod(_pod("a", "127.1.0.2"))
    assert index.addresses(REF) == (("127.1.0.2", 9000),)
    assert index.addresses(ServiceRef("ns", "web", None, "http")) == (("127.1.0.2", 9000),)
    assert index.addresses(ServiceRef("ns", "web", 81, None)) == ()


def test_endpoint_slices_give_ready_endpoints_on_the_named_port() -> None:
    index = BackendIndex()
    index.set_service(_service(8080, selector={}))
    piece = {
        "metadata": {
            "namespace": "ns",
            "name": "web-abc",
            "labels": {"kubernetes.io/service-name": "web"},
        },
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [
            {"addresses": ["10.0.0.1"], "conditions": {"ready": True}},
            {"addresses": ["10.0.0.2"], "conditions": {"ready": False}},
            {"addresses": ["10.0.0.3"]},
        ],
    }
    index.set_slice(piece)
    assert index.addresses(REF) == (("10.0.0.1", 8080), ("10.0.0.3", 8080))
    index.set_slice(piece, deleted=True)
    assert index.addresses(REF) == ()


async def test_the_push_stream_coalesces_a_burst_and_counts_every_arrival() -> None:
    stats = RequestStats("r1")
    stream = stats.stream()
    hello = await anext(stream)
    assert b'"hello":"r1"' in hello
    key = ("ns", "web")
    for _ in range(10_000):
        stats.started(key)
    chunk = await anext(stream)
    lines = chunk.splitlines()
    assert len(lines) == 1  # 10,000 arrivals, one line
    assert lines[0] == b'{"k":"ns/web","i":10000,"a":10000}'
    for _ in range(10_000):
        stats.finished(key)
    assert await anext(stream) == b'{"k":"ns/web","i":0,"a":0}\n'
    assert stats.idle.is_set()
    stats.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(stream), 1)


def test_interceptor_addresses() -> None:
    assert parse_addresses(["a.b.svc:9090", "[::1]:1"]) == [("a.b.svc", 9090), ("::1", 1)]
    with pytest.raises(ValueError, match="not host:port"):
        parse_addresses(["nohost"])


def test_the_addon_example_maps_to_a_scaled_object() -> None:
    example = copy.deepcopy(ADDON_DOC_EXAMPLE)
    example["metadata"].update(namespace="ns", uid="u1")
    so, problems = scaled_object_for(example, ["tidal-interceptor-admin.tidal:9090"])
    assert problems == []
    spec = so["spec"]
    assert spec["scaleTargetRef"] == {"name": "xkcd", "kind": "Deployment", "apiVersion": "apps/v1"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"], spec["cooldownPeriod"]) == (
        5,
        10,
        300,
    )
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "http"
    assert trigger["metadata"] == {
        "interceptors": "tidal-interceptor-admin.tidal:9090",
        "httpScaledObject": "xkcd",
        "metric": "requestRate",
        "targetValue": "100",
        "window": "1m",
        "granularity": "1s",
    }
    (owner,) = so["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("HTTPScaledObject", "u1", True)


@pytest.mark.parametrize(
    ("spec", "metric", "target"),
    [
        pytest.param({}, "concurrency", "100", id="default"),
        pytest.param({"targetPendingRequests": 7}, "concurrency", "7", id="deprecated-field"),
        pytest.param(
            {"scalingMetric": {"concurrency": {"targetValue": 3}}}, "concurrency", "3", id="set"
        ),
    ],
)
def test_concurrency_targets(spec: dict[str, Any], metric: str, target: str) -> None:
    so, _ = scaled_object_for(hso("a", ["a"], **spec), ["i:1"])
    meta = so["spec"]["triggers"][0]["metadata"]
    assert (meta["metric"], meta["targetValue"]) == (metric, target)
    assert (so["spec"]["minReplicaCount"], so["spec"]["cooldownPeriod"]) == (0, 300)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({}, "plain", id="no-headers-fallback"),
        pytest.param({"X-Team": "b"}, "team-any", id="presence"),
        pytest.param({"x-team": "a"}, "team-a", id="value-beats-presence-case-insensitive"),
        pytest.param({"X-Team": "a", "X-Canary": "1"}, "team-a-canary", id="more-headers-win"),
    ],
)
def test_routing_by_headers(headers: dict[str, str], expected: str) -> None:
    t = RouteTable()
    t.put(parse_route(hso("plain", ["h"])))
    t.put(parse_route(hso("team-any", ["h"], headers=[{"name": "X-Team"}])))
    t.put(parse_route(hso("team-a", ["h"], headers=[{"name": "X-Team", "value": "a"}])))
    both = [{"name": "X-Team", "value": "a"}, {"name": "X-Canary"}]
    t.put(parse_route(hso("team-a-canary", ["h"], headers=both)))
    route = t.match("h", "/", CIMultiDict(headers))
    assert route is not None
    assert route.key == ("ns", expected)


def test_a_longer_prefix_beats_a_header_match() -> None:
    t = RouteTable()
    t.put(parse_route(hso("api", ["h"], ["/api"])))
    t.put(parse_route(hso("canary", ["h"], ["/"], headers=[{"name": "X-Canary"}])))
    route = t.match("h", "/api/x", {"X-Canary": "1"})
    assert route is not None
    assert route.key == ("ns", "api")
    t.delete(("ns", "api"))
    t.put(parse_route(hso("only-headers", ["h"], headers=[{"name": "X-Needed"}])))
    t.delete(("ns", "canary"))
    assert t.match("h", "/", {}) is None  # headers required, no fallback: no route


@pytest.mark.parametrize(
    ("raw", "method", "expected"),
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n",
            "GET",
            (200, "OK", 12, False, True),
            id="length-keep-alive",
        ),
        pytest.param(
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST",
            (201, "Created", None, True, True),
            id="chunked",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
            "GET",
            (200, "OK", 1, False, False),
            id="connection-close",
        ),
        pytest.param(
            b"HTTP/1.0 200 OK\r\n\r\n", "GET", (200, "OK", None, False, False), id="until-eof"
        ),
        pytest.param(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            "GET",
            (200, "OK", 0, False, True),
            id="http10-keep-alive",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",
            "HEAD",
            (200, "OK", 0, False, True),
            id="head-has-no-body",
        ),
        pytest.param(
            b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET",
            (304, "Not Modified", 0, False, True),
            id="304-has-no-body",
        ),
    ],
)
def test_answer_heads_frame_the_body(
    raw: bytes, method: str, expected: tuple[int, str, int | None, bool, bool]
) -> None:
    head = _parse_head(raw, method)
    assert (head.status, head.reason, head.length, head.chunked, head.keep_alive) == expected


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"SSH-2.0-OpenSSH\r\n\r\n", id="not-http"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", id="bad-length"),
        pytest.param(b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", id="bad-header"),
    ],
)
def test_a_malformed_answer_head_is_a_backend_error(raw: bytes) -> None:
    with pytest.raises(BackendError):
        _parse_head(raw, "GET")


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        pytest.param("pages", ("pages", "template"), id="name-default-key"),
        pytest.param({"name": "pages", "key": "a.html"}, ("pages", "a.html"), id="name-and-key"),
        pytest.param({"key": "a.html"}, None, id="no-name"),
    ],
)
def test_content_config_map_reference(ref: object, expected: tuple[str, str] | None) -> None:
    config = {"enabled": True, "contentConfigMap": ref}
    route = parse_route(hso("page", ["h"], placeholderConfig=config))
    assert route.placeholder is not None
    assert route.placeholder.config_map == expected
