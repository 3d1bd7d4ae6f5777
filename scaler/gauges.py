"""Labelled gauges for per-object series: a value and a line of text per child, not an object
graph.

prometheus_client's `Gauge` child is a full metric object (a dict of attributes, a lock, a value
holder with its own lock); every scrape then builds a `Sample` and a labels dict per child and
formats them again. At 1000 objects the daemon's ten per-object families hold 10k children: ~1 KB
each, and a scrape of ~70 ms that, in the scrape thread, took the GIL from the event loop in
20-50 ms stalls (benchmarks/daemon_scale.py, TIDAL_BENCH_STALLS=1). Here a child is two slots:
its value and its label text, formatted once; a scrape is one line per child.

`FastGauge` keeps the subset of `Gauge`'s API the daemon uses (`labels(...).set()`, `remove`,
`clear`) and registers in a `CollectorRegistry` like any collector: `collect()` yields a
`PrerenderedFamily` whose `samples` are built only when read (`registry.get_sample_value`,
`generate_latest`), while `scaler.exposition.render_latest` takes its text directly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

LabelValues = tuple[str, ...]


def label_value_text(v: str) -> str:
    """A label value escaped for the text format (backslash, newline, double quote)."""
    if "\\" in v or "\n" in v or '"' in v:
        return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return v


def go_float(value: float, cache: dict[float, str]) -> str:
    """`floatToGoString(value)`, remembered in `cache` (most values repeat: 0, 1, 1.0e-3...)."""
    text = cache.get(value)
    if text is None:
        text = floatToGoString(value)  # type: ignore[no-untyped-call]
        if len(cache) < 4096:
            cache[value] = text
    return text


def labels_text(labelnames: tuple[str, ...], values: LabelValues) -> str:
    """'a="x",b="y"': the label pairs of one sample, names sorted (generate_latest's order)."""
    pairs = sorted(zip(labelnames, values, strict=True))
    return ",".join(f'{n}="{label_value_text(v)}"' for n, v in pairs)


class GaugeChild:
    __slots__ = ("labels_text", "value")

    def __init__(self, labels_text: str) -> None:
        self.labels_text = labels_text  # 'a="x",b="y"', label names sorted
        self.value = 0.0

    def set(self, value: float) -> None:
        self.value = float(value)

    def get(self) -> float:
        return self.value


class FastGauge(Collector):
    """A labelled gauge whose children are `GaugeChild`s (see the module docstring)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str],
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[LabelValues, GaugeChild] = {}
        self._lock = threading.Lock()  # children are added by the loop, read by scrapes
        if registry is not None:
            registry.register(self)

    def labels(self, *values: Any) -> GaugeChild:
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is not None:
            return child
        if len(key) != len(self.labelnames):
            raise ValueError("incorrect label count")
        text = labels_text(self.labelnames, key)
        with self._lock:
            return self._children.setdefault(key, GaugeChild(text))

    def remove(self, *values: Any) -> None:
        """Forget a child (KeyError when there is none, as prometheus_client)."""
        with self._lock:
            del self._children[tuple(str(v) for v in values)]

    def remove_where(self, drop: Callable[[LabelValues], bool]) -> None:
        """Forget every child whose label values `drop` accepts (one pass)."""
        with self._lock:
            for key in [k for k in self._children if drop(k)]:
                del self._children[key]

    def clear(self) -> None:
        with self._lock:
            self._children.clear()

    def label_sets(self) -> list[LabelValues]:
        with self._lock:
            return list(self._children)

    def items(self) -> list[tuple[LabelValues, float]]:
        with self._lock:
            return [(k, c.value) for k, c in self._children.items()]

    def collect(self) -> Iterator[Metric]:
        yield PrerenderedFamily(self.name, self.documentation, "gauge", self._lines, self._samples)

    def describe(self) -> Iterator[Metric]:
        yield Metric(self.name, self.documentation, "gauge")

    def _snapshot(self) -> list[GaugeChild]:
        with self._lock:
            return list(self._children.values())

    def _lines(self, name: str, values: dict[float, str]) -> Iterator[str]:
        for child in self._snapshot():
            yield f"{name}{{{child.labels_text}}} {go_float(child.value, values)}\n"

    def _samples(self) -> list[Sample]:
        return [
            Sample(self.name, dict(zip(self.labelnames, key, strict=True)), value)
            for key, value in self.items()
        ]


LineSource = Callable[[str, dict[float, str]], Iterator[str]]


class PrerenderedFamily(Metric):
    """A family that renders its own text lines; `samples` is built only when read."""

    def __init__(
        self,
        name: str,
        documentation: str,
        typ: str,
        lines: LineSource,
        samples: Callable[[], list[Sample]],
    ) -> None:
        super().__init__(name, documentation, typ)
        self._lines_of = lines
        self._samples_of = samples

    @property
    def samples(self) -> list[Sample]:
        return self._samples_of()

    @samples.setter
    def samples(self, _: list[Sample]) -> None:  # Metric.__init__ assigns [] here
        pass

    def lines(self, exposed_name: str, values: dict[float, str]) -> Iterator[str]:
        """One text-format line per sample, `exposed_name` as the sample name."""
        return self._lines_of(exposed_name, values)
