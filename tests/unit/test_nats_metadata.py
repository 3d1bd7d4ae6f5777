"""nats-jetstream trigger metadata (KEDA's keys, defaults, every invalid input) and /jsz parsing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from scaler.clients import ClientPool
from scaler.contract import MetricSpec, TriggerContext
from scaler.errors import ConfigError, QueryError
from scaler.registry import build_scaler
from scalers.nats_jetstream import NatsJetStreamScaler
from scalers.nats_jsz import ConsumerLag, MonitorTarget, parse_jsz

BASE = {"natsServerMonitoringEndpoint": "nats.nats:8222", "account": "$G", "stream": "jobs"}
BASE |= {"consumer": "worker"}


def _build(
    metadata: dict[str, str], auth: dict[str, str] | None = None, index: int = 0
) -> NatsJetStreamScaler:
    trigger = TriggerContext(
        "ns", "so", index, "nats-jetstream", "", metadata, auth_params=auth or {}
    )
    scaler = build_scaler(trigger, ClientPool())
    assert isinstance(scaler, NatsJetStreamScaler)
    return scaler


def _problems(metadata: dict[str, str], auth: dict[str, str] | None = None) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as info:
        _build(metadata, auth)
    return info.value.problems


def test_defaults_match_keda() -> None:
    scaler = _build(BASE, index=2)
    assert scaler.metric_spec() == MetricSpec("s2-nats-jetstream-jobs", 10.0, "AverageValue")
    assert scaler.mode == "monitoring"
    assert scaler.monitor == MonitorTarget("http", "nats.nats", 8222, "$G", 3.0)


@pytest.mark.parametrize(
    ("metadata", "auth", "expected"),
    [
        pytest.param(
            {"useHttps": "true"},
            {},
            MonitorTarget("https", "nats.nats", 8222, "$G", 3.0),
            id="use-https",
        ),
        pytest.param(
            {"account": "", "accountID": "ACC1"},
            {},
            MonitorTarget("http", "nats.nats", 8222, "ACC1", 3.0),
            id="account-id-alias",
        ),
        pytest.param(
            {"natsServerMonitoringEndpoint": "", "account": ""},
            {"natsServerMonitoringEndpoint": "secret-nats:8222", "account": "A2"},
            MonitorTarget("http", "secret-nats", 8222, "A2", 3.0),
            id="endpoint-and-account-from-auth",
        ),
        pytest.param(
            {"natsServerMonitoringEndpoint": "nats.nats", "useHttps": "1"},
            {},
            MonitorTarget("https", "nats.nats", 443, "$G", 3.0),
            id="no-port-https-443",
        ),
    ],
)
def test_monitoring_target(
    metadata: dict[str, str], auth: dict[str, str], expected: MonitorTarget
) -> None:
    assert _build(BASE | metadata, auth).monitor == expected


def test_thresholds_and_metric_name_normalized() -> None:
    scaler = _build(BASE | {"stream": "a.b:c", "lagThreshold": "25", "activationLagThreshold": "3"})
    assert scaler.metric_spec() == MetricSpec("s0-nats-jetstream-a-b-c", 25.0)


def test_client_mode_needs_no_monitoring_endpoint_or_account() -> None:
    scaler = _build(
        {"natsServer": "nats://nats.nats:4222", "stream": "jobs", "consumer": "w"},
        {"username": "u", "password": "p"},
    )
    assert scaler.mode == "client"
    assert scaler.monitor is None


def test_both_given_samples_the_monitoring_endpoint() -> None:
    scaler = _build(BASE | {"natsServer": "nats://nats.nats:4222"})
    assert scaler.mode == "monitoring"


@pytest.mark.parametrize(
    ("metadata", "auth", "expected"),
    [
        pytest.param(
            {"stream": ""},
            {},
            ["missing required parameter 'stream' in [triggerMetadata]"],
            id="no-stream",
        ),
        pytest.param(
            {"consumer": ""},
            {},
            ["missing required parameter 'consumer' in [triggerMetadata]"],
            id="no-consumer",
        ),
        pytest.param(
            {"natsServerMonitoringEndpoint": ""},
            {},
            [
                "missing required parameter 'natsServerMonitoringEndpoint' (or 'natsServer' for"
                " client mode) in [triggerMetadata authParams]"
            ],
            id="no-endpoint",
        ),
        pytest.param(
            {"account": ""},
            {},
            ["missing required parameter 'account' or 'accountID' in [triggerMetadata authParams]"],
            id="no-account",
        ),
        pytest.param(
            {"lagThreshold": "ten"},
            {},
            ["error parsing 'lagThreshold': invalid value 'ten' (expected an integer)"],
            id="lag-threshold-not-int",
        ),
        pytest.param(
            {"lagThreshold": "0"},
            {},
            ["error parsing 'lagThreshold': invalid value '0' (must be greater than 0)"],
            id="lag-threshold-zero",
        ),
        pytest.param(
            {"activationLagThreshold": "1.5"},
            {},
            ["error parsing 'activationLagThreshold': invalid value '1.5' (expected an integer)"],
            id="activation-not-int",
        ),
        pytest.param(
            {"useHttps": "yes"},
            {},
            ["error parsing 'useHttps': invalid value 'yes' (expected true or false)"],
            id="use-https-not-bool",
        ),
        pytest.param(
            {"natsServerMonitoringEndpoint": "http://nats:8222"},
            {},
            ["invalid natsServerMonitoringEndpoint 'http://nats:8222': expected host:port"],
            id="endpoint-with-scheme",
        ),
        pytest.param(
            {"natsServer": "http://nats:4222"},
            {},
            ["invalid natsServer 'http://nats:4222': expected nats://host:port or tls://host:port"],
            id="nats-server-wrong-scheme",
        ),
        pytest.param(
            {"natsServer": "nats://me:hunter2@nats:4222"},
            {},
            [
                "natsServer 'nats://nats:4222' carries credentials: give them as"
                " TriggerAuthentication parameters (username/password, token, nkeySeed, creds)"
            ],
            id="credentials-in-url",
        ),
        pytest.param(
            {"natsServer": "nats://nats:4222"},
            {"username": "u", "token": "t0k"},
            ["use only one of username/password, token, nkeySeed, creds: ['username', 'token']"],
            id="two-auth-methods",
        ),
        pytest.param(
            {"natsServer": "nats://nats:4222"},
            {"password": "pw"},
            ["password given without username"],
            id="password-without-username",
        ),
        pytest.param(
            {},
            {"token": "t0k"},
            ["NATS credentials need 'natsServer' (the monitoring port takes none)"],
            id="credentials-without-nats-server",
        ),
    ],
)
def test_invalid(metadata: dict[str, str], auth: dict[str, str], expected: list[str]) -> None:
    assert list(_problems(BASE | metadata, auth)) == expected


def test_credentials_only_from_trigger_authentication() -> None:
    config = _build(BASE | {"natsServer": "nats://n:4222", "token": "in-metadata"})
    assert config.mode == "monitoring"  # 'token' in metadata is ignored (an unknown key)
    problems = _problems(BASE | {"natsServer": "nats://n:4222"}, {"password": "hunter2"})
    assert "hunter2" not in " ".join(problems)


# -- /jsz parsing --------------------------------------------------------------------------------


def _jsz(accounts: list[dict[str, Any]], cluster_size: int | None = None) -> bytes:
    doc: dict[str, Any] = {"server_id": "X", "account_details": accounts}
    if cluster_size is not None:
        doc["meta_cluster"] = {"name": "c", "leader": "n1", "cluster_size": cluster_size}
    return json.dumps(doc).encode()


def _consumer(name: str, pending: int, ack: int, leader: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "num_pending": pending, "num_ack_pending": ack}
    if leader:
        out["cluster"] = {"leader": leader}
    return out


def test_parse_jsz_reads_the_account_only() -> None:
    body = _jsz(
        [
            {
                "name": "OTHER",
                "stream_detail": [{"name": "S", "consumer_detail": [_consumer("c", 9, 9)]}],
            },
            {
                "name": "$G",
                "stream_detail": [
                    {"name": "S", "consumer_detail": [_consumer("c", 3, 2), _consumer("d", 1, 0)]},
                    {"name": "EMPTY"},
                ],
            },
        ]
    )
    view = parse_jsz(body, "$G")
    assert view.cluster_size == 0
    assert view.streams == frozenset({"S", "EMPTY"})
    assert dict(view.consumers) == {("S", "c"): ConsumerLag(3, 2), ("S", "d"): ConsumerLag(1, 0)}
    assert view.consumers[("S", "c")].lag == 5


def test_parse_jsz_cluster_leaders() -> None:
    body = _jsz(
        [
            {
                "name": "$G",
                "stream_detail": [{"name": "S", "consumer_detail": [_consumer("c", 0, 2, "n2")]}],
            }
        ],
        cluster_size=3,
    )
    view = parse_jsz(body, "$G")
    assert view.cluster_size == 3
    assert view.consumers[("S", "c")] == ConsumerLag(0, 2, "n2")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"<html>proxy error</html>", id="not-json"),
        pytest.param(b"[1, 2]", id="not-an-object"),
        pytest.param(b'{"account_details": [{"name": "$G", "stream_detail": [{}]}]}', id="no-name"),
    ],
)
def test_parse_jsz_rejects_garbage(body: bytes) -> None:
    with pytest.raises(QueryError, match="unexpected /jsz answer"):
        parse_jsz(body, "$G")
