"""Typed trigger metadata: parameters declared once, parsed into a frozen `Config`.

A scaler declares ``PARAMS: tuple[Param, ...]`` (and optionally a static
``validate(config, trigger)`` hook returning cross-field problems). `parse` looks every
parameter up in its sources, in order:

* ``metadata``: the trigger's ``metadata`` (KEDA's *triggerMetadata*);
* ``auth``: parameters resolved from a (Cluster)TriggerAuthentication (KEDA's *authParams*);
* ``env``: the metadata key ``<name>FromEnv`` names a variable of the target container's env
  (KEDA's *resolvedEnv*).

Empty or whitespace-only values count as absent. Either every parameter parses and the result is
a `Config`, or one `ConfigError` lists every problem, worded like KEDA's typed config parser.
Secret parameters never appear in messages or reprs (`redact`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, TypeAlias, TypeVar

from scaler.contract import TriggerContext
from scaler.errors import ConfigError
from scaler.values import parse_bool, parse_duration

Source = Literal["metadata", "auth", "env"]
ParamType = Literal["str", "int", "float", "bool", "list", "map", "duration"]
Value: TypeAlias = "str | int | float | bool | tuple[str, ...] | Mapping[str, str]"

REDACTED = "<redacted>"
DEFAULT_SOURCES: tuple[Source, ...] = ("metadata", "auth", "env")
# KEDA's names for the sources, used in messages so they read like KEDA's.
SOURCE_LABELS: Mapping[Source, str] = MappingProxyType(
    {"metadata": "triggerMetadata", "auth": "authParams", "env": "resolvedEnv"}
)
_PARAM_TYPES = ("str", "int", "float", "bool", "list", "map", "duration")
_EXPECTED = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "list": "a comma-separated list",
    "map": "comma-separated key=value pairs",
    "duration": "milliseconds or a duration such as 500ms, 30s or 1m30s",
}
_INT = re.compile(r"[+-]?\d+")


@dataclass(frozen=True, slots=True)
class Param:
    """One trigger parameter, declared once.

    `default` is a typed value (not parsed); `allowed` restricts str values (and each element of
    a list); `minimum` is inclusive and `above` exclusive (numbers and durations); `deprecated`
    makes the key an error when present, with that text as the hint.
    """

    name: str
    type: ParamType = "str"
    aliases: tuple[str, ...] = ()
    sources: tuple[Source, ...] = DEFAULT_SOURCES
    default: Value | None = None
    required: bool = False
    allowed: tuple[str, ...] = ()
    secret: bool = False
    minimum: float | None = None
    above: float | None = None
    deprecated: str = ""
    doc: str = ""

    def __post_init__(self) -> None:
        if self.type not in _PARAM_TYPES:
            raise ValueError(f"unknown parameter type {self.type!r} for {self.name!r}")
        if not self.sources:
            raise ValueError(f"parameter {self.name!r} has no source")
        if self.required and self.default is not None:
            raise ValueError(f"parameter {self.name!r} is required and has a default")

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


# A scaler's cross-field hook: problems found in a config that parsed field by field.
Validator = Callable[["Config", TriggerContext], Iterable[str]]
_T = TypeVar("_T")


class Config:
    """The parsed parameters of one trigger: immutable, typed getters, secrets redacted in repr.

    Getters check the declared type (a mismatch is a programming error: TypeError). ``get_*``
    raise KeyError for a parameter that is absent and has no default; ``opt_*`` return None.
    """

    __slots__ = ("_params", "_secrets", "_sources", "_values", "unknown_keys", "warnings")

    def __init__(
        self,
        params: Sequence[Param],
        values: Mapping[str, Value],
        sources: Mapping[str, str],
        unknown_keys: Sequence[str] = (),
        warnings: Sequence[str] = (),
    ) -> None:
        self._params = MappingProxyType({p.name: p for p in params})
        self._values = MappingProxyType(dict(values))
        self._sources = MappingProxyType(dict(sources))
        self._secrets = frozenset(p.name for p in params if p.secret)
        self.unknown_keys: tuple[str, ...] = tuple(unknown_keys)
        self.warnings: tuple[str, ...] = tuple(warnings)

    def __setattr__(self, name: str, value: object) -> None:
        if hasattr(self, name):
            raise AttributeError("Config is immutable")
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        shown = {
            k: (REDACTED if k in self._secrets else v) for k, v in sorted(self._values.items())
        }
        return f"Config({shown})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and self._values == other._values

    __hash__ = None  # type: ignore[assignment]

    # -- introspection -------------------------------------------------------------------------

    def has(self, name: str) -> bool:
        """True when the parameter was given (not only defaulted)."""
        self._param(name)
        return self._sources.get(name, "default") != "default"

    def source_of(self, name: str) -> str | None:
        """'metadata', 'auth', 'env', 'default', or None when absent."""
        self._param(name)
        return self._sources.get(name)

    def secret_values(self) -> tuple[str, ...]:
        """Every secret value held, for `redact`-ing messages from client libraries."""
        out = []
        for name in self._secrets:
            value = self._values.get(name)
            if isinstance(value, str) and value:
                out.append(value)
        return tuple(out)

    # -- typed getters -------------------------------------------------------------------------

    def get_str(self, name: str) -> str:
        return _need(name, self.opt_str(name))

    def opt_str(self, name: str) -> str | None:
        value = self._typed(name, "str")
        assert value is None or isinstance(value, str)
        return value

    def get_int(self, name: str) -> int:
        return _need(name, self.opt_int(name))

    def opt_int(self, name: str) -> int | None:
        value = self._typed(name, "int")
        assert value is None or (isinstance(value, int) and not isinstance(value, bool))
        return value

    def get_float(self, name: str) -> float:
        return _need(name, self.opt_float(name))

    def opt_float(self, name: str) -> float | None:
        value = self._typed(name, "float")
        assert value is None or isinstance(value, int | float)
        return None if value is None else float(value)

    def get_bool(self, name: str) -> bool:
        return _need(name, self.opt_bool(name))

    def opt_bool(self, name: str) -> bool | None:
        value = self._typed(name, "bool")
        assert value is None or isinstance(value, bool)
        return value

    def get_list(self, name: str) -> tuple[str, ...]:
        """A list parameter; absent with no default reads as empty."""
        value = self._typed(name, "list")
        assert value is None or isinstance(value, tuple)
        return () if value is None else value

    def get_map(self, name: str) -> Mapping[str, str]:
        """A map parameter; absent with no default reads as empty."""
        value = self._typed(name, "map")
        assert value is None or isinstance(value, Mapping)
        return MappingProxyType({}) if value is None else value

    def get_duration(self, name: str) -> float:
        """A duration in seconds."""
        return _need(name, self.opt_duration(name))

    def opt_duration(self, name: str) -> float | None:
        value = self._typed(name, "duration")
        assert value is None or isinstance(value, int | float)
        return None if value is None else float(value)

    def _param(self, name: str) -> Param:
        try:
            return self._params[name]
        except KeyError:
            raise KeyError(f"no parameter {name!r} is declared") from None

    def _typed(self, name: str, kind: ParamType) -> Value | None:
        param = self._param(name)
        if param.type != kind:
            raise TypeError(f"parameter {name!r} is declared as {param.type}, not {kind}")
        return self._values.get(name)


def _need(name: str, value: _T | None) -> _T:
    if value is None:
        raise KeyError(f"parameter {name!r} is absent and has no default")
    return value


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of every non-empty secret replaced by <redacted>."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def parse(
    params: Sequence[Param],
    trigger: TriggerContext,
    validate: Validator | None = None,
) -> Config:
    """Parse `trigger`'s metadata, auth params and env against `params`; ConfigError lists all."""
    return parse_maps(
        params,
        metadata=trigger.metadata,
        auth_params=trigger.auth_params,
        resolved_env=trigger.resolved_env,
        validate=None if validate is None else (lambda config: validate(config, trigger)),
    )


def parse_maps(
    params: Sequence[Param],
    *,
    metadata: Mapping[str, str],
    auth_params: Mapping[str, str] | None = None,
    resolved_env: Mapping[str, str] | None = None,
    validate: Callable[[Config], Iterable[str]] | None = None,
) -> Config:
    auth_params = auth_params or {}
    resolved_env = resolved_env or {}
    problems: list[str] = []
    warnings: list[str] = []
    values: dict[str, Value] = {}
    sources: dict[str, str] = {}
    for param in params:
        found = _lookup(param, metadata, auth_params, resolved_env, warnings)
        if found is not None and param.deprecated:
            problems.append(f"parameter '{found[1]}' is deprecated: {param.deprecated}")
            continue
        if found is None:
            if param.default is not None:
                values[param.name] = param.default
                sources[param.name] = "default"
            elif param.required:
                problems.append(_missing(param, metadata))
            continue
        raw, key, source = found
        try:
            values[param.name] = _convert(param, raw)
        except _Invalid as exc:
            shown = REDACTED if param.secret else f"'{raw}'"
            problems.append(f"error parsing '{key}': invalid value {shown} ({exc})")
            continue
        sources[param.name] = source
    config = Config(params, values, sources, _unknown_keys(params, metadata), warnings)
    if not problems and validate is not None:
        problems.extend(validate(config))
    if problems:
        secrets = [
            found[0]
            for p in params
            if p.secret
            and (found := _lookup(p, metadata, auth_params, resolved_env, [])) is not None
        ]
        raise ConfigError([redact(p, secrets) for p in problems])
    return config


class _Invalid(Exception):
    """A raw value did not convert; the message says what was expected."""


def _clean(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value or None


def _lookup(
    param: Param,
    metadata: Mapping[str, str],
    auth_params: Mapping[str, str],
    resolved_env: Mapping[str, str],
    warnings: list[str],
) -> tuple[str, str, str] | None:
    """(raw value, key it was found under, source) or None."""
    for source in param.sources:
        for name in param.names:
            if source == "metadata":
                value = _clean(metadata.get(name))
                key = name
            elif source == "auth":
                value = _clean(auth_params.get(name))
                key = name
            else:
                key = f"{name}FromEnv"
                env_name = _clean(metadata.get(key))
                if env_name is None:
                    continue
                value = _clean(resolved_env.get(env_name))
                if value is None:
                    warnings.append(
                        f"'{key}' names '{env_name}', which the target container's env does not set"
                    )
            if value is not None:
                return value, key, source
    return None


def _missing(param: Param, metadata: Mapping[str, str]) -> str:
    where = " ".join(SOURCE_LABELS[s] for s in param.sources)
    names = "' or '".join(param.names)
    text = f"missing required parameter '{names}' in [{where}]"
    if "env" in param.sources:
        for name in param.names:
            env_name = _clean(metadata.get(f"{name}FromEnv"))
            if env_name is not None:
                text += (
                    f" ('{name}FromEnv' names '{env_name}', which the target container's env"
                    " does not set)"
                )
                break
    return text


def _convert(param: Param, raw: str) -> Value:
    value: Value
    if param.type == "str":
        value = raw
        _check_allowed(param, (raw,))
    elif param.type == "int":
        if not _INT.fullmatch(raw):
            raise _Invalid(f"expected {_EXPECTED['int']}")
        value = int(raw)
        _check_range(param, value)
    elif param.type == "float":
        value = _to_float(raw)
        _check_range(param, value)
    elif param.type == "bool":
        try:
            value = parse_bool(raw)  # Go's strconv.ParseBool, which KEDA uses
        except ValueError:
            raise _Invalid(f"expected {_EXPECTED['bool']}") from None
    elif param.type == "list":
        value = tuple(item for item in (part.strip() for part in raw.split(",")) if item)
        _check_allowed(param, value)
    elif param.type == "map":
        value = MappingProxyType(_to_map(raw))
    else:
        value = _to_duration(raw)
        _check_range(param, value)
    return value


def _to_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise _Invalid(f"expected {_EXPECTED['float']}") from None
    if math.isnan(value) or math.isinf(value):
        raise _Invalid("expected a finite number")
    return value


def _to_map(raw: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, val = part.partition("=")
        if not sep or not key.strip():
            raise _Invalid(f"expected {_EXPECTED['map']}")
        out[key.strip()] = val.strip()
    return out


def _to_duration(raw: str) -> float:
    """KEDA's durations: a bare number is milliseconds, else a Go duration string."""
    try:
        value = parse_duration(raw, bare_number_unit=1e-3)
    except ValueError:
        raise _Invalid(f"expected {_EXPECTED['duration']}") from None
    if math.isinf(value):
        raise _Invalid(f"expected {_EXPECTED['duration']}")
    return value


def _check_allowed(param: Param, items: Iterable[str]) -> None:
    if not param.allowed:
        return
    bad = [item for item in items if item not in param.allowed]
    if bad:
        raise _Invalid(f"must be one of [{' '.join(param.allowed)}]")


def _check_range(param: Param, value: float) -> None:
    if param.minimum is not None and value < param.minimum:
        raise _Invalid(f"must be at least {_fmt(param.minimum)}")
    if param.above is not None and value <= param.above:
        raise _Invalid(f"must be greater than {_fmt(param.above)}")


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def _unknown_keys(params: Sequence[Param], metadata: Mapping[str, str]) -> list[str]:
    known: set[str] = set()
    for param in params:
        for name in param.names:
            if "metadata" in param.sources:
                known.add(name)
            if "env" in param.sources:
                known.add(f"{name}FromEnv")
    return sorted(key for key in metadata if key not in known)
