"""MetricStore: last good value held across errors, fallback-aware reads for the HPA."""

from __future__ import annotations

import tracemalloc

import pytest

from scaler.contract import MetricSpec, Sample
from scaler.errors import ScalerError
from scaler.store import (
    HpaReading,
    MetricRecord,
    MetricStore,
    MetricUnavailableError,
    UnknownMetricError,
)

NS, SO, M = "shop", "orders", "s0-redis-orders"
T0 = 1_700_000_000.0


@pytest.fixture
def store() -> MetricStore:
    s = MetricStore()
    s.register(NS, SO, [MetricSpec(M, 5.0)], fallback_threshold=None)
    return s


def test_sample_is_recorded(store: MetricStore) -> None:
    store.record_sample(NS, SO, M, Sample(12.0, True, T0))
    record = store.get(NS, SO, M)
    assert record == MetricRecord(value=12.0, active=True, observed_at=T0, polled_at=T0)
    assert record.sample() == Sample(12.0, True, T0)
    assert record.last_good_at == T0
    assert not record.failing


def test_error_holds_last_good_value_with_its_age(store: MetricStore) -> None:
    store.record_sample(NS, SO, M, Sample(12.0, True, T0))
    store.record_error(NS, SO, M, "timeout", T0 + 10)
    record = store.record_error(NS, SO, M, "connection refused", T0 + 20)
    assert (record.value, record.active, record.observed_at) == (12.0, True, T0)
    assert (record.error, record.error_since, record.consecutive_failures) == (
        "connection refused",
        T0 + 10,
        2,
    )
    assert record.polled_at == T0 + 20
    assert record.age(T0 + 30) == 30.0
    assert record.failing


def test_success_clears_the_failure_streak(store: MetricStore) -> None:
    store.record_error(NS, SO, M, "timeout", T0)
    store.record_sample(NS, SO, M, Sample(0.0, False, T0 + 5))
    record = store.get(NS, SO, M)
    assert record is not None
    assert (record.error, record.error_since, record.consecutive_failures) == (None, None, 0)
    assert record.value == 0.0


def test_error_before_any_sample_has_no_value(store: MetricStore) -> None:
    record = store.record_error(NS, SO, M, "auth failed", T0)
    assert record.value is None
    assert record.sample() is None
    assert record.age(T0 + 1) is None
    assert record.consecutive_failures == 1


def test_get_unknown_is_none(store: MetricStore) -> None:
    assert store.get(NS, SO, "s9-nope") is None
    assert store.get(NS, "other", M) is None


def test_for_object_is_a_read_only_snapshot(store: MetricStore) -> None:
    store.record_sample(NS, SO, M, Sample(1.0, True, T0))
    view = store.for_object(NS, SO)
    store.record_sample(NS, SO, M, Sample(2.0, True, T0 + 1))
    assert view[M].value == 1.0
    with pytest.raises(TypeError):
        view["x"] = MetricRecord()  # type: ignore[index]
    assert dict(store.for_object(NS, "missing")) == {}


def test_remove_object(store: MetricStore) -> None:
    store.record_sample(NS, SO, M, Sample(1.0, True, T0))
    store.remove_object(NS, SO)
    assert store.get(NS, SO, M) is None
    assert len(store) == 0
    with pytest.raises(UnknownMetricError):
        store.metric_value_for_hpa(NS, M, SO, T0)
    store.remove_object(NS, SO)  # idempotent


def test_register_prunes_metrics_no_longer_declared(store: MetricStore) -> None:
    store.record_sample(NS, SO, M, Sample(1.0, True, T0))
    store.record_sample(NS, SO, "s1-kafka-x", Sample(2.0, True, T0))
    store.register(NS, SO, [MetricSpec(M, 5.0), MetricSpec("cpu", 50, "Utilization", "Resource")])
    assert set(store.for_object(NS, SO)) == {M}
    assert store.get(NS, SO, M) is not None


# --------------------------------------------------------------------------- HPA reads


def test_hpa_reads_the_last_value(store: MetricStore) -> None:
    store.record_sample(NS, SO, M, Sample(12.0, True, T0))
    assert store.metric_value_for_hpa(NS, M, SO, T0 + 1) == HpaReading(12.0, T0)


def test_hpa_read_of_a_zero_is_a_zero(store: MetricStore) -> None:
    store.record_sample(NS, SO, M, Sample(0.0, False, T0))
    assert store.metric_value_for_hpa(NS, M, SO, T0).value == 0.0


@pytest.mark.parametrize(
    ("namespace", "metric", "name"),
    [
        pytest.param("other", M, SO, id="namespace"),
        pytest.param(NS, M, "other", id="object"),
        pytest.param(NS, "s7-unknown", SO, id="metric"),
    ],
)
def test_hpa_read_unknown_metric(
    store: MetricStore, namespace: str, metric: str, name: str
) -> None:
    with pytest.raises(UnknownMetricError):
        store.metric_value_for_hpa(namespace, metric, name, T0)


def test_hpa_read_before_first_sample_is_unavailable(store: MetricStore) -> None:
    with pytest.raises(MetricUnavailableError, match="no value yet"):
        store.metric_value_for_hpa(NS, M, SO, T0)


def test_hpa_read_of_a_failing_metric_raises_never_zero(store: MetricStore) -> None:
    store.record_sample(NS, SO, M, Sample(12.0, True, T0))
    store.record_error(NS, SO, M, "timeout", T0 + 1)
    with pytest.raises(MetricUnavailableError, match="encountered error: timeout") as info:
        store.metric_value_for_hpa(NS, M, SO, T0 + 2)
    assert isinstance(info.value, ScalerError)


def test_hpa_read_of_a_stale_value_with_max_age(store: MetricStore) -> None:
    store.record_sample(NS, SO, M, Sample(12.0, True, T0))
    assert store.metric_value_for_hpa(NS, M, SO, T0 + 60, max_age=60).value == 12.0
    with pytest.raises(MetricUnavailableError, match="stale"):
        store.metric_value_for_hpa(NS, M, SO, T0 + 61, max_age=60)


def fallback_store(target_type: str = "AverageValue", threshold: int = 2) -> MetricStore:
    s = MetricStore()
    s.register(NS, SO, [MetricSpec(M, 5.0, target_type)], fallback_threshold=threshold)  # type: ignore[arg-type]
    s.record_sample(NS, SO, M, Sample(12.0, True, T0))
    return s


def fail(s: MetricStore, times: int) -> None:
    for i in range(times):
        s.record_error(NS, SO, M, "timeout", T0 + 1 + i)


def test_fallback_value_is_target_times_replicas() -> None:
    s = fallback_store()
    fail(s, 3)
    s.set_fallback(NS, SO, 4)
    assert s.metric_value_for_hpa(NS, M, SO, T0 + 9) == HpaReading(20.0, T0 + 9, fallback=True)


def test_fallback_needs_failures_strictly_above_threshold() -> None:
    s = fallback_store(threshold=2)
    fail(s, 2)
    s.set_fallback(NS, SO, 4)
    with pytest.raises(MetricUnavailableError):
        s.metric_value_for_hpa(NS, M, SO, T0 + 9)


def test_fallback_does_not_replace_a_healthy_metric() -> None:
    s = fallback_store()
    s.set_fallback(NS, SO, 4)
    assert s.metric_value_for_hpa(NS, M, SO, T0 + 1) == HpaReading(12.0, T0)


def test_fallback_inactive_means_error() -> None:
    s = fallback_store()
    fail(s, 5)
    s.set_fallback(NS, SO, None)
    with pytest.raises(MetricUnavailableError):
        s.metric_value_for_hpa(NS, M, SO, T0 + 9)


def test_fallback_for_value_target_divides_by_ready_replicas() -> None:
    s = fallback_store("Value")
    fail(s, 3)
    s.set_fallback(NS, SO, 6, ready_replicas=3)
    assert s.metric_value_for_hpa(NS, M, SO, T0 + 9).value == 10.0
    s.set_fallback(NS, SO, 6, ready_replicas=0)
    with pytest.raises(MetricUnavailableError, match="ready replicas"):
        s.metric_value_for_hpa(NS, M, SO, T0 + 9)


def test_registering_without_fallback_clears_it() -> None:
    s = fallback_store()
    fail(s, 3)
    s.set_fallback(NS, SO, 4)
    s.register(NS, SO, [MetricSpec(M, 5.0)], fallback_threshold=None)
    with pytest.raises(MetricUnavailableError):
        s.metric_value_for_hpa(NS, M, SO, T0 + 9)


def test_set_fallback_for_unknown_object_is_ignored() -> None:
    s = MetricStore()
    s.set_fallback(NS, SO, 3)
    assert len(s) == 0


def test_thousand_objects_are_cheap() -> None:
    """1000 objects x 3 metrics: every lookup by key, a bounded memory footprint."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        s = MetricStore()
        for i in range(1000):
            specs = [MetricSpec(f"s{j}-redis-q{i}", 5.0) for j in range(3)]
            s.register("ns", f"so-{i}", specs, fallback_threshold=3)
            for spec in specs:
                s.record_sample("ns", f"so-{i}", spec.name, Sample(float(i), True, T0))
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(s) == 1000
    assert s.metric_value_for_hpa("ns", "s2-redis-q999", "so-999", T0).value == 999.0
    assert used < 4 * 1024 * 1024, used


# --------------------------------------------------------------------------- metric name case


@pytest.mark.parametrize(
    ("declared", "asked"),
    [
        pytest.param("s0-nats-jetstream-ORDERS", "s0-nats-jetstream-orders", id="nats-stream"),
        pytest.param("s0-cron-Etc-UTC-0xxxx-59xxxx", "s0-cron-etc-utc-0xxxx-59xxxx", id="cron-tz"),
        pytest.param("s1-kafka-Payments-Topic", "s1-kafka-payments-topic", id="kafka-topic"),
        pytest.param("s0-redis-Jobs", "s0-redis-Jobs", id="exact-case"),
        pytest.param("s0-redis-jobs", "S0-REDIS-JOBS", id="upper-asked"),
    ],
)
def test_hpa_read_matches_metric_names_ignoring_case(declared: str, asked: str) -> None:
    """The HPA controller asks for the metric name in lower case (KEDA matches with EqualFold)."""
    store = MetricStore()
    store.register(NS, SO, [MetricSpec(declared, 5.0)])
    store.record_sample(NS, SO, declared, Sample(42.0, True, T0))
    assert store.metric_value_for_hpa(NS, asked, SO, T0) == HpaReading(42.0, T0)


def test_case_index_follows_re_registration() -> None:
    store = MetricStore()
    store.register(NS, SO, [MetricSpec("s0-redis-Jobs", 5.0)])
    store.register(NS, SO, [MetricSpec("s0-redis-Other", 5.0)])
    store.record_sample(NS, SO, "s0-redis-Other", Sample(1.0, True, T0))
    with pytest.raises(UnknownMetricError):
        store.metric_value_for_hpa(NS, "s0-redis-jobs", SO, T0)
    assert store.metric_value_for_hpa(NS, "s0-redis-other", SO, T0).value == 1.0
    assert store.metric_names(NS, SO) == ("s0-redis-Other",)
    assert store.metric_names(NS, "missing") == ()


# --------------------------------------------------------------------------- never stale


def test_value_older_than_the_objects_max_age_is_not_served() -> None:
    store = MetricStore()
    store.register(NS, SO, [MetricSpec(M, 5.0)], max_age=10.0)
    store.record_sample(NS, SO, M, Sample(7.0, True, T0))
    assert store.metric_value_for_hpa(NS, M, SO, T0 + 10).value == 7.0
    with pytest.raises(MetricUnavailableError, match="stale"):
        store.metric_value_for_hpa(NS, M, SO, T0 + 11)


def test_broken_object_is_served_an_error_until_cleared(store: MetricStore) -> None:
    store.record_sample(NS, SO, M, Sample(25.0, True, T0))
    store.set_broken(NS, SO, "TriggerAuthentication 'redis-ta' not found")
    with pytest.raises(MetricUnavailableError, match="redis-ta"):
        store.metric_value_for_hpa(NS, M, SO, T0)
    store.set_broken(NS, SO, None)
    assert store.metric_value_for_hpa(NS, M, SO, T0).value == 25.0


def test_a_late_sample_never_brings_a_removed_object_back(store: MetricStore) -> None:
    store.remove_object(NS, SO)
    assert store.record_sample(NS, SO, M, Sample(1.0, True, T0)) is None
    assert store.record_error(NS, SO, M, "timeout", T0) is None
    assert len(store) == 0
