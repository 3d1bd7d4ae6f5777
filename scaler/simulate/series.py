"""Metric time series for `tidal simulate`: read from CSV or JSON, looked up as step functions.

CSV: rows ``t,value[,trigger]`` (a header row is optional). JSON: a list of ``{"t": ...,
"value": ..., "trigger": ...}`` objects or ``[t, value]`` pairs, or an object mapping a trigger
to such a list. ``t`` is seconds from the start (``0``, ``12.5``) or an RFC 3339 time
(``2026-05-01T10:00:00Z``); times are made relative to the earliest one. A ``value`` that is
empty, ``error`` or ``null`` is a failed poll of that trigger (an error is never a zero).

``trigger`` names a trigger by its ``name``, its index (``0``), its type or its metric name;
rows without one feed every trigger that has no series of its own.
"""

from __future__ import annotations

import csv
import io
import json
import math
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from scaler.objects import parse_timestamp

ALL = ""  # the key of rows that name no trigger
ERROR_WORDS = frozenset({"", "error", "err", "null", "none", "nan"})


class SeriesError(ValueError):
    """Input that is not a usable series; the message names the line or item."""


@dataclass(frozen=True, slots=True)
class Point:
    t: float  # seconds from the start of the series
    value: float | None  # None: the poll failed


@dataclass(frozen=True, slots=True)
class Series:
    """Points per trigger key, sorted by time; `epoch` is the wall-clock time of t = 0 when the
    input had RFC 3339 times (None for relative seconds)."""

    points: Mapping[str, tuple[Point, ...]]
    epoch: float | None = None

    @property
    def end(self) -> float:
        return max((p[-1].t for p in self.points.values() if p), default=0.0)

    def value_at(self, key: str, t: float) -> float | None:
        """The value in force at `t` (the last point at or before it; the first before that)."""
        points = self.points[key]
        i = bisect_right([p.t for p in points], t)
        return points[max(i - 1, 0)].value


def _time(text: object, where: str) -> tuple[float, bool]:
    """(seconds, absolute?) of one `t`."""
    if isinstance(text, bool):
        raise SeriesError(f"{where}: t must be seconds or an RFC 3339 time")
    if isinstance(text, int | float):
        return float(text), False
    s = str(text).strip()
    try:
        return float(s), False
    except ValueError:
        pass
    stamp = parse_timestamp(s.replace("z", "Z"))
    if stamp is None:
        raise SeriesError(f"{where}: t {s!r} is neither seconds nor an RFC 3339 time")
    return stamp, True


def _value(raw: object, where: str) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bool):
        raise SeriesError(f"{where}: value must be a number")
    if isinstance(raw, int | float):
        value = float(raw)
    else:
        s = str(raw).strip()
        if s.lower() in ERROR_WORDS:
            return None
        try:
            value = float(s)
        except ValueError as exc:
            raise SeriesError(f"{where}: value {s!r} is not a number") from exc
    if math.isnan(value):
        return None
    if math.isinf(value):
        raise SeriesError(f"{where}: value must be finite")
    return value


Row = tuple[object, object, str, str]  # t, value, trigger key, where


def build(rows: Iterable[Row]) -> Series:
    """A `Series` from raw rows; all times must be of one kind (seconds or RFC 3339)."""
    parsed: list[tuple[float, float | None, str]] = []
    kinds: set[bool] = set()
    for t_raw, v_raw, key, where in rows:
        t, absolute = _time(t_raw, where)
        kinds.add(absolute)
        parsed.append((t, _value(v_raw, where), key))
    if not parsed:
        raise SeriesError("the series has no points")
    if len(kinds) > 1:
        raise SeriesError("mixing seconds and RFC 3339 times in one series")
    start = min(t for t, _, _ in parsed)
    absolute = kinds == {True}
    if not absolute and start < 0:
        raise SeriesError("times in seconds start at 0 (or later), not before")
    origin = start if absolute else 0.0
    grouped: dict[str, list[Point]] = {}
    for t, value, key in parsed:
        grouped.setdefault(key, []).append(Point(t - origin, value))
    return Series(
        MappingProxyType({k: tuple(sorted(v, key=lambda p: p.t)) for k, v in grouped.items()}),
        epoch=start if absolute else None,
    )


def parse_csv(text: str) -> Series:
    rows: list[Row] = []
    for n, cells in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [c.strip() for c in cells]
        if not cells or all(not c for c in cells) or cells[0].startswith("#"):
            continue
        if n == 1 and cells[0].lower() in ("t", "time", "timestamp"):
            continue  # the header
        if len(cells) < 2 or len(cells) > 3:
            raise SeriesError(f"line {n}: want t,value[,trigger], got {len(cells)} columns")
        rows.append((cells[0], cells[1], cells[2] if len(cells) == 3 else ALL, f"line {n}"))
    return build(rows)


def _json_items(items: Sequence[Any], key: str, where: str) -> Iterable[Row]:
    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        if isinstance(item, Mapping):
            if "t" not in item or "value" not in item:
                raise SeriesError(f"{at}: want an object with t and value")
            yield item["t"], item["value"], str(item.get("trigger", key)), at
        elif isinstance(item, list | tuple) and len(item) == 2:
            yield item[0], item[1], key, at
        else:
            raise SeriesError(f"{at}: want {{t, value[, trigger]}} or [t, value]")


def parse_json(text: str) -> Series:
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise SeriesError(f"not JSON: {exc}") from exc
    if isinstance(document, list):
        return build(_json_items(document, ALL, "$"))
    if isinstance(document, Mapping):
        rows: list[Row] = []
        for key, items in document.items():
            if not isinstance(items, list):
                raise SeriesError(f"$.{key}: want a list of points")
            rows.extend(_json_items(items, str(key), f"$.{key}"))
        return build(rows)
    raise SeriesError("want a JSON list of points or an object of trigger -> points")


def parse_series(text: str, filename: str = "") -> Series:
    """CSV or JSON, by the file name's extension or else by the first character."""
    stripped = text.lstrip()
    if filename.endswith(".json") or stripped[:1] in ("[", "{"):
        return parse_json(text)
    return parse_csv(text)
