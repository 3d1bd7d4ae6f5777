"""Tidal's one exception tree.

    TidalError
    ├── ConfigError       bad input: a ScaledObject, trigger metadata, an auth reference.
    │   │                 Not retried until the input changes; lists every problem found.
    │   └── UnsupportedError   a feature Tidal deliberately does not provide (podIdentity...)
    ├── ScalerError       a transient failure talking to a source: refused, timeout, auth.
    │   └── QueryError    the source answered, but not with a usable value (non-2xx, NaN...).
    └── KubeError         a Kubernetes API call failed.

Each scaler maps its client library's exceptions to these at its boundary (`raise ... from exc`).
An error is never a zero: a scaler that cannot read its source raises; it never returns 0.
Messages never contain secret values (see scaler.params.redact).
"""

from __future__ import annotations

from collections.abc import Sequence


class TidalError(Exception):
    """Base of every error Tidal raises on purpose."""


class ConfigError(TidalError):
    """Invalid configuration; `problems` lists every problem found, worded like KEDA's."""

    def __init__(self, problems: str | Sequence[str]) -> None:
        self.problems: tuple[str, ...] = (
            (problems,) if isinstance(problems, str) else tuple(problems)
        )
        super().__init__("; ".join(self.problems))


class UnsupportedError(ConfigError):
    """A KEDA feature Tidal does not support, named so the user knows what to change."""


class ScalerError(TidalError):
    """A transient failure querying a source. The last good value is held; never read as 0."""


class QueryError(ScalerError):
    """The source answered, but the answer cannot be used as a metric value."""


class KubeError(TidalError):
    """A Kubernetes API call failed; `status` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotLeaderError(KubeError):
    """A write refused before it was sent: this replica no longer holds a fresh lease."""
