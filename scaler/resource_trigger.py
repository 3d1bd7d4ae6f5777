"""The `cpu` and `memory` triggers: HPA Resource metrics, read by the HPA from metrics.k8s.io.

They need no broker and are never sampled by Tidal (`SAMPLED` is False; their MetricSpec kind is
Resource or ContainerResource). `is_resource_trigger` is the one place that decides whether a
trigger type is one of them: parsing, the registry, the runtime and `decide` all ask it.

KEDA: metadata ``value`` (required), ``containerName`` (optional, makes a ContainerResource
metric); the target type comes from the trigger's ``metricType`` (Utilization or AverageValue;
Value is rejected).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from scaler.clients import ClientPool
from scaler.contract import MetricSpec, Sample, TriggerContext
from scaler.errors import ConfigError, QueryError
from scaler.params import Config, Param

RESOURCE_TRIGGER_TYPES: Final = frozenset({"cpu", "memory"})


def is_resource_trigger(trigger_type: str) -> bool:
    """cpu/memory: an HPA Resource metric, never sampled by Tidal, always active."""
    return trigger_type in RESOURCE_TRIGGER_TYPES


class ResourceTrigger:
    PARAMS = (
        Param("value", "float", sources=("metadata",), required=True, above=0),
        Param("containerName", sources=("metadata",)),
        Param(
            "type",
            sources=("metadata",),
            deprecated="use the trigger's metricType (removed in KEDA 2.18)",
        ),
    )
    SAMPLED = False

    @staticmethod
    def validate(config: Config, trigger: TriggerContext) -> Iterable[str]:
        return ()

    def __init__(self, config: Config, trigger: TriggerContext, clients: ClientPool) -> None:
        if not is_resource_trigger(trigger.type):
            raise ConfigError(f"trigger type '{trigger.type}' is not a resource trigger")
        if trigger.metric_type == "Value":
            raise ConfigError(
                f"metricType 'Value' is not supported for the {trigger.type} trigger"
                " (use Utilization or AverageValue)"
            )
        self._resource = trigger.type
        self._container = config.opt_str("containerName")
        self._spec = MetricSpec(
            name=self._resource,
            target=config.get_float("value"),
            target_type=trigger.metric_type,
            kind="ContainerResource" if self._container else "Resource",
            container=self._container,
        )

    def metric_spec(self) -> MetricSpec:
        return self._spec

    async def sample(self, now: float) -> Sample:
        raise QueryError(
            f"the {self._resource} trigger is read by the HPA from metrics.k8s.io,"
            " not sampled by Tidal"
        )

    async def aclose(self) -> None:
        return None
