"""What the server reads: a view of the daemon's metric store. Never a live broker query."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class MetricNotFound(LookupError):
    """No ScaledObject with that name serves that metric in that namespace (→ 404)."""


class MetricUnavailable(RuntimeError):
    """The metric exists but has no usable value now: its trigger fails and no fallback applies.

    The HPA then reports FailedGetExternalMetric and keeps the replicas it has (never a 0).
    """


class MetricElsewhere(LookupError):
    """Another replica owns the object (`--shards auto`): ask it (metrics_api.peer)."""

    def __init__(self, identity: str, address: str) -> None:
        super().__init__(f"owned by replica {identity} at {address}")
        self.identity = identity
        self.address = address


@dataclass(frozen=True, slots=True)
class MetricReading:
    value: float
    observed_at: float  # wall-clock epoch seconds


class MetricSource(Protocol):
    def read(self, namespace: str, metric: str, scaled_object: str) -> MetricReading:
        """Raises MetricNotFound or MetricUnavailable, or MetricElsewhere when sharded."""
        ...

    def ready(self) -> bool:
        """True once the daemon has synced its watches (for /readyz)."""
        ...


class PeerReader(Protocol):
    async def read_from(
        self, owner: MetricElsewhere, namespace: str, metric: str, scaled_object: str
    ) -> MetricReading:
        """The owner's reading. Raises MetricNotFound or MetricUnavailable (also when the
        owner cannot be reached, or no longer owns the object)."""
        ...
