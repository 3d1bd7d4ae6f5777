"""The `kafka` trigger: a consumer group's lag, with KEDA's parameters and arithmetic.

Parameters, defaults and messages follow KEDA's ``kafka`` scaler (``keda-reference.md`` §4.1).
The lag arithmetic lives in `scalers.kafka_lag` (pure); the reads go through the cluster's shared
`scalers.kafka_cluster.KafkaCluster`, which answers every trigger of a tick with one OffsetFetch
per group coordinator and one ListOffsets per partition leader.

Metric ``s<index>-kafka-<topic>`` (or ``s<index>-kafka-<consumerGroup>-topics`` without a topic),
target ``lagThreshold``; active when the lag including persistent lag, before the partition cap,
is strictly greater than ``activationLagThreshold``.

Push: ``wakeups()`` subscribes to the cluster's shared end-offset watcher
(`KafkaCluster.watch`) for the trigger's topic (and ``partitionLimitation``): it yields when a
message is appended to a watched partition, so a produce wakes the object's sample within about
one watcher interval (``pushInterval``, a Tidal extension, 100 ms by default). Triggers without
``topic`` are polled (UnsupportedError: their partitions depend on the group's commits).

Not supported (UnsupportedError): ``sasl: oauthbearer`` and ``sasl: gssapi``. Accepted and
ignored: ``version`` (the protocol version is negotiated with each broker) and ``fullMetadata``
(Tidal always reads metadata for the watched topics only).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncGenerator, Iterable, Mapping

from scaler.clients import ClientPool, Lease, TlsSettings
from scaler.contract import MetricSpec, Sample, TriggerContext, metric_name
from scaler.errors import QueryError, UnsupportedError
from scaler.params import Config, Param
from scalers.kafka_cluster import KafkaCluster, KafkaSettings
from scalers.kafka_lag import LagPolicy, PartitionKey, parse_partition_list, total_lag

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


class KafkaScaler:
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

    @staticmethod
    def validate(config: Config, trigger: TriggerContext) -> Iterable[str]:
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
                problems.append(
                    "topic must be specified when using ensureEvenDistributionOfPartitions"
                )
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

    def __init__(self, config: Config, trigger: TriggerContext, clients: ClientPool) -> None:
        self._group = config.get_str("consumerGroup")
        self._topic = config.opt_str("topic")
        limitation = config.get_list("partitionLimitation") if self._topic else ()
        self._only: frozenset[int] | None = (
            frozenset(parse_partition_list(limitation)) if limitation else None
        )
        reset = config.get_str("offsetResetPolicy")
        self._policy = LagPolicy(
            lag_threshold=config.get_int("lagThreshold"),
            activation_lag_threshold=config.get_int("activationLagThreshold"),
            offset_reset_policy="earliest" if reset == "earliest" else "latest",
            allow_idle_consumers=config.get_bool("allowIdleConsumers"),
            exclude_persistent_lag=config.get_bool("excludePersistentLag"),
            scale_to_zero_on_invalid_offset=config.get_bool("scaleToZeroOnInvalidOffset"),
            limit_to_partitions_with_lag=config.get_bool("limitToPartitionsWithLag"),
            ensure_even_distribution_of_partitions=config.get_bool(
                "ensureEvenDistributionOfPartitions"
            ),
        )
        detail = f"kafka-{self._topic}" if self._topic else f"kafka-{self._group}-topics"
        self._spec = MetricSpec(
            metric_name(trigger.index, detail),
            float(self._policy.lag_threshold),
            trigger.metric_type,
        )
        self._settings = _settings(config, trigger)
        self._clients = clients
        self._lease: Lease[KafkaCluster] | None = None
        self._lease_lock = asyncio.Lock()
        self._seen: Mapping[PartitionKey, int] = {}  # excludePersistentLag memory
        self._push_interval = config.get_duration("pushInterval")

    @property
    def settings(self) -> KafkaSettings:
        return self._settings

    @property
    def policy(self) -> LagPolicy:
        return self._policy

    @property
    def group(self) -> str:
        return self._group

    @property
    def topic(self) -> str | None:
        return self._topic

    @property
    def push_interval(self) -> float:
        """Seconds between the push watcher's end-offset reads this trigger asks for."""
        return self._push_interval

    @property
    def partitions(self) -> frozenset[int] | None:
        """The partitionLimitation in force (None: every partition)."""
        return self._only

    def metric_spec(self) -> MetricSpec:
        return self._spec

    async def cluster(self) -> KafkaCluster:
        """The shared cluster client (acquired on first use)."""
        if self._lease is None:
            async with self._lease_lock:
                if self._lease is None:
                    settings = self._settings

                    async def create() -> KafkaCluster:
                        return KafkaCluster(settings)

                    async def close(cluster: KafkaCluster) -> None:
                        await cluster.aclose()

                    self._lease = await self._clients.acquire(settings.key(), create, close)
        return self._lease.client

    async def sample(self, now: float) -> Sample:
        cluster = await self.cluster()
        partitions = await cluster.offsets(self._group, self._topic)
        if self._only is not None:
            partitions = tuple(p for p in partitions if p.partition in self._only)
            if not partitions:
                raise QueryError(
                    f"expected at least one active partition within the topic '{self._topic}'"
                )
        result = total_lag(partitions, self._policy, self._seen)
        if self._policy.exclude_persistent_lag:
            self._seen = result.seen
        return Sample(float(result.value), result.active, now)

    def wakeups(self) -> AsyncGenerator[None, None]:
        """A new iterator yielding when a watched partition of `topic` receives messages.

        Raises UnsupportedError for a trigger without `topic`; the iterator raises ScalerError /
        QueryError when the cluster's end offsets cannot be read (the core then polls and
        subscribes again later).
        """
        if self._topic is None:
            raise UnsupportedError(
                "kafka push needs `topic` (a topic-less trigger's partitions follow the group's"
                " commits); the trigger is polled"
            )
        return self._wakeups(self._topic)

    async def _wakeups(self, topic: str) -> AsyncGenerator[None, None]:
        cluster = await self.cluster()
        async with contextlib.aclosing(
            cluster.watch(topic, self._only, self._push_interval)
        ) as changes:
            async for _ in changes:
                yield None

    async def aclose(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            await lease.release()


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


def _settings(config: Config, trigger: TriggerContext) -> KafkaSettings:
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
