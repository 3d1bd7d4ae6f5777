"""KEDA's Kafka lag arithmetic (scalers.kafka.lag): per-partition rules, the cap, activation;
and the hand-written wire codecs of scalers.kafka.protocol, checked against aiokafka's schemas."""

from __future__ import annotations

from collections.abc import Sequence
from io import BytesIO
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalers.kafka.lag import (
    NO_COMMIT,
    LagPolicy,
    PartitionOffsets,
    factors,
    go_div,
    parse_partition_list,
    total_lag,
)
from scalers.kafka.protocol import (
    OffsetFetchGroupsRequestV8,
    OffsetFetchGroupsResponseV8,
    decode_offset_fetch_v8,
)


def _parts(*pairs: tuple[int, int | None], topic: str = "t") -> list[PartitionOffsets]:
    """Partitions 0..n-1 of `topic` from (committed, latest) pairs."""
    return [PartitionOffsets(topic, i, c, latest) for i, (c, latest) in enumerate(pairs)]


@pytest.mark.parametrize(
    ("pairs", "policy", "value", "active", "counted"),
    [
        pytest.param(
            [(2, 5), (3, 3), (1, 7)], LagPolicy(), 9, True, 3, id="latest-minus-committed"
        ),
        pytest.param([(5, 5), (7, 7)], LagPolicy(), 0, False, 2, id="no-lag-inactive"),
        pytest.param(
            [(NO_COMMIT, 50), (NO_COMMIT, 0)], LagPolicy(), 2, True, 2, id="no-commit-latest-is-1"
        ),
        pytest.param(
            [(NO_COMMIT, 50)],
            LagPolicy(scale_to_zero_on_invalid_offset=True),
            0,
            False,
            1,
            id="no-commit-latest-scale-to-zero",
        ),
        pytest.param(
            [(NO_COMMIT, 8), (NO_COMMIT, 4)],
            LagPolicy(offset_reset_policy="earliest"),
            12,
            True,
            2,
            id="no-commit-earliest-is-whole-partition",
        ),
        pytest.param(
            [(NO_COMMIT, 8)],
            LagPolicy(offset_reset_policy="earliest", scale_to_zero_on_invalid_offset=True),
            0,
            False,
            1,
            id="no-commit-earliest-scale-to-zero",
        ),
        pytest.param(
            [(1, 4), (0, None)], LagPolicy(), 3, True, 1, id="absent-from-latest-not-counted"
        ),
        pytest.param(
            [(NO_COMMIT, None)], LagPolicy(), 0, False, 0, id="absent-no-commit-not-counted"
        ),
        pytest.param([(9, 4)], LagPolicy(), -5, False, 1, id="committed-beyond-end-negative"),
        pytest.param([(0, 100), (0, 0), (0, 0)], LagPolicy(), 30, True, 3, id="cap-at-partitions"),
        pytest.param(
            [(0, 35), (0, 0), (0, 0)], LagPolicy(), 35, True, 3, id="cap-only-when-quotient-exceeds"
        ),
        pytest.param(
            [(0, 100), (0, 0), (0, 0)],
            LagPolicy(allow_idle_consumers=True),
            100,
            True,
            3,
            id="allow-idle-no-cap",
        ),
        pytest.param(
            [(0, 100), (0, 0), (0, 0)],
            LagPolicy(limit_to_partitions_with_lag=True),
            10,
            True,
            3,
            id="limit-to-partitions-with-lag",
        ),
        pytest.param(
            [(0, 0), (0, 0)],
            LagPolicy(limit_to_partitions_with_lag=True),
            0,
            False,
            2,
            id="limit-no-partition-with-lag",
        ),
        pytest.param(
            [(0, 35)] + [(0, 0)] * 9,
            LagPolicy(ensure_even_distribution_of_partitions=True),
            50,
            True,
            10,
            id="even-rounds-up-to-factor",
        ),
        pytest.param(
            [(0, 0)] * 10,
            LagPolicy(ensure_even_distribution_of_partitions=True),
            10,
            False,
            10,
            id="even-zero-lag-is-one-factor",
        ),
        pytest.param(
            [(0, 500)] + [(0, 0)] * 5,
            LagPolicy(ensure_even_distribution_of_partitions=True, allow_idle_consumers=True),
            60,
            True,
            6,
            id="even-caps-even-with-allow-idle",
        ),
        pytest.param(
            [(0, 3)] * 7,
            LagPolicy(lag_threshold=1, ensure_even_distribution_of_partitions=True),
            7,
            True,
            7,
            id="even-prime-partitions",
        ),
        pytest.param(
            [(0, 5)], LagPolicy(activation_lag_threshold=5), 5, False, 1, id="activation-strict"
        ),
        pytest.param(
            [(0, 6)], LagPolicy(activation_lag_threshold=5), 6, True, 1, id="activation-above"
        ),
        pytest.param(
            [(0, 100)],
            LagPolicy(activation_lag_threshold=50),
            10,
            True,
            1,
            id="activation-on-uncapped-lag",
        ),
    ],
)
def test_total_lag(
    pairs: Sequence[tuple[int, int | None]],
    policy: LagPolicy,
    value: int,
    active: bool,
    counted: int,
) -> None:
    result = total_lag(_parts(*pairs), policy)
    assert (result.value, result.active, result.partitions) == (value, active, counted)


def test_totals_before_the_cap_are_reported() -> None:
    result = total_lag(_parts((0, 100), (0, 0), (0, 0)), LagPolicy())
    assert (result.total_lag, result.total_lag_with_persistent) == (100, 100)
    assert (result.value, result.partitions_with_lag) == (30, 1)


def test_exclude_persistent_lag_counts_a_stuck_partition_only_for_activation() -> None:
    policy = LagPolicy(exclude_persistent_lag=True)
    first = total_lag(_parts((3, 10), (5, 6)), policy)
    assert (first.value, first.active) == (8, True)  # nothing remembered yet: all lag counts
    assert dict(first.seen) == {("t", 0): 3, ("t", 1): 5}

    stuck = total_lag(_parts((3, 12), (6, 6)), policy, first.seen)
    assert stuck.value == 0  # partition 0 did not move: its lag is persistent
    assert (stuck.total_lag_with_persistent, stuck.active) == (9, True)
    assert stuck.partitions_with_lag == 0

    moving = total_lag(_parts((4, 12), (6, 6)), policy, stuck.seen)
    assert (moving.value, dict(moving.seen)) == (8, {("t", 0): 4, ("t", 1): 6})


def test_exclude_persistent_lag_leaves_memory_alone_without_a_commit() -> None:
    policy = LagPolicy(exclude_persistent_lag=True)
    result = total_lag(_parts((NO_COMMIT, 10)), policy, {("t", 0): 7})
    assert (result.value, dict(result.seen)) == (1, {("t", 0): 7})


def test_persistent_lag_is_not_used_without_the_flag() -> None:
    seen = {("t", 0): 3}
    result = total_lag(_parts((3, 10)), LagPolicy(), seen)
    assert result.value == 7
    assert dict(result.seen) == seen


def test_many_topics_are_summed_and_counted_together() -> None:
    parts = _parts((0, 4), (2, 2), topic="a") + _parts((1, 5), topic="b")
    result = total_lag(parts, LagPolicy(lag_threshold=1))
    assert (result.value, result.partitions, result.partitions_with_lag) == (3, 3, 2)


def test_lag_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        LagPolicy(lag_threshold=0)


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        pytest.param(0, [], id="zero"),
        pytest.param(1, [1], id="one"),
        pytest.param(12, [1, 2, 3, 4, 6, 12], id="twelve"),
        pytest.param(16, [1, 2, 4, 8, 16], id="square"),
        pytest.param(13, [1, 13], id="prime"),
    ],
)
def test_factors(n: int, expected: list[int]) -> None:
    assert factors(n) == expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        pytest.param(35, 10, 3, id="positive"),
        pytest.param(-15, 10, -1, id="negative-truncates-toward-zero"),
        pytest.param(0, 7, 0, id="zero"),
    ],
)
def test_go_div(a: int, b: int, expected: int) -> None:
    assert go_div(a, b) == expected


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        pytest.param(["1", "2", "10-12", "31"], (1, 2, 10, 11, 12, 31), id="keda-example"),
        pytest.param(["3", "3", "1"], (1, 3), id="sorted-unique"),
        pytest.param([" 4 - 5 "], (4, 5), id="spaces-in-range"),
        pytest.param(["7-7"], (7,), id="one-element-range"),
    ],
)
def test_parse_partition_list(items: list[str], expected: tuple[int, ...]) -> None:
    assert parse_partition_list(items) == expected


@pytest.mark.parametrize(
    ("items", "message"),
    [
        pytest.param(["x"], "'x' is not an integer or a range", id="not-a-number"),
        pytest.param(["5-2"], "start is greater than end", id="inverted-range"),
        pytest.param(["1-a"], "'1-a' is not an integer or a range", id="bad-range"),
        pytest.param(["3000000000"], "out of the int32 range", id="too-large"),
    ],
)
def test_parse_partition_list_rejects(items: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_partition_list(items)


_offsets = st.lists(
    st.tuples(st.integers(0, 10_000), st.integers(0, 10_000)).map(
        lambda t: (min(t), max(t))  # committed <= latest
    ),
    min_size=1,
    max_size=12,
)


@given(
    pairs=_offsets,
    threshold=st.integers(1, 50),
    activation=st.integers(0, 100),
    allow_idle=st.booleans(),
    limit=st.booleans(),
)
def test_activation_ignores_the_cap(
    pairs: list[tuple[int, int]], threshold: int, activation: int, allow_idle: bool, limit: bool
) -> None:
    policy = LagPolicy(
        lag_threshold=threshold,
        activation_lag_threshold=activation,
        allow_idle_consumers=allow_idle and not limit,
        limit_to_partitions_with_lag=limit,
    )
    result = total_lag(_parts(*pairs), policy)
    raw = sum(latest - committed for committed, latest in pairs)
    assert result.total_lag == raw
    assert result.active is (raw > activation)
    assert 0 <= result.value <= raw


@given(pairs=_offsets, threshold=st.integers(1, 50))
def test_the_cap_bounds_the_replicas_the_hpa_asks_for(
    pairs: list[tuple[int, int]], threshold: int
) -> None:
    result = total_lag(_parts(*pairs), LagPolicy(lag_threshold=threshold))
    # KEDA caps when lag / threshold (integer division) exceeds the partition count.
    assert go_div(result.value, threshold) <= result.partitions


# -- the hand-written OffsetFetch v8 codecs (scalers.kafka.protocol) match aiokafka's schemas --

_name = st.text(min_size=0, max_size=12)
_tags = st.just({})
_fetch_groups = st.lists(
    st.tuples(
        _name,
        st.one_of(
            st.none(),
            st.lists(
                st.tuples(_name, st.lists(st.integers(0, 2**31 - 1), max_size=5), _tags),
                max_size=4,
            ),
        ),
        _tags,
    ),
    max_size=4,
)
_fetch_answer = st.tuples(
    st.integers(0, 2**31 - 1),
    st.lists(
        st.tuples(
            _name,
            st.one_of(
                st.none(),
                st.lists(
                    st.tuples(
                        _name,
                        st.lists(
                            st.tuples(
                                st.integers(0, 2**31 - 1),
                                st.integers(-1, 2**63 - 1),
                                st.integers(-1, 2**31 - 1),
                                st.one_of(st.none(), _name),
                                st.integers(-(2**15), 2**15 - 1),
                                _tags,
                            ),
                            max_size=4,
                        ),
                        _tags,
                    ),
                    max_size=3,
                ),
            ),
            st.integers(-(2**15), 2**15 - 1),
            _tags,
        ),
        max_size=3,
    ),
    _tags,
)


@given(groups=_fetch_groups, stable=st.booleans())
def test_offset_fetch_request_encoding_matches_aiokafka(groups: list[Any], stable: bool) -> None:
    request = OffsetFetchGroupsRequestV8(groups, stable, {})
    assert request.encode() == OffsetFetchGroupsRequestV8.SCHEMA.encode([groups, stable, {}])


@given(answer=_fetch_answer)
def test_offset_fetch_response_decoding_matches_aiokafka(answer: tuple[Any, ...]) -> None:
    wire = OffsetFetchGroupsResponseV8.SCHEMA.encode(list(answer))
    reference = OffsetFetchGroupsResponseV8.SCHEMA.decode(BytesIO(wire))
    assert decode_offset_fetch_v8(BytesIO(wire)) == reference


def test_offset_fetch_response_keeps_tagged_fields() -> None:
    wire = OffsetFetchGroupsResponseV8.SCHEMA.encode([0, [("g", [], 0, {})], {}])
    tagged = wire[:-1] + bytes([1, 3, 2]) + b"hi"  # one top-level tagged field: tag 3, 2 bytes
    assert decode_offset_fetch_v8(tagged)[2] == {3: b"hi"}
