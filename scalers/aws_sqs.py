"""The `aws-sqs-queue` trigger: the number of messages in an Amazon SQS queue, as KEDA counts it.

Parameters are KEDA's: ``queueURL`` (or ``queueURLFromEnv``: a variable of the target's
container; ``queueURL`` wins when both are given), ``queueLength`` (the HPA target, default 5),
``activationQueueLength`` (default 0), ``awsRegion`` (metadata or TriggerAuthentication),
``awsEndpoint`` (an SQS-compatible server: LocalStack, ElasticMQ, a VPC endpoint),
``scaleOnInFlight`` (default true) and ``scaleOnDelayed`` (default false).

The value is ``ApproximateNumberOfMessages``, plus ``ApproximateNumberOfMessagesNotVisible``
(received, not yet deleted) when scaleOnInFlight, plus ``ApproximateNumberOfMessagesDelayed``
when scaleOnDelayed, from one ``GetQueueAttributes``. Active when the value is strictly greater
than ``activationQueueLength``. KEDA's metric name: ``s<N>-aws-sqs-<queueName>``, the queue name
being the last segment of ``https://sqs.<region>.amazonaws.com/<account>/<queueName>``; a bare
queue name is accepted as KEDA documents ("when there is no ambiguity") and resolved with
``GetQueueUrl``.

Credentials: ``awsAccessKeyID`` and ``awsSecretAccessKey`` (and ``awsSessionToken`` for
temporary credentials) from a TriggerAuthentication (or ``<name>FromEnv``). Not supported, each
refused with a message saying so: ``awsRoleArn`` (assuming a role through STS), ``identityOwner:
operator`` (the daemon's own AWS identity: Tidal never uses ambient credentials) and any
``podIdentity`` provider but ``none`` (refused by the TriggerAuthentication resolver).

Requests go through a hub per endpoint and credential (`scalers.aws_sqs_hub`): one client,
coalesced reads, bounded by the trigger's timeout. An error is never a zero.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable
from typing import ClassVar

from scaler.clients import ClientPool
from scaler.contract import MetricSpec, Sample, TriggerContext, metric_name
from scaler.lease_slot import LeaseSlot
from scaler.params import Config, Param
from scalers.aws_common import endpoint_problems
from scalers.aws_sqs_hub import QueueCounts, SqsHub, SqsTarget, close_hub

# SQS queue names: 1 to 80 characters (".fifo" included) of letters, digits, '-' and '_';
# FIFO queues end in ".fifo".
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]+(\.fifo)?")
MAX_QUEUE_NAME = 80


def queue_name(queue_url: str) -> str:
    """The queue's name from a queue URL or a bare name; ValueError with KEDA's words if none."""
    parts = urllib.parse.urlsplit(queue_url)
    if not parts.scheme and "/" not in queue_url:
        if _QUEUE_NAME.fullmatch(queue_url) and len(queue_url) <= MAX_QUEUE_NAME:
            return queue_url
        raise ValueError(f"invalid queueURL '{queue_url}': not a URL nor a valid queue name")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"invalid queueURL '{queue_url}': expected http(s)://host/account/queue")
    if parts.username is not None or parts.password is not None:
        raise ValueError("invalid queueURL: credentials in the URL are not allowed")
    segments = parts.path.split("/")
    if len(segments) != 3 or not segments[2]:
        raise ValueError("cannot get queueName from queueURL")
    return segments[2]


class AwsSqsQueueScaler:
    PARAMS: ClassVar[tuple[Param, ...]] = (
        Param("queueURL", sources=("metadata", "env"), required=True),
        Param("queueLength", "int", sources=("metadata",), default=5, above=0, doc="HPA target"),
        # KEDA sets no bound: a negative activation keeps the object always active.
        Param("activationQueueLength", "int", sources=("metadata",), default=0),
        Param("awsRegion", sources=("metadata", "auth"), required=True),
        Param("awsEndpoint", sources=("metadata",)),
        Param("scaleOnInFlight", "bool", sources=("metadata",), default=True),
        Param("scaleOnDelayed", "bool", sources=("metadata",), default=False),
        # Required unless an unsupported identity was asked for (validate says which).
        # KEDA: authParams (also spelled awsAccessKeyId), then the metadata (an access key ID
        # is no secret), then awsAccessKeyIDFromEnv; the secret key never from the metadata.
        Param("awsAccessKeyID", aliases=("awsAccessKeyId",), sources=("auth", "metadata", "env")),
        Param("awsSecretAccessKey", sources=("auth", "env"), secret=True),
        Param("awsSessionToken", sources=("auth", "env"), secret=True),
        Param("awsRoleArn", sources=("metadata", "auth")),
        Param("identityOwner", sources=("metadata",), allowed=("pod", "operator")),
    )
    SAMPLED = True

    @staticmethod
    def validate(config: Config, trigger: TriggerContext) -> Iterable[str]:
        problems: list[str] = []
        try:
            queue_name(config.get_str("queueURL"))
        except ValueError as exc:
            problems.append(str(exc))
        endpoint = config.opt_str("awsEndpoint")
        if endpoint is not None:
            problems.extend(endpoint_problems(endpoint))
        identity: list[str] = []
        if config.opt_str("awsRoleArn") is not None:
            identity.append(
                "awsRoleArn is not supported by Tidal's aws-sqs-queue (no STS role assumption);"
                " give awsAccessKeyID and awsSecretAccessKey through a TriggerAuthentication"
            )
        if config.opt_str("identityOwner") == "operator":
            identity.append(
                "identityOwner: operator is not supported by Tidal (it never uses the daemon's"
                " own AWS identity); give awsAccessKeyID and awsSecretAccessKey through a"
                " TriggerAuthentication"
            )
        if not identity:
            for name in ("awsAccessKeyID", "awsSecretAccessKey"):
                if config.opt_str(name) is None:
                    identity.append(
                        f"{name} not found: give it through a TriggerAuthentication"
                        f" (secretTargetRef) or {name}FromEnv"
                    )
        return problems + identity

    def __init__(self, config: Config, trigger: TriggerContext, clients: ClientPool) -> None:
        self.queue_url = config.get_str("queueURL")
        self.queue = queue_name(self.queue_url)
        self._bare_name = "/" not in self.queue_url
        endpoint = config.opt_str("awsEndpoint")
        self.target = SqsTarget(
            endpoint=endpoint.rstrip("/") if endpoint else None,
            region=config.get_str("awsRegion"),
            access_key=config.get_str("awsAccessKeyID"),
            secret_key=config.get_str("awsSecretAccessKey"),
            session_token=config.opt_str("awsSessionToken"),
            timeout=trigger.timeout,
        )
        self.in_flight = config.get_bool("scaleOnInFlight")
        self.delayed = config.get_bool("scaleOnDelayed")
        self._activation = config.get_int("activationQueueLength")
        self._spec = MetricSpec(
            metric_name(trigger.index, f"aws-sqs-{self.queue}"),
            float(config.get_int("queueLength")),
            trigger.metric_type,
        )
        target = self.target
        self._hub: LeaseSlot[SqsHub] = LeaseSlot(
            clients,
            f"aws-sqs-queue queue '{self.queue}'",
            target.key(),
            lambda: SqsHub.create(target),
            close_hub,
        )
        self.last_counts: QueueCounts | None = None  # for tests and benchmarks

    def metric_spec(self) -> MetricSpec:
        return self._spec

    async def hub(self) -> SqsHub:
        return await self._hub.take()

    async def sample(self, now: float) -> Sample:
        hub = await self.hub()
        url = await hub.resolve(self.queue_url) if self._bare_name else self.queue_url
        counts = await hub.counts(url, self.queue)
        self.last_counts = counts
        value = counts.total(in_flight=self.in_flight, delayed=self.delayed)
        return Sample(float(value), value > self._activation, now)

    async def aclose(self) -> None:
        await self._hub.release()
