"""The aws-sqs-queue scaler against a real SQS-compatible server (ElasticMQ on loopback).

ElasticMQ keeps messages visible, in flight (received, within their visibility timeout) and
delayed (DelaySeconds) as SQS does, and answers GetQueueAttributes' three approximate counts
exactly (one node, no sampling), so the expected values here are exact.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import ClientSession, web

from localenv.elasticmq import ElasticMqServer
from localenv.faultproxy import FaultProxy
from localenv.process import free_port
from localenv.pytest_sqs import SqsQueue
from scaler.auth import resolve_auth_params
from scaler.clients import ClientPool
from scaler.contract import TriggerContext
from scaler.errors import ConfigError, QueryError, ScalerError, UnsupportedError
from scaler.registry import build_scaler, prepare
from scalers.aws_sqs import AwsSqsQueueScaler, queue_name
from tests.integration.sql_helpers import documents, guarded, manifest_auth, of_kind, trigger

VISIBLE, IN_FLIGHT, DELAYED = 3, 2, 4
HOLD = 900  # seconds: visibility timeout and delay, far longer than any test


def _trigger(
    metadata: dict[str, str],
    auth: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    *,
    index: int = 0,
    timeout: float = 3.0,
) -> TriggerContext:
    """The trigger with the test credentials unless `auth` is given."""
    creds = _auth() if auth is None else auth
    return trigger("aws-sqs-queue", metadata, creds, env, index=index, timeout=timeout)


def _auth(key: str = "AKIDTIDALTEST", secret: str = "tidal-sqs-secret") -> dict[str, str]:
    return {"awsAccessKeyID": key, "awsSecretAccessKey": secret}


def _scaler(pool: ClientPool, ctx: TriggerContext) -> AwsSqsQueueScaler:
    scaler = build_scaler(ctx, pool)
    assert isinstance(scaler, AwsSqsQueueScaler)
    return scaler


def _meta(server: ElasticMqServer, queue_url: str, **extra: str) -> dict[str, str]:
    return {
        "queueURL": queue_url,
        "awsRegion": server.region,
        "awsEndpoint": server.endpoint,
        **extra,
    }


def _fill(queue: SqsQueue, visible: int, in_flight: int, delayed: int) -> None:
    """`visible` waiting messages, `in_flight` received ones and `delayed` delayed ones."""
    client, url = queue.client, queue.url
    for i in range(visible + in_flight):
        client.send_message(QueueUrl=url, MessageBody=f"m{i}")
    received = 0
    while received < in_flight:
        answer = client.receive_message(
            QueueUrl=url, MaxNumberOfMessages=in_flight - received, VisibilityTimeout=HOLD
        )
        received += len(answer.get("Messages", ()))
    for i in range(delayed):
        client.send_message(QueueUrl=url, MessageBody=f"d{i}", DelaySeconds=HOLD)


@pytest.fixture(scope="module")
def mixed_queue(elasticmq_server: ElasticMqServer) -> Iterator[SqsQueue]:
    """3 visible, 2 in flight, 4 delayed messages."""
    client = elasticmq_server.client()
    url = client.create_queue(QueueName="tidal-mixed")["QueueUrl"]
    queue = SqsQueue("tidal-mixed", url, client)
    _fill(queue, VISIBLE, IN_FLIGHT, DELAYED)
    yield queue
    client.delete_queue(QueueUrl=url)


# -- counting ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        pytest.param({}, VISIBLE + IN_FLIGHT, id="default-visible-plus-in-flight"),
        pytest.param({"scaleOnInFlight": "false"}, VISIBLE, id="visible-only"),
        pytest.param({"scaleOnDelayed": "true"}, VISIBLE + IN_FLIGHT + DELAYED, id="all-three"),
        pytest.param(
            {"scaleOnInFlight": "false", "scaleOnDelayed": "true"},
            VISIBLE + DELAYED,
            id="visible-plus-delayed",
        ),
    ],
)
async def test_counts_follow_scale_on_in_flight_and_delayed(
    elasticmq_server: ElasticMqServer,
    mixed_queue: SqsQueue,
    pool: ClientPool,
    flags: dict[str, str],
    expected: int,
) -> None:
    scaler = _scaler(pool, _trigger(_meta(elasticmq_server, mixed_queue.url, **flags)))
    sample = await scaler.sample(5.0)
    assert (sample.value, sample.active, sample.observed_at) == (float(expected), True, 5.0)
    counts = scaler.last_counts
    assert counts is not None
    assert (counts.visible, counts.in_flight, counts.delayed) == (VISIBLE, IN_FLIGHT, DELAYED)
    await scaler.aclose()


async def test_an_empty_queue_is_a_real_zero(
    elasticmq_server: ElasticMqServer, sqs_queue: SqsQueue, pool: ClientPool
) -> None:
    scaler = _scaler(pool, _trigger(_meta(elasticmq_server, sqs_queue.url)))
    sample = await scaler.sample(0.0)
    assert (sample.value, sample.active) == (0.0, False)
    _fill(sqs_queue, 1, 0, 0)
    sample = await scaler.sample(1.0)
    assert (sample.value, sample.active) == (1.0, True)
    await scaler.aclose()


@pytest.mark.parametrize(
    ("activation", "visible", "active"),
    [
        pytest.param("3", 3, False, id="equal-to-activation-is-inactive"),
        pytest.param("3", 4, True, id="above-activation-is-active"),
        pytest.param("0", 1, True, id="default-activation-one-message"),
        pytest.param("-1", 0, True, id="negative-activation-always-active"),
    ],
)
async def test_activation_is_strictly_above_activation_queue_length(
    elasticmq_server: ElasticMqServer,
    sqs_queue: SqsQueue,
    pool: ClientPool,
    activation: str,
    visible: int,
    active: bool,
) -> None:
    _fill(sqs_queue, visible, 0, 0)
    meta = _meta(elasticmq_server, sqs_queue.url, activationQueueLength=activation)
    scaler = _scaler(pool, _trigger(meta))
    sample = await scaler.sample(0.0)
    assert (sample.value, sample.active) == (float(visible), active)
    await scaler.aclose()


@pytest.mark.parametrize(
    ("extra", "index", "name", "target"),
    [
        pytest.param({}, 0, "s0-aws-sqs-{q}", 5.0, id="defaults"),
        pytest.param({"queueLength": "10"}, 2, "s2-aws-sqs-{q}", 10.0, id="target-and-index"),
    ],
)
def test_metric_name_and_target_are_kedas(
    elasticmq_server: ElasticMqServer,
    pool: ClientPool,
    extra: dict[str, str],
    index: int,
    name: str,
    target: float,
) -> None:
    url = elasticmq_server.queue_url("orders.fifo")
    scaler = _scaler(pool, _trigger(_meta(elasticmq_server, url, **extra), index=index))
    spec = scaler.metric_spec()
    assert (spec.name, spec.target, spec.target_type) == (
        name.format(q="orders-fifo"),  # KEDA's NormalizeString: '.' becomes '-'
        target,
        "AverageValue",
    )


async def test_queue_url_from_env_and_queue_url_wins(
    elasticmq_server: ElasticMqServer, sqs_queue: SqsQueue, pool: ClientPool
) -> None:
    """queueURLFromEnv reads the target container's variable; with both, queueURL wins (the
    variable names a queue that does not exist: reading it would fail)."""
    _fill(sqs_queue, 2, 0, 0)
    env = {"QUEUE_URL": sqs_queue.url}
    meta = {k: v for k, v in _meta(elasticmq_server, "").items() if k != "queueURL"}
    from_env = _scaler(pool, _trigger({**meta, "queueURLFromEnv": "QUEUE_URL"}, env=env))
    assert (await from_env.sample(0.0)).value == 2.0
    assert from_env.metric_spec().name == f"s0-aws-sqs-{sqs_queue.name}"
    missing = {"QUEUE_URL": elasticmq_server.queue_url("not-this-one")}
    both = _trigger(
        {**meta, "queueURL": sqs_queue.url, "queueURLFromEnv": "QUEUE_URL"}, env=missing
    )
    both_scaler = _scaler(pool, both)
    assert (await both_scaler.sample(0.0)).value == 2.0
    await from_env.aclose()
    await both_scaler.aclose()


async def test_a_bare_queue_name_is_resolved_once(
    elasticmq_server: ElasticMqServer, sqs_queue: SqsQueue, pool: ClientPool
) -> None:
    """KEDA accepts a queue's name for queueURL; Tidal asks GetQueueUrl once per hub."""
    _fill(sqs_queue, 1, 1, 0)
    scaler = _scaler(pool, _trigger(_meta(elasticmq_server, sqs_queue.name)))
    assert scaler.metric_spec().name == f"s0-aws-sqs-{sqs_queue.name}"
    assert (await scaler.sample(0.0)).value == 2.0
    hub = await scaler.hub()
    sent = hub.requests
    assert (await scaler.sample(1.0)).value == 2.0
    assert hub.requests == sent + 1  # GetQueueAttributes only: the URL is cached
    await scaler.aclose()


# -- configuration errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("queue_url", "expected"),
    [
        pytest.param("https://sqs.eu-west-1.amazonaws.com/123456789012/orders", "orders", id="aws"),
        pytest.param("http://127.0.0.1:9324/000000000000/jobs.fifo", "jobs.fifo", id="fifo"),
        pytest.param("Orders_EU-1", "Orders_EU-1", id="bare-name"),
        pytest.param("q" * 80, "q" * 80, id="bare-name-80-chars"),
        pytest.param("q" * 81, None, id="bare-name-81-chars"),
        pytest.param("https://sqs.eu-west-1.amazonaws.com/123/orders/", None, id="trailing-slash"),
        pytest.param("https://sqs.eu-west-1.amazonaws.com/orders", None, id="no-account"),
        pytest.param("https://user:pw@sqs.example/123/orders", None, id="credentials-in-url"),
        pytest.param("orders queue", None, id="space-in-name"),
    ],
)
def test_queue_names_are_read_as_keda_reads_them(queue_url: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(ValueError, match="queueURL"):
            queue_name(queue_url)
    else:
        assert queue_name(queue_url) == expected


@pytest.mark.parametrize(
    ("metadata", "auth", "fragment"),
    [
        pytest.param(
            {"queueURL": "https://sqs.eu-west-1.amazonaws.com/1234/q/extra"},
            _auth(),
            "cannot get queueName from queueURL",
            id="url-with-extra-path",
        ),
        pytest.param({"queueURL": "ftp://sqs/1234/q"}, _auth(), "invalid queueURL", id="not-http"),
        pytest.param({}, _auth(), "queueURL", id="no-queue-url"),
        pytest.param({"queueURL": "q", "awsRegion": ""}, _auth(), "awsRegion", id="no-region"),
        pytest.param(
            {"queueURL": "q", "queueLength": "0"}, _auth(), "queueLength", id="zero-target"
        ),
        pytest.param({"queueURL": "q"}, {}, "awsAccessKeyID not found", id="no-credentials"),
        pytest.param(
            {"queueURL": "q"},
            {"awsAccessKeyID": "AKID"},
            "awsSecretAccessKey not found",
            id="no-secret-key",
        ),
        pytest.param(
            {"queueURL": "q"},
            {"awsRoleArn": "arn:aws:iam::123456789012:role/keda"},
            "awsRoleArn is not supported",
            id="role-arn-refused",
        ),
        pytest.param(
            {"queueURL": "q", "identityOwner": "operator"},
            _auth(),
            "identityOwner: operator is not supported",
            id="operator-identity-refused",
        ),
    ],
)
def test_bad_configuration_is_a_config_error(
    metadata: dict[str, str], auth: dict[str, str], fragment: str
) -> None:
    meta = {"awsRegion": "eu-west-1", **metadata}
    with pytest.raises(ConfigError) as info:
        prepare(_trigger(meta, auth))
    assert fragment in str(info.value)


async def test_pod_identity_is_refused_by_name() -> None:
    """KEDA's `podIdentity: {provider: aws}` (IRSA / EKS pod identity) is not supported."""

    async def fetch(*_: Any) -> None:
        return None

    with pytest.raises(UnsupportedError) as info:
        await resolve_auth_params(
            {"podIdentity": {"provider": "aws"}}, namespace="ns", env={}, fetch=fetch
        )
    assert "podIdentity provider 'aws' is not supported" in str(info.value)


# -- failures are errors, never zeros ------------------------------------------------------------


async def test_a_missing_queue_is_a_clear_query_error(
    elasticmq_server: ElasticMqServer, sqs_queue: SqsQueue, pool: ClientPool
) -> None:
    url = elasticmq_server.queue_url("no-such-queue")
    scaler = _scaler(pool, _trigger(_meta(elasticmq_server, url)))
    with pytest.raises(QueryError) as info:
        await scaler.sample(0.0)
    assert "queue 'no-such-queue': the queue does not exist" in str(info.value)
    by_name = _scaler(pool, _trigger(_meta(elasticmq_server, "no-such-queue")))
    with pytest.raises(QueryError, match="the queue does not exist"):
        await by_name.sample(0.0)
    ok = _scaler(pool, _trigger(_meta(elasticmq_server, sqs_queue.url)))
    assert (await ok.sample(0.0)).value == 0.0  # the shared hub still serves other queues
    for each in (scaler, by_name, ok):
        await each.aclose()


async def test_a_server_that_is_down_is_a_scaler_error_without_secrets(pool: ClientPool) -> None:
    port = free_port()  # nothing listens there
    secret = "very-secret-key-value"
    meta = {
        "queueURL": f"http://127.0.0.1:{port}/000000000000/q",
        "awsRegion": "us-east-1",
        "awsEndpoint": f"http://127.0.0.1:{port}",
    }
    scaler = _scaler(pool, _trigger(meta, _auth(secret=secret), timeout=1.0))
    with pytest.raises(ScalerError) as info:
        await guarded(scaler.sample(0.0))
    assert not isinstance(info.value, QueryError)
    assert "connection failed" in str(info.value)
    assert secret not in str(info.value)
    await scaler.aclose()


async def test_a_hung_server_fails_in_the_timeout_and_stalls_no_other_object(
    elasticmq_server: ElasticMqServer, sqs_queue: SqsQueue, pool: ClientPool
) -> None:
    """Through a proxy that accepts and never answers: a ScalerError (no zero) once the 1 s
    timeout passes, while an object reading the healthy server, sampled at the same moment,
    answers first; once the proxy passes traffic again, the same object reads the queue."""
    _fill(sqs_queue, 2, 0, 0)
    with FaultProxy(("127.0.0.1", elasticmq_server.port), name="proxy-sqs-hung") as proxy:
        proxy.blackhole()
        hung_meta = _meta(elasticmq_server, sqs_queue.url, awsEndpoint=f"http://{proxy.address}")
        hung = _scaler(pool, _trigger(hung_meta, timeout=1.0))
        # The healthy object's client is made and warm before the race (3 s: its own hub).
        healthy = _scaler(pool, _trigger(_meta(elasticmq_server, sqs_queue.url), timeout=3.0))
        assert (await healthy.sample(0.0)).value == 2.0
        hung_task = asyncio.ensure_future(hung.sample(0.0))
        healthy_task = asyncio.ensure_future(healthy.sample(0.0))
        done, _ = await asyncio.wait({hung_task, healthy_task}, return_when=asyncio.FIRST_COMPLETED)
        assert healthy_task in done
        assert hung_task not in done
        assert healthy_task.result().value == 2.0
        with pytest.raises(ScalerError) as info:
            await guarded(hung_task)
        assert not isinstance(info.value, QueryError)
        assert "no answer within 1 s" in str(info.value)
        proxy.pass_through()
        # botocore's own 1 s read timeout ends the blocked request; then the proxy answers.
        sample = await guarded(_until_ok(hung))
        assert sample.value == 2.0
        await hung.aclose()
        await healthy.aclose()


async def _until_ok(scaler: AwsSqsQueueScaler) -> Any:
    while True:
        try:
            return await scaler.sample(0.0)
        except ScalerError:
            await asyncio.sleep(0.2)


# -- coalescing and credentials, counted at the wire ---------------------------------------------


@dataclass
class CountingProxy:
    """An HTTP proxy in front of ElasticMQ that records each request's SQS action and the
    access key its SigV4 Authorization names (and whether a session token came along).

    Why a proxy and not the hub's own counter: it counts what reached the server, whatever
    the scaler believes it sent, and it is the only place the credential a request was signed
    with can be seen (ElasticMQ checks no signatures). It forwards every request unchanged.
    """

    upstream: str
    seen: list[tuple[str, str, bool]] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None
    _session: ClientSession | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def actions(self, action: str) -> int:
        with self._lock:
            return sum(1 for a, _, _ in self.seen if a == action)

    async def start(self) -> None:
        self._session = ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.Response:
        target = request.headers.get("X-Amz-Target", "").removeprefix("AmazonSQS.")
        match = re.search(r"Credential=([^/]+)/", request.headers.get("Authorization", ""))
        token = "X-Amz-Security-Token" in request.headers
        with self._lock:
            self.seen.append((target, match.group(1) if match else "", token))
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        assert self._session is not None
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as answer:
            payload = await answer.read()
            return web.Response(
                status=answer.status,
                body=payload,
                headers={"Content-Type": answer.headers.get("Content-Type", "")},
            )


@pytest.fixture
async def counting(elasticmq_server: ElasticMqServer) -> AsyncIterator[CountingProxy]:
    proxy = CountingProxy(elasticmq_server.endpoint)
    await proxy.start()
    yield proxy
    await proxy.stop()


async def test_objects_reading_one_queue_in_one_tick_cost_one_request(
    elasticmq_server: ElasticMqServer,
    mixed_queue: SqsQueue,
    sqs_queue: SqsQueue,
    counting: CountingProxy,
    pool: ClientPool,
) -> None:
    """Ten objects on one queue (different scaleOnInFlight/scaleOnDelayed) and two on another,
    sampled in one tick: one GetQueueAttributes per queue, each object its own sum; one hub
    (client) for the endpoint and credential; the next tick costs one request per queue again.
    Another credential on the same endpoint gets its own client."""
    flags = [{}, {"scaleOnInFlight": "false"}, {"scaleOnDelayed": "true"}] * 3 + [{}]
    mixed = [
        _scaler(
            pool,
            _trigger(_meta(elasticmq_server, mixed_queue.url, **f, awsEndpoint=counting.endpoint)),
        )
        for f in flags
    ]
    _fill(sqs_queue, 1, 0, 0)
    other = [
        _scaler(
            pool, _trigger(_meta(elasticmq_server, sqs_queue.url, awsEndpoint=counting.endpoint))
        )
        for _ in range(2)
    ]
    samples = await asyncio.gather(*(s.sample(0.0) for s in mixed + other))
    expected = {
        "{}": VISIBLE + IN_FLIGHT,
        "{'scaleOnInFlight': 'false'}": VISIBLE,
        "{'scaleOnDelayed': 'true'}": VISIBLE + IN_FLIGHT + DELAYED,
    }
    assert [s.value for s in samples] == [float(expected[str(f)]) for f in flags] + [1.0, 1.0]
    assert counting.actions("GetQueueAttributes") == 2
    assert len(pool) == 1
    await asyncio.gather(*(s.sample(1.0) for s in mixed + other))
    assert counting.actions("GetQueueAttributes") == 4
    stranger = _scaler(
        pool,
        _trigger(
            _meta(elasticmq_server, mixed_queue.url, awsEndpoint=counting.endpoint),
            _auth(key="AKIDSOMEONEELSE"),
        ),
    )
    await asyncio.gather(mixed[0].sample(2.0), stranger.sample(2.0))
    assert counting.actions("GetQueueAttributes") == 6
    assert len(pool) == 2
    for scaler in [*mixed, *other, stranger]:
        await scaler.aclose()
    assert len(pool) == 0


KEDA_CREDENTIALS_EXAMPLE = """
apiVersion: v1
kind: Secret
metadata:
  name: test-secrets
data:
  AWS_ACCESS_KEY_ID: QUtJRERPQ1NFWEFNUExF # Required.
  AWS_SECRET_ACCESS_KEY: ZG9jcy1leGFtcGxlLXNlY3JldA== # Required.
---
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata:
  name: keda-trigger-auth-aws-credentials
  namespace: keda-test
spec:
  secretTargetRef:
  - parameter: awsAccessKeyID     # Required.
    name: test-secrets            # Required.
    key: AWS_ACCESS_KEY_ID        # Required.
  - parameter: awsSecretAccessKey # Required.
    name: test-secrets            # Required.
    key: AWS_SECRET_ACCESS_KEY    # Required.
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: aws-sqs-queue-scaledobject
  namespace: keda-test
spec:
  scaleTargetRef:
    name: nginx-deployment
  triggers:
  - type: aws-sqs-queue
    authenticationRef:
      name: keda-trigger-auth-aws-credentials
    metadata:
      queueURL: myQueue
      queueLength: "5"
      awsRegion: "eu-west-1"
"""

KEDA_TRIGGER_SPEC = """
triggers:
- type: aws-sqs-queue
  metadata:
    # Required: queueURL or queueURLFromEnv. If both provided, uses queueURL
    queueURL: https://sqs.eu-west-1.amazonaws.com/account_id/QueueName
    queueURLFromEnv: QUEUE_URL # Optional. You can use this instead of `queueURL` parameter
    queueLength: "5"  # Default: "5"
    # Required: awsRegion
    awsRegion: "eu-west-1"
    # Optional: awsEndpoint
    awsEndpoint: ""
    # DEPRECATED: This parameter is deprecated as of KEDA v2.13 and will be removed in v3. Optional # Optional. Default: pod
    identityOwner: pod
"""  # noqa: E501


async def test_documented_credentials_example_signs_with_the_secret(
    elasticmq_server: ElasticMqServer, counting: CountingProxy, pool: ClientPool
) -> None:
    """KEDA's Secret + TriggerAuthentication + ScaledObject (queueURL: myQueue) resolved by the
    daemon's resolver: as written it names s0-aws-sqs-myQueue with target 5; pointed at the
    test server (awsEndpoint added, the one change), requests are signed with the Secret's
    access key and the queue's messages are counted."""
    docs = documents(KEDA_CREDENTIALS_EXAMPLE)
    (so,) = of_kind(docs, "ScaledObject")
    meta = dict(so["spec"]["triggers"][0]["metadata"])
    auth = await manifest_auth(docs, "keda-trigger-auth-aws-credentials")
    assert auth == {
        "awsAccessKeyID": "AKIDDOCSEXAMPLE",
        "awsSecretAccessKey": "docs-example-secret",
    }
    as_written = _scaler(pool, _trigger(meta, auth))
    spec = as_written.metric_spec()
    assert (spec.name, spec.target) == ("s0-aws-sqs-myQueue", 5.0)
    assert as_written.target.where == "aws/eu-west-1"
    await as_written.aclose()

    client = elasticmq_server.client()
    url = client.create_queue(QueueName="myQueue")["QueueUrl"]
    try:
        for i in range(6):
            client.send_message(QueueUrl=url, MessageBody=str(i))
        scaler = _scaler(pool, _trigger({**meta, "awsEndpoint": counting.endpoint}, auth))
        sample = await scaler.sample(0.0)
        assert (sample.value, sample.active) == (6.0, True)
        assert {(a, key) for a, key, _ in counting.seen} == {
            ("GetQueueUrl", "AKIDDOCSEXAMPLE"),
            ("GetQueueAttributes", "AKIDDOCSEXAMPLE"),
        }
        await scaler.aclose()
    finally:
        client.delete_queue(QueueUrl=url)


async def test_a_session_token_goes_with_the_requests(
    elasticmq_server: ElasticMqServer,
    sqs_queue: SqsQueue,
    counting: CountingProxy,
    pool: ClientPool,
) -> None:
    auth = {**_auth(key="ASIATEMPORARY"), "awsSessionToken": "session-token-value"}
    meta = _meta(elasticmq_server, sqs_queue.url, awsEndpoint=counting.endpoint)
    scaler = _scaler(pool, _trigger(meta, auth))
    assert (await scaler.sample(0.0)).value == 0.0
    assert counting.seen == [("GetQueueAttributes", "ASIATEMPORARY", True)]
    await scaler.aclose()


@pytest.mark.parametrize(
    ("metadata", "auth", "env"),
    [
        pytest.param(
            {}, {"awsAccessKeyId": "AKIDALIAS", "awsSecretAccessKey": "s"}, {}, id="auth-alias"
        ),
        pytest.param(
            {"awsAccessKeyID": "AKIDALIAS", "awsSecretAccessKeyFromEnv": "SK"},
            {},
            {"SK": "s"},
            id="id-in-metadata-secret-from-env",
        ),
        pytest.param(
            {"awsAccessKeyIDFromEnv": "AK", "awsSecretAccessKeyFromEnv": "SK"},
            {},
            {"AK": "AKIDALIAS", "SK": "s"},
            id="both-from-env",
        ),
    ],
)
async def test_credentials_come_from_where_keda_reads_them(
    elasticmq_server: ElasticMqServer,
    sqs_queue: SqsQueue,
    counting: CountingProxy,
    pool: ClientPool,
    metadata: dict[str, str],
    auth: dict[str, str],
    env: dict[str, str],
) -> None:
    meta = {**_meta(elasticmq_server, sqs_queue.url, awsEndpoint=counting.endpoint), **metadata}
    scaler = _scaler(pool, _trigger(meta, auth, env))
    assert (await scaler.sample(0.0)).value == 0.0
    assert counting.seen == [("GetQueueAttributes", "AKIDALIAS", False)]
    await scaler.aclose()


def test_documented_trigger_specification_parses_unchanged() -> None:
    """The docs' trigger block (identityOwner's placeholder `pod | operator` written as its
    default, `pod`; KEDA refuses the placeholder too): queueURL wins over queueURLFromEnv, an
    empty awsEndpoint means AWS's, the name is the URL's last segment."""
    (trig,) = documents(KEDA_TRIGGER_SPEC)[0]["triggers"]
    prepared = prepare(_trigger(trig["metadata"], env={"QUEUE_URL": "ignored"}))
    assert prepared.config.get_str("queueURL").endswith("/account_id/QueueName")
    scaler = AwsSqsQueueScaler(prepared.config, prepared.trigger, ClientPool())
    assert scaler.metric_spec().name == "s0-aws-sqs-QueueName"
    assert scaler.target.where == "aws/eu-west-1"
    assert (scaler.in_flight, scaler.delayed) == (True, False)
