"""KEDA's Kafka consumer-lag arithmetic as pure functions (no I/O, no clock, no client).

Given, per watched partition, the group's committed offset (``-1``: nothing committed) and the
partition's latest offset (``None``: the broker left the partition out of its answer), `total_lag`
returns what KEDA's ``getTotalLag`` returns:

* per partition (``getLagForPartition``):

  - nothing committed and ``offsetResetPolicy: latest`` -> lag **1** (one consumer is kept alive
    to start consuming), or 0 with ``scaleToZeroOnInvalidOffset``;
  - nothing committed and ``earliest`` -> 0 with ``scaleToZeroOnInvalidOffset``, else the whole
    partition (the latest offset);
  - ``excludePersistentLag``: when the committed offset is the one seen on the previous sample,
    the partition's lag counts 0 for the metric but in full for activation;
  - otherwise ``latest - committed``;

  partitions absent from the latest-offset answer are skipped (KEDA iterates that answer);

* the partition cap (unless ``allowIdleConsumers`` alone): the metric never asks the HPA for more
  consumers than partitions (or partitions with lag, ``limitToPartitionsWithLag``), and with
  ``ensureEvenDistributionOfPartitions`` it is first rounded up to ``f * lagThreshold`` for the
  smallest factor ``f`` of the partition count that covers the lag;

* activation on the uncapped lag including persistent lag: ``lagWithPersistent >
  activationLagThreshold`` (strictly greater).

Integer division follows Go (truncation toward zero), as KEDA's ``int64`` arithmetic does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

NO_COMMIT = -1
ResetPolicy = Literal["latest", "earliest"]
PartitionKey = tuple[str, int]

_RANGE = re.compile(r"\s*(-?\d+)\s*-\s*(-?\d+)\s*")
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


@dataclass(frozen=True, slots=True)
class LagPolicy:
    """The lag-related parameters of one `kafka` trigger (KEDA's names and defaults)."""

    lag_threshold: int = 10
    activation_lag_threshold: int = 0
    offset_reset_policy: ResetPolicy = "latest"
    allow_idle_consumers: bool = False
    exclude_persistent_lag: bool = False
    scale_to_zero_on_invalid_offset: bool = False
    limit_to_partitions_with_lag: bool = False
    ensure_even_distribution_of_partitions: bool = False

    def __post_init__(self) -> None:
        if self.lag_threshold <= 0:
            raise ValueError("lag_threshold must be positive")


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    """One watched partition: the group's committed offset and the partition's latest offset."""

    topic: str
    partition: int
    committed: int  # NO_COMMIT (-1) when the group has committed nothing here
    latest: int | None  # None: missing from the latest-offset answer


@dataclass(frozen=True, slots=True)
class PartitionLag:
    lag: int  # what counts for the metric
    lag_with_persistent: int  # what counts for activation


@dataclass(frozen=True, slots=True)
class LagResult:
    """The metric value and activity of one sample, with what produced them."""

    value: int  # total lag after the partition cap: the HPA metric
    active: bool
    total_lag: int  # before the cap
    total_lag_with_persistent: int
    partitions: int  # counted partitions (present in the latest-offset answer)
    partitions_with_lag: int
    # excludePersistentLag memory for the next sample: committed offset per partition.
    seen: Mapping[PartitionKey, int] = field(default_factory=lambda: MappingProxyType({}))


def partition_lag(
    offsets: PartitionOffsets, policy: LagPolicy, previous: int | None
) -> tuple[PartitionLag, int | None]:
    """KEDA's lag for one partition, and the committed offset to remember (excludePersistentLag).

    `previous` is the committed offset remembered from the last sample (None: none). The second
    item is what to remember now (unchanged when KEDA would not touch its memory).
    """
    committed, latest = offsets.committed, offsets.latest
    if committed == NO_COMMIT:
        if policy.offset_reset_policy == "latest":
            lag = 0 if policy.scale_to_zero_on_invalid_offset else 1
            return PartitionLag(lag, lag), previous
        if policy.scale_to_zero_on_invalid_offset:
            return PartitionLag(0, 0), previous
    if latest is None:
        return PartitionLag(0, 0), previous
    if committed == NO_COMMIT:  # earliest: the whole partition is unread
        return PartitionLag(latest, latest), previous
    lag = latest - committed
    if policy.exclude_persistent_lag:
        if previous is not None and previous == committed:
            return PartitionLag(0, lag), previous  # stuck on the same offset: not for scaling
        return PartitionLag(lag, lag), committed
    return PartitionLag(lag, lag), previous


def total_lag(
    partitions: Iterable[PartitionOffsets],
    policy: LagPolicy,
    seen: Mapping[PartitionKey, int] | None = None,
) -> LagResult:
    """KEDA's getTotalLag + activation over the watched partitions (see the module doc)."""
    memory = dict(seen or {})
    total = with_persistent = counted = with_lag = 0
    for offsets in partitions:
        if offsets.latest is None:
            continue  # KEDA iterates the latest-offset answer: an absent partition is not counted
        key = (offsets.topic, offsets.partition)
        lag, remember = partition_lag(offsets, policy, memory.get(key))
        if remember is not None:
            memory[key] = remember
        total += lag.lag
        with_persistent += lag.lag_with_persistent
        counted += 1
        if lag.lag > 0:
            with_lag += 1
    value = capped_lag(total, counted, with_lag, policy)
    return LagResult(
        value=value,
        active=with_persistent > policy.activation_lag_threshold,
        total_lag=total,
        total_lag_with_persistent=with_persistent,
        partitions=counted,
        partitions_with_lag=with_lag,
        seen=MappingProxyType(memory),
    )


def capped_lag(total: int, partitions: int, partitions_with_lag: int, policy: LagPolicy) -> int:
    """The metric after KEDA's partition cap (and even-distribution rounding)."""
    if not (
        not policy.allow_idle_consumers
        or policy.limit_to_partitions_with_lag
        or policy.ensure_even_distribution_of_partitions
    ):
        return total
    threshold = policy.lag_threshold
    upper = partitions
    if policy.ensure_even_distribution_of_partitions:
        total = even_factor(total, partitions, threshold) * threshold
    if policy.limit_to_partitions_with_lag:
        upper = partitions_with_lag
    if go_div(total, threshold) > upper:
        total = upper * threshold
    return total


def even_factor(total: int, partitions: int, threshold: int) -> int:
    """The smallest factor f of `partitions` with f * threshold >= total (else `partitions`)."""
    for factor in factors(partitions):
        if factor * threshold >= total:
            return factor
    return partitions


def factors(n: int) -> list[int]:
    """Every positive divisor of n, ascending (empty for n < 1)."""
    if n < 1:
        return []
    small, large = [], []
    i = 1
    while i * i <= n:
        if n % i == 0:
            small.append(i)
            if i != n // i:
                large.append(n // i)
        i += 1
    return small + large[::-1]


def go_div(a: int, b: int) -> int:
    """Integer division truncating toward zero (Go's `/` on int64)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def parse_partition_list(items: Iterable[str]) -> tuple[int, ...]:
    """KEDA's ParseInt32List: ``["1", "2", "10-20"]`` -> sorted unique partition ids.

    Raises ValueError naming the bad item (a non-integer, an inverted range, out of int32).
    """
    out: set[int] = set()
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        match = _RANGE.fullmatch(item)
        if match:
            low, high = int(match.group(1)), int(match.group(2))
            if low > high:
                raise ValueError(f"invalid range '{item}': start is greater than end")
            _check_int32(item, low, high)
            out.update(range(low, high + 1))
            continue
        try:
            value = int(item)
        except ValueError:
            raise ValueError(f"'{item}' is not an integer or a range") from None
        _check_int32(item, value, value)
        out.add(value)
    return tuple(sorted(out))


def _check_int32(item: str, low: int, high: int) -> None:
    if low < _INT32_MIN or high > _INT32_MAX:
        raise ValueError(f"'{item}' is out of the int32 range")
