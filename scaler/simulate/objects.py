"""What the simulator needs from a ScaledObject manifest, read by the daemon's own code.

The object is parsed by `parse_scaled_object`; each trigger's metadata by its scaler's own
parameter declarations (`Registry.prepare`), so the HPA target is the scaler's `metric_spec()`
and the activation threshold its ``activation…`` parameter. A trigger whose parameters need a
TriggerAuthentication (not at hand offline) can take `--target` / `--activation` instead. The HPA
is the one the actuator creates: ``minReplicas = max(1, minReplicaCount)``, ``maxReplicas``,
``advanced.horizontalPodAutoscalerConfig.behavior`` verbatim, and the pause-scale annotations as
``selectPolicy: Disabled`` (scaler.kube.hpa.desired_hpa).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from scaler.clients import ClientPool
from scaler.errors import ConfigError, TidalError
from scaler.object_parser import parse_scaled_object
from scaler.objects import ScaledObject, hpa_max_replicas, hpa_min_replicas, trigger_context
from scaler.registry import Prepared, Registry
from scaler.simulate.hpa_model import (
    DEFAULT_DOWNSCALE_STABILIZATION,
    DEFAULT_TOLERANCE,
    HpaConfig,
    MetricTarget,
    TargetType,
    parse_behavior,
)


@dataclass(frozen=True, slots=True)
class TriggerModel:
    index: int
    type: str
    name: str  # the trigger's name, or "" when the manifest gives none
    metric_name: str
    target: float
    target_type: TargetType
    activation: float

    @property
    def label(self) -> str:
        return self.name or self.metric_name

    def names(self) -> tuple[str, ...]:
        """What a series row may call this trigger."""
        return tuple(k for k in (self.name, str(self.index), self.type, self.metric_name) if k)


@dataclass(frozen=True, slots=True)
class SimObject:
    so: ScaledObject
    triggers: tuple[TriggerModel, ...]
    hpa: HpaConfig


@dataclass(frozen=True, slots=True)
class Overrides:
    """Values given on the command line instead of the trigger's metadata (None: from it)."""

    target: float | None = None
    activation: float | None = None
    tolerance: float = DEFAULT_TOLERANCE
    downscale_stabilization: float = DEFAULT_DOWNSCALE_STABILIZATION
    ready_pods: bool = True


def _activation(prepared: Prepared) -> float:
    for param in prepared.factory.PARAMS:
        if param.name.startswith("activation") and param.type in ("int", "float"):
            config = prepared.config
            value = (
                config.opt_int(param.name) if param.type == "int" else config.opt_float(param.name)
            )
            return float(value or 0)
    return 0.0


def _trigger(so: ScaledObject, index: int, registry: Registry, over: Overrides) -> TriggerModel:
    trig = so.triggers[index]
    if trig.is_resource:
        raise ConfigError(
            f"trigger {index} ({trig.type}): cpu/memory triggers read pod usage, which a metric"
            " series cannot give; simulate the object's other triggers"
        )
    ctx = trigger_context(so, trig)
    metric_name = f"s{index}-{trig.type}"
    target = over.target
    activation = over.activation
    try:
        prepared = registry.prepare(ctx)
        # Scalers connect on their first sample: this one never samples, holds nothing.
        spec = registry.construct(prepared, ClientPool()).metric_spec()
        metric_name = spec.name
        target = spec.target if target is None else target
        activation = _activation(prepared) if activation is None else activation
    except TidalError as exc:
        if target is None or activation is None:
            problems = getattr(exc, "problems", [str(exc)])
            raise ConfigError(
                [f"trigger {index} ({trig.type}): {p}" for p in problems]
                + ["offline, give the trigger's --target and --activation instead"]
            ) from exc
    if trig.metric_type == "Utilization":
        raise ConfigError(f"trigger {index}: metricType Utilization is for cpu/memory only")
    return TriggerModel(
        index, trig.type, trig.name, metric_name, target, trig.metric_type, activation
    )


def hpa_config(so: ScaledObject, triggers: tuple[TriggerModel, ...], over: Overrides) -> HpaConfig:
    behavior = so.advanced.hpa.behavior_json()
    if so.flags.pause_scale_in or so.flags.pause_scale_out:
        behavior = behavior or {}
        if so.flags.pause_scale_in:
            behavior.setdefault("scaleDown", {})["selectPolicy"] = "Disabled"
        if so.flags.pause_scale_out:
            behavior.setdefault("scaleUp", {})["selectPolicy"] = "Disabled"
    return HpaConfig(
        min_replicas=hpa_min_replicas(so),
        max_replicas=hpa_max_replicas(so),
        metrics=tuple(MetricTarget(t.metric_name, t.target, t.target_type) for t in triggers),
        behavior=parse_behavior(behavior),
        tolerance=over.tolerance,
        downscale_stabilization=over.downscale_stabilization,
        ready_pods=over.ready_pods,
    )


def load_object(
    raw: Mapping[str, Any],
    overrides: Overrides = Overrides(),
    *,
    created_at: float = 0.0,
    registry: Registry | None = None,
) -> SimObject:
    """The simulated object; it was created at `created_at` (the series' start, in its clock)."""
    body = dict(raw)
    meta = dict(body.get("metadata") or {})
    meta.setdefault("name", "simulated")
    meta.setdefault("namespace", "default")
    meta.pop("creationTimestamp", None)
    body["metadata"] = meta
    body.pop("status", None)  # a live object's status is not the simulation's start
    so = parse_scaled_object(body)
    so = replace(so, creation_timestamp=created_at)
    reg = registry or Registry()
    triggers = tuple(_trigger(so, i, reg, overrides) for i in range(len(so.triggers)))
    return SimObject(so, triggers, hpa_config(so, triggers, overrides))
