"""Kubernetes label selectors (equality- and set-based), as sent in `?labelSelector=`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

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
