"""Metadata tables for every built-in scaler: defaults, aliases, FromEnv, auth params, every
invalid input with its exact message, and the HPA metric each trigger produces."""

from __future__ import annotations

from typing import Any

import pytest

from scaler.clients import ClientPool
from scaler.contract import MetricSpec, Scaler, TriggerContext
from scaler.errors import ConfigError, UnsupportedError
from scaler.registry import build_scaler

PEM_GARBAGE = "-----BEGIN CERTIFICATE-----\nnot a cert\n-----END CERTIFICATE-----\n"


def _build(
    kind: str,
    metadata: dict[str, str],
    auth: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    index: int = 0,
    metric_type: str = "AverageValue",
) -> Any:
    trigger = TriggerContext(
        "ns",
        "so",
        index,
        kind,
        "",
        metadata,
        metric_type,  # type: ignore[arg-type]
        auth or {},
        env or {},
    )
    return build_scaler(trigger, ClientPool())


def _problems(
    kind: str,
    metadata: dict[str, str],
    auth: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as info:
        _build(kind, metadata, auth, env)
    return info.value.problems


# -- redis lists -------------------------------------------------------------------------------


def test_redis_defaults() -> None:
    scaler = _build("redis", {"address": "redis:6379", "listName": "jobs"})
    assert scaler.metric_spec() == MetricSpec("s0-redis-jobs", 5.0, "AverageValue")
    target = scaler.target
    assert (target.mode, target.addresses, target.db) == ("single", (("redis", 6379),), 0)
    assert (target.username, target.password, target.tls) == (None, None, None)


@pytest.mark.parametrize(
    ("metadata", "auth", "env", "check"),
    [
        pytest.param(
            {"host": "h", "port": "7000"}, {}, {}, ("addresses", (("h", 7000),)), id="host-port"
        ),
        pytest.param(
            {"addressFromEnv": "REDIS_ADDR"},
            {},
            {"REDIS_ADDR": "from-env:6380"},
            ("addresses", (("from-env", 6380),)),
            id="address-from-env",
        ),
        pytest.param(
            {"hostFromEnv": "H", "portFromEnv": "P"},
            {},
            {"H": "envhost", "P": "1234"},
            ("addresses", (("envhost", 1234),)),
            id="host-port-from-env",
        ),
        pytest.param(
            {}, {"address": "auth:6379"}, {}, ("addresses", (("auth", 6379),)), id="address-auth"
        ),
        pytest.param(
            {"address": "a:1", "passwordFromEnv": "PW"},
            {},
            {"PW": "envpw"},
            ("password", "envpw"),
            id="password-from-env",
        ),
        pytest.param(
            {"address": "a:1"},
            {"password": "authpw"},
            {},
            ("password", "authpw"),
            id="password-auth",
        ),
        pytest.param(
            {"address": "a:1", "username": "u"}, {}, {}, ("username", "u"), id="username-metadata"
        ),
        pytest.param(
            {"address": "a:1", "databaseIndex": "3"}, {}, {}, ("db", 3), id="database-index"
        ),
        pytest.param(
            {"address": "[::1]:6379"}, {}, {}, ("addresses", (("::1", 6379),)), id="ipv6-address"
        ),
    ],
)
def test_redis_connection_sources(
    metadata: dict[str, str], auth: dict[str, str], env: dict[str, str], check: tuple[str, Any]
) -> None:
    scaler = _build("redis", {"listName": "q", **metadata}, auth, env)
    attribute, expected = check
    assert getattr(scaler.target, attribute) == expected


def test_redis_cluster_and_sentinel_targets() -> None:
    cluster = _build("redis-cluster", {"addresses": "a:1, b:2,c:3", "listName": "q"})
    assert cluster.target.mode == "cluster"
    assert cluster.target.addresses == (("a", 1), ("b", 2), ("c", 3))
    sentinel = _build(
        "redis-sentinel",
        {"hosts": "s1,s2", "ports": "26379,26380", "listName": "q", "sentinelMaster": "mymaster"},
        {"sentinelPassword": "sp"},
    )
    assert sentinel.target.mode == "sentinel"
    assert sentinel.target.sentinel_master == "mymaster"
    assert sentinel.target.sentinel_password == "sp"
    assert "sp" not in repr(sentinel.target)


def test_redis_client_key_hides_the_password() -> None:
    a = _build("redis", {"address": "h:1", "listName": "q"}, {"password": "hunter2"})
    b = _build("redis", {"address": "h:1", "listName": "other"}, {"password": "hunter2"})
    c = _build("redis", {"address": "h:1", "listName": "q"}, {"password": "other"})
    assert a.target.key() == b.target.key()
    assert a.target.key() != c.target.key()
    assert "hunter2" not in repr(a.target.key())


@pytest.mark.parametrize(
    ("kind", "metadata", "auth", "problems"),
    [
        pytest.param(
            "redis",
            {"address": "a:1"},
            {},
            ("missing required parameter 'listName' in [triggerMetadata authParams resolvedEnv]",),
            id="no-list-name",
        ),
        pytest.param(
            "redis",
            {"listName": "q"},
            {},
            (
                "no address or host given. address should be in the format of host:port"
                " or you should set the host/port values",
            ),
            id="no-address",
        ),
        pytest.param(
            "redis",
            {"listName": "q", "address": "nohost"},
            {},
            ("invalid address 'nohost': address should be in the format of host:port",),
            id="address-without-port",
        ),
        pytest.param(
            "redis",
            {"listName": "q", "hosts": "a,b", "ports": "1"},
            {},
            (
                "not enough hosts or ports given. number of hosts should be equal to"
                " the number of ports",
            ),
            id="hosts-ports-mismatch",
        ),
        pytest.param(
            "redis",
            {"listName": "q", "address": "a:1", "listLength": "abc"},
            {},
            ("error parsing 'listLength': invalid value 'abc' (expected an integer)",),
            id="list-length-not-int",
        ),
        pytest.param(
            "redis",
            {"listName": "q", "address": "a:1", "listLength": "0"},
            {},
            ("error parsing 'listLength': invalid value '0' (must be greater than 0)",),
            id="list-length-zero",
        ),
        pytest.param(
            "redis",
            {"listName": "q", "address": "a:1", "activationListLength": "-1"},
            {},
            ("error parsing 'activationListLength': invalid value '-1' (must be at least 0)",),
            id="activation-negative",
        ),
        pytest.param(
            "redis",
            {"listName": "q", "address": "a:1", "enableTLS": "maybe"},
            {},
            ("error parsing 'enableTLS': invalid value 'maybe' (expected true or false)",),
            id="enable-tls-not-bool",
        ),
        pytest.param(
            "redis",
            {"listName": "q", "address": "a:1", "enableTLS": "true"},
            {"tls": "enable"},
            ("unable to set `tls` in both ScaledObject and TriggerAuthentication together",),
            id="tls-twice",
        ),
        pytest.param(
            "redis",
            {"listName": "q", "address": "a:1"},
            {"tls": "on"},
            ("error parsing 'tls': invalid value 'on' (must be one of [enable disable])",),
            id="tls-bad-value",
        ),
        pytest.param(
            "redis",
            {"listName": "q", "address": "a:1"},
            {"tls": "enable", "cert": PEM_GARBAGE},
            ("both cert and key must be provided for TLS client authentication",),
            id="cert-without-key",
        ),
        pytest.param(
            "redis",
            {"listName": "q", "address": "a:1"},
            {"tls": "enable", "ca": PEM_GARBAGE},
            ("invalid TLS settings: the CA certificate does not load (SSLError)",),
            id="bad-ca",
        ),
        pytest.param(
            "redis",
            {"listName": "q", "addresses": "a:1,b:2"},
            {},
            ("trigger type 'redis' takes one address, got 2",),
            id="single-two-addresses",
        ),
        pytest.param(
            "redis-sentinel",
            {"listName": "q", "address": "a:26379"},
            {},
            ("missing required parameter 'sentinelMaster' for a sentinel trigger",),
            id="sentinel-without-master",
        ),
        pytest.param(
            "redis-cluster",
            {"listName": "q", "addresses": "a:1", "databaseIndex": "2"},
            {},
            ("databaseIndex is not supported by Redis Cluster (only database 0)",),
            id="cluster-database-index",
        ),
    ],
)
def test_redis_invalid_metadata(
    kind: str, metadata: dict[str, str], auth: dict[str, str], problems: tuple[str, ...]
) -> None:
    assert _problems(kind, metadata, auth) == problems


def test_redis_password_never_in_errors() -> None:
    problems = _problems("redis", {"listName": "q", "address": "hunter2"}, {"password": "hunter2"})
    assert problems == (
        "invalid address '<redacted>': address should be in the format of host:port",
    )


# -- redis streams -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "mode", "target"),
    [
        pytest.param({}, "xlen", 5.0, id="xlen-default"),
        pytest.param({"streamLength": "50"}, "xlen", 50.0, id="xlen-target"),
        pytest.param({"consumerGroup": "g"}, "pending", 5.0, id="pending-default"),
        pytest.param(
            {"consumerGroup": "g", "pendingEntriesCount": "10"}, "pending", 10.0, id="pending"
        ),
        pytest.param({"consumerGroup": "g", "lagCount": "7"}, "lag", 7.0, id="lag"),
    ],
)
def test_redis_streams_modes(metadata: dict[str, str], mode: str, target: float) -> None:
    scaler = _build("redis-streams", {"address": "a:1", "stream": "orders", **metadata}, index=3)
    assert scaler.mode == mode
    assert scaler.metric_spec() == MetricSpec("s3-redis-streams-orders", target, "AverageValue")


@pytest.mark.parametrize(
    ("metadata", "problems"),
    [
        pytest.param(
            {"address": "a:1"},
            ("missing required parameter 'stream' in [triggerMetadata authParams resolvedEnv]",),
            id="no-stream",
        ),
        pytest.param(
            {"address": "a:1", "stream": "s", "lagCount": "0"},
            ("error parsing 'lagCount': invalid value '0' (must be greater than 0)",),
            id="lag-zero",
        ),
        pytest.param(
            {"address": "a:1", "stream": "s", "pendingEntriesCount": "x"},
            ("error parsing 'pendingEntriesCount': invalid value 'x' (expected an integer)",),
            id="pending-not-int",
        ),
        pytest.param(
            {"address": "a:1", "stream": "s", "activationLagCount": "1.5"},
            ("error parsing 'activationLagCount': invalid value '1.5' (expected an integer)",),
            id="activation-not-int",
        ),
    ],
)
def test_redis_streams_invalid_metadata(
    metadata: dict[str, str], problems: tuple[str, ...]
) -> None:
    assert _problems("redis-streams", metadata) == problems


def test_redis_streams_cluster_variant() -> None:
    scaler = _build("redis-cluster-streams", {"addresses": "a:1,b:2", "stream": "s"})
    assert scaler.target.mode == "cluster"


# -- prometheus --------------------------------------------------------------------------------

PROM = {"serverAddress": "http://prom:9090", "query": "sum(up)", "threshold": "10.5"}


def test_prometheus_defaults_and_metric() -> None:
    scaler = _build("prometheus", PROM, index=1, metric_type="Value")
    assert scaler.metric_spec() == MetricSpec("s1-prometheus", 10.5, "Value")


@pytest.mark.parametrize(
    ("metadata", "auth", "problems"),
    [
        pytest.param(
            {"query": "up", "threshold": "1"},
            {},
            (
                "missing required parameter 'serverAddress' in"
                " [triggerMetadata authParams resolvedEnv]",
            ),
            id="no-server",
        ),
        pytest.param(
            {"serverAddress": "http://p", "query": "up"},
            {},
            ("missing required parameter 'threshold' in [triggerMetadata]",),
            id="no-threshold",
        ),
        pytest.param(
            {**PROM, "threshold": "ten"},
            {},
            ("error parsing 'threshold': invalid value 'ten' (expected a number)",),
            id="threshold-not-number",
        ),
        pytest.param(
            {**PROM, "serverAddress": "prom:9090"},
            {},
            ("parameter 'serverAddress' value 'prom:9090' must be an http or https URL",),
            id="server-not-url",
        ),
        pytest.param(
            {**PROM, "ignoreNullValues": "nope"},
            {},
            ("error parsing 'ignoreNullValues': invalid value 'nope' (expected true or false)",),
            id="ignore-null-not-bool",
        ),
        pytest.param(
            {**PROM, "customHeaders": "X-A"},
            {},
            (
                "error parsing 'customHeaders': invalid value 'X-A'"
                " (expected comma-separated key=value pairs)",
            ),
            id="headers-not-pairs",
        ),
        pytest.param(
            {**PROM, "timeout": "soon"},
            {},
            (
                "error parsing 'timeout': invalid value 'soon'"
                " (expected milliseconds or a duration such as 500ms, 30s or 1m30s)",
            ),
            id="timeout-bad",
        ),
        pytest.param(
            {**PROM, "authModes": "basic"},
            {},
            ("no username given (authModes contains 'basic')",),
            id="basic-without-username",
        ),
        pytest.param(
            {**PROM, "authModes": "bearer"},
            {},
            ("no bearer token provided (authModes contains 'bearer')",),
            id="bearer-without-token",
        ),
        pytest.param(
            {**PROM, "authModes": "basic,bearer"},
            {"username": "user", "bearerToken": "tok-123"},
            ("parameter 'authModes' value 'basic,bearer' must contain only one of [bearer basic]",),
            id="basic-and-bearer",
        ),
        pytest.param(
            {**PROM, "authModes": "tls"},
            {},
            ("no cert/key given (authModes contains 'tls')",),
            id="tls-without-cert",
        ),
        pytest.param(
            {**PROM, "authModes": "oauth"},
            {},
            (
                "error parsing 'authModes': invalid value 'oauth'"
                " (must be one of [apiKey basic bearer tls custom])",
            ),
            id="oauth-unsupported",
        ),
    ],
)
def test_prometheus_invalid_metadata(
    metadata: dict[str, str], auth: dict[str, str], problems: tuple[str, ...]
) -> None:
    assert _problems("prometheus", metadata, auth) == problems


def test_prometheus_credentials_come_from_auth_params_only() -> None:
    problems = _problems("prometheus", {**PROM, "authModes": "bearer", "bearerToken": "t"})
    assert problems == ("no bearer token provided (authModes contains 'bearer')",)
    scaler = _build("prometheus", {**PROM, "authModes": "bearer"}, {"bearerToken": "tok"})
    assert scaler._source.auth.headers == {"Authorization": "Bearer tok"}
    assert "tok" not in repr(scaler._source.auth)


def test_prometheus_server_address_from_env() -> None:
    scaler = _build(
        "prometheus",
        {"serverAddressFromEnv": "PROM", "query": "up", "threshold": "1"},
        env={"PROM": "http://from-env:9090/"},
    )
    assert scaler._url == "http://from-env:9090/api/v1/query"


# -- metrics-api -------------------------------------------------------------------------------

API = {
    "url": "http://api:3232/stats",
    "valueLocation": "components.worker.tasks",
    "targetValue": "8.8",
}


def test_metrics_api_metric_name() -> None:
    scaler = _build("metrics-api", API, index=4)
    assert scaler.metric_spec() == MetricSpec(
        "s4-metric-api-components-worker-tasks", 8.8, "AverageValue"
    )


@pytest.mark.parametrize(
    ("metadata", "auth", "headers", "query"),
    [
        pytest.param(
            {"authMode": "apiKey"}, {"apiKey": "k"}, {"X-API-KEY": "k"}, {}, id="api-key-header"
        ),
        pytest.param(
            {"authMode": "apiKey", "method": "query"},
            {"apiKey": "k"},
            {},
            {"api_key": "k"},
            id="api-key-query",
        ),
        pytest.param(
            {"authMode": "apiKey", "method": "query", "keyParamName": "QUERY_KEY"},
            {"apiKey": "k"},
            {},
            {"QUERY_KEY": "k"},
            id="api-key-query-custom-name",
        ),
        pytest.param(
            {"authMode": "bearer"}, {"token": "t"}, {"Authorization": "Bearer t"}, {}, id="bearer"
        ),
    ],
)
def test_metrics_api_auth_modes(
    metadata: dict[str, str],
    auth: dict[str, str],
    headers: dict[str, str],
    query: dict[str, str],
) -> None:
    scaler = _build("metrics-api", {**API, **metadata}, auth)
    assert dict(scaler._source.auth.headers) == headers
    assert dict(scaler._source.auth.query) == query


@pytest.mark.parametrize(
    ("metadata", "problems"),
    [
        pytest.param(
            {"url": "http://a"},
            (
                "missing required parameter 'valueLocation' in [triggerMetadata]",
                "missing required parameter 'targetValue' in [triggerMetadata]",
            ),
            id="missing-two",
        ),
        pytest.param({**API, "targetValue": "0"}, ("no targetValue given in metadata",), id="zero"),
        pytest.param(
            {**API, "url": "ftp://x/y"},
            ("parameter 'url' value 'ftp://x/y' must be an http or https URL",),
            id="not-http",
        ),
        pytest.param(
            {**API, "method": "body"},
            ("error parsing 'method': invalid value 'body' (must be one of [header query])",),
            id="bad-method",
        ),
        pytest.param(
            {**API, "authMode": "apiKey"},
            ("no apikey provided (authModes contains 'apiKey')",),
            id="api-key-missing",
        ),
    ],
)
def test_metrics_api_invalid_metadata(metadata: dict[str, str], problems: tuple[str, ...]) -> None:
    assert _problems("metrics-api", metadata) == problems


def test_aggregating_from_service_endpoints_needs_service_and_namespace_in_the_host() -> None:
    """KEDA's rule: the URL's host is <service>.<namespace>[...]."""
    bad = {**API, "url": "http://stats/x", "aggregateFromKubeServiceEndpoints": "true"}
    assert _problems("metrics-api", bad) == (
        "invalid hostname stats : expected at least 2 elements, first being service name and "
        "second being the namespace",
    )
    good = {
        **API,
        "url": "http://stats.shop.svc:8080/x",
        "aggregateFromKubeServiceEndpoints": "true",
    }
    assert _build("metrics-api", good).metric_spec().name == "s0-metric-api-components-worker-tasks"


@pytest.mark.parametrize(
    ("metadata", "fragment"),
    [
        pytest.param({"format": "xml"}, "format 'xml' is not supported", id="xml"),
        pytest.param({"format": "prometheus"}, "format 'prometheus'", id="prometheus-format"),
    ],
)
def test_metrics_api_unsupported_features(metadata: dict[str, str], fragment: str) -> None:
    with pytest.raises(UnsupportedError, match=fragment):
        _build("metrics-api", {**API, **metadata})


# -- metric names across scalers ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "metadata", "index", "name"),
    [
        pytest.param(
            "redis", {"address": "a:1", "listName": "jobs"}, 0, "s0-redis-jobs", id="redis"
        ),
        pytest.param(
            "redis",
            {"address": "a:1", "listName": "app:jobs.high"},
            2,
            "s2-redis-app-jobs-high",
            id="redis-normalized",
        ),
        pytest.param(
            "redis-sentinel",
            {"address": "a:1", "listName": "q", "sentinelMaster": "m"},
            1,
            "s1-redis-q",
            id="redis-sentinel",
        ),
        pytest.param(
            "redis-streams",
            {"address": "a:1", "stream": "ev/in"},
            0,
            "s0-redis-streams-ev-in",
            id="redis-streams",
        ),
        pytest.param("prometheus", PROM, 5, "s5-prometheus", id="prometheus"),
        pytest.param(
            "metrics-api",
            {**API, "valueLocation": "items.0.value"},
            0,
            "s0-metric-api-items-0-value",
            id="metrics-api",
        ),
        pytest.param(
            "cron",
            {
                "timezone": "Europe/Berlin",
                "start": "30 * * * *",
                "end": "45 * * * *",
                "desiredReplicas": "2",
            },
            0,
            "s0-cron-Europe-Berlin-30xxxx-45xxxx",
            id="cron",
        ),
    ],
)
def test_metric_names(kind: str, metadata: dict[str, str], index: int, name: str) -> None:
    scaler: Scaler = _build(kind, metadata, index=index)
    assert scaler.metric_spec().name == name
    assert scaler.metric_spec().kind == "External"


@pytest.mark.parametrize(
    ("metadata", "problems"),
    [
        pytest.param(
            {"podSelector": "app in (", "value": "1"},
            ("error parsing pod selector: unbalanced parentheses",),
            id="bad-selector",
        ),
        pytest.param(
            {"podSelector": "app=a", "value": "0"},
            ("value must be a float greater than 0",),
            id="value-zero",
        ),
        pytest.param(
            {"podSelector": ",", "value": "1"},
            ("error parsing pod selector: invalid selector term ''",),
            id="empty-selector",
        ),
    ],
)
def test_kubernetes_workload_invalid_metadata(
    metadata: dict[str, str], problems: tuple[str, ...]
) -> None:
    assert _problems("kubernetes-workload", metadata) == problems


@pytest.mark.parametrize(
    ("namespace", "name"),
    [
        pytest.param("", "s0-workload-ns", id="the-objects-namespace"),
        pytest.param("shop", "s0-workload-shop", id="another-namespace"),
        pytest.param("*", "s0-workload-", id="every-namespace"),
    ],
)
def test_kubernetes_workload_metric_names_are_kedas(namespace: str, name: str) -> None:
    metadata = {"podSelector": "app=a", "value": "2", "namespace": namespace}
    assert _build("kubernetes-workload", metadata).metric_spec().name == name
