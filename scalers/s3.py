"""The `aws-s3` trigger: the number of objects under a bucket prefix (AWS S3 or any S3 store).

KEDA has no S3 scaler; parameters follow its object-store scalers (`gcp-storage`,
`azure-blob`) and its AWS scalers (`awsRegion`, `awsEndpoint`, `awsAccessKeyID`, ...).

The value is the number of objects whose key starts with ``prefix``. With a ``delimiter`` and
``recursive: false`` only the direct children are counted (keys with no delimiter after the
prefix); "directories" (S3's CommonPrefixes) are never counted. Listing is ``ListObjectsV2``,
page by page, and stops once ``maxObjectsToScan`` entries (objects plus directories) have been
scanned: the value is then a lower bound, and a warning says so once. Active when the count is
strictly greater than ``activationTargetObjectCount``.

boto3 is synchronous: each page request runs in one small thread pool shared by the process
(`S3_THREADS` threads), so a slow store can tie up at most that many threads, never the event
loop. One boto3 client per (endpoint, region, addressing style, credential fingerprint) is
shared through the ClientPool. Requests are not retried by botocore: the next poll retries.

Bucket notifications (see `scalers.s3_events`) can wake the sample at once; when an events
source is configured, building an `S3Scaler` gives an `S3EventsScaler` (below), which has
``wakeups()``: the trigger type names one class, and a scaler without events must not look
push-capable to the core.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import AsyncIterator, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
import botocore.session
from botocore import exceptions as boto_errors
from botocore.config import Config as BotoConfig

from scaler.clients import ClientKey, ClientPool
from scaler.contract import MetricSpec, Sample, TriggerContext, metric_name
from scaler.errors import ScalerError
from scaler.lease_slot import LeaseSlot
from scaler.params import Config, Param
from scalers.aws_common import AwsTarget, aws_error, endpoint_problems
from scalers.s3_events import (
    EVENT_PARAMS,
    EventsTarget,
    event_wakeups,
    events_problems,
    events_target,
)

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client as BotoS3
    from mypy_boto3_s3.type_defs import ListObjectsV2OutputTypeDef

log = logging.getLogger(__name__)

S3_THREADS = 4  # threads running boto3 calls, shared by every S3 scaler of the process
PAGE_SIZE = 1000  # S3's largest ListObjectsV2 page
# boto3's own bucket-name check, so a bad name is a ConfigError and not a failing poll.
_BUCKET_NAME = re.compile(r"[a-zA-Z0-9.\-_]{1,255}")
_METRIC_DETAIL = re.compile(r"[^A-Za-z0-9._-]+")
# Error codes meaning "these credentials may not do this" (vs. a missing bucket or a bad answer).
_AUTH_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "AuthorizationHeaderMalformed",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidToken",
        "SignatureDoesNotMatch",
        "TokenRefreshRequired",
    }
)


def _missing_bucket(code: str, status: int | None) -> str | None:
    if code in ("NoSuchBucket", "404") or (not code and status == 404):
        return "the bucket does not exist"
    return None


@dataclass(frozen=True, slots=True, repr=False)
class S3Target(AwsTarget):
    """How to reach one S3 store with one identity; repr shows no credentials."""

    path_style: bool

    def key(self) -> ClientKey:
        style = "path" if self.path_style else "auto"
        return ClientKey(
            "s3", f"{self.where}|{self.region}|{style}|{self.timeout}", self.credentials()
        )

    def __repr__(self) -> str:
        return f"S3Target({self.where}, region={self.region}, path_style={self.path_style})"


@dataclass(frozen=True, slots=True)
class Listing:
    """What to count: ListObjectsV2 arguments and the scan bound."""

    bucket: str
    prefix: str
    delimiter: str  # "" lists flat (every key under the prefix)
    max_objects: int

    def request(self, remaining: int, token: str | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": self.prefix,
            "MaxKeys": min(PAGE_SIZE, remaining),
        }
        if self.delimiter:
            kwargs["Delimiter"] = self.delimiter
        if token is not None:
            kwargs["ContinuationToken"] = token
        return kwargs


@dataclass(frozen=True, slots=True)
class Count:
    """One listing's outcome: objects counted, entries scanned, LIST requests made."""

    objects: int
    scanned: int
    requests: int
    truncated: bool  # stopped at max_objects: `objects` is a lower bound


# -- the shared thread pool ----------------------------------------------------------------------

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def s3_executor() -> ThreadPoolExecutor:
    """The process-wide pool that runs boto3's blocking calls (created on first use)."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=S3_THREADS, thread_name_prefix="tidal-s3")
        return _executor


class S3Client:
    """A boto3 S3 client whose calls run in the shared pool; counts its LIST requests."""

    def __init__(self, client: BotoS3) -> None:
        self._client = client
        self.list_requests = 0

    async def list_page(self, kwargs: Mapping[str, Any]) -> ListObjectsV2OutputTypeDef:
        self.list_requests += 1
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            s3_executor(), lambda: self._client.list_objects_v2(**kwargs)
        )

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(s3_executor(), self._client.close)


def _new_boto_client(target: S3Target) -> BotoS3:
    config = BotoConfig(  # type: ignore[call-arg]  # the 1.43 stubs lack the endpoint switch
        region_name=target.region,
        connect_timeout=target.timeout,
        read_timeout=target.timeout,
        retries={"total_max_attempts": 1, "mode": "standard"},
        s3={"addressing_style": "path" if target.path_style else "auto"},
        # Only the trigger decides where requests go: no AWS_ENDPOINT_URL* from the daemon's env.
        ignore_configured_endpoint_urls=True,
        user_agent_extra="tidal-autoscaler",
    )
    # Listing only counts keys: leave timestamps as text instead of parsing one per key
    # (measured: a 1000-key page costs 2.5 to 4 times less CPU, see benchmarks/s3_listing.py).
    core = botocore.session.get_session()
    core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)
    session = boto3.session.Session(
        botocore_session=core,
        aws_access_key_id=target.access_key,
        aws_secret_access_key=target.secret_key,
        aws_session_token=target.session_token,
        region_name=target.region,
    )
    return session.client("s3", endpoint_url=target.endpoint, config=config)


async def create_s3_client(target: S3Target) -> S3Client:
    """A shared client for `target` (botocore loads its models: done in the pool)."""
    loop = asyncio.get_running_loop()
    return S3Client(await loop.run_in_executor(s3_executor(), _new_boto_client, target))


async def _close_s3_client(client: S3Client) -> None:
    await client.aclose()


# -- parameters ----------------------------------------------------------------------------------


def _metric_detail(bucket: str, prefix: str, delimiter: str) -> str:
    detail = f"aws-s3-{bucket}"
    trimmed = prefix.rstrip("/" + delimiter)
    if trimmed:
        detail += "-" + _METRIC_DETAIL.sub("-", trimmed).strip("-")
    return detail


# -- the scaler ----------------------------------------------------------------------------------


class S3Scaler:
    PARAMS: tuple[Param, ...] = (
        Param("bucketName", required=True),
        Param("prefix", sources=("metadata",), default=""),
        Param("delimiter", sources=("metadata",), default=""),
        Param("recursive", "bool", sources=("metadata",), default=False),
        Param("targetObjectCount", "int", default=100, above=0, doc="HPA target"),
        Param("activationTargetObjectCount", "int", default=0, minimum=0),
        Param("maxObjectsToScan", "int", sources=("metadata",), default=1000, minimum=1),
        Param("awsRegion", default="us-east-1"),
        Param("awsEndpoint"),
        Param("usePathStyle", "bool", aliases=("forcePathStyle",), sources=("metadata",)),
        Param("awsAccessKeyID", sources=("auth", "env"), required=True),
        Param("awsSecretAccessKey", sources=("auth", "env"), required=True, secret=True),
        Param("awsSessionToken", sources=("auth", "env"), secret=True),
        Param("awsRoleArn", sources=("metadata", "auth")),
        Param("identityOwner", sources=("metadata",), allowed=("pod", "operator")),
        *EVENT_PARAMS,
    )

    def __new__(cls, config: Config, trigger: TriggerContext, clients: ClientPool) -> S3Scaler:
        """An `S3EventsScaler` (which has ``wakeups()``) when an events source is configured."""
        if cls is S3Scaler and events_target(config, trigger.timeout) is not None:
            return super().__new__(S3EventsScaler)
        return super().__new__(cls)

    def __init__(self, config: Config, trigger: TriggerContext, clients: ClientPool) -> None:
        bucket = config.get_str("bucketName")
        prefix = config.get_str("prefix")
        delimiter = "" if config.get_bool("recursive") else config.get_str("delimiter")
        self.listing = Listing(bucket, prefix, delimiter, config.get_int("maxObjectsToScan"))
        endpoint = config.opt_str("awsEndpoint")
        path_style = config.opt_bool("usePathStyle")
        self.target = S3Target(
            endpoint=endpoint.rstrip("/") if endpoint else None,
            region=config.get_str("awsRegion"),
            path_style=(endpoint is not None) if path_style is None else path_style,
            access_key=config.get_str("awsAccessKeyID"),
            secret_key=config.get_str("awsSecretAccessKey"),
            session_token=config.opt_str("awsSessionToken"),
            timeout=trigger.timeout,
        )
        self.events: EventsTarget | None = events_target(config, trigger.timeout)
        self._activation = config.get_int("activationTargetObjectCount")
        self._spec = MetricSpec(
            metric_name(trigger.index, _metric_detail(bucket, prefix, config.get_str("delimiter"))),
            float(config.get_int("targetObjectCount")),
            trigger.metric_type,
        )
        self._clients = clients
        target = self.target
        self._s3: LeaseSlot[S3Client] = LeaseSlot(
            clients,
            f"aws-s3 bucket '{bucket}'",
            target.key(),
            lambda: create_s3_client(target),
            _close_s3_client,
        )
        self._truncated = False
        self.last_count: Count | None = None  # for tests and benchmarks

    @staticmethod
    def validate(config: Config, trigger: TriggerContext) -> Iterable[str]:
        problems: list[str] = []
        bucket = config.get_str("bucketName")
        if not _BUCKET_NAME.fullmatch(bucket):
            problems.append(
                f"invalid bucketName '{bucket}': only letters, digits, '.', '-' and '_' are allowed"
            )
        endpoint = config.opt_str("awsEndpoint")
        if endpoint is not None:
            problems.extend(endpoint_problems(endpoint))
        if (
            config.opt_str("awsRoleArn") is not None
            or config.opt_str("identityOwner") == "operator"
        ):
            problems.append(
                "awsRoleArn and identityOwner: operator are not supported by aws-s3;"
                " give awsAccessKeyID and awsSecretAccessKey through a TriggerAuthentication"
            )
        problems.extend(events_problems(config))
        return problems

    def metric_spec(self) -> MetricSpec:
        return self._spec

    async def sample(self, now: float) -> Sample:
        count = await self.count()
        return Sample(float(count.objects), count.objects > self._activation, now)

    async def count(self) -> Count:
        """List the prefix once (bounded by maxObjectsToScan) and count its objects."""
        try:
            client = await self._client()
            count = await self._list(client)
        except (boto_errors.BotoCoreError, boto_errors.ClientError) as exc:
            raise self._error(exc) from exc
        self.last_count = count
        self._note_truncation(count)
        return count

    async def _client(self) -> S3Client:
        return await self._s3.take()

    async def _list(self, client: S3Client) -> Count:
        listing = self.listing
        objects = scanned = requests = 0
        token: str | None = None
        while True:
            page = await client.list_page(listing.request(listing.max_objects - scanned, token))
            requests += 1
            found = len(page.get("Contents") or ())
            objects += found
            scanned += found + len(page.get("CommonPrefixes") or ())
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return Count(objects, scanned, requests, truncated=False)
            if scanned >= listing.max_objects:
                return Count(objects, scanned, requests, truncated=True)

    def _note_truncation(self, count: Count) -> None:
        if count.truncated == self._truncated:
            return
        self._truncated = count.truncated
        fields = {
            "bucket": self.listing.bucket,
            "prefix": self.listing.prefix,
            "max_objects_to_scan": self.listing.max_objects,
            "objects": count.objects,
        }
        if count.truncated:
            log.warning(
                "s3 listing stopped at maxObjectsToScan: the object count is a lower bound",
                extra=fields,
            )
        else:
            log.info("s3 listing complete again: below maxObjectsToScan", extra=fields)

    def _error(self, exc: Exception) -> ScalerError:
        return aws_error(
            exc,
            f"aws-s3 {self.target.where} bucket '{self.listing.bucket}'",
            self.target,
            _AUTH_CODES,
            _missing_bucket,
        )

    async def aclose(self) -> None:
        await self._s3.release()


class S3EventsScaler(S3Scaler):
    """`S3Scaler` with ``wakeups()`` from the bucket's notifications (built by S3Scaler)."""

    def __init__(self, config: Config, trigger: TriggerContext, clients: ClientPool) -> None:
        super().__init__(config, trigger, clients)
        if self.events is None:
            raise ValueError("S3EventsScaler needs an events source")
        self._source: EventsTarget = self.events

    def wakeups(self) -> AsyncIterator[None]:
        return event_wakeups(self._source, self._clients)
