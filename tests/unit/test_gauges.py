"""scaler.gauges.FastGauge: prometheus_client's Gauge API subset the daemon uses, the same
text a scrape gets, samples for registry readers, and scrapes racing the loop's writes."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from scaler.exposition import render_latest
from scaler.gauges import FastGauge

LABELS = ("namespace", "scaledObject", "triggerIndex")


def test_set_get_and_the_registrys_sample_value() -> None:
    r = CollectorRegistry()
    g = FastGauge("tidal_x", "help", LABELS, registry=r)
    g.labels("ns", "Shop.Orders", 0).set(3)
    assert g.labels("ns", "Shop.Orders", "0").get() == 3.0  # label values are str()'d
    labels = {"namespace": "ns", "scaledObject": "Shop.Orders", "triggerIndex": "0"}
    assert r.get_sample_value("tidal_x", labels) == 3.0


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("plain", id="plain"),
        pytest.param('quo"te', id="double-quote"),
        pytest.param("back\\slash", id="backslash"),
        pytest.param("new\nline", id="newline"),
        pytest.param("ünïcode", id="unicode"),
    ],
)
def test_text_is_what_a_prometheus_client_gauge_renders(name: str) -> None:
    fast, slow = CollectorRegistry(), CollectorRegistry()
    f = FastGauge("tidal_x", "help with \\ and\nnewline", LABELS, registry=fast)
    s = Gauge("tidal_x", "help with \\ and\nnewline", LABELS, registry=slow)
    for value in (0, 1, 0.001, 1e21, float("inf"), float("nan")):
        f.labels("ns", name, str(value)).set(value)
        s.labels("ns", name, str(value)).set(value)
    assert render_latest(fast) == generate_latest(slow)
    assert generate_latest(fast) == generate_latest(slow)  # from the lazily built samples


def test_remove_and_remove_where() -> None:
    g = FastGauge("tidal_x", "help", LABELS)
    for i in range(5):
        g.labels("ns", f"o{i}", "0").set(i)
    g.remove("ns", "o0", "0")
    with pytest.raises(KeyError):
        g.remove("ns", "o0", "0")  # as prometheus_client: a missing child is an error
    g.remove_where(lambda labels: labels[1] in {"o1", "o2"})
    assert sorted(g.label_sets()) == [("ns", "o3", "0"), ("ns", "o4", "0")]
    g.clear()
    assert g.items() == []


def test_a_wrong_label_count_is_refused() -> None:
    g = FastGauge("tidal_x", "help", LABELS)
    with pytest.raises(ValueError, match="label count"):
        g.labels("ns", "only-two")


def test_scrapes_in_a_thread_while_children_come_and_go() -> None:
    """The loop adds and removes children while /metrics renders in a worker thread: every
    scrape is whole (each line complete, no exception from a dict changing size)."""
    r = CollectorRegistry()
    g = FastGauge("tidal_x", "help", LABELS, registry=r)
    stop = threading.Event()
    errors: list[BaseException] = []
    texts: list[bytes] = []

    def scrape() -> None:
        try:
            while not stop.is_set():
                texts.append(render_latest(r))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=scrape)
    thread.start()
    try:
        for round_ in range(200):
            for i in range(50):
                g.labels("ns", f"o{i}", str(round_)).set(i)
            g.remove_where(lambda labels, r=round_: labels[2] == str(r))
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert texts
    for text in texts:
        for line in text.decode().splitlines():
            assert line.startswith("#") or (line.startswith("tidal_x{") and line.count('"') == 6)
