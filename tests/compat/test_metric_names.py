"""Tidal's metric names equal KEDA's, checked without components (fast, runs first).

Two tables: every manifest of the corpus (its triggers built by Tidal's registry as the daemon
builds them, auth from the manifest's own TriggerAuthentication and Secret, `…FromEnv` from
the workload's env) and trigger metadata at the edges of KEDA's rules. The expected names are
written by hand from KEDA's rules (see corpus.py); where Tidal differs on purpose the row
says so and asserts Tidal's documented name, and that it does differ from KEDA's.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import pytest

from scaler.clients import ClientPool
from scaler.contract import TriggerContext, fold_metric_name, normalize_metric_detail
from scaler.registry import build_scaler
from tests.compat.corpus import CASES, LIST_60, TOPIC_60, Case
from tests.compat.kube import of_kind, placeholders, render

DUMMY = {
    "TestNamespace": "compat",
    "RedisAddress": "127.0.0.1:6379",
    "RedisHost": "127.0.0.1",
    "RedisPort": "6379",
    "RedisPassword": "pw",
    "BootstrapServer": "127.0.0.1:9092",
    "NatsAddress": "nats://127.0.0.1:4222",
    "NatsServerMonitoringEndpoint": "127.0.0.1:8222",
    "PrometheusServer": "http://127.0.0.1:9090",
    "MetricsApiUrl": "http://127.0.0.1:8080/api/v1/stats",
    "MetricsApiKey": "key",
    "AwsEndpoint": "http://127.0.0.1:9000",
    "AwsAccessKeyID": "id",
    "AwsSecretAccessKey": "secret",
    "AwsAccessKeyIDBase64": base64.b64encode(b"id").decode(),
    "AwsSecretAccessKeyBase64": base64.b64encode(b"secret").decode(),
    "AwsRegion": "us-east-1",
    "SqsQueue": "http://127.0.0.1:9324/000000000000/Payments_EU-Settlement.fifo",
    "StartMin": "5",
    "EndMin": "6",
    "PostgreSQLConnectionStringBase64": base64.b64encode(
        b"postgresql://test-user:test-password@127.0.0.1:5432/test_db?sslmode=disable"
    ).decode(),
    "MySQLConnectionString": base64.b64encode(
        b"test-user:test-password@tcp(127.0.0.1:3306)/test_db"
    ).decode(),
    "RabbitMQConnection": "amqp://u:p@127.0.0.1:5672/",
    "RabbitMQConnectionBase64": base64.b64encode(b"amqp://u:p@127.0.0.1:5672/").decode(),
}


def _secrets(docs: list[Any]) -> dict[str, dict[str, str]]:
    return {
        s["metadata"]["name"]: {
            **{k: base64.b64decode(v).decode() for k, v in s.get("data", {}).items()},
            **s.get("stringData", {}),
        }
        for s in of_kind(docs, "Secret")
    }


def _auth(docs: list[Any], ref: Mapping[str, str] | None) -> dict[str, str]:
    """secretTargetRef of the manifest's TriggerAuthentication, read from its Secret."""
    if not ref:
        return {}
    (ta,) = [
        t for t in of_kind(docs, "TriggerAuthentication") if t["metadata"]["name"] == ref["name"]
    ]
    secrets = _secrets(docs)
    return {r["parameter"]: secrets[r["name"]][r["key"]] for r in ta["spec"]["secretTargetRef"]}


def _env(docs: list[Any], deployment: str) -> dict[str, str]:
    """The container's env: `envFrom` Secrets of the manifest first, then literal `env`."""
    (dep,) = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == deployment]
    container = dep["spec"]["template"]["spec"]["containers"][0]
    secrets = _secrets(docs)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source.get("secretRef")
        if ref:
            prefix = source.get("prefix", "")
            env.update({prefix + k: v for k, v in secrets.get(ref["name"], {}).items()})
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def _name(trigger_type: str, metadata: Mapping[str, str], index: int = 0, **ctx: Any) -> str:
    trigger = TriggerContext("compat", "so", index, trigger_type, "", dict(metadata), **ctx)
    return build_scaler(trigger, ClientPool()).metric_spec().name


def tidal_names(case: Case, values: Mapping[str, str]) -> dict[str, list[str]]:
    docs = render(case.manifest, values)
    names: dict[str, list[str]] = {}
    for so in of_kind(docs, "ScaledObject"):
        env = _env(docs, so["spec"]["scaleTargetRef"]["name"])
        names[so["metadata"]["name"]] = [
            _name(
                t["type"],
                t["metadata"],
                i,
                auth_params=_auth(docs, t.get("authenticationRef")),
                resolved_env=env,
            )
            for i, t in enumerate(so["spec"]["triggers"])
        ]
    return names


def test_every_placeholder_has_a_value() -> None:
    for case in CASES:
        assert placeholders(case.manifest) <= set(DUMMY), case.manifest


def test_the_long_names_are_60_characters() -> None:
    assert len(TOPIC_60) == 60
    assert len(LIST_60) == 60


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_manifest_metric_names_are_kedas(case: Case) -> None:
    expected = case.expected(DUMMY)
    assert tidal_names(case, DUMMY) == expected
    for names in expected.values():
        for name in names:
            # The HPA accepts a metric name that is a valid path segment (no '/' or '%').
            assert "/" not in name
            assert "%" not in name
            assert name not in (".", "..")


# KEDA's own NormalizeString test vectors (pkg/util/normalize_string_test.go).
NORMALIZE = [
    pytest.param("/input/", "-input-", id="slash"),
    pytest.param(".input.", "-input-", id="dot"),
    pytest.param(":input:", "-input-", id="colon"),
    pytest.param("%input%", "-input-", id="percent"),
    pytest.param("(input(", "-input-", id="open-paren"),
    pytest.param(")input)", "-input-", id="close-paren"),
    pytest.param("/.:%()input/.:%()", "------input------", id="combined"),
    pytest.param("Etc/UTC_x y,z*?", "Etc-UTC_x y,z*?", id="nothing-else-changes"),
]


@pytest.mark.parametrize(("raw", "normalized"), NORMALIZE)
def test_normalize_string_is_kedas(raw: str, normalized: str) -> None:
    assert normalize_metric_detail(raw) == normalized


# Trigger metadata at the edges of KEDA's rules: (type, metadata, KEDA's name, Tidal's if it
# differs on purpose, with the document that says so).
EDGES = [
    pytest.param(
        "cron",
        {
            "timezone": "Europe/Berlin",
            "start": "*/15 8-18 * * 1-5",
            "end": "0 19 * * 1-5",
            "desiredReplicas": "2",
        },
        "s0-cron-Europe-Berlin-xSl158-18xx1-5-019xx1-5",
        None,
        id="cron-step-range",
    ),
    pytest.param(
        "cron",
        {
            "timezone": "America/Argentina/Buenos_Aires",
            "start": "30 8 * * *",
            "end": "30 17 * * *",
            "desiredReplicas": "2",
        },
        "s0-cron-America-Argentina-Buenos_Aires-308xxx-3017xxx",
        None,
        id="cron-two-slash-zone",
    ),
    pytest.param(
        "cron",
        {
            "timezone": "Etc/GMT+5",
            "start": "0 6 * * *",
            "end": "0 20 * * *",
            "desiredReplicas": "1",
        },
        "s0-cron-Etc-GMT+5-06xxx-020xxx",
        None,
        id="cron-plus-in-zone",
    ),
    pytest.param(
        "cron",
        {
            "timezone": "Europe/London",
            "start": "0 9,13 * * *",
            "end": "0 12,17 * * *",
            "desiredReplicas": "2",
        },
        "s0-cron-Europe-London-09,13xxx-012,17xxx",
        ("s0-cron-Europe-London-09Cm13xxx-012Cm17xxx", "docs/scalers.md, Differences from KEDA"),
        id="cron-commas",
    ),
    pytest.param(
        "cron",
        {
            "timezone": "Asia/Tokyo",
            "start": "0 9 ? * 1",
            "end": "0 18 ? * 1",
            "desiredReplicas": "4",
        },
        "s0-cron-Asia-Tokyo-09Qmx1-018Qmx1",
        None,
        id="cron-question-mark",
    ),
    pytest.param(
        "redis",
        {"address": "127.0.0.1:6379", "listName": "Reports (Q1) 50%"},
        "s0-redis-Reports -Q1- 50-",
        None,
        id="redis-parens-percent-space",
    ),
    pytest.param(
        "redis-streams",
        {"address": "127.0.0.1:6379", "stream": "audit:log/2024", "consumerGroup": "G"},
        "s0-redis-streams-audit-log-2024",
        None,
        id="redis-streams-colon-slash",
    ),
    pytest.param(
        "kafka",
        {"bootstrapServers": "127.0.0.1:9092", "consumerGroup": "g", "topic": "A.b_C-d"},
        "s0-kafka-A-b_C-d",
        None,
        id="kafka-all-topic-characters",
    ),
    pytest.param(
        "metrics-api",
        {
            "url": "http://127.0.0.1:1/x",
            "valueLocation": "items.0.value",
            "targetValue": "1",
        },
        "s0-metric-api-items-0-value",
        None,
        id="metrics-api-index-path",
    ),
    pytest.param(
        "prometheus",
        {
            "serverAddress": "http://127.0.0.1:9090",
            "query": "sum(rate(http_requests_total{deployment='my-deployment'}[2m]))",
            "threshold": "100.50",
            "metricName": "http_requests_total",
        },
        "s0-prometheus",
        None,
        id="prometheus-docs-example",
    ),
    pytest.param(
        "postgresql",
        {
            "host": "127.0.0.1",
            "port": "5432",
            "userName": "kedaUser",
            "dbName": "Orders.DB",
            "sslmode": "disable",
            "query": "SELECT 1",
            "targetQueryValue": "2.2",
        },
        "s0-postgresql",
        None,
        id="postgresql-database-not-in-the-name",
    ),
    pytest.param(
        "mysql",
        {
            "host": "127.0.0.1",
            "port": "3306",
            "username": "root",
            "dbName": "stats.db:2024",
            "query": "SELECT 1",
            "queryValue": "4",
        },
        "s0-mysql-stats-db-2024",
        None,
        id="mysql-database-dot-colon",
    ),
    pytest.param(
        "rabbitmq",
        {"host": "amqp://127.0.0.1:5672/", "queueName": "orders.eu/1 (high)"},
        "s0-rabbitmq-orders-eu-2F1+-28high-29",  # url.QueryEscape, then NormalizeString
        None,
        id="rabbitmq-queue-query-escaped",
    ),
    pytest.param(
        "rabbitmq",
        {"host": "http://127.0.0.1:15672/", "queueName": "^.*incoming$", "useRegex": "true"},
        "s0-rabbitmq--5E--2Aincoming-24",
        None,
        id="rabbitmq-regex-from-kedas-docs",
    ),
]


@pytest.mark.parametrize(("trigger_type", "metadata", "keda", "tidal"), EDGES)
def test_edge_metric_names(
    trigger_type: str,
    metadata: dict[str, str],
    keda: str,
    tidal: tuple[str, str] | None,
) -> None:
    name = _name(trigger_type, metadata)
    if tidal is None:
        assert name == keda
    else:
        documented, where = tidal
        assert name == documented, f"Tidal's name changed: update {where} and this row"
        assert name != keda


def test_index_prefix_follows_the_trigger_position() -> None:
    meta = {"address": "127.0.0.1:6379", "listName": "Orders"}
    assert [_name("redis", meta, i) for i in (0, 1, 12)] == [
        "s0-redis-Orders",
        "s1-redis-Orders",
        "s12-redis-Orders",
    ]


@pytest.mark.parametrize(
    ("declared", "asked"),
    [
        pytest.param("s0-nats-jetstream-ORDERS", "s0-nats-jetstream-orders", id="ascii"),
        pytest.param("s0-redis-Bestellungen-Übersee", "s0-redis-bestellungen-übersee", id="umlaut"),
        pytest.param("s0-cron-Etc-UTC-5xxxx-6xxxx", "s0-cron-etc-utc-5xxxx-6xxxx", id="cron"),
    ],
)
def test_the_hpa_lower_case_name_folds_to_the_declared_one(declared: str, asked: str) -> None:
    """What the HPA sends is Go's strings.ToLower of the name; KEDA compares with EqualFold."""
    assert asked == declared.lower()
    assert fold_metric_name(asked) == fold_metric_name(declared)
