"""The `rabbitmq` trigger: a queue's length or message rates, over AMQP or the management API.

KEDA's parameters and semantics (``pkg/scalers/rabbitmq_scaler.go``):

* ``host`` (metadata, TriggerAuthentication or ``hostFromEnv``): ``amqp[s]://user:pass@host:
  port/vhost`` or ``http[s]://user:pass@host:port/<path>/vhost`` (the management API, under an
  optional path prefix; no vhost or ``/`` means ``/``). ``protocol`` ``auto`` (default: from the
  host's scheme), ``amqp`` or ``http``. ``vhostName`` overrides the host's vhost; ``username``
  and ``password`` (TriggerAuthentication or ``...FromEnv``, both or neither) override its
  credentials.
* ``mode``: ``QueueLength`` (AMQP: the ready messages a passive ``queue.declare`` reports;
  HTTP: ``messages``, ready + unacknowledged, or ``messages_ready`` with
  ``excludeUnacknowledged``), ``MessageRate`` (publish rate), ``DeliverGetRate``,
  ``PublishedToDeliveredRatio``, ``ExpectedQueueConsumptionTime`` (HTTP only). ``value`` is the
  target, ``activationValue`` (default 0) the activation threshold. Without ``mode``, ``value``
  and the deprecated ``queueLength``: QueueLength 20; ``queueLength: N`` alone means
  QueueLength N; ``queueLength`` together with ``mode`` or ``value`` is an error.
* ``useRegex`` (HTTP): ``queueName`` is a regular expression over the vhost's queues, listed
  in one page of ``pageSize`` (default 100; more pages are an error) and combined with
  ``operation`` ``sum`` (default), ``max`` or ``avg``.
* ``timeout`` (HTTP only, as KEDA) overrides the global timeout; ``unsafeSsl`` skips
  certificate checks; ``tls: enable`` with ``ca``, ``cert``, ``key``, ``keyPassword``
  (TriggerAuthentication) sets the client TLS material for amqps:// and https://.

The metric is KEDA's ``s<N>-rabbitmq-<queueName, query-escaped>``. Activity follows KEDA per
mode. Where Tidal is stricter than KEDA (an error, never a zero): a management answer without
the queue's counts (a queue the statistics have not reached yet) is a QueryError, not 0;
``tls: enable`` with a plain amqp:// or http:// host is refused (KEDA then connects in plain
text); ``operation`` is checked when the trigger is parsed, not on the first sample. OAuth2 and
Azure Workload Identity are refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote, quote_plus, unquote, urlsplit

import aiohttp

from scaler.clients import ClientKey, ClientPool, TlsSettings, fingerprint
from scaler.contract import MetricSpec, Sample, TriggerContext, metric_name
from scaler.errors import QueryError
from scaler.params import Config, Param
from scalers.http_common import HttpAuth, safe_url, timeout_of
from scalers.rabbitmq_sources import (
    AmqpHub,
    AmqpTarget,
    HttpRead,
    HubLease,
    ManagementHub,
    query_pairs,
)

QUEUE_LENGTH = "QueueLength"
MESSAGE_RATE = "MessageRate"
DELIVER_GET_RATE = "DeliverGetRate"
PUBLISHED_TO_DELIVERED = "PublishedToDeliveredRatio"
CONSUMPTION_TIME = "ExpectedQueueConsumptionTime"
MODES = (QUEUE_LENGTH, MESSAGE_RATE, DELIVER_GET_RATE, PUBLISHED_TO_DELIVERED, CONSUMPTION_TIME)
DEFAULT_QUEUE_LENGTH = 20.0
ROOT_VHOST = "%2F"
_REFUSED = {
    "oauthTokenURI": "OAuth2 authentication",
    "clientID": "OAuth2 authentication",
    "clientSecret": "OAuth2 authentication",
    "workloadIdentityResource": "Azure Workload Identity",
}


class RabbitMQScaler:
    PARAMS: ClassVar[tuple[Param, ...]] = (
        Param("queueName", sources=("metadata",), required=True),
        Param("mode", sources=("metadata",)),
        Param("value", "float", sources=("metadata",)),
        Param("queueLength", "float", sources=("metadata",), doc="deprecated: mode and value"),
        Param("activationValue", "float", sources=("metadata",), default=0.0),
        Param("host", sources=("metadata", "auth", "env"), required=True, secret=True),
        Param("protocol", sources=("metadata", "auth"), default="auto"),
        Param("vhostName", sources=("metadata", "auth")),
        Param("useRegex", "bool", sources=("metadata",), default=False),
        Param("excludeUnacknowledged", "bool", sources=("metadata",), default=False),
        Param("pageSize", "int", sources=("metadata",), default=100),
        Param("operation", sources=("metadata",), default="sum", allowed=("sum", "avg", "max")),
        Param("timeout", "duration", sources=("metadata",), above=0, doc="ms, or 30s / 1m"),
        Param("username", sources=("auth", "env")),
        Param("password", sources=("auth", "env"), secret=True),
        Param("tls", sources=("auth",), default="disable"),
        Param("ca", sources=("auth",)),
        Param("cert", sources=("auth",)),
        Param("key", sources=("auth",), secret=True),
        Param("keyPassword", sources=("auth",), secret=True),
        Param("unsafeSsl", "bool", sources=("metadata",), default=False),
        *(Param(name, sources=("auth",), secret=True) for name in _REFUSED),
    )
    SAMPLED = True

    @staticmethod
    def validate(config: Config, trigger: TriggerContext) -> Iterable[str]:
        problems = [
            f"{what} is not supported by Tidal (authParams '{name}')"
            for name, what in _REFUSED.items()
            if config.has(name)
        ]
        protocol = config.get_str("protocol")
        if protocol not in ("amqp", "http", "auto"):
            problems.append(
                f"the protocol has to be either `amqp`, `http`, or `auto` but is `{protocol}`"
            )
            return problems
        if config.get_str("tls") not in ("enable", "disable"):
            problems.append(f"incorrect value for TLS given: {config.get_str('tls')}")
        if (config.opt_str("cert") is None) != (config.opt_str("key") is None):
            problems.append("both key and certificate must be provided")
        if config.get_int("pageSize") < 1:
            problems.append("pageSize should be 1 or greater")
        if (config.opt_str("username") is None) != (config.opt_str("password") is None):
            problems.append("username and password must be given together")
        try:
            resolved = _resolve_protocol(config)
        except ValueError as exc:
            return [*problems, str(exc)]
        if config.get_bool("useRegex") and resolved != "http":
            problems.append("configure useRegex=true only with HTTP protocol")
        if config.get_bool("excludeUnacknowledged") and resolved != "http":
            problems.append("configure excludeUnacknowledged=true only with HTTP protocol")
        try:
            mode, _ = _mode_and_value(config)
        except ValueError as exc:
            return [*problems, str(exc)]
        if mode != QUEUE_LENGTH and resolved != "http":
            problems.append(
                f"protocol {resolved} not supported; must be HTTP to use trigger mode {mode}"
            )
        if resolved == "amqp" and config.has("timeout"):
            seconds = config.get_duration("timeout")
            problems.append(f"AMQP protocol doesn't support custom timeouts: {seconds:g} s")
        problems += _host_problems(config, resolved)
        if not problems and (config.get_str("tls") == "enable" or config.opt_str("ca")):
            try:
                _tls(config).check()
            except (ValueError, TypeError) as exc:  # TypeError: a CA that is not ASCII
                problems.append(f"invalid TLS settings: {exc}")
        return problems

    def __init__(self, config: Config, trigger: TriggerContext, clients: ClientPool) -> None:
        self._queue = config.get_str("queueName")
        self._mode, target = _mode_and_value(config)
        self._activation = config.get_float("activationValue")
        self._protocol = _resolve_protocol(config)
        self._exclude_unacked = config.get_bool("excludeUnacknowledged")
        self._regex = config.get_bool("useRegex")
        self._operation = config.get_str("operation")
        self._spec = MetricSpec(
            metric_name(trigger.index, f"rabbitmq-{quote_plus(self._queue, safe='')}"),
            target,
            trigger.metric_type,
        )
        timeout = timeout_of(config, trigger)
        self._amqp: HubLease[AmqpHub] | None = None
        self._http: HubLease[ManagementHub] | None = None
        self._read = HttpRead("")
        if self._protocol == "amqp":
            amqp = _amqp_target(config, timeout)
            self._amqp = HubLease(amqp.key(), lambda: AmqpHub(amqp), clients)
        else:
            base, vhost, auth = _management(config)
            key = ClientKey("rabbitmq-http", f"{base} {timeout:g}", auth.fingerprint)
            self._http = HubLease(key, lambda: ManagementHub(base, auth, timeout, clients), clients)
            self._read = _http_read(base, vhost, self._queue, self._regex, config)

    def metric_spec(self) -> MetricSpec:
        return self._spec

    async def hub(self) -> AmqpHub | ManagementHub:
        """The shared hub this scaler reads through (tests and benchmarks count its reads)."""
        lease: HubLease[AmqpHub] | HubLease[ManagementHub] | None = self._amqp or self._http
        assert lease is not None
        return await lease.hub()

    async def sample(self, now: float) -> Sample:
        if self._amqp is not None:
            hub = await self._amqp.hub()
            stats = QueueStats(float(await hub.message_count(self._queue)), 0.0, 0.0)
        else:
            assert self._http is not None
            management = await self._http.hub()
            stats = self._stats(await management.get(self._read))
        value, active = evaluate(self._mode, stats, self._activation)
        return Sample(value, active, now)

    def _stats(self, body: bytes) -> QueueStats:
        try:
            answer = json.loads(body)
        except ValueError as exc:
            raise QueryError(f"rabbitmq: the management API answer is not JSON ({exc})") from None
        if not self._regex:
            return queue_stats(answer, self._queue, self._exclude_unacked)
        items = answer.get("items") if isinstance(answer, dict) else answer
        if not isinstance(items, list):
            raise QueryError("rabbitmq: the management API answer has no list of queues")
        if isinstance(answer, dict) and _int(answer.get("page_count"), 1) > 1:
            raise QueryError(
                f"rabbitmq: regex '{self._queue}' matches more queues than can be recovered at"
                " once (raise pageSize)"
            )
        found = [queue_stats(item, str(item.get("name")), self._exclude_unacked) for item in items]
        return combine(found, self._operation)

    async def aclose(self) -> None:
        for lease in (self._amqp, self._http):
            if lease is not None:
                await lease.aclose()


@dataclass(frozen=True, slots=True)
class QueueStats:
    """What one sample reads: messages (as the mode counts them) and the two rates."""

    messages: float
    publish_rate: float
    deliver_get_rate: float


def queue_stats(item: Any, name: str, exclude_unacked: bool) -> QueueStats:
    """One queue of the management API. No count is a QueryError (never a zero): the broker
    reports counts only once its statistics have seen the queue. No message_stats (nothing
    published or delivered yet) are rates of 0, as the broker means them."""
    if not isinstance(item, dict):
        raise QueryError(f"rabbitmq: queue '{name}': unexpected answer")
    field = "messages_ready" if exclude_unacked else "messages"
    count = item.get(field)
    if not isinstance(count, int) or isinstance(count, bool):
        raise QueryError(
            f"rabbitmq: queue '{name}' has no '{field}' count yet (the broker's statistics"
            " have not reached it)"
        )
    stats = item.get("message_stats")
    stats = stats if isinstance(stats, dict) else {}
    return QueueStats(
        float(count), _rate(stats, "publish_details"), _rate(stats, "deliver_get_details")
    )


def _rate(stats: dict[str, Any], name: str) -> float:
    details = stats.get(name)
    rate = details.get("rate") if isinstance(details, dict) else None
    if rate is None:
        return 0.0
    if not isinstance(rate, int | float) or isinstance(rate, bool):
        raise QueryError(f"rabbitmq: {name}.rate is not a number")
    return float(rate)


def combine(queues: Sequence[QueueStats], operation: str) -> QueueStats:
    """KEDA's composed queue: sum, max or avg over the matched queues (message counts as
    integers, avg truncated as Go's integer division); no queue matched is 0 (KEDA)."""
    if not queues:
        return QueueStats(0.0, 0.0, 0.0)
    messages = [q.messages for q in queues]
    publish = [q.publish_rate for q in queues]
    deliver = [q.deliver_get_rate for q in queues]
    if operation == "max":
        return QueueStats(max(messages), max(publish), max(deliver))
    total = QueueStats(sum(messages), sum(publish), sum(deliver))
    if operation == "sum":
        return total
    n = len(queues)
    return QueueStats(
        float(int(total.messages) // n), total.publish_rate / n, total.deliver_get_rate / n
    )


def evaluate(mode: str, stats: QueueStats, activation: float) -> tuple[float, bool]:
    """The metric value and activity, per KEDA's GetMetricsAndActivity."""
    messages, publish, deliver = stats.messages, stats.publish_rate, stats.deliver_get_rate
    if mode == QUEUE_LENGTH:
        return messages, messages > activation
    if mode == MESSAGE_RATE:
        return publish, publish > activation or messages > activation
    if mode == DELIVER_GET_RATE:
        return deliver, deliver > activation
    if mode == PUBLISHED_TO_DELIVERED:
        ratio = 0.0
        if publish > 0 and deliver == 0:
            ratio = activation
        elif publish > 0 and deliver > 0:
            ratio = publish / deliver
        return ratio, ratio > activation or (publish > 0 and deliver == 0)
    if deliver == 0:
        return activation, True
    eta = (publish - deliver) / deliver + messages / deliver
    return eta, eta > activation


def _mode_and_value(config: Config) -> tuple[str, float]:
    """KEDA's validateTrigger: the mode and target, the deprecated queueLength folded in."""
    mode = config.opt_str("mode")
    value = config.opt_float("value") or None  # 0 is "not given", as in KEDA
    legacy = config.opt_float("queueLength") or None
    if legacy is None and mode is None and value is None:
        return QUEUE_LENGTH, DEFAULT_QUEUE_LENGTH
    if legacy is not None and (mode is not None or value is not None):
        raise ValueError("queueLength is deprecated; use mode and value")
    if legacy is not None:
        if legacy < 0:
            raise ValueError("queueLength must be greater than 0")
        return QUEUE_LENGTH, legacy
    if mode is None:
        raise ValueError("mode must be specified")
    if value is None:
        raise ValueError("value must be specified")
    if mode not in MODES:
        raise ValueError(f"trigger mode {mode} must be one of {', '.join(MODES)}")
    if value < 0:
        raise ValueError("value must be greater than 0 (the HPA refuses a target <= 0)")
    return mode, value


def _resolve_protocol(config: Config) -> str:
    protocol = config.get_str("protocol")
    if protocol != "auto":
        return protocol
    scheme = urlsplit(config.get_str("host")).scheme
    if scheme in ("amqp", "amqps"):
        return "amqp"
    if scheme in ("http", "https"):
        return "http"
    raise ValueError(f"unknown host URL scheme: `{scheme}`")


def _host_problems(config: Config, protocol: str) -> list[str]:
    host = config.get_str("host")
    parts = urlsplit(host)
    schemes = ("amqp", "amqps") if protocol == "amqp" else ("http", "https")
    shown = safe_url(host) if parts.scheme in ("http", "https") else f"{parts.scheme}://..."
    if parts.scheme not in schemes or not parts.hostname:
        return [f"host '{shown}' must be an {' or '.join(schemes)} URL for protocol {protocol}"]
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return [f"host '{shown}' has an invalid port"]
    if config.get_str("tls") == "enable" and parts.scheme in ("amqp", "http"):
        return [
            f"tls is 'enable' but the host's scheme is {parts.scheme}: use"
            f" {parts.scheme}s:// (Tidal does not send credentials in plain text when TLS was"
            " asked for)"
        ]
    if protocol == "amqp" and parts.query:
        return [
            "host: query options in an AMQP URI are not supported (TLS material comes from"
            " the TriggerAuthentication: ca, cert, key)"
        ]
    return []


def _tls(config: Config) -> TlsSettings:
    client = config.get_str("tls") == "enable"
    return TlsSettings.from_config(config, client_cert=client)


def _tls_of(config: Config, scheme: str) -> TlsSettings | None:
    if scheme not in ("amqps", "https"):
        return None
    if config.get_str("tls") == "enable" or config.opt_str("ca"):
        return _tls(config)
    return TlsSettings(verify=not config.get_bool("unsafeSsl"))


def _credentials(config: Config, username: str | None, password: str | None) -> tuple[str, str]:
    user, secret = config.opt_str("username"), config.opt_str("password")
    if user is not None and secret is not None:
        return user, secret
    return unquote(username or ""), unquote(password or "")


def _amqp_target(config: Config, timeout: float) -> AmqpTarget:
    parts = urlsplit(config.get_str("host"))
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    vhost = config.opt_str("vhostName") or unquote(path) or "/"
    user, password = _credentials(config, parts.username, parts.password)
    return AmqpTarget(
        tls=parts.scheme == "amqps",
        host=parts.hostname or "",
        port=parts.port or (5671 if parts.scheme == "amqps" else 5672),
        vhost=vhost,
        username=user or "guest",  # amqp091-go's defaults, which KEDA inherits
        password=password or ("guest" if not user else ""),
        tls_settings=_tls_of(config, parts.scheme),
        timeout=timeout,
        secrets=(*config.secret_values(), password),
    )


def _management(config: Config) -> tuple[str, str, HttpAuth]:
    """(base URL with the path prefix, the vhost path segment, auth) as KEDA derives them."""
    parts = urlsplit(config.get_str("host"))
    port = parts.port or (443 if parts.scheme == "https" else 80)
    segments = parts.path.split("/")
    prefix = "/".join(s for s in segments[:-1] if s)
    vhost = segments[-1] if segments else ""
    override = config.opt_str("vhostName")
    if override:
        vhost = quote(override, safe="")
    if vhost in ("", "/"):
        vhost = ROOT_VHOST
    base = f"{parts.scheme}://{parts.hostname}:{port}" + (f"/{prefix}" if prefix else "")
    user, password = _credentials(config, parts.username, parts.password)
    headers = {"Authorization": aiohttp.encode_basic_auth(user, password)} if user else {}
    tls = _tls_of(config, parts.scheme)
    ssl_setting: TlsSettings | bool = True if tls is None else tls
    material = (sorted(headers.items()), tls.fingerprint if tls else True)
    secrets = (*config.secret_values(), password) if password else config.secret_values()
    return base, vhost, HttpAuth(headers, {}, ssl_setting, fingerprint(*material), secrets)


def _http_read(base: str, vhost: str, queue: str, regex: bool, config: Config) -> HttpRead:
    if not regex:
        return HttpRead(f"{base}/api/queues/{vhost}/{quote(queue, safe='')}")
    params = {
        "page": "1",
        "page_size": str(config.get_int("pageSize")),
        "name": queue,
        "use_regex": "true",
        "pagination": "false",
    }
    return HttpRead(f"{base}/api/queues/{vhost}", query_pairs(params))


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default
