"""What every `aws-sqs-queue` scaler of one endpoint and identity shares: a hub.

A *target* is one SQS endpoint (``awsEndpoint``, or AWS's endpoint of ``awsRegion``), region and
credential (`SqsTarget.key()`: a fingerprint of the credentials, never the secret). Every scaler
of that target shares one `SqsHub` through the ClientPool. The hub:

* holds one boto3 SQS client (botocore clients are thread-safe; the session that made it is
  not kept) and runs its blocking calls in the hub's own small thread pool (`HUB_THREADS`), so
  an endpoint that hangs ties up the threads of its own hub only: scalers of other endpoints or
  credentials never wait for it, and the event loop never blocks;
* coalesces reads: a sample of a queue whose ``GetQueueAttributes`` is already waiting or
  running on the hub joins it (samples arriving within `WINDOW` of each other, as those of one
  scheduler tick do, form one round). A round always asks for the three counts, so objects with
  different ``scaleOnInFlight``/``scaleOnDelayed`` still share one request; `requests` counts
  what was sent. A round still running (a slow or hung endpoint) is joined, never duplicated,
  so at most one request per queue is in flight and the threads cannot pile up;
* bounds every sample by the trigger's timeout: the caller waits at most `timeout` seconds,
  then gets a ScalerError; botocore's own connect and read timeouts (the same value, no
  retries: the next poll retries) end the request in its thread soon after;
* resolves a bare queue name (KEDA accepts ``queueURL: my-queue``) to its URL with one
  ``GetQueueUrl`` per hub, cached for the hub's life.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeVar

import boto3
from botocore import exceptions as boto_errors
from botocore.config import Config as BotoConfig

from scaler.clients import ClientKey
from scaler.errors import QueryError, ScalerError
from scaler.params import redact
from scalers.aws_common import AwsTarget, aws_error

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeNameType as QueueAttributeName

log = logging.getLogger(__name__)

HUB_THREADS = 2  # threads per hub: distinct queues of one endpoint read side by side
WINDOW = 0.005  # seconds a round waits for the same tick's other samples
VISIBLE: Final = "ApproximateNumberOfMessages"
IN_FLIGHT: Final = "ApproximateNumberOfMessagesNotVisible"
DELAYED: Final = "ApproximateNumberOfMessagesDelayed"
ATTRIBUTES: tuple[QueueAttributeName, ...] = (VISIBLE, IN_FLIGHT, DELAYED)
_MISSING_CODES = frozenset({"QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue"})
_AUTH_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "ExpiredToken",
        "IncompleteSignature",
        "InvalidClientTokenId",
        "InvalidSecurity",
        "MissingAuthenticationToken",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
    }
)
T = TypeVar("T")


@dataclass(frozen=True, slots=True, repr=False)
class SqsTarget(AwsTarget):
    """How to reach SQS with one identity; repr shows no credentials."""

    def key(self) -> ClientKey:
        return ClientKey("sqs", f"{self.where}|{self.region}|{self.timeout}", self.credentials())

    def __repr__(self) -> str:
        return f"SqsTarget({self.where}, region={self.region})"


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """One GetQueueAttributes answer: visible, in-flight (not visible) and delayed messages."""

    visible: int
    in_flight: int
    delayed: int

    def total(self, *, in_flight: bool, delayed: bool) -> int:
        """KEDA's sum: always the visible messages, plus the others when asked for."""
        return (
            self.visible + (self.in_flight if in_flight else 0) + (self.delayed if delayed else 0)
        )


def _new_boto_client(target: SqsTarget) -> SQSClient:
    config = BotoConfig(  # type: ignore[call-arg]  # the 1.43 stubs lack the endpoint switch
        region_name=target.region,
        connect_timeout=target.timeout,
        read_timeout=target.timeout,
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=HUB_THREADS,
        # Only the trigger decides where requests go: no AWS_ENDPOINT_URL* from the daemon's env.
        ignore_configured_endpoint_urls=True,
        user_agent_extra="tidal-autoscaler",
    )
    session = boto3.session.Session(
        aws_access_key_id=target.access_key,
        aws_secret_access_key=target.secret_key,
        aws_session_token=target.session_token,
        region_name=target.region,
    )
    return session.client("sqs", endpoint_url=target.endpoint, config=config)


def _counts(attributes: Mapping[str, str], where: str) -> QueueCounts:
    values: list[int] = []
    for name in ATTRIBUTES:
        raw = attributes.get(name)
        if raw is None:
            raise QueryError(f"{where}: the answer has no {name}")
        try:
            value = int(raw)
        except ValueError:
            raise QueryError(f"{where}: {name} is {raw[:40]!r}, not an integer") from None
        if value < 0:
            raise QueryError(f"{where}: {name} is negative ({value})")
        values.append(value)
    return QueueCounts(*values)


class SqsHub:
    """Shared by every scaler of one target; see the module docstring."""

    def __init__(self, target: SqsTarget, client: SQSClient, executor: ThreadPoolExecutor) -> None:
        self.target = target
        self._client = client
        self._executor = executor
        self._rounds: dict[tuple[str, str], asyncio.Task[object]] = {}
        self._urls: dict[str, str] = {}
        self._closed = False
        self.requests = 0  # requests sent to the endpoint (tests and benchmarks read it)

    @classmethod
    async def create(cls, target: SqsTarget) -> SqsHub:
        """A hub with its client (botocore loads its models: done in the hub's thread)."""
        executor = ThreadPoolExecutor(max_workers=HUB_THREADS, thread_name_prefix="tidal-sqs")
        loop = asyncio.get_running_loop()
        try:
            client = await loop.run_in_executor(executor, _new_boto_client, target)
        except Exception as exc:
            executor.shutdown(wait=False)
            detail = redact(f"{type(exc).__name__}: {exc}", target.secrets())
            raise ScalerError(f"aws-sqs-queue {target.where}: no SQS client: {detail}") from exc
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(target, client, executor)

    async def counts(self, queue_url: str, queue: str) -> QueueCounts:
        """The three counts of `queue_url`, joining a round of the same queue if there is one."""
        return await self._joined(
            ("attributes", queue_url), lambda: self._attributes(queue_url, queue), queue
        )

    async def resolve(self, name: str) -> str:
        """The URL of the queue called `name` (GetQueueUrl once per hub)."""
        url = self._urls.get(name)
        if url is None:
            url = await self._joined(("url", name), lambda: self._get_url(name), name)
            self._urls[name] = url
        return url

    async def _joined(
        self, key: tuple[str, str], call: Callable[[], Awaitable[T]], queue: str
    ) -> T:
        if self._closed:
            raise ScalerError(self._where(queue) + ": the scaler is closed")
        task = self._rounds.get(key)
        if task is None or task.done():
            task = asyncio.create_task(self._round(call), name=f"sqs {self.target.where}")
            self._rounds[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        try:
            result = await asyncio.wait_for(asyncio.shield(task), self.target.timeout)
        except TimeoutError:
            raise ScalerError(
                self._where(queue) + f": no answer within {self.target.timeout:g} s"
            ) from None
        return result  # type: ignore[return-value]  # the task of `key` runs `call`

    async def _round(self, call: Callable[[], Awaitable[T]]) -> T:
        await asyncio.sleep(WINDOW)
        return await call()

    def _finished(self, key: tuple[str, str], task: asyncio.Task[object]) -> None:
        if self._rounds.get(key) is task:
            del self._rounds[key]
        if not task.cancelled():
            task.exception()  # retrieved: a round nobody awaited any more is not "never retrieved"

    async def _attributes(self, queue_url: str, queue: str) -> QueueCounts:
        answer = await self._call(
            queue,
            lambda: self._client.get_queue_attributes(
                QueueUrl=queue_url, AttributeNames=list(ATTRIBUTES)
            ),
        )
        attributes = {str(k): v for k, v in (answer.get("Attributes") or {}).items()}
        return _counts(attributes, self._where(queue))

    async def _get_url(self, name: str) -> str:
        answer = await self._call(name, lambda: self._client.get_queue_url(QueueName=name))
        url = answer.get("QueueUrl")
        if not url:
            raise QueryError(self._where(name) + ": GetQueueUrl returned no URL")
        return url

    async def _call(self, queue: str, call: Callable[[], T]) -> T:
        self.requests += 1
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, call)
        except (boto_errors.BotoCoreError, boto_errors.ClientError) as exc:
            raise self._error(queue, exc) from exc

    def _where(self, queue: str) -> str:
        return f"aws-sqs-queue {self.target.where} queue '{queue}'"

    def _error(self, queue: str, exc: Exception) -> ScalerError:
        return aws_error(
            exc,
            self._where(queue),
            self.target,
            _AUTH_CODES,
            lambda code, status: "the queue does not exist" if code in _MISSING_CODES else None,
        )

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in list(self._rounds.values()):
            task.cancel()
        self._rounds.clear()
        # A request still blocked in a thread ends by botocore's own timeout; do not wait for it.
        self._executor.submit(self._client.close)
        self._executor.shutdown(wait=False)


async def close_hub(hub: SqsHub) -> None:
    await hub.aclose()
