"""Telemetry as a scrape sees it: KEDA's error counters at 0 for every polled trigger and object
(computed at scrape time), forgotten with the object, the lateness histogram's buckets, and
render_latest's output against prometheus_client's."""

from __future__ import annotations

import re

from prometheus_client import generate_latest

from scaler.exposition import render_latest
from scaler.telemetry import LATENESS_BUCKETS, Telemetry, TriggerLabels


def _scrape(t: Telemetry) -> str:
    return generate_latest(t.registry).decode()


def _polled(t: Telemetry, namespace: str, name: str) -> None:
    """What one good poll of a one-trigger object records (scaler/poller.py)."""
    labels = TriggerLabels(namespace, "s0-redis-q", name, "redis", 0).values()
    for gauge in (t.scaler_latency, t.scaler_value, t.scaler_active):
        gauge.labels(*labels).set(1)
    t.staleness.labels(*labels).set(0)
    t.record_replicas(namespace, name, 0, 0, 5)
    t.record_paused(namespace, name, False)


def test_polled_triggers_and_objects_have_error_counters_at_zero() -> None:
    t = Telemetry()
    _polled(t, "ns", "a")
    _polled(t, "ns", "b")
    text = _scrape(t)
    for name in ("a", "b"):
        assert re.search(
            rf'keda_scaler_detail_errors_total\{{[^}}]*scaledObject="{name}"[^}}]*\}} 0\.0', text
        )
        labels = f'{{namespace="ns",scaledObject="{name}"}}'
        assert f"keda_scaled_object_errors_total{labels} 0.0" in text
        assert f"keda_scaled_object_paused{labels} 0.0" in text
        assert f"tidal_scale_target_replicas{labels} 0.0" in text


def test_a_forgotten_object_leaves_no_series_and_is_recorded_afresh() -> None:
    t = Telemetry()
    _polled(t, "ns", "a")
    t.forget_object("ns", "a")
    text = _scrape(t)
    assert 'scaledObject="a"' not in text
    _polled(t, "ns", "a")  # created again with the same name: its series come back
    text = _scrape(t)
    assert 'tidal_scaled_object_max_replicas{namespace="ns",scaledObject="a"} 5.0' in text
    assert 'keda_scaled_object_errors_total{namespace="ns",scaledObject="a"} 0.0' in text


def test_lateness_buckets_show_one_millisecond_steps_up_to_five() -> None:
    t = Telemetry()
    t.lateness.observe(0.0025)
    text = _scrape(t)
    for le in ("0.001", "0.002", "0.003", "0.004", "0.005"):
        assert f'tidal_scheduler_lateness_seconds_bucket{{le="{le}"}}' in text
    assert 'tidal_scheduler_lateness_seconds_bucket{le="0.002"} 0.0' in text
    assert 'tidal_scheduler_lateness_seconds_bucket{le="0.003"} 1.0' in text
    assert list(LATENESS_BUCKETS) == sorted(LATENESS_BUCKETS)


def test_render_latest_is_generate_latest_byte_for_byte() -> None:
    """The faster renderer must not change a byte of what Prometheus scrapes: counters (with
    their _created gauges), histograms, label values needing escapes, unicode, no labels."""
    t = Telemetry(clock=lambda: 100.0)
    for name in ("a", 'quo"te', "back\\slash", "new\nline", "ünï"):
        _polled(t, "ns", name)
        t.scale_actions.labels("ns", name, "up", "activate").inc()
    t.scaler_errors.labels(*TriggerLabels("ns", "s0-redis-q", "a", "redis", 0).values()).inc(2)
    t.api_writes.labels("scale").inc()
    t.scale_conflicts.inc()
    for x in (0.0001, 0.002, 0.04, 3.0, 20.0):
        t.lateness.observe(x)
        t.decision_to_write.observe(x)
    t.staleness.labels(*TriggerLabels("ns", "s0-redis-q", "b", "redis", 0).values()).set(1.5)
    assert render_latest(t.registry) == generate_latest(t.registry)
