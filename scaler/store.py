"""The metric store: the latest reading of every trigger metric, read by the HPA path and decide().

Keyed ``(namespace, object name, metric name)``; each entry is an immutable `MetricRecord`,
replaced on every poll (readers never see a half-written record). An error never overwrites the
last good value: `record_error` keeps ``value``/``active``/``observed_at`` of the last success and
adds the error, when the failure streak started and how long it is.

`metric_value_for_hpa` is what the external metrics API serves:

* the object's fallback is active (set by the daemon from decide()) and this metric has failed more
  than ``fallback.failureThreshold`` times in a row → ``target * fallback replicas`` (divided by
  the ready replicas for a ``Value`` target, like KEDA);
* the latest poll failed, or there is no value yet → `MetricUnavailableError` (never a 0);
* otherwise the last value.

In memory, O(1) per lookup, slotted records: 1000 objects x a few metrics is a few hundred KiB.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Final

from scaler.contract import MetricSpec, MetricTargetType, Sample, fold_metric_name
from scaler.errors import ScalerError, TidalError
from scaler.formula import FormulaError
from scaler.modifiers import COMPOSITE_METRIC, Composite

ObjectKey = tuple[str, str]  # (namespace, name)


class UnknownMetricError(TidalError, LookupError):
    """No ScaledObject with that name serves that metric in that namespace (→ 404)."""


class MetricUnavailableError(ScalerError):
    """The metric exists but has no usable value: its latest poll failed (or none succeeded
    yet) and no fallback applies. The HPA keeps its replicas; it is never served a 0."""


@dataclass(frozen=True, slots=True)
class MetricRecord:
    """The latest knowledge about one metric. ``value``/``active``/``observed_at`` always
    describe the last GOOD sample (None before the first success)."""

    value: float | None = None
    active: bool = False
    observed_at: float | None = None  # epoch seconds of the last good sample
    error: str | None = None  # error of the latest poll; None when it succeeded
    error_since: float | None = None  # when the current failure streak began
    consecutive_failures: int = 0
    polled_at: float | None = None  # latest poll attempt, good or bad

    @property
    def last_good_at(self) -> float | None:
        return self.observed_at

    @property
    def failing(self) -> bool:
        return self.error is not None

    def age(self, now: float) -> float | None:
        """Seconds since the last good sample; None when there never was one."""
        return None if self.observed_at is None else max(0.0, now - self.observed_at)

    def sample(self) -> Sample | None:
        """The last good sample, as the scaler returned it."""
        if self.value is None or self.observed_at is None:
            return None
        return Sample(self.value, self.active, self.observed_at)


_EMPTY_RECORD: Final = MetricRecord()


@dataclass(frozen=True, slots=True)
class HpaReading:
    value: float
    observed_at: float  # epoch seconds the value describes (now, for a fallback value)
    fallback: bool = False


@dataclass(frozen=True, slots=True)
class _Target:
    value: float
    type: MetricTargetType


class _ObjectMetrics:
    """Everything stored for one ScaledObject."""

    __slots__ = (
        "broken",
        "composite",
        "fallback_replicas",
        "fallback_threshold",
        "folded",
        "max_age",
        "ready_replicas",
        "records",
        "targets",
    )

    def __init__(self) -> None:
        self.records: dict[str, MetricRecord] = {}
        self.targets: dict[str, _Target] = {}
        self.folded: dict[str, str] = {}  # casefolded name → declared name (HPA asks lower-case)
        self.max_age: float | None = None  # a value older than this is not served
        self.broken: str | None = None  # why the object cannot be run now (None: it can)
        self.fallback_threshold: int | None = None
        self.fallback_replicas: int | None = None
        self.ready_replicas: int | None = None
        self.composite: Composite | None = None  # advanced.scalingModifiers (scaler.modifiers)


class MetricStore:
    """In-memory metric store. Not thread-safe: use it from the event loop only."""

    __slots__ = ("_objects",)

    def __init__(self) -> None:
        self._objects: dict[ObjectKey, _ObjectMetrics] = {}

    # ---------------------------------------------------------------- configuration

    def register(
        self,
        namespace: str,
        name: str,
        specs: Iterable[MetricSpec],
        fallback_threshold: int | None = None,
        *,
        max_age: float | None = None,
        composite: Composite | None = None,
    ) -> None:
        """Declare the External metrics an object serves, its fallback threshold and how old a
        value may be when served. Records of metrics no longer declared are dropped; kept ones
        keep their history."""
        entry = self._objects.setdefault((namespace, name), _ObjectMetrics())
        entry.max_age = max_age
        entry.composite = composite
        entry.targets = {
            s.name: _Target(s.target, s.target_type) for s in specs if s.kind == "External"
        }
        entry.folded = {fold_metric_name(n): n for n in entry.targets}
        entry.records = {k: v for k, v in entry.records.items() if k in entry.targets}
        entry.fallback_threshold = fallback_threshold
        if fallback_threshold is None:
            entry.fallback_replicas = None

    def set_fallback(
        self, namespace: str, name: str, replicas: int | None, ready_replicas: int | None = None
    ) -> None:
        """The fallback replica count decide() computed (None: fallback not active)."""
        entry = self._objects.get((namespace, name))
        if entry is None:
            return
        entry.fallback_replicas = replicas
        entry.ready_replicas = ready_replicas

    def set_broken(self, namespace: str, name: str, reason: str | None) -> None:
        """The object cannot be run now (its TriggerAuthentication or Secret is gone, its scale
        target unreadable, another owner appeared): nothing refreshes its values, so the HPA is
        served an error instead of the last one. None clears it."""
        entry = self._objects.get((namespace, name))
        if entry is not None:
            entry.broken = reason

    def remove_object(self, namespace: str, name: str) -> None:
        self._objects.pop((namespace, name), None)

    # ---------------------------------------------------------------- writes

    def record_sample(
        self, namespace: str, name: str, metric: str, sample: Sample
    ) -> MetricRecord | None:
        """Store a good sample. None (nothing stored) when the object is not registered: a
        sample that finishes after its object was deleted must not bring the entry back."""
        entry = self._objects.get((namespace, name))
        if entry is None:
            return None
        record = MetricRecord(
            value=sample.value,
            active=sample.active,
            observed_at=sample.observed_at,
            polled_at=sample.observed_at,
        )
        entry.records[metric] = record
        return record

    def record_error(
        self, namespace: str, name: str, metric: str, error: str, now: float
    ) -> MetricRecord | None:
        """A failed poll: keep the last good value and its age; count the failure. None when
        the object is not registered (as `record_sample`)."""
        entry = self._objects.get((namespace, name))
        if entry is None:
            return None
        previous = entry.records.get(metric, _EMPTY_RECORD)
        record = replace(
            previous,
            error=error,
            error_since=previous.error_since if previous.failing else now,
            consecutive_failures=previous.consecutive_failures + 1,
            polled_at=now,
        )
        entry.records[metric] = record
        return record

    # ---------------------------------------------------------------- reads

    def get(self, namespace: str, name: str, metric: str) -> MetricRecord | None:
        entry = self._objects.get((namespace, name))
        return None if entry is None else entry.records.get(metric)

    def for_object(self, namespace: str, name: str) -> Mapping[str, MetricRecord]:
        entry = self._objects.get((namespace, name))
        return MappingProxyType({} if entry is None else dict(entry.records))

    def metric_names(self, namespace: str, name: str) -> tuple[str, ...]:
        """The External metric names the object declares (empty when it is unknown)."""
        entry = self._objects.get((namespace, name))
        return () if entry is None else tuple(entry.targets)

    def objects(self) -> Iterable[ObjectKey]:
        return tuple(self._objects)

    def __len__(self) -> int:
        return len(self._objects)

    def metric_value_for_hpa(
        self,
        namespace: str,
        metric: str,
        selector_object_name: str,
        now: float,
        max_age: float | None = None,
    ) -> HpaReading:
        """The value to serve for ``metric`` of object ``selector_object_name``.

        Raises UnknownMetricError (404) or MetricUnavailableError (the HPA keeps its replicas).
        A good value older than ``max_age`` (default: the object's, from `register`) is
        unavailable too, and so is every metric of an object marked broken.
        """
        entry = self._objects.get((namespace, selector_object_name))
        composite = entry is not None and entry.composite is not None
        if composite and fold_metric_name(metric) == COMPOSITE_METRIC:
            assert entry is not None
            return _composite_reading(entry, now, max_age)
        if entry is not None and metric not in entry.targets:
            # The HPA controller asks for the name in lower case: match like KEDA (EqualFold).
            metric = entry.folded.get(fold_metric_name(metric), metric)
        if entry is None or (metric not in entry.targets and metric not in entry.records):
            raise UnknownMetricError(
                f"no metric {metric} for ScaledObject {namespace}/{selector_object_name}"
            )
        if entry.broken is not None:
            raise MetricUnavailableError(
                f"ScaledObject {namespace}/{selector_object_name} is not ready: {entry.broken}"
            )
        record = entry.records.get(metric, _EMPTY_RECORD)
        target = entry.targets.get(metric)
        if max_age is None:
            max_age = entry.max_age
        if (
            entry.fallback_replicas is not None
            and entry.fallback_threshold is not None
            and target is not None
            and record.failing
            and record.consecutive_failures > entry.fallback_threshold
        ):
            replicas = float(entry.fallback_replicas)
            if target.type == "Value":
                if not entry.ready_replicas:
                    raise MetricUnavailableError(
                        f"metric {metric}: fallback for a Value target needs ready replicas"
                    )
                replicas /= entry.ready_replicas
            return HpaReading(target.value * replicas, now, fallback=True)
        if record.failing:
            raise MetricUnavailableError(
                f"metric {metric} encountered error: {record.error} "
                f"({record.consecutive_failures} consecutive failures)"
            )
        if record.value is None or record.observed_at is None:
            raise MetricUnavailableError(f"metric {metric} has no value yet")
        if max_age is not None and now - record.observed_at > max_age:
            raise MetricUnavailableError(
                f"metric {metric} is stale: last value is {now - record.observed_at:.0f}s old"
            )
        return HpaReading(record.value, record.observed_at)


def _composite_reading(entry: _ObjectMetrics, now: float, max_age: float | None) -> HpaReading:
    """`composite-metric`: the formula over the triggers' values, served only when every
    trigger it reads has a good, fresh value (or, with a fallback active, target x replicas
    as KEDA serves it)."""
    composite = entry.composite
    assert composite is not None
    if entry.broken is not None:
        raise MetricUnavailableError(f"the ScaledObject is not ready: {entry.broken}")
    m = composite.modifiers
    records = {metric: entry.records.get(metric, _EMPTY_RECORD) for metric in composite.names}
    threshold = entry.fallback_threshold
    if (
        entry.fallback_replicas is not None
        and threshold is not None
        and any(r.failing and r.consecutive_failures > threshold for r in records.values())
    ):
        replicas = float(entry.fallback_replicas)
        if m.metric_type == "Value":
            if not entry.ready_replicas:
                raise MetricUnavailableError(
                    f"{COMPOSITE_METRIC}: fallback for a Value target needs ready replicas"
                )
            replicas /= entry.ready_replicas
        return HpaReading(m.target * replicas, now, fallback=True)
    if max_age is None:
        max_age = entry.max_age
    values: dict[str, float] = {}
    oldest = now
    read = m.formula.variables  # a trigger the formula does not read cannot make it unavailable
    for metric, record in records.items():
        if composite.names[metric] not in read:
            continue
        if record.failing:
            raise MetricUnavailableError(
                f"{COMPOSITE_METRIC}: metric {metric} encountered error: {record.error}"
            )
        if record.value is None or record.observed_at is None:
            raise MetricUnavailableError(f"{COMPOSITE_METRIC}: metric {metric} has no value yet")
        if max_age is not None and now - record.observed_at > max_age:
            raise MetricUnavailableError(f"{COMPOSITE_METRIC}: metric {metric} is stale")
        values[metric] = record.value
        oldest = min(oldest, record.observed_at)
    try:
        return HpaReading(composite.evaluate(values), oldest)
    except FormulaError as exc:
        raise MetricUnavailableError(f"{COMPOSITE_METRIC}: {exc}") from exc
