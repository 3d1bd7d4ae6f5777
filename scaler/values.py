"""Kubernetes and Go value syntax, one copy of each: quantities, booleans, durations, GVKs.

A leaf module (standard library only) that ``scaler``, ``metrics_api`` and the plugins may all
import; an import-linter contract keeps it that way. Each helper follows the Go function KEDA
calls, so a value means the same in Tidal as in KEDA:

* `milli_quantity`: KEDA's ``GenerateMetricInMili`` / ``GetMetricTargetMili`` spelt as
  apimachinery's ``resource.Quantity`` canonical form;
* `parse_bool`: Go's ``strconv.ParseBool``;
* `parse_duration`: Go's ``time.ParseDuration`` (optionally with a unit for a bare number);
* `parse_group_version` / `parse_gvk` / `group_version_string` / `gvk_string`: apimachinery's
  ``schema.ParseGroupVersion`` and KEDA's ``ParseGVKR`` / ``GVKString``;
* `parse_selector`: label selectors (equality- and set-based) as apimachinery's
  ``labels.Parse`` reads them (the metrics API's ``?labelSelector=``, a trigger's podSelector).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Literal

# --------------------------------------------------------------------------- quantities

# apimachinery's DecimalSI suffixes by power of ten (resource/suffix.go).
_SI_SUFFIX = {-9: "n", -6: "u", -3: "m", 0: "", 3: "k", 6: "M", 9: "G", 12: "T", 15: "P", 18: "E"}


def milli_quantity(value: float) -> str:
    """A metric value or an HPA target as the Kubernetes quantity KEDA sends and the API shows.

    The value is KEDA's ``quantityFromFloat64`` (``pkg/scalers/scaler.go``, shared by
    ``GenerateMetricInMili`` and ``GetMetricTargetMili`` since kedacore/keda#7534, negatives
    clamped since #7889 / v2.20.2): NaN, ±Inf and negatives are 0, anything else is rounded to
    milli precision like Go's ``fmt.Sprintf("%.3f", v)`` (the exact binary value rounded, ties to
    even). So 0.0015 is 2m and 2.0007 is 2.001 (KEDA before #7534 truncated: 1m and 2).

    The spelling is ``resource.Quantity``'s canonical DecimalSI form (``CanonicalizeBytes``):
    trailing zeros of the milli-value move into the exponent, the exponent is lowered to a
    multiple of three and becomes an SI suffix. That is what ``NewMilliQuantity`` prints and what
    the apiserver stores and returns for an HPA target, so a desired HPA compares equal to the
    live one: 2 → "2", 1.5 → "1500m", 2.0007 → "2001m", 0.0015 → "2m", 2000 → "2k",
    1.5e6 → "1500k", 0.0004 → "0". (KEDA's ``MustParse("2.001")`` keeps the spelling "2.001";
    it is the same quantity, and the HPA reads only the value.)
    """
    if math.isnan(value) or math.isinf(value) or value <= 0:
        return "0"
    milli = int(Decimal(f"{value:.3f}").scaleb(3))
    if milli == 0:
        return "0"
    exponent = -3
    while milli % 10 == 0:
        milli //= 10
        exponent += 1
    shift = exponent % 3
    milli *= 10**shift
    exponent -= shift
    suffix = _SI_SUFFIX.get(exponent)
    return f"{milli}{suffix}" if suffix is not None else f"{milli}e{exponent}"


# --------------------------------------------------------------------------- booleans

_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_bool(text: str) -> bool:
    """Go's ``strconv.ParseBool``: exactly 1, t, T, TRUE, true, True / 0, f, F, FALSE, false,
    False; anything else (``yes``, ``tRuE``, `` true``, "") raises ValueError."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f'strconv.ParseBool: parsing "{text}": invalid syntax')


def parse_bool_or(text: str, *, invalid: bool) -> bool:
    """`parse_bool`, with `invalid` for a value that is not a boolean (KEDA's annotations:
    ``paused: "yes"`` counts as true, a non-bool ``force-activation`` as false)."""
    try:
        return parse_bool(text)
    except ValueError:
        return invalid


# --------------------------------------------------------------------------- durations

_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 micro sign
    "μs": 1_000,  # U+03BC Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_COMPONENT = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")
_BARE_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)")
_MAX_NS = 2**63 - 1


def parse_duration(text: str, *, bare_number_unit: float | None = None) -> float:
    """Go's ``time.ParseDuration``, in seconds: ``[-+]?([0-9]*(\\.[0-9]*)?unit)+`` with units
    ns, us (µs, μs), ms, s, m, h — "300ms", "1.5h", "2h45m", "-1s", ".5s"; "0" needs no unit;
    beyond ±292 years (int64 nanoseconds) is an error. Raises ValueError.

    `bare_number_unit` (seconds) lets a plain number through, as the call site's own unit:
    KEDA's typed trigger config reads "500" as milliseconds (1e-3); Tidal's flags read seconds.
    """
    if bare_number_unit is not None and _BARE_NUMBER.fullmatch(text):
        return float(text) * bare_number_unit
    invalid = ValueError(f'time: invalid duration "{text}"')
    rest, negative = text, False
    if rest[:1] in ("+", "-"):
        negative, rest = rest[0] == "-", rest[1:]
    if rest == "0":
        return 0.0
    if not rest:
        raise invalid
    total = Fraction(0)
    pos = 0
    while pos < len(rest):
        match = _COMPONENT.match(rest, pos)
        assert match is not None  # every group may be empty
        whole, fraction, unit = match.groups()
        if not whole and not fraction:
            raise invalid
        if not unit:
            raise ValueError(f'time: missing unit in duration "{text}"')
        if unit not in _NS:
            raise ValueError(f'time: unknown unit "{unit}" in duration "{text}"')
        total += Fraction(f"{whole or 0}.{fraction or 0}") * _NS[unit]
        if total > _MAX_NS + (1 if negative else 0):
            raise invalid
        pos = match.end()
    nanoseconds = math.floor(total)
    return (-nanoseconds if negative else nanoseconds) / 1e9


# --------------------------------------------------------------------------- group/version/kind

DEFAULT_GROUP = "apps"
DEFAULT_VERSION = "v1"
DEFAULT_KIND = "Deployment"


def parse_group_version(text: str) -> tuple[str, str]:
    """apimachinery's ``schema.ParseGroupVersion``: "" and "/" are empty, ``v1`` is the core
    group, ``apps/v1`` splits once; more than one "/" raises ValueError."""
    if text in ("", "/"):
        return "", ""
    parts = text.split("/")
    if len(parts) == 1:
        return "", text
    if len(parts) == 2:
        return parts[0], parts[1]
    raise ValueError(f"unexpected GroupVersion string: {text}")


def parse_gvk(api_version: str, kind: str) -> tuple[str, str, str]:
    """KEDA's ``ParseGVKR`` without the RESTMapper: an empty apiVersion is ``apps/v1`` and an
    empty kind ``Deployment``. Raises ValueError on ``a/b/c``."""
    group, version = parse_group_version(api_version)
    if not group and not version:
        group, version = DEFAULT_GROUP, DEFAULT_VERSION
    return group, version, kind or DEFAULT_KIND


def group_version_string(group: str, version: str) -> str:
    """``group/version``, or just ``version`` for the core group."""
    return f"{group}/{version}" if group else version


def gvk_string(group: str, version: str, kind: str) -> str:
    """KEDA's ``GVKString()``: ``apps/v1.Deployment`` (``v1.Kind`` for the core group)."""
    return f"{group_version_string(group, version)}.{kind}"


# --------------------------------------------------------------------------- label selectors

Op = Literal["=", "!=", "in", "notin", "exists", "!"]

_KEY = r"[A-Za-z0-9](?:[-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET = re.compile(rf"^\s*(?P<key>{_KEY})\s+(?P<op>in|notin)\s*\((?P<values>[^)]*)\)\s*$")
_EQ = re.compile(rf"^\s*(?P<key>{_KEY})\s*(?P<op>==|=|!=)\s*(?P<value>{_VALUE})\s*$")
_EXISTS = re.compile(rf"^\s*(?P<neg>!?)\s*(?P<key>{_KEY})\s*$")
_VALUE_RE = re.compile(rf"^{_VALUE}$")


class SelectorError(ValueError):
    """The selector text is not a valid label selector."""


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: Op
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!":
            return self.key not in labels
        if self.op in ("=", "in"):
            return labels.get(self.key) in self.values
        return labels.get(self.key) not in self.values  # "!=" and "notin"


@dataclass(frozen=True, slots=True)
class Selector:
    requirements: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def equals_value(self, key: str) -> str | None:
        """The single value `key` must equal (`k=v` or `k in (v)`), else None."""
        for r in self.requirements:
            if r.key == key and r.op in ("=", "in") and len(r.values) == 1:
                return next(iter(r.values))
        return None


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError("unbalanced parentheses")
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth != 0:
        raise SelectorError("unbalanced parentheses")
    parts.append("".join(current))
    return parts


def parse_selector(text: str) -> Selector:
    """Parses `a=b,c!=d,e in (f,g),!h,i`; raises SelectorError with the offending term."""
    if not text.strip():
        return Selector(())
    reqs: list[Requirement] = []
    for term in _split_top_level(text):
        if m := _SET.match(term):
            values = [v.strip() for v in m["values"].split(",")]
            if any(not _VALUE_RE.match(v) for v in values):
                raise SelectorError(f"invalid values in {term.strip()!r}")
            op: Op = "in" if m["op"] == "in" else "notin"
            reqs.append(Requirement(m["key"], op, frozenset(values)))
        elif m := _EQ.match(term):
            op = "!=" if m["op"] == "!=" else "="
            reqs.append(Requirement(m["key"], op, frozenset([m["value"]])))
        elif m := _EXISTS.match(term):
            reqs.append(Requirement(m["key"], "!" if m["neg"] else "exists"))
        else:
            raise SelectorError(f"invalid selector term {term.strip()!r}")
    return Selector(tuple(reqs))
