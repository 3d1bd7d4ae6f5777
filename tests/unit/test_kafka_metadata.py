"""The `kafka` trigger's metadata: KEDA's parameters, defaults, messages, metric names, auth."""

from __future__ import annotations

import ssl
from typing import Any

import pytest

from localenv.certs import new_ca
from scaler.clients import ClientPool
from scaler.contract import MetricSpec, TriggerContext
from scaler.errors import ConfigError, UnsupportedError
from scaler.registry import build_scaler
from scalers.kafka.lag import LagPolicy
from scalers.kafka.scaler import KafkaScaler

BASE = {"bootstrapServers": "kafka-0:9092,kafka-1:9092", "consumerGroup": "workers"}
CA = new_ca("kafka-test-ca")
CA_PEM, KEY_PEM = CA.cert_pem.decode(), CA.key_pem.decode()
PEM_GARBAGE = "-----BEGIN CERTIFICATE-----\nnot a cert\n-----END CERTIFICATE-----\n"


def _trigger(
    metadata: dict[str, str],
    auth: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    index: int = 0,
    metric_type: str = "AverageValue",
) -> TriggerContext:
    return TriggerContext(
        "ns",
        "so",
        index,
        "kafka",
        "",
        metadata,
        metric_type,  # type: ignore[arg-type]
        auth or {},
        env or {},
    )


def _build(metadata: dict[str, str], auth: dict[str, str] | None = None, **kw: Any) -> KafkaScaler:
    scaler = build_scaler(_trigger(metadata, auth, **kw), ClientPool())
    assert isinstance(scaler, KafkaScaler)
    return scaler


def _problems(metadata: dict[str, str], auth: dict[str, str] | None = None) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as info:
        _build(metadata, auth)
    return info.value.problems


def test_defaults() -> None:
    scaler = _build({**BASE, "topic": "orders"})
    assert scaler.metric_spec() == MetricSpec("s0-kafka-orders", 10.0, "AverageValue")
    assert scaler.policy == LagPolicy()  # lagThreshold 10, activation 0, latest, all flags off
    assert (scaler.group, scaler.topic, scaler.partitions) == ("workers", "orders", None)
    settings = scaler.settings
    assert settings.bootstrap == (("kafka-0", 9092), ("kafka-1", 9092))
    assert (settings.security_protocol, settings.sasl_mechanism) == ("PLAINTEXT", None)
    assert (settings.username, settings.password, settings.ssl_context) == (None, None, None)
    assert settings.timeout == 3.0


@pytest.mark.parametrize(
    ("metadata", "index", "metric_type", "expected"),
    [
        pytest.param(
            {"topic": "orders.v1"},
            2,
            "AverageValue",
            MetricSpec("s2-kafka-orders-v1", 10.0),
            id="topic-normalized",
        ),
        pytest.param(
            {},
            0,
            "AverageValue",
            MetricSpec("s0-kafka-workers-topics", 10.0),
            id="no-topic-group-topics",
        ),
        pytest.param(
            {"topic": "t", "lagThreshold": "25"},
            1,
            "Value",
            MetricSpec("s1-kafka-t", 25.0, "Value"),
            id="threshold-and-value-type",
        ),
    ],
)
def test_metric_spec(
    metadata: dict[str, str], index: int, metric_type: str, expected: MetricSpec
) -> None:
    scaler = _build({**BASE, **metadata}, index=index, metric_type=metric_type)
    assert scaler.metric_spec() == expected


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        pytest.param(
            {"activationLagThreshold": "7"}, LagPolicy(activation_lag_threshold=7), id="act"
        ),
        pytest.param(
            {"offsetResetPolicy": "earliest"},
            LagPolicy(offset_reset_policy="earliest"),
            id="earliest",
        ),
        pytest.param(
            {"allowIdleConsumers": "true"}, LagPolicy(allow_idle_consumers=True), id="allow-idle"
        ),
        pytest.param(
            {"excludePersistentLag": "true"},
            LagPolicy(exclude_persistent_lag=True),
            id="exclude-persistent",
        ),
        pytest.param(
            {"scaleToZeroOnInvalidOffset": "1"},
            LagPolicy(scale_to_zero_on_invalid_offset=True),
            id="scale-to-zero-invalid",
        ),
        pytest.param(
            {"limitToPartitionsWithLag": "true"},
            LagPolicy(limit_to_partitions_with_lag=True),
            id="limit-with-lag",
        ),
        pytest.param(
            {"ensureEvenDistributionOfPartitions": "true"},
            LagPolicy(ensure_even_distribution_of_partitions=True),
            id="even-distribution",
        ),
    ],
)
def test_lag_flags(metadata: dict[str, str], expected: LagPolicy) -> None:
    assert _build({**BASE, "topic": "t", **metadata}).policy == expected


def test_partition_limitation_with_ranges() -> None:
    scaler = _build({**BASE, "topic": "t", "partitionLimitation": "1,2,10-12"})
    assert scaler.partitions == frozenset({1, 2, 10, 11, 12})


def test_partition_limitation_is_ignored_without_topic() -> None:
    assert _build({**BASE, "partitionLimitation": "not-parsed"}).partitions is None


def test_from_env() -> None:
    scaler = _build(
        {"bootstrapServersFromEnv": "BROKERS", "consumerGroupFromEnv": "G", "topicFromEnv": "T"},
        env={"BROKERS": "b:9093", "G": "env-group", "T": "env-topic"},
    )
    assert (scaler.settings.bootstrap, scaler.group, scaler.topic) == (
        (("b", 9093),),
        "env-group",
        "env-topic",
    )


def test_accepted_but_unused_parameters_are_known() -> None:
    scaler = build_scaler(
        _trigger({**BASE, "topic": "t", "version": "2.8.1", "fullMetadata": "false"}), ClientPool()
    )
    assert isinstance(scaler, KafkaScaler)


@pytest.mark.parametrize(
    ("metadata", "auth", "expected"),
    [
        pytest.param(
            {"consumerGroup": "g"},
            {},
            "missing required parameter 'bootstrapServers' in [triggerMetadata resolvedEnv]",
            id="no-bootstrap",
        ),
        pytest.param(
            {"bootstrapServers": "b:1"},
            {},
            "missing required parameter 'consumerGroup' in [triggerMetadata resolvedEnv]",
            id="no-group",
        ),
        pytest.param(
            {**BASE, "bootstrapServers": "nohostport"},
            {},
            "invalid bootstrap server 'nohostport': expected host:port",
            id="bad-server",
        ),
        pytest.param(
            {**BASE, "lagThreshold": "0"},
            {},
            "error parsing 'lagThreshold': invalid value '0' (must be greater than 0)",
            id="threshold-zero",
        ),
        pytest.param(
            {**BASE, "lagThreshold": "ten"},
            {},
            "error parsing 'lagThreshold': invalid value 'ten' (expected an integer)",
            id="threshold-nan",
        ),
        pytest.param(
            {**BASE, "activationLagThreshold": "-1"},
            {},
            "error parsing 'activationLagThreshold': invalid value '-1' (must be at least 0)",
            id="activation-negative",
        ),
        pytest.param(
            {**BASE, "offsetResetPolicy": "newest"},
            {},
            "error parsing 'offsetResetPolicy': invalid value 'newest'"
            " (must be one of [latest earliest])",
            id="bad-reset-policy",
        ),
        pytest.param(
            {**BASE, "allowIdleConsumers": "yes"},
            {},
            "error parsing 'allowIdleConsumers': invalid value 'yes' (expected true or false)",
            id="bad-bool",
        ),
        pytest.param(
            {
                **BASE,
                "topic": "t",
                "allowIdleConsumers": "true",
                "limitToPartitionsWithLag": "true",
            },
            {},
            "allowIdleConsumers and limitToPartitionsWithLag cannot be set simultaneously",
            id="idle-and-limit",
        ),
        pytest.param(
            {
                **BASE,
                "topic": "t",
                "limitToPartitionsWithLag": "true",
                "ensureEvenDistributionOfPartitions": "true",
            },
            {},
            "limitToPartitionsWithLag and ensureEvenDistributionOfPartitions cannot be set"
            " simultaneously",
            id="limit-and-even",
        ),
        pytest.param(
            {**BASE, "limitToPartitionsWithLag": "true"},
            {},
            "topic must be specified when using limitToPartitionsWithLag",
            id="limit-needs-topic",
        ),
        pytest.param(
            {**BASE, "ensureEvenDistributionOfPartitions": "true"},
            {},
            "topic must be specified when using ensureEvenDistributionOfPartitions",
            id="even-needs-topic",
        ),
        pytest.param(
            {**BASE, "fullMetadata": "false"},
            {},
            "topic must be specified when fullMetadata is false",
            id="full-metadata-needs-topic",
        ),
        pytest.param(
            {**BASE, "topic": "t", "partitionLimitation": "1,x"},
            {},
            "error parsing in partitionLimitation '1,x': 'x' is not an integer or a range",
            id="bad-partition-limitation",
        ),
        pytest.param(
            {**BASE, "version": "latest"},
            {},
            "error parsing kafka version: invalid version `latest`",
            id="bad-version",
        ),
        pytest.param(
            {**BASE, "sasl": "kerberos"},
            {},
            "error parsing 'sasl': invalid value 'kerberos'"
            " (must be one of [none plaintext scram_sha256 scram_sha512 oauthbearer gssapi])",
            id="bad-sasl",
        ),
        pytest.param(
            {**BASE, "sasl": "plaintext"},
            {"sasl": "plaintext", "username": "u", "password": "p"},
            "unable to set `sasl` in both ScaledObject and TriggerAuthentication together",
            id="sasl-twice",
        ),
        pytest.param(
            {**BASE, "tls": "enable"},
            {"tls": "enable"},
            "unable to set `tls` in both ScaledObject and TriggerAuthentication together",
            id="tls-twice",
        ),
        pytest.param(
            {**BASE, "tls": "on"},
            {},
            "error parsing 'tls': invalid value 'on' (must be one of [enable disable])",
            id="bad-tls",
        ),
        pytest.param(
            BASE,
            {"tls": "enable", "cert": CA_PEM},
            "key must be provided with cert",
            id="cert-without-key",
        ),
        pytest.param(
            BASE,
            {"tls": "enable", "key": KEY_PEM},
            "cert must be provided with key",
            id="key-without-cert",
        ),
        pytest.param(
            BASE,
            {"tls": "enable", "ca": PEM_GARBAGE},
            "invalid TLS settings: the CA certificate does not load (SSLError)",
            id="bad-ca",
        ),
    ],
)
def test_invalid(metadata: dict[str, str], auth: dict[str, str], expected: str) -> None:
    assert expected in _problems(metadata, auth)


@pytest.mark.parametrize(
    ("auth", "missing"),
    [
        pytest.param({"sasl": "plaintext"}, ["no username given", "no password given"], id="none"),
        pytest.param({"sasl": "scram_sha256", "username": "u"}, ["no password given"], id="no-pw"),
        pytest.param(
            {"sasl": "scram_sha512", "password": "p"}, ["no username given"], id="no-user"
        ),
    ],
)
def test_sasl_needs_username_and_password(auth: dict[str, str], missing: list[str]) -> None:
    assert list(_problems(BASE, auth)) == missing


@pytest.mark.parametrize(
    "mode", [pytest.param("oauthbearer", id="oauthbearer"), pytest.param("gssapi", id="gssapi")]
)
def test_unsupported_sasl_modes_are_named(mode: str) -> None:
    with pytest.raises(UnsupportedError, match=f"kafka sasl mode '{mode}' is not supported"):
        _build(BASE, {"sasl": mode, "username": "u", "password": "p"})


@pytest.mark.parametrize(
    ("metadata", "auth", "protocol", "mechanism"),
    [
        pytest.param(
            {},
            {"sasl": "plaintext", "username": "u", "password": "pw"},
            "SASL_PLAINTEXT",
            "PLAIN",
            id="plain",
        ),
        pytest.param(
            {"sasl": "scram_sha256"},
            {"username": "u", "password": "pw"},
            "SASL_PLAINTEXT",
            "SCRAM-SHA-256",
            id="scram256-in-metadata",
        ),
        pytest.param(
            {},
            {"sasl": "scram_sha512", "username": "u", "password": "pw", "tls": "enable"},
            "SASL_SSL",
            "SCRAM-SHA-512",
            id="scram512-tls",
        ),
        pytest.param({"tls": "enable"}, {}, "SSL", None, id="tls-in-metadata"),
        pytest.param({"tls": "disable"}, {"tls": "enable"}, "SSL", None, id="auth-tls-overrides"),
        pytest.param({"sasl": "none"}, {}, "PLAINTEXT", None, id="sasl-none"),
    ],
)
def test_security_settings(
    metadata: dict[str, str], auth: dict[str, str], protocol: str, mechanism: str | None
) -> None:
    settings = _build({**BASE, **metadata}, auth).settings
    assert (settings.security_protocol, settings.sasl_mechanism) == (protocol, mechanism)
    if mechanism:
        assert (settings.username, settings.password) == ("u", "pw")


def test_tls_material_and_unsafe_ssl() -> None:
    auth = {"tls": "enable", "ca": CA_PEM, "cert": CA_PEM, "key": KEY_PEM}
    settings = _build({**BASE, "unsafeSsl": "true"}, auth).settings
    assert isinstance(settings.ssl_context, ssl.SSLContext)
    assert settings.ssl_context.verify_mode == ssl.CERT_NONE
    verified = _build(BASE, auth).settings
    assert verified.ssl_context is not None
    assert verified.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert verified.tls_fingerprint
    assert verified.key() != settings.key()


def test_client_key_shares_per_cluster_and_credentials_without_secrets() -> None:
    sasl = {"sasl": "plaintext", "username": "u", "password": "hunter2-secret"}
    a = _build({**BASE, "topic": "a"}, sasl).settings.key()
    b = _build({**BASE, "topic": "b", "consumerGroup": "other"}, sasl).settings.key()
    reordered = _build({**BASE, "bootstrapServers": "kafka-1:9092,kafka-0:9092"}, sasl)
    other_pw = _build(BASE, {**sasl, "password": "other"}).settings.key()
    assert a == b == reordered.settings.key()  # topics and groups share the cluster's client
    assert a != other_pw
    assert "hunter2-secret" not in repr(a) + repr(reordered.settings)


def test_secrets_are_redacted_from_messages() -> None:
    problems = _problems(
        {**BASE, "lagThreshold": "x"},
        {
            "sasl": "plaintext",
            "username": "u",
            "password": "hunter2-secret",
            "ca": "hunter2-secret",
        },
    )
    assert not any("hunter2-secret" in p for p in problems)
