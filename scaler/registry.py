"""Trigger type -> scaler class, loaded lazily by "module:Class" name.

Built-in scalers are listed here with the install extra that provides their client library;
importing this module imports none of them. Third-party scalers register under the entry-point
group ``tidal.scalers`` (name = trigger type, value = "module:Class"); an entry that reuses a
built-in's name is refused with a warning, never silently replacing the built-in.

The daemon calls `build_scaler(trigger, clients)`; `prepare(trigger)` parses and validates a
trigger without building anything (its `Config` carries the unknown metadata keys and warnings
that the caller logs once per object).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from scaler.clients import ClientPool
from scaler.contract import Scaler, TriggerContext
from scaler.errors import ConfigError
from scaler.params import Config, Param, parse

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
    "kafka": _builtin("scalers.kafka.scaler:KafkaScaler", "kafka"),
    "nats-jetstream": _builtin("scalers.nats_jetstream:NatsJetStreamScaler", "nats"),
    "aws-s3": _builtin("scalers.s3:S3Scaler", "s3"),
    "cpu": _RESOURCE,
    "memory": _RESOURCE,
}


@dataclass(frozen=True, slots=True)
class Prepared:
    """A trigger whose metadata parsed: its scaler class and typed config."""

    trigger: TriggerContext
    cls: type[Any]
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
        self._classes: dict[str, type[Any]] = {}

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

    def load(self, trigger_type: str) -> type[Any]:
        """The scaler class for `trigger_type`; ConfigError when unknown or not installed."""
        if trigger_type in self._classes:
            return self._classes[trigger_type]
        entry = self.entry(trigger_type)
        module_name, _, attr = entry.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise self._import_problem(trigger_type, entry, module_name, exc) from exc
        cls = getattr(module, attr, None)
        if not isinstance(cls, type) or not isinstance(getattr(cls, "PARAMS", None), tuple):
            raise ConfigError(
                f"trigger type '{trigger_type}': {entry.target} is not a scaler class with PARAMS"
            )
        self._classes[trigger_type] = cls
        return cls

    def prepare(self, trigger: TriggerContext) -> Prepared:
        """Load the class and parse the trigger (ConfigError lists every problem)."""
        cls = self.load(trigger.type)
        params = cast(tuple[Param, ...], cls.PARAMS)
        validate = getattr(cls, "validate", None)
        config = parse(params, trigger, validate)
        return Prepared(trigger, cls, config)

    def build(self, trigger: TriggerContext, clients: ClientPool) -> Scaler:
        return self.construct(self.prepare(trigger), clients)

    @staticmethod
    def construct(prepared: Prepared, clients: ClientPool) -> Scaler:
        scaler = prepared.cls(prepared.config, prepared.trigger, clients)
        return cast(Scaler, scaler)

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
