"""The public contract between Tidal's core and its scaler plugins.

A plugin (one module in `scalers/`, or a third-party package registered under the entry-point
group `tidal.scalers`) imports only this module and `scaler.params`, `scaler.errors` and
`scaler.clients`. It provides a class with:

* ``PARAMS``: its parameters, declared once (see `scaler.params`);
* ``validate(config, trigger)``: a static hook returning cross-field problems (may be left out);
* ``SAMPLED``: False only for cpu/memory, which the HPA reads itself (may be left out: True);
* ``__init__(self, config, trigger, clients)``: build from the typed config; no I/O;
* optionally ``async prepare()``: I/O that ``metric_spec()`` needs (the external scalers ask
  their server for it); awaited once by the core after construction, before ``metric_spec()``;
  a `ScalerError` fails the build, reported and retried at the next poll;
* ``metric_spec()``: the HPA metric this trigger produces (name ``s<index>-<type>-<detail>``);
* ``async sample(now)``: read the source once and return a `Sample`; raise `ScalerError` /
  `QueryError` on any failure -- never return a made-up 0;
* ``async aclose()``: release shared clients;
* optionally ``wakeups()``: push sources return a NEW async iterator on each call. It yields
  ``None`` ONCE as soon as its subscription is in place -- the server has confirmed it (after
  SUBSCRIBE and a flush or its reply; a watcher's first read; at once on a shared subscription
  that already is) and before waiting for any event -- so that anything happening at the source
  after that first item is seen; then ``None`` for every hint that "something happened" at the
  source (a message published, a key changed, an object put). It must not yield the first item
  earlier, and raises (never yields) when it cannot subscribe. The core takes the first item as
  "subscribed" (``tidal_push_subscription_up`` goes to 1) and samples the object then, which
  covers the events it could not see before. It may yield very often: the core coalesces
  wake-ups per object. When the subscription breaks, the iterator raises `ScalerError` (or
  ends); the core then falls back to polling and calls ``wakeups()`` again with jittered
  backoff. A wake-up only makes the core sample sooner: the sample decides, never the event.
  Subscriptions share connections through the ClientPool like queries do.

The class object itself is a `ScalerFactory`: a plugin can check it with
``factory: ScalerFactory = MyScaler`` under mypy. The registry checks the same members when it
loads the class and refuses one that lacks them with a ConfigError.

Time: ``now`` is wall-clock seconds since the epoch, passed in by the scheduler (tests inject it),
so a scaler never reads the clock itself.
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:  # both import this module
    from scaler.clients import ClientPool
    from scaler.params import Config, Param

MetricTargetType = Literal["AverageValue", "Value", "Utilization"]
METRIC_TARGET_TYPES: tuple[MetricTargetType, ...] = ("AverageValue", "Value", "Utilization")


@dataclass(frozen=True, slots=True)
class TriggerContext:
    """Everything known about one trigger of one ScaledObject when its scaler is built."""

    namespace: str
    object_name: str
    index: int
    type: str
    name: str  # the trigger's `name`, or "" when not set
    metadata: Mapping[str, str]
    metric_type: MetricTargetType = "AverageValue"
    auth_params: Mapping[str, str] = field(default_factory=dict)
    resolved_env: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 3.0  # seconds; KEDA's global HTTP timeout default


class EndpointSource(Protocol):
    """The ready endpoints of a Service, for scalers that query every backend of it (the
    daemon provides one through `ClientPool.endpoints`: scaler.kube.endpoints)."""

    async def endpoints(self, namespace: str, service: str, port: str) -> list[str]:
        """`host:port` of every ready endpoint of the Service's port (name or number)."""
        ...


class PodSource(Protocol):
    """How many pods a label selector matches (the daemon provides one through
    `ClientPool.pods`: scaler.kube.pods)."""

    async def count(self, namespace: str, selector: str) -> int:
        """Pods matching `selector` in `namespace` ("" = all), not Succeeded or Failed."""
        ...


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One HPA metric: External (from the metrics API) or Resource (cpu/memory)."""

    name: str
    target: float
    target_type: MetricTargetType = "AverageValue"
    kind: Literal["External", "Resource", "ContainerResource"] = "External"
    container: str | None = None  # ContainerResource only


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of a trigger's source."""

    value: float
    active: bool
    observed_at: float  # wall-clock epoch seconds

    def __post_init__(self) -> None:
        if math.isnan(self.value) or math.isinf(self.value):
            raise ValueError("sample value must be finite")


@runtime_checkable
class Scaler(Protocol):
    def metric_spec(self) -> MetricSpec: ...

    async def sample(self, now: float) -> Sample: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class PushScaler(Scaler, Protocol):
    def wakeups(self) -> AsyncIterator[None]:
        """A new iterator: one item once the subscription is in place ("subscribed"), then one
        per hint; raises `ScalerError` (or ends) when the subscription breaks. See above."""
        ...


class ScalerFactory(Protocol):
    """What the registry needs from a scaler class; the class object itself satisfies it."""

    @property
    def PARAMS(self) -> tuple[Param, ...]: ...

    @property
    def SAMPLED(self) -> bool: ...

    def validate(self, config: Config, trigger: TriggerContext) -> Iterable[str]: ...

    def __call__(self, config: Config, trigger: TriggerContext, clients: ClientPool) -> Scaler: ...


_NORMALIZE = re.compile(r"[/.:%()]")


def normalize_metric_detail(detail: str) -> str:
    """KEDA's NormalizeString: '/', '.', ':', '%', '(' and ')' become '-'."""
    return _NORMALIZE.sub("-", detail)


def metric_name(index: int, detail: str) -> str:
    """KEDA's GenerateMetricNameWithIndex: ``s<index>-<normalized detail>``."""
    return f"s{index}-{normalize_metric_detail(detail)}"


def fold_metric_name(name: str) -> str:
    """The form metric names are compared in: the HPA controller asks for a metric in lower
    case and KEDA matches names with strings.EqualFold, so names equal up to case are one."""
    return name.casefold()
