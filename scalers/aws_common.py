"""What the AWS scalers (aws-s3, aws-sqs-queue) share: the identity a client is built for, the
`awsEndpoint` check, and how a botocore failure becomes the project's error. No I/O."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Collection
from dataclasses import dataclass

from botocore import exceptions as boto_errors

from scaler.clients import fingerprint
from scaler.errors import QueryError, ScalerError
from scaler.params import redact


@dataclass(frozen=True, slots=True, repr=False)
class AwsTarget:
    """How to reach an AWS service with one identity; repr shows no credentials. Subclasses
    add what else separates two clients and the `key()` they share one under."""

    endpoint: str | None  # None: AWS's endpoint for `region`
    region: str
    access_key: str
    secret_key: str
    session_token: str | None
    timeout: float

    @property
    def where(self) -> str:
        return self.endpoint or f"aws/{self.region}"

    def credentials(self) -> str:
        """A one-way fingerprint of the credentials (for a ClientKey), never the secret."""
        return fingerprint(self.access_key, self.secret_key, self.session_token)

    def secrets(self) -> tuple[str, ...]:
        """The values no message may show."""
        return tuple(s for s in (self.secret_key, self.session_token) if s)


def endpoint_problems(endpoint: str) -> list[str]:
    """`awsEndpoint`: http(s)://host[:port][/path], no credentials, query or fragment."""
    parts = urllib.parse.urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return [f"invalid awsEndpoint '{endpoint}': expected http(s)://host[:port]"]
    if parts.username is not None or parts.password is not None:
        return ["invalid awsEndpoint: credentials in the URL are not allowed (use awsAccessKeyID)"]
    if parts.query or parts.fragment:
        return [f"invalid awsEndpoint '{endpoint}': no query or fragment allowed"]
    return []


def aws_error(
    exc: Exception,
    where: str,
    target: AwsTarget,
    auth_codes: Collection[str],
    missing: Callable[[str, int | None], str | None],
) -> ScalerError:
    """A botocore failure as a ScalerError (the source is unusable now) or a QueryError (the
    request is wrong), secrets redacted. `missing(code, status)` names what does not exist
    (the bucket, the queue) or is None."""
    detail = redact(f"{type(exc).__name__}: {exc}", target.secrets())
    if isinstance(exc, boto_errors.ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        gone = missing(code, status)
        if gone is not None:
            return QueryError(f"{where}: {gone}")
        if code in auth_codes or status in (401, 403):
            return ScalerError(f"{where}: access denied ({code or status}): {detail}")
        return QueryError(f"{where}: request failed ({code or status}): {detail}")
    if isinstance(exc, boto_errors.ConnectTimeoutError | boto_errors.ReadTimeoutError):
        return ScalerError(f"{where}: timed out: {detail}")
    if isinstance(exc, boto_errors.HTTPClientError | boto_errors.ConnectionError):
        return ScalerError(f"{where}: connection failed: {detail}")
    if isinstance(exc, boto_errors.ParamValidationError):
        return QueryError(f"{where}: invalid request: {detail}")
    return ScalerError(f"{where}: {detail}")
