"""What the AWS scalers (aws-s3, aws-sqs-queue) share: the identity a client is built for, and
the `awsEndpoint` check. No I/O, no boto3."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from scaler.clients import fingerprint


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
