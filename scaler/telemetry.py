"""Prometheus metrics of the daemon: KEDA's names and labels, plus Tidal's own under `tidal_`.

A dashboard built for KEDA reads these unchanged (docs/observability.md lists every metric). No
label ever holds a secret or a connection string: labels are namespace, object, trigger
type/index, metric names (`s<index>-<type>-<detail>`), directions, reasons and write kinds only.

Three families are computed at scrape time by `_ScrapeCollector` rather than stored:

* ``keda_scaler_detail_errors_total`` / ``keda_scaled_object_errors_total`` — like KEDA, every
  trigger and object the daemon has reported on gets its error counter exposed at 0 before its
  first error, so ``rate()`` and ``label_values()`` in dashboards see healthy objects too;
* ``tidal_metric_staleness_seconds`` — the age of each trigger's last good value at the moment of
  the scrape (it keeps growing while the trigger fails). The daemon marks a good value with
  ``staleness.labels(...).set(0)``; ``set(a)`` means "the last good value is `a` seconds old now".
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from scaler.gauges import FastGauge, PrerenderedFamily, go_float, labels_text

SCALER_LABELS = ("namespace", "metric", "scaledObject", "scaler", "triggerIndex", "type")
OBJECT_LABELS = ("namespace", "scaledObject")
# tidal_scheduler_lateness_seconds: 1 ms steps at the low end, where the budgets are (p99 <= 3 ms
# at 1000 objects, <= 5 ms at 5000), so a bucket-bound percentile tells 2 ms from 3 ms; coarse
# above 25 ms, where only "how bad" matters. Tidal's own histogram: KEDA has no such metric.
LATENESS_BUCKETS = (
    0.00025, 0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
LabelValues = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TriggerLabels:
    namespace: str
    metric: str
    scaled_object: str
    scaler: str
    trigger_index: int

    def values(self) -> tuple[str, str, str, str, str, str]:
        return (
            self.namespace,
            self.metric,
            self.scaled_object,
            self.scaler,
            str(self.trigger_index),
            "scaledobject",
        )


class _FreshMark:
    __slots__ = ("_key", "_owner")

    def __init__(self, owner: FreshnessGauge, key: LabelValues) -> None:
        self._owner = owner
        self._key = key

    def set(self, age: float) -> None:
        """The last good value is `age` seconds old now (0: it was observed just now)."""
        self._owner.marks[self._key] = self._owner.clock() - age


class FreshnessGauge:
    """Ages that grow by themselves: exported as ``clock() - mark`` at every scrape."""

    def __init__(self, labelnames: tuple[str, ...], clock: Callable[[], float]) -> None:
        self.labelnames = labelnames
        self.clock = clock
        self.marks: dict[LabelValues, float] = {}
        self.texts: dict[LabelValues, str] = {}  # label text of each key, for scrapes

    def labels(self, *values: str) -> _FreshMark:
        if len(values) != len(self.labelnames):
            raise ValueError("incorrect label count")
        key = tuple(str(v) for v in values)
        if key not in self.texts:
            self.texts[key] = labels_text(self.labelnames, key)
        return _FreshMark(self, key)

    def remove(self, *values: str) -> None:
        self.marks.pop(tuple(values), None)
        self.texts.pop(tuple(values), None)

    def clear(self) -> None:
        self.marks.clear()
        self.texts.clear()

    def ages(self) -> Iterator[tuple[LabelValues, float]]:
        now = self.clock()
        # dict.copy() is one allocation and a memcpy: the scrape thread cannot see the loop's
        # inserts half-way, as list(d.items()) can (an allocation mid-iteration may run a
        # collection whose finalizers let the loop thread in: "dictionary changed size during
        # iteration" answered scrapes with 500 at 5000 objects under load).
        for key, mark in self.marks.copy().items():
            yield key, max(0.0, now - mark)


def _label_sets(metric: Counter | Gauge, names: tuple[str, ...]) -> list[LabelValues]:
    """The label values of every child of a labelled metric (public API: collect())."""
    out: dict[LabelValues, None] = {}
    for family in metric.collect():
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            out[tuple(s.labels.get(n, "") for n in names)] = None
    return list(out)


def _values(metric: Counter, names: tuple[str, ...]) -> dict[LabelValues, float]:
    out: dict[LabelValues, float] = {}
    for family in metric.collect():
        for s in family.samples:
            if s.name.endswith("_total"):
                out[tuple(s.labels.get(n, "") for n in names)] = s.value
    return out


class _ScrapeCollector(Collector):
    def __init__(self, telemetry: Telemetry) -> None:
        self._t = telemetry

    def collect(self) -> Iterable[Metric]:
        t = self._t
        # Every trigger with a good sample has its value, active, latency AND staleness set
        # together (the poller's one place): the staleness marks list them all.
        triggers: dict[LabelValues, None] = dict.fromkeys(t.staleness.marks.copy())
        scaler_errors = _values(t.scaler_errors, SCALER_LABELS)
        trigger_errors = {k: scaler_errors.get(k, 0.0) for k in {**triggers, **scaler_errors}}
        yield _family(
            "keda_scaler_detail_errors",
            "The number of errors that have occurred for each scaler (trigger)",
            "counter",
            SCALER_LABELS,
            trigger_errors,
            t.staleness.texts,
        )

        objects: dict[LabelValues, None] = {(k[0], k[2]): None for k in trigger_errors}
        objects.update(dict.fromkeys(t.polled_objects()))
        object_errors = _values(t.object_errors, OBJECT_LABELS)
        yield _family(
            "keda_scaled_object_errors",
            "The number of errors that have occurred for each ScaledObject",
            "counter",
            OBJECT_LABELS,
            {k: object_errors.get(k, 0.0) for k in {**objects, **object_errors}},
            {},
        )
        yield _family(
            "tidal_metric_staleness_seconds",
            "Age of the last good value of each trigger's metric, at scrape time",
            "gauge",
            SCALER_LABELS,
            dict(t.staleness.ages()),
            t.staleness.texts,
        )


def _family(
    name: str,
    documentation: str,
    typ: str,
    labelnames: tuple[str, ...],
    values: dict[LabelValues, float],
    texts: dict[LabelValues, str],
) -> PrerenderedFamily:
    """A family computed at scrape time, rendered from label texts cached by the gauge that
    owns the label sets (computed here for the others)."""
    sample = name + "_total" if typ == "counter" else name

    def lines(exposed: str, formatted: dict[float, str]) -> Iterator[str]:
        for key, value in values.items():
            text = texts.get(key) or labels_text(labelnames, key)
            yield f"{exposed}{{{text}}} {go_float(value, formatted)}\n"

    def samples() -> list[Sample]:
        return [
            Sample(sample, dict(zip(labelnames, key, strict=True)), value)
            for key, value in values.items()
        ]

    return PrerenderedFamily(name, documentation, typ, lines, samples)


def _build_labels(version: str, git_commit: str) -> tuple[str, str, str, str, str]:
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    runtime = f"python{platform.python_version()}"
    return (version, git_commit, runtime, platform.system().lower(), arch)


class Telemetry:
    """Every metric the daemon records. Attribute names and label orders are the daemon's API."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        version: str = "0.1.0",
        *,
        git_commit: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.build_info = Gauge(
            "keda_build_info",
            "Build information: version, git commit; goversion holds the Python runtime",
            ["version", "git_commit", "goversion", "goos", "goarch"],
            registry=r,
        )
        self.build_info.labels(*_build_labels(version, git_commit)).set(1)

        # ---- KEDA's per-trigger metrics (labels SCALER_LABELS)
        self.scaler_value = FastGauge(
            "keda_scaler_metrics_value",
            "The current value of each scaler's metric, as fed to the HPA",
            SCALER_LABELS,
            registry=r,
        )
        self.scaler_latency = FastGauge(
            "keda_scaler_metrics_latency_seconds",
            "The latency of the last query of each scaler, in seconds",
            SCALER_LABELS,
            registry=r,
        )
        self.scaler_active = FastGauge(
            "keda_scaler_active",
            "1 when the trigger is active, else 0",
            SCALER_LABELS,
            registry=r,
        )
        # Not registered: exported by _ScrapeCollector, with zeros for triggers without errors.
        self.scaler_errors = Counter(
            "keda_scaler_detail_errors",
            "The number of errors that have occurred for each scaler (trigger)",
            SCALER_LABELS,
            registry=None,
        )
        # ---- KEDA's per-object metrics
        self.object_errors = Counter(
            "keda_scaled_object_errors",
            "The number of errors that have occurred for each ScaledObject",
            OBJECT_LABELS,
            registry=None,
        )
        self.object_paused = FastGauge(
            "keda_scaled_object_paused",
            "1 when the ScaledObject is paused, else 0",
            OBJECT_LABELS,
            registry=r,
        )
        self.resources = Gauge(
            "keda_resource_registered_total",
            "Registered custom resources per namespace and type (scaled_object)",
            ["type", "namespace"],
            registry=r,
        )
        self.triggers = Gauge(
            "keda_trigger_registered_total",
            "Registered triggers per trigger type",
            ["type"],
            registry=r,
        )
        self.loop_latency = FastGauge(
            "keda_internal_scale_loop_latency_seconds",
            "How late the last poll of each object started compared with its schedule, in seconds",
            ["namespace", "type", "resource"],
            registry=r,
        )

        # ---- Tidal's own
        self.lateness = Histogram(
            "tidal_scheduler_lateness_seconds",
            "Lateness of every poll against its due time",
            buckets=LATENESS_BUCKETS,
            registry=r,
        )
        # Not registered: exported by _ScrapeCollector as ages at scrape time.
        self.staleness = FreshnessGauge(SCALER_LABELS, clock)
        self.scale_actions = Counter(
            "tidal_scale_actions",
            "Replica changes written by Tidal, by direction (up/down) and decision reason",
            ["namespace", "scaledObject", "direction", "reason"],
            registry=r,
        )
        self.api_writes = Counter(
            "tidal_api_writes",
            "Writes to the Kubernetes API by kind (scale, hpa, status, scaledobject)",
            ["kind"],
            registry=r,
        )
        self.scale_conflicts = Counter(
            "tidal_scale_conflicts",
            "/scale writes not made because the replica count changed after the decision "
            "(the HPA or a person wrote first); the next poll decides again",
            registry=r,
        )
        self.decision_to_write = Histogram(
            "tidal_decision_to_write_seconds",
            "Time from a scaling decision to its /scale write completing",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.push_connected = FastGauge(
            "tidal_push_subscription_up",
            "1 while a push subscription is connected, 0 while the object falls back to polling",
            ["namespace", "scaledObject", "triggerIndex"],
            registry=r,
        )
        self.target_replicas = FastGauge(
            "tidal_scale_target_replicas",
            "spec.replicas of each ScaledObject's scale target, as last read by its poll",
            OBJECT_LABELS,
            registry=r,
        )
        self.min_replicas = FastGauge(
            "tidal_scaled_object_min_replicas",
            "minReplicaCount of each ScaledObject",
            OBJECT_LABELS,
            registry=r,
        )
        self.max_replicas = FastGauge(
            "tidal_scaled_object_max_replicas",
            "maxReplicaCount of each ScaledObject",
            OBJECT_LABELS,
            registry=r,
        )
        self.scaler_target = FastGauge(
            "tidal_scaler_metrics_target",
            "The HPA target of each trigger's metric (averageValue or value)",
            SCALER_LABELS,
            registry=r,
        )
        r.register(_ScrapeCollector(self))
        # Per-object children looked up once, not per poll (labels() hashes, validates and
        # locks: three lookups a poll were ~10 % of a poll's own CPU at 1000 objects).
        self._per_object: dict[tuple[str, str], tuple[Any, Any, Any, Any]] = {}

    # ------------------------------------------------------------------ helpers for the daemon

    def polled_objects(self) -> Iterable[tuple[str, str]]:
        """The objects a poll has reported on (they have keda_scaled_object_paused & co)."""
        return tuple(self._per_object.copy())  # copied at once: see FreshnessGauge.ages

    def _children(self, namespace: str, name: str) -> tuple[Any, Any, Any, Any]:
        key = (namespace, name)
        children = self._per_object.get(key)
        if children is None:
            children = self._per_object[key] = (
                self.target_replicas.labels(namespace, name),
                self.min_replicas.labels(namespace, name),
                self.max_replicas.labels(namespace, name),
                self.object_paused.labels(namespace, name),
            )
        return children

    def record_replicas(
        self, namespace: str, name: str, current: int, minimum: int, maximum: int
    ) -> None:
        """The scale target's replicas and the object's bounds, once per poll."""
        target, low, high, _ = self._children(namespace, name)
        target.set(current)
        low.set(minimum)
        high.set(maximum)

    def record_paused(self, namespace: str, name: str, paused: bool) -> None:
        """keda_scaled_object_paused of the object, once per poll."""
        self._children(namespace, name)[3].set(int(paused))

    def record_target(self, labels: TriggerLabels, target: float) -> None:
        """The HPA target of one trigger's metric (when its scalers are built)."""
        self.scaler_target.labels(*labels.values()).set(target)

    def forget_object(self, namespace: str, name: str) -> None:
        """Drop the label sets of a deleted object so dashboards don't show ghosts."""
        self.forget_objects({(namespace, name)})

    def forget_objects(self, keys: Collection[tuple[str, str]]) -> None:
        """`forget_object` for many objects in one pass over each metric's children (a shard
        handing a thousand objects to another replica must not scan them a thousand times)."""
        for key in keys:
            self._per_object.pop(key, None)
        self._forget_triggers(keys)
        for labels in _label_sets(self.object_errors, OBJECT_LABELS):
            if labels in keys:
                self.object_errors.remove(*labels)
        per_object = (
            self.object_paused,
            self.target_replicas,
            self.min_replicas,
            self.max_replicas,
        )
        for gauge in per_object:
            gauge.remove_where(lambda labels: labels in keys)
        self.loop_latency.remove_where(lambda labels: (labels[0], labels[2]) in keys)
        actions = ("namespace", "scaledObject", "direction", "reason")
        for labels in _label_sets(self.scale_actions, actions):
            if labels[:2] in keys:
                self.scale_actions.remove(*labels)

    def forget_triggers(self, namespace: str, name: str) -> None:
        """Drop the per-trigger label sets of an object (deleted, or its spec edited: the new
        triggers' series appear with their first sample)."""
        self._forget_triggers({(namespace, name)})

    def _forget_triggers(self, keys: Collection[tuple[str, str]]) -> None:
        def of_object(labels: LabelValues) -> bool:  # SCALER_LABELS
            return (labels[0], labels[2]) in keys

        for gauge in (
            self.scaler_value,
            self.scaler_latency,
            self.scaler_active,
            self.scaler_target,
        ):
            gauge.remove_where(of_object)
        for labels in _label_sets(self.scaler_errors, SCALER_LABELS):
            if of_object(labels):
                self.scaler_errors.remove(*labels)
        for labels in list(self.staleness.marks):
            if of_object(labels):
                self.staleness.remove(*labels)
        self.push_connected.remove_where(lambda labels: labels[:2] in keys)
