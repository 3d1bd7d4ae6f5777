"""ScaledObject as Tidal holds it: frozen values with KEDA's defaults (scaler.object_parser
builds them from the API's JSON and validates).

Nested JSON kept verbatim (HPA behavior, the status) is deep-frozen: dicts become
`MappingProxyType`, lists become tuples. Use `thaw()` to get plain, JSON-serialisable copies.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal, cast, get_args

from scaler.annotations import NO_ANNOTATIONS, Annotations
from scaler.contract import MetricTargetType, TriggerContext
from scaler.formula import Formula
from scaler.resource_trigger import RESOURCE_TRIGGER_TYPES, is_resource_trigger
from scaler.values import (
    DEFAULT_GROUP,
    DEFAULT_KIND,
    DEFAULT_VERSION,
    gvk_string,
    parse_gvk,
)

FallbackBehavior = Literal[
    "static", "currentReplicas", "currentReplicasIfHigher", "currentReplicasIfLower"
]
FALLBACK_BEHAVIORS: tuple[FallbackBehavior, ...] = get_args(FallbackBehavior)
AuthKind = Literal["TriggerAuthentication", "ClusterTriggerAuthentication"]
AUTH_KINDS: tuple[AuthKind, ...] = get_args(AuthKind)

DEFAULT_POLLING_INTERVAL: Final = 30
DEFAULT_COOLDOWN_PERIOD: Final = 300
DEFAULT_INITIAL_COOLDOWN_PERIOD: Final = 0
DEFAULT_MIN_REPLICAS: Final = 0
DEFAULT_MAX_REPLICAS: Final = 100
DEFAULT_API_VERSION: Final = f"{DEFAULT_GROUP}/{DEFAULT_VERSION}"
HPA_NAME_PREFIX: Final = "keda-hpa-"
SO_NAME_LABEL: Final = "scaledobject.keda.sh/name"  # on the HPA: the ScaledObject it serves
MAX_NAME_LENGTH: Final = 63

NO_CACHED_METRICS_TYPES: Final = RESOURCE_TRIGGER_TYPES | {"cron"}

EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})


# --------------------------------------------------------------------------- frozen JSON


def freeze(value: Any) -> Any:
    """Deep-freeze decoded JSON: dict → MappingProxyType, list → tuple."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Inverse of `freeze`: plain dicts and lists (JSON-serialisable, deep-copyable)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [thaw(v) for v in value]
    return value


def parse_timestamp(value: object) -> float | None:
    """An RFC 3339 timestamp (``2024-05-01T10:00:00Z``) as epoch seconds; None if absent/bad."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class ScaleTargetRef:
    name: str
    api_version: str = DEFAULT_API_VERSION
    kind: str = DEFAULT_KIND
    env_source_container_name: str | None = None

    @property
    def gvk(self) -> tuple[str, str, str]:
        """(group, version, kind) like KEDA's ParseGVKR (without the resource lookup)."""
        return parse_gvk(self.api_version, self.kind)

    @property
    def gvk_string(self) -> str:
        """KEDA's GVKString(): ``apps/v1.Deployment`` (``v1.Kind`` for the core group)."""
        return gvk_string(*self.gvk)


@dataclass(frozen=True, slots=True)
class AuthenticationRef:
    name: str
    kind: AuthKind = "TriggerAuthentication"


@dataclass(frozen=True, slots=True)
class Trigger:
    index: int
    type: str
    name: str = ""  # "" when the manifest gives none
    metadata: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    authentication_ref: AuthenticationRef | None = None
    metric_type: MetricTargetType = "AverageValue"
    use_cached_metrics: bool = False

    @property
    def is_resource(self) -> bool:
        """cpu/memory: an HPA Resource metric, never sampled by Tidal, always active."""
        return is_resource_trigger(self.type)


@dataclass(frozen=True, slots=True)
class Fallback:
    failure_threshold: int
    replicas: int
    behavior: FallbackBehavior = "static"


@dataclass(frozen=True, slots=True)
class HpaConfig:
    name: str | None = None
    behavior: Mapping[str, Any] | None = None  # frozen autoscaling/v2 behavior, verbatim

    def behavior_json(self) -> dict[str, Any] | None:
        """A fresh plain-dict copy of `behavior` for the HPA body."""
        return None if self.behavior is None else cast(dict[str, Any], thaw(self.behavior))


@dataclass(frozen=True, slots=True)
class ScalingModifiers:
    """`advanced.scalingModifiers`: one composite metric, the formula over the triggers' values
    (by trigger name), served to the HPA as `composite-metric` (scaler.modifiers)."""

    formula: Formula
    target: float
    activation_target: float = 0.0
    metric_type: MetricTargetType = "AverageValue"


@dataclass(frozen=True, slots=True)
class Advanced:
    restore_to_original_replica_count: bool = False
    hpa: HpaConfig = HpaConfig()
    scaling_modifiers: ScalingModifiers | None = None


@dataclass(frozen=True, slots=True)
class ScaledObject:
    namespace: str
    name: str
    scale_target_ref: ScaleTargetRef
    triggers: tuple[Trigger, ...]
    uid: str = ""
    generation: int = 0
    resource_version: str = ""
    creation_timestamp: float | None = None  # epoch seconds
    labels: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    annotations: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    flags: Annotations = NO_ANNOTATIONS
    polling_interval: int = DEFAULT_POLLING_INTERVAL
    cooldown_period: int = DEFAULT_COOLDOWN_PERIOD
    initial_cooldown_period: int = DEFAULT_INITIAL_COOLDOWN_PERIOD
    min_replica_count: int = DEFAULT_MIN_REPLICAS
    max_replica_count: int = DEFAULT_MAX_REPLICAS
    idle_replica_count: int | None = None
    fallback: Fallback | None = None
    advanced: Advanced = Advanced()
    status: Mapping[str, Any] = field(default_factory=lambda: EMPTY)  # frozen, read-only

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def last_active_time(self) -> float | None:
        return parse_timestamp(self.status.get("lastActiveTime"))

    @property
    def original_replica_count(self) -> int | None:
        value = self.status.get("originalReplicaCount")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def paused_replica_count(self) -> int | None:
        value = self.status.get("pausedReplicaCount")
        return value if isinstance(value, int) and not isinstance(value, bool) else None


def hpa_name(so: ScaledObject) -> str:
    """``advanced.horizontalPodAutoscalerConfig.name`` or ``keda-hpa-<name>``."""
    return so.advanced.hpa.name or f"{HPA_NAME_PREFIX}{so.name}"


def hpa_min_replicas(so: ScaledObject) -> int:
    """KEDA's GetHPAMinReplicas: minReplicaCount when > 0, else 1."""
    return so.min_replica_count if so.min_replica_count > 0 else 1


def hpa_max_replicas(so: ScaledObject) -> int:
    return so.max_replica_count


def trigger_context(
    so: ScaledObject,
    trig: Trigger,
    *,
    auth_params: Mapping[str, str] | None = None,
    resolved_env: Mapping[str, str] | None = None,
    timeout: float = 3.0,
) -> TriggerContext:
    """What a scaler is built from: the trigger within its object, with its resolved auth
    parameters and container env (the daemon's build, `tidal check` and `tidal simulate`)."""
    return TriggerContext(
        namespace=so.namespace,
        object_name=so.name,
        index=trig.index,
        type=trig.type,
        name=trig.name,
        metadata=trig.metadata,
        metric_type=trig.metric_type,
        auth_params=auth_params or {},
        resolved_env=resolved_env or {},
        timeout=timeout,
    )
