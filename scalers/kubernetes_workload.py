"""The `kubernetes-workload` trigger: how many pods a label selector matches.

KEDA's parameters: ``podSelector`` (a label selector, equality- and set-based), ``value`` (the
target, > 0), ``activationValue`` (default 0), ``namespace`` (default the ScaledObject's, ``*``
for every namespace). Pods in phase Succeeded or Failed are not counted. The metric is
``s<N>-workload-<namespace>``. Active when the count is above ``activationValue``.

The count comes from the daemon's pod watch (`ClientPool.pods`, scaler.kube.pods): one
list-then-watch per (namespace, selector) shared by every trigger asking it, never a LIST per
poll as KEDA does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from scaler.clients import ClientPool
from scaler.contract import MetricSpec, Sample, TriggerContext, metric_name
from scaler.errors import QueryError
from scaler.params import Config, Param
from scaler.values import SelectorError, parse_selector

ALL_NAMESPACES = "*"


class KubernetesWorkloadScaler:
    PARAMS: ClassVar[tuple[Param, ...]] = (
        Param("podSelector", sources=("metadata",), required=True, doc="label selector"),
        Param("value", "float", sources=("metadata",), default=0.0),
        Param("activationValue", "float", sources=("metadata",), default=0.0),
        Param("namespace", sources=("metadata",), default="", doc='"*" = every namespace'),
    )
    SAMPLED = True

    @staticmethod
    def validate(config: Config, trigger: TriggerContext) -> Iterable[str]:
        problems: list[str] = []
        selector = config.get_str("podSelector")
        try:
            if not parse_selector(selector).requirements:
                problems.append("error parsing pod selector: the selector is empty")
        except SelectorError as exc:
            problems.append(f"error parsing pod selector: {exc}")
        if config.get_float("value") <= 0:
            problems.append("value must be a float greater than 0")
        return problems

    def __init__(self, config: Config, trigger: TriggerContext, clients: ClientPool) -> None:
        namespace = config.get_str("namespace") or trigger.namespace
        self._namespace = "" if namespace == ALL_NAMESPACES else namespace
        self._selector = config.get_str("podSelector").strip()
        self._activation = config.get_float("activationValue")
        self._clients = clients
        self._spec = MetricSpec(
            metric_name(trigger.index, f"workload-{self._namespace}"),
            config.get_float("value"),
            trigger.metric_type,
        )

    def metric_spec(self) -> MetricSpec:
        return self._spec

    async def sample(self, now: float) -> Sample:
        pods = self._clients.pods
        if pods is None:
            raise QueryError("kubernetes-workload needs the daemon's cluster access")
        count = float(await pods.count(self._namespace, self._selector))
        return Sample(count, count > self._activation, now)

    async def aclose(self) -> None:
        return None
