"""aws-s3 trigger metadata: defaults, names, credentials, events sources, every invalid input,
and how botocore's errors map to Tidal's (never a zero, never a secret)."""

from __future__ import annotations

from typing import Any

import pytest
from botocore import exceptions as boto_errors

from scaler.clients import ClientPool
from scaler.contract import MetricSpec, PushScaler, TriggerContext
from scaler.errors import ConfigError, QueryError, ScalerError
from scaler.registry import build_scaler
from scalers.s3 import Listing, S3EventsScaler, S3Scaler
from scalers.s3_events import NatsEvents, RedisEvents, keyspace_channel

SECRET = "s3cr3t-K3y-value"
AUTH = {"awsAccessKeyID": "AKIDEXAMPLE", "awsSecretAccessKey": SECRET}


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
        "aws-s3",
        "",
        metadata,
        metric_type,  # type: ignore[arg-type]
        AUTH if auth is None else auth,
        env or {},
    )


def _build(metadata: dict[str, str], **kwargs: Any) -> S3Scaler:
    scaler = build_scaler(_trigger(metadata, **kwargs), ClientPool())
    assert isinstance(scaler, S3Scaler)
    return scaler


def _problems(metadata: dict[str, str], **kwargs: Any) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as info:
        _build(metadata, **kwargs)
    return info.value.problems


def test_defaults() -> None:
    scaler = _build({"bucketName": "uploads"})
    assert scaler.metric_spec() == MetricSpec("s0-aws-s3-uploads", 100.0, "AverageValue")
    assert scaler.listing == Listing("uploads", "", "", 1000)
    target = scaler.target
    assert (target.endpoint, target.region, target.path_style) == (None, "us-east-1", False)
    assert (target.access_key, target.session_token, target.timeout) == ("AKIDEXAMPLE", None, 3.0)
    assert scaler.events is None
    assert type(scaler) is S3Scaler
    assert not isinstance(scaler, PushScaler)


@pytest.mark.parametrize(
    ("metadata", "index", "name"),
    [
        pytest.param({"prefix": "incoming/"}, 0, "s0-aws-s3-uploads-incoming", id="prefix"),
        pytest.param({"prefix": "a/b/"}, 2, "s2-aws-s3-uploads-a-b", id="nested-prefix-index"),
        pytest.param({"prefix": "in box:1/"}, 0, "s0-aws-s3-uploads-in-box-1", id="odd-chars"),
        pytest.param({"prefix": "/"}, 0, "s0-aws-s3-uploads", id="slash-only-prefix"),
        pytest.param(
            {"prefix": "x|", "delimiter": "|"}, 0, "s0-aws-s3-uploads-x", id="custom-delimiter"
        ),
    ],
)
def test_metric_name(metadata: dict[str, str], index: int, name: str) -> None:
    scaler = _build({"bucketName": "uploads", **metadata}, index=index)
    assert scaler.metric_spec().name == name


def test_dotted_bucket_name_is_normalized() -> None:
    assert _build({"bucketName": "my.bucket"}).metric_spec().name == "s0-aws-s3-my-bucket"


@pytest.mark.parametrize(
    ("metadata", "listing"),
    [
        pytest.param({"delimiter": "/"}, Listing("b", "", "/", 1000), id="delimiter-direct"),
        pytest.param(
            {"delimiter": "/", "recursive": "true"},
            Listing("b", "", "", 1000),
            id="recursive-lists-flat",
        ),
        pytest.param(
            {"prefix": "p/", "maxObjectsToScan": "10000"},
            Listing("b", "p/", "", 10000),
            id="prefix-and-bound",
        ),
    ],
)
def test_listing(metadata: dict[str, str], listing: Listing) -> None:
    assert _build({"bucketName": "b", **metadata}).listing == listing


@pytest.mark.parametrize(
    ("remaining", "token", "expected"),
    [
        pytest.param(5000, None, {"Bucket": "b", "Prefix": "p/", "MaxKeys": 1000}, id="full-page"),
        pytest.param(
            200,
            "t",
            {"Bucket": "b", "Prefix": "p/", "MaxKeys": 200, "ContinuationToken": "t"},
            id="last-page-is-smaller",
        ),
    ],
)
def test_list_request(remaining: int, token: str | None, expected: dict[str, Any]) -> None:
    assert Listing("b", "p/", "", 5000).request(remaining, token) == expected
    with_delimiter = Listing("b", "p/", "/", 5000).request(remaining, token)
    assert with_delimiter == {**expected, "Delimiter": "/"}


@pytest.mark.parametrize(
    ("metadata", "endpoint", "path_style"),
    [
        pytest.param(
            {"awsEndpoint": "http://minio:9000/"}, "http://minio:9000", True, id="endpoint-path"
        ),
        pytest.param(
            {"awsEndpoint": "https://s3.example", "usePathStyle": "false"},
            "https://s3.example",
            False,
            id="endpoint-virtual-hosted",
        ),
        pytest.param({"forcePathStyle": "true"}, None, True, id="alias-forcePathStyle"),
    ],
)
def test_endpoint_and_addressing(
    metadata: dict[str, str], endpoint: str | None, path_style: bool
) -> None:
    target = _build({"bucketName": "b", **metadata}).target
    assert (target.endpoint, target.path_style) == (endpoint, path_style)


def test_region_target_and_metric_type() -> None:
    scaler = _build(
        {
            "bucketName": "b",
            "awsRegion": "eu-west-1",
            "targetObjectCount": "50",
            "activationTargetObjectCount": "3",
        },
        metric_type="Value",
    )
    assert scaler.metric_spec() == MetricSpec("s0-aws-s3-b", 50.0, "Value")
    assert scaler.target.region == "eu-west-1"


def test_credentials_from_env_and_session_token() -> None:
    scaler = _build(
        {
            "bucketName": "b",
            "awsAccessKeyIDFromEnv": "AK",
            "awsSecretAccessKeyFromEnv": "SK",
            "awsSessionTokenFromEnv": "ST",
        },
        auth={},
        env={"AK": "from-env-id", "SK": SECRET, "ST": "token-value"},
    )
    target = scaler.target
    assert (target.access_key, target.secret_key, target.session_token) == (
        "from-env-id",
        SECRET,
        "token-value",
    )
    assert SECRET not in repr(target)
    assert "token-value" not in repr(target)


def test_client_key_fingerprints_credentials_without_showing_them() -> None:
    first = _build({"bucketName": "a"}).target.key()
    same = _build({"bucketName": "other", "prefix": "x/"}).target.key()
    other = _build(
        {"bucketName": "a"}, auth={"awsAccessKeyID": "AKIDEXAMPLE", "awsSecretAccessKey": "x"}
    ).target.key()
    assert first == same
    assert first != other
    assert SECRET not in repr(first)


@pytest.mark.parametrize(
    ("metadata", "auth", "problems"),
    [
        pytest.param(
            {},
            AUTH,
            (
                "missing required parameter 'bucketName'"
                " in [triggerMetadata authParams resolvedEnv]",
            ),
            id="no-bucket",
        ),
        pytest.param(
            {"bucketName": "b"},
            {},
            (
                "missing required parameter 'awsAccessKeyID' in [authParams resolvedEnv]",
                "missing required parameter 'awsSecretAccessKey' in [authParams resolvedEnv]",
            ),
            id="no-credentials",
        ),
        pytest.param(
            {"bucketName": "b", "awsAccessKeyID": "in-metadata"},
            {"awsSecretAccessKey": SECRET},
            ("missing required parameter 'awsAccessKeyID' in [authParams resolvedEnv]",),
            id="key-id-not-from-plain-metadata",
        ),
        pytest.param(
            {"bucketName": "b", "targetObjectCount": "0"},
            AUTH,
            ("error parsing 'targetObjectCount': invalid value '0' (must be greater than 0)",),
            id="target-zero",
        ),
        pytest.param(
            {"bucketName": "b", "activationTargetObjectCount": "-1"},
            AUTH,
            (
                "error parsing 'activationTargetObjectCount': invalid value '-1'"
                " (must be at least 0)",
            ),
            id="negative-activation",
        ),
        pytest.param(
            {"bucketName": "b", "maxObjectsToScan": "0"},
            AUTH,
            ("error parsing 'maxObjectsToScan': invalid value '0' (must be at least 1)",),
            id="scan-bound-zero",
        ),
        pytest.param(
            {"bucketName": "b", "recursive": "maybe"},
            AUTH,
            ("error parsing 'recursive': invalid value 'maybe' (expected true or false)",),
            id="recursive-not-bool",
        ),
        pytest.param(
            {"bucketName": "a/b"},
            AUTH,
            ("invalid bucketName 'a/b': only letters, digits, '.', '-' and '_' are allowed",),
            id="bucket-with-slash",
        ),
        pytest.param(
            {"bucketName": "b", "awsEndpoint": "minio:9000"},
            AUTH,
            ("invalid awsEndpoint 'minio:9000': expected http(s)://host[:port]",),
            id="endpoint-without-scheme",
        ),
        pytest.param(
            {"bucketName": "b", "awsEndpoint": "http://user:pw@minio:9000"},
            AUTH,
            ("invalid awsEndpoint: credentials in the URL are not allowed (use awsAccessKeyID)",),
            id="endpoint-with-credentials",
        ),
        pytest.param(
            {"bucketName": "b", "awsEndpoint": "http://minio:9000/?x=1"},
            AUTH,
            ("invalid awsEndpoint 'http://minio:9000/?x=1': no query or fragment allowed",),
            id="endpoint-with-query",
        ),
        pytest.param(
            {"bucketName": "b", "awsRoleArn": "arn:aws:iam::1:role/r"},
            AUTH,
            (
                "awsRoleArn and identityOwner: operator are not supported by aws-s3; give"
                " awsAccessKeyID and awsSecretAccessKey through a TriggerAuthentication",
            ),
            id="role-arn-unsupported",
        ),
        pytest.param(
            {"bucketName": "b", "eventsRedisAddress": "redis:6379"},
            AUTH,
            ("eventsRedisAddress and eventsRedisList must be given together",),
            id="redis-events-without-list",
        ),
        pytest.param(
            {"bucketName": "b", "eventsNatsSubject": "s3"},
            AUTH,
            ("eventsNatsServer and eventsNatsSubject must be given together",),
            id="nats-subject-without-server",
        ),
        pytest.param(
            {
                "bucketName": "b",
                "eventsRedisAddress": "redis:6379",
                "eventsRedisList": "l",
                "eventsNatsServer": "nats:4222",
                "eventsNatsSubject": "s",
            },
            AUTH,
            ("give one events source: eventsRedisAddress or eventsNatsServer, not both",),
            id="two-events-sources",
        ),
        pytest.param(
            {"bucketName": "b", "eventsRedisAddress": "redis", "eventsRedisList": "l"},
            AUTH,
            ("invalid eventsRedisAddress 'redis': should be in the format host:port",),
            id="redis-address-without-port",
        ),
        pytest.param(
            {"bucketName": "b", "eventsNatsServer": "http://nats:4222", "eventsNatsSubject": "s"},
            AUTH,
            (
                "invalid eventsNatsServer 'http://nats:4222': expected nats://host:port"
                " or host:port",
            ),
            id="nats-server-wrong-scheme",
        ),
        pytest.param(
            {"bucketName": "b", "eventsNatsServer": "nats:4222", "eventsNatsSubject": "a b"},
            AUTH,
            ("invalid eventsNatsSubject 'a b': no whitespace allowed",),
            id="nats-subject-with-space",
        ),
    ],
)
def test_invalid(metadata: dict[str, str], auth: dict[str, str], problems: tuple[str, ...]) -> None:
    assert _problems(metadata, auth=auth) == problems


def test_secrets_never_in_problems() -> None:
    problems = _problems(
        {"bucketName": "a/b", "awsEndpoint": f"http://{SECRET}@host"},
        auth={"awsAccessKeyID": "id", "awsSecretAccessKey": SECRET},
    )
    assert len(problems) == 2
    assert all(SECRET not in p for p in problems)


@pytest.mark.parametrize(
    ("metadata", "auth", "events"),
    [
        pytest.param(
            {"eventsRedisAddress": "redis.ns:6380", "eventsRedisList": "s3-events"},
            {"eventsRedisPassword": "pw"},
            RedisEvents("redis.ns", 6380, 0, "s3-events", None, "pw", 3.0),
            id="redis",
        ),
        pytest.param(
            {
                "eventsRedisAddress": "[::1]:6379",
                "eventsRedisList": "ev",
                "eventsRedisDatabaseIndex": "2",
                "eventsRedisUsername": "u",
            },
            {},
            RedisEvents("::1", 6379, 2, "ev", "u", None, 3.0),
            id="redis-ipv6-db",
        ),
        pytest.param(
            {"eventsNatsServer": "nats.ns:4223", "eventsNatsSubject": "bucket.events"},
            {},
            NatsEvents("nats://nats.ns:4223", "bucket.events", None, None, 3.0),
            id="nats-bare-host-port",
        ),
        pytest.param(
            {"eventsNatsServer": "nats://nats.ns", "eventsNatsSubject": "s3-events"},
            {"eventsNatsUsername": "u", "eventsNatsPassword": "pw"},
            NatsEvents("nats://nats.ns:4222", "s3-events", "u", "pw", 3.0),
            id="nats-default-port-credentials",
        ),
    ],
)
def test_events_source(
    metadata: dict[str, str], auth: dict[str, str], events: RedisEvents | NatsEvents
) -> None:
    scaler = _build({"bucketName": "b", **metadata}, auth={**AUTH, **auth})
    assert scaler.events == events
    assert isinstance(scaler, S3EventsScaler)
    assert isinstance(scaler, PushScaler)
    assert "pw" not in repr(events)
    assert "pw" not in repr(events.key())


def test_keyspace_channel() -> None:
    events = RedisEvents("h", 1, 3, "s3-events", None, None, 1.0)
    assert keyspace_channel(events) == "__keyspace@3__:s3-events"


# -- error mapping (exceptions built here: a real store cannot be made to answer each code) ------


def _client_error(code: str, status: int, message: str = "") -> boto_errors.ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return boto_errors.ClientError(response, "ListObjectsV2")


@pytest.mark.parametrize(
    ("exc", "kind", "text"),
    [
        pytest.param(_client_error("NoSuchBucket", 404), QueryError, "does not exist", id="404"),
        pytest.param(_client_error("AccessDenied", 403), ScalerError, "access denied", id="403"),
        pytest.param(
            _client_error("SignatureDoesNotMatch", 403),
            ScalerError,
            "access denied (SignatureDoesNotMatch)",
            id="bad-signature",
        ),
        pytest.param(
            _client_error("ExpiredToken", 400), ScalerError, "access denied", id="expired-token"
        ),
        pytest.param(
            _client_error("SlowDown", 503), QueryError, "request failed (SlowDown)", id="503"
        ),
        pytest.param(
            boto_errors.EndpointConnectionError(endpoint_url="http://h:1"),
            ScalerError,
            "connection failed",
            id="refused",
        ),
        pytest.param(
            boto_errors.ReadTimeoutError(endpoint_url="http://h:1"),
            ScalerError,
            "timed out",
            id="read-timeout",
        ),
        pytest.param(
            boto_errors.ConnectTimeoutError(endpoint_url="http://h:1"),
            ScalerError,
            "timed out",
            id="connect-timeout",
        ),
    ],
)
def test_error_mapping(exc: Exception, kind: type[ScalerError], text: str) -> None:
    scaler = _build({"bucketName": "b", "awsEndpoint": "http://h:1"})
    error = scaler._error(exc)
    assert type(error) is kind
    assert text in str(error)
    assert "aws-s3 http://h:1 bucket 'b'" in str(error)


def test_error_messages_are_redacted() -> None:
    scaler = _build({"bucketName": "b"})
    error = scaler._error(_client_error("AccessDenied", 403, f"key {SECRET} refused"))
    assert SECRET not in str(error)
    assert "<redacted>" in str(error)
