"""The `kafka` trigger's metadata: KEDA's parameters, their checks, and the cluster settings.

Parameters, defaults and messages follow KEDA's ``kafka`` scaler (``keda-reference.md`` §4.1).
Not supported (UnsupportedError): ``sasl: oauthbearer`` and ``sasl: gssapi``. Accepted and
ignored: ``version`` (the protocol version is negotiated with each broker) and ``fullMetadata``
(Tidal always reads metadata for the watched topics only).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from scaler.clients import TlsSettings
from scaler.contract import TriggerContext
from scaler.errors import UnsupportedError
from scaler.params import Config, Param
from scalers.kafka.lag import parse_partition_list
from scalers.kafka.settings import KafkaSettings

SASL_MODES = ("none", "plaintext", "scram_sha256", "scram_sha512", "oauthbearer", "gssapi")
_SASL_MECHANISMS = {
    "plaintext": "PLAIN",
    "scram_sha256": "SCRAM-SHA-256",
    "scram_sha512": "SCRAM-SHA-512",
}
_VERSION = re.compile(r"\d+\.\d+\.\d+(\.\d+)?")


def parse_servers(items: Iterable[str]) -> tuple[list[tuple[str, int]], list[str]]:
    """``host:port`` items (IPv6 as ``[::1]:9092``) and the problems found."""
    servers: list[tuple[str, int]] = []
    problems: list[str] = []
    for item in items:
        host, sep, port = item.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            problems.append(f"invalid bootstrap server '{item}': expected host:port")
            continue
        servers.append((host, int(port)))
    return servers, problems


PARAMS: tuple[Param, ...] = (
    Param("bootstrapServers", "list", sources=("metadata", "env"), required=True),
    Param("consumerGroup", sources=("metadata", "env"), required=True),
    Param("topic", sources=("metadata", "env"), doc="empty: the group's committed topics"),
    Param("partitionLimitation", "list", sources=("metadata",), doc="e.g. 1,2,10-20,31"),
    Param("lagThreshold", "int", sources=("metadata",), default=10, above=0),
    Param("activationLagThreshold", "int", sources=("metadata",), default=0, minimum=0),
    Param(
        "offsetResetPolicy",
        sources=("metadata",),
        default="latest",
        allowed=("latest", "earliest"),
    ),
    Param("allowIdleConsumers", "bool", sources=("metadata",), default=False),
    Param("excludePersistentLag", "bool", sources=("metadata",), default=False),
    Param("scaleToZeroOnInvalidOffset", "bool", sources=("metadata",), default=False),
    Param("limitToPartitionsWithLag", "bool", sources=("metadata",), default=False),
    Param("ensureEvenDistributionOfPartitions", "bool", sources=("metadata",), default=False),
    Param("fullMetadata", "bool", sources=("metadata",), default=True, doc="accepted"),
    Param("version", sources=("metadata",), default="1.0.0", doc="accepted, negotiated"),
    Param("sasl", sources=("metadata", "auth"), allowed=SASL_MODES),
    Param("saslTokenProvider", sources=("metadata", "auth"), doc="oauthbearer only"),
    Param("awsRegion", sources=("metadata",), doc="oauthbearer (aws_msk_iam) only"),
    Param("username", sources=("auth",)),
    Param("password", sources=("auth",), secret=True),
    # authParams first: KEDA lets a TriggerAuthentication's `tls` override `tls: disable`.
    Param("tls", sources=("auth", "metadata"), allowed=("enable", "disable")),
    Param("ca", sources=("auth",), secret=True),
    Param("cert", sources=("auth",), secret=True),
    Param("key", sources=("auth",), secret=True),
    Param("keyPassword", sources=("auth",), secret=True),
    Param("unsafeSsl", "bool", sources=("metadata",), default=False),
    Param(
        "pushInterval",
        "duration",
        sources=("metadata",),
        default=0.1,
        above=0,
        doc="Tidal: how often the shared push watcher reads end offsets (ms, or 100ms / 1s)",
    ),
)


def problems(config: Config, trigger: TriggerContext) -> list[str]:
    """Every problem of a trigger's parsed metadata (UnsupportedError for an unsupported SASL)."""
    _, problems = parse_servers(config.get_list("bootstrapServers"))
    topic = config.opt_str("topic")
    allow_idle = config.get_bool("allowIdleConsumers")
    limit = config.get_bool("limitToPartitionsWithLag")
    even = config.get_bool("ensureEvenDistributionOfPartitions")
    if allow_idle and limit:
        problems.append(
            "allowIdleConsumers and limitToPartitionsWithLag cannot be set simultaneously"
        )
    if limit and even:
        problems.append(
            "limitToPartitionsWithLag and ensureEvenDistributionOfPartitions cannot be set"
            " simultaneously"
        )
    if not topic:
        if limit:
            problems.append("topic must be specified when using limitToPartitionsWithLag")
        if even:
            problems.append("topic must be specified when using ensureEvenDistributionOfPartitions")
        if not config.get_bool("fullMetadata"):
            problems.append("topic must be specified when fullMetadata is false")
    elif config.get_list("partitionLimitation"):
        pattern = ",".join(config.get_list("partitionLimitation"))
        try:
            parse_partition_list(config.get_list("partitionLimitation"))
        except ValueError as exc:
            problems.append(f"error parsing in partitionLimitation '{pattern}': {exc}")
    if not _VERSION.fullmatch(config.get_str("version")):
        problems.append(
            f"error parsing kafka version: invalid version `{config.get_str('version')}`"
        )
    problems.extend(_tls_problems(config, trigger))
    problems.extend(_sasl_problems(config, trigger))
    return problems


def _tls_enabled(config: Config) -> bool:
    return config.opt_str("tls") == "enable"


def _tls_problems(config: Config, trigger: TriggerContext) -> list[str]:
    problems: list[str] = []
    in_metadata = (trigger.metadata.get("tls") or "").strip()
    in_auth = (trigger.auth_params.get("tls") or "").strip()
    if in_metadata == "enable" and in_auth:
        problems.append(
            "unable to set `tls` in both ScaledObject and TriggerAuthentication together"
        )
    if not _tls_enabled(config):
        return problems
    has_cert, has_key = config.opt_str("cert") is not None, config.opt_str("key") is not None
    if has_cert and not has_key:
        problems.append("key must be provided with cert")
    elif has_key and not has_cert:
        problems.append("cert must be provided with key")
    else:
        try:
            TlsSettings.from_config(config).check()
        except ValueError as exc:
            problems.append(f"invalid TLS settings: {exc}")
    return problems


def _sasl_problems(config: Config, trigger: TriggerContext) -> list[str]:
    in_metadata = (trigger.metadata.get("sasl") or "").strip()
    if in_metadata and (trigger.auth_params.get("sasl") or "").strip():
        return ["unable to set `sasl` in both ScaledObject and TriggerAuthentication together"]
    mode = config.opt_str("sasl") or "none"
    if mode in ("oauthbearer", "gssapi"):
        raise UnsupportedError(
            f"kafka sasl mode '{mode}' is not supported by Tidal"
            " (supported: none, plaintext, scram_sha256, scram_sha512)"
        )
    problems: list[str] = []
    if mode != "none":
        if not config.opt_str("username"):
            problems.append("no username given")
        if not config.opt_str("password"):
            problems.append("no password given")
    return problems


def cluster_settings(config: Config, trigger: TriggerContext) -> KafkaSettings:
    """How to reach the trigger's cluster (the shared client's key)."""
    servers, _ = parse_servers(config.get_list("bootstrapServers"))
    tls = _tls_enabled(config)
    mode = config.opt_str("sasl") or "none"
    mechanism = _SASL_MECHANISMS.get(mode)
    if mechanism is None:
        protocol = "SSL" if tls else "PLAINTEXT"
    else:
        protocol = "SASL_SSL" if tls else "SASL_PLAINTEXT"
    return KafkaSettings(
        bootstrap=tuple(servers),
        security_protocol=protocol,
        sasl_mechanism=mechanism,
        username=config.opt_str("username") if mechanism else None,
        password=config.opt_str("password") if mechanism else None,
        tls=TlsSettings.from_config(config) if tls else None,
        timeout=trigger.timeout,
    )
