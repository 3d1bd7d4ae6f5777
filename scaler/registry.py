"""Trigger type -> scaler class, loaded lazily by "module:Class" name.

Built-in scalers are listed here with the install extra that provides their client library;
importing this module imports none of them. Third-party scalers register under the entry-point
group ``tidal.scalers`` (name = trigger type, value = "module:Class"); an entry that reuses a
built-in's name is refused with a warning, never silently replacing the built-in.

A loaded class must be a `scaler.contract.ScalerFactory`: `PARAMS` a tuple of `Param`, the
scaler methods, `validate` callable and `SAMPLED` a bool if given (a class written before they
were part of the contract gets the defaults: no cross-field checks, sampled). Anything else is a
ConfigError when the class is loaded, not an AttributeError on its first sample.

The daemon calls `build_scaler(trigger, clients)`; `prepare(trigger)` parses and validates a
trigger without building anything (its `Config` carries the unknown metadata keys and warnings
that the caller logs once per object).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TypeGuard

from scaler.clients import ClientPool
from scaler.contract import Scaler, ScalerFactory, TriggerContext
from scaler.errors import ConfigError
from scaler.params import Config, Param, Validator, parse
from scaler.resource_trigger import RESOURCE_TRIGGER_TYPES, is_resource_trigger

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "tidal.scalers"


@dataclass(frozen=True, slots=True)
class ScalerEntry:
    """Where a trigger type's class lives; `extra` is the pip extra providing its library."""

    target: str  # "module:Class"
    extra: str | None = None
    origin: str = "built-in"  # or the distribution that registered it


def _builtin(target: str, extra: str | None = None) -> ScalerEntry:
    return ScalerEntry(target, extra)


_REDIS_LISTS = _builtin("scalers.redis_lists:RedisListScaler", "redis")
_REDIS_STREAMS = _builtin("scalers.redis_streams:RedisStreamsScaler", "redis")
_RESOURCE = _builtin("scaler.resource_trigger:ResourceTrigger")

BUILTINS: Mapping[str, ScalerEntry] = {
    "cron": _builtin("scalers.cron:CronScaler", "cron"),
    "redis": _REDIS_LISTS,
    "redis-cluster": _REDIS_LISTS,
    "redis-sentinel": _REDIS_LISTS,
    "redis-streams": _REDIS_STREAMS,
    "redis-cluster-streams": _REDIS_STREAMS,
    "redis-sentinel-streams": _REDIS_STREAMS,
    "prometheus": _builtin("scalers.prometheus:PrometheusScaler"),
    "metrics-api": _builtin("scalers.metrics_api:MetricsApiScaler"),
    "kubernetes-workload": _builtin("scalers.kubernetes_workload:KubernetesWorkloadScaler"),
    "kafka": _builtin("scalers.kafka.scaler:KafkaScaler", "kafka"),
    "nats-jetstream": _builtin("scalers.nats_jetstream:NatsJetStreamScaler", "nats"),
    "aws-s3": _builtin("scalers.s3:S3Scaler", "s3"),
    "aws-sqs-queue": _builtin("scalers.aws_sqs:AwsSqsQueueScaler", "sqs"),
    "http": _builtin("scalers.http.scaler:HttpScaler"),
    "postgresql": _builtin("scalers.sql.postgresql:PostgreSQLScaler", "postgresql"),
    "mysql": _builtin("scalers.sql.mysql:MySQLScaler", "mysql"),
    "rabbitmq": _builtin("scalers.rabbitmq:RabbitMQScaler", "rabbitmq"),
    "external": _builtin("scalers.external.scaler:ExternalScaler", "external"),
    "external-push": _builtin("scalers.external.scaler:ExternalPushScaler", "external"),
    **dict.fromkeys(sorted(RESOURCE_TRIGGER_TYPES), _RESOURCE),
}


@dataclass(frozen=True, slots=True)
class Prepared:
    """A trigger whose metadata parsed: its scaler class and typed config."""

    trigger: TriggerContext
    factory: ScalerFactory
    config: Config


EntryPointSource = Callable[[], Iterable[importlib.metadata.EntryPoint]]


def _installed_entry_points() -> Iterable[importlib.metadata.EntryPoint]:
    return importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)


class Registry:
    """Built-ins plus third-party entry points (scanned once, on first need)."""

    def __init__(
        self,
        builtins: Mapping[str, ScalerEntry] = BUILTINS,
        entry_points: EntryPointSource = _installed_entry_points,
    ) -> None:
        self._builtins = dict(builtins)
        self._entry_points = entry_points
        self._third_party: dict[str, ScalerEntry] | None = None
        self._classes: dict[str, ScalerFactory] = {}

    def refresh(self) -> None:
        """Forget scanned entry points and loaded classes (after installing a plugin)."""
        self._third_party = None
        self._classes.clear()

    def known_types(self) -> list[str]:
        return sorted({*self._builtins, *self._plugins()})

    def entry(self, trigger_type: str) -> ScalerEntry:
        entry = self._builtins.get(trigger_type) or self._plugins().get(trigger_type)
        if entry is None:
            raise ConfigError(
                f"unknown trigger type '{trigger_type}'; known types: "
                + ", ".join(self.known_types())
            )
        return entry

    def load(self, trigger_type: str) -> ScalerFactory:
        """The scaler class for `trigger_type`; ConfigError when unknown, not installed or not a
        `ScalerFactory`."""
        if trigger_type in self._classes:
            return self._classes[trigger_type]
        entry = self.entry(trigger_type)
        module_name, _, attr = entry.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise self._import_problem(trigger_type, entry, module_name, exc) from exc
        factory = _factory(trigger_type, entry.target, getattr(module, attr, None))
        self._classes[trigger_type] = factory
        return factory

    def prepare(self, trigger: TriggerContext) -> Prepared:
        """Load the class and parse the trigger (ConfigError lists every problem)."""
        factory = self.load(trigger.type)
        config = parse(factory.PARAMS, trigger, factory.validate)
        if config.unknown_keys and getattr(factory, "PASSES_METADATA_THROUGH", False):
            # The scaler hands every metadata key on (external: scalerMetadata): none is unknown.
            declared = {k: v for k, v in trigger.metadata.items() if k not in config.unknown_keys}
            config = parse(factory.PARAMS, replace(trigger, metadata=declared), factory.validate)
        return Prepared(trigger, factory, config)

    def build(self, trigger: TriggerContext, clients: ClientPool) -> Scaler:
        return self.construct(self.prepare(trigger), clients)

    @staticmethod
    def construct(prepared: Prepared, clients: ClientPool) -> Scaler:
        return prepared.factory(prepared.config, prepared.trigger, clients)

    def _plugins(self) -> dict[str, ScalerEntry]:
        if self._third_party is None:
            found: dict[str, ScalerEntry] = {}
            for ep in self._entry_points():
                origin = ep.dist.name if ep.dist is not None else "unknown distribution"
                if ep.name in self._builtins:
                    log.warning(
                        "third-party scaler refused: its trigger type is a built-in",
                        extra={"trigger_type": ep.name, "target": ep.value, "origin": origin},
                    )
                    continue
                if ep.name in found:
                    log.warning(
                        "third-party scaler refused: trigger type registered twice",
                        extra={"trigger_type": ep.name, "target": ep.value, "origin": origin},
                    )
                    continue
                found[ep.name] = ScalerEntry(ep.value, None, origin)
            self._third_party = found
        return self._third_party

    @staticmethod
    def _import_problem(
        trigger_type: str, entry: ScalerEntry, module_name: str, exc: ImportError
    ) -> ConfigError:
        missing = getattr(exc, "name", None) or ""
        ours = missing and (module_name == missing or module_name.startswith(missing + "."))
        if entry.extra and missing and not ours:
            return ConfigError(
                f"trigger type '{trigger_type}' needs the '{entry.extra}' extra:"
                f" pip install 'tidal[{entry.extra}]'"
            )
        if entry.origin != "built-in":
            return ConfigError(
                f"trigger type '{trigger_type}' (from {entry.origin}) could not be loaded:"
                f" {type(exc).__name__}: {exc}"
            )
        return ConfigError(
            f"trigger type '{trigger_type}' is not available in this build"
            f" ({type(exc).__name__}: {exc})"
        )


Constructor = Callable[[Config, TriggerContext, ClientPool], Scaler]
_SCALER_METHODS = ("metric_spec", "sample", "aclose")


def _factory_problems(trigger_type: str, obj: object) -> list[str]:
    """How `obj` falls short of a `ScalerFactory` for `trigger_type` (empty when it does not)."""
    if not isinstance(obj, type):
        return ["it is not a class"]
    problems: list[str] = []
    params = getattr(obj, "PARAMS", None)
    if not isinstance(params, tuple) or not all(isinstance(p, Param) for p in params):
        problems.append("PARAMS is not a tuple of scaler.params.Param")
    problems += [f"it has no {m}() method" for m in _SCALER_METHODS if not _has_method(obj, m)]
    if hasattr(obj, "validate") and not callable(obj.validate):
        problems.append("validate is not callable")
    sampled = getattr(obj, "SAMPLED", True)
    if not isinstance(sampled, bool):
        problems.append("SAMPLED is not True or False")
    elif sampled == is_resource_trigger(trigger_type):
        problems.append(
            "SAMPLED must be False for cpu and memory (the HPA reads them) and True otherwise"
        )
    return problems


def _has_method(cls: type, name: str) -> bool:
    return callable(getattr(cls, name, None))


def _is_scaler_class(obj: object) -> TypeGuard[Constructor]:
    """A class whose instances have the `Scaler` methods (its constructor makes scalers)."""
    return isinstance(obj, type) and all(_has_method(obj, m) for m in _SCALER_METHODS)


def _declares_all(cls: Constructor) -> TypeGuard[ScalerFactory]:
    """A scaler class without `_factory_problems` that declares `validate` and `SAMPLED`."""
    return hasattr(cls, "validate") and hasattr(cls, "SAMPLED")


def _no_problems(config: Config, trigger: TriggerContext) -> Iterable[str]:
    return ()


@dataclass(frozen=True, slots=True)
class _WithDefaults:
    """A scaler class that leaves out `validate` or `SAMPLED`, completed with the defaults."""

    cls: Constructor
    PARAMS: tuple[Param, ...]
    validate: Validator
    SAMPLED: bool

    def __call__(self, config: Config, trigger: TriggerContext, clients: ClientPool) -> Scaler:
        return self.cls(config, trigger, clients)


def _factory(trigger_type: str, target: str, obj: object) -> ScalerFactory:
    """`obj` as a `ScalerFactory`, or a ConfigError naming everything it lacks."""
    problems = _factory_problems(trigger_type, obj)
    if problems or not _is_scaler_class(obj):
        raise ConfigError(
            f"trigger type '{trigger_type}': {target} is not a scaler class: " + "; ".join(problems)
        )
    if _declares_all(obj):
        return obj
    return _WithDefaults(
        obj,
        getattr(obj, "PARAMS", ()),
        getattr(obj, "validate", _no_problems),
        getattr(obj, "SAMPLED", True),
    )


_default = Registry()


def default_registry() -> Registry:
    return _default


def build_scaler(trigger: TriggerContext, clients: ClientPool) -> Scaler:
    """The scaler for one trigger; raises ConfigError (or UnsupportedError) on bad input."""
    return _default.build(trigger, clients)


def prepare(trigger: TriggerContext) -> Prepared:
    return _default.prepare(trigger)


def known_types() -> list[str]:
    return _default.known_types()
