"""The metrics API's view of the store: case-insensitive names and the unknown-metric log."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from metrics_api.source import MetricNotFound
from scaler.contract import MetricSpec, Sample
from scaler.service import StoreSource
from scaler.store import MetricStore

T0 = 1_700_000_000.0


def _source() -> StoreSource:
    """A daemon stand-in with only what StoreSource reads (the store, the clock, no shards): the
    behaviour under test is the lookup and its log, not the daemon."""
    store = MetricStore()
    store.register("shop", "orders", [MetricSpec("s0-nats-jetstream-ORDERS", 10.0)])
    store.record_sample("shop", "orders", "s0-nats-jetstream-ORDERS", Sample(30.0, True, T0))
    daemon: Any = SimpleNamespace(store=store, clock=lambda: T0 + 1, members=None)
    return StoreSource(daemon)


def test_lower_case_request_reads_the_capitalised_metric() -> None:
    reading = _source().read("shop", "s0-nats-jetstream-orders", "orders")
    assert (reading.value, reading.observed_at) == (30.0, T0)


def test_unknown_metric_is_logged_once_with_the_known_names(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = _source()
    with caplog.at_level(logging.WARNING, logger="scaler.service"):
        for _ in range(3):
            with pytest.raises(MetricNotFound):
                source.read("shop", "s0-redis-jobs", "orders")
        with pytest.raises(MetricNotFound):
            source.read("shop", "s0-redis-jobs", "missing")
    records = [r for r in caplog.records if r.msg.startswith("metric requested")]
    assert [(r.object, r.metric) for r in records] == [  # type: ignore[attr-defined]
        ("shop/orders", "s0-redis-jobs"),
        ("shop/missing", "s0-redis-jobs"),
    ]
    assert records[0].known == ["s0-nats-jetstream-ORDERS"]  # type: ignore[attr-defined]
