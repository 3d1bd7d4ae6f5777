"""``--compare FIELD=V1,V2,…``: variants of one ScaledObject manifest, one field changed each.

FIELD is a path into ``spec`` (``cooldownPeriod``, ``pollingInterval``,
``advanced.horizontalPodAutoscalerConfig.behavior.scaleDown.stabilizationWindowSeconds``,
``triggers[0].metadata.listLength``) or, starting with ``metadata.`` / ``spec.``, into the whole
object. Each value is JSON when it parses (``60``, ``{"scaleDown": {…}}``, ``null`` removes the
field), else a string; commas inside brackets, braces or quotes do not split. Several
``--compare`` flags give every combination.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


class VariantError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Comparison:
    path: str
    steps: tuple[str | int, ...]
    values: tuple[Any, ...]
    texts: tuple[str, ...]  # each value as given, for labels


@dataclass(frozen=True, slots=True)
class Variant:
    label: str
    manifest: Mapping[str, Any]


def _split(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth, quoted = 0, False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in "[{":
            depth += 1
        elif not quoted and ch in "]}":
            depth -= 1
        if ch == "," and depth == 0 and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts]


def _steps(path: str) -> tuple[str | int, ...]:
    pos, out = 0, []
    for m in _STEP.finditer(path):
        gap = path[pos : m.start()]
        if gap not in ("", "."):
            raise VariantError(f"bad field path {path!r}")
        out.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    if not out or path[pos:]:
        raise VariantError(f"bad field path {path!r}")
    if out[0] not in ("spec", "metadata"):
        out.insert(0, "spec")
    return tuple(out)


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_comparison(text: str) -> Comparison:
    path, sep, values = text.partition("=")
    if not sep or not path.strip() or not values.strip():
        raise VariantError(f"--compare wants FIELD=V1,V2,…, got {text!r}")
    texts = tuple(_split(values))
    if any(not t for t in texts):
        raise VariantError(f"--compare {text!r}: an empty value")
    return Comparison(path.strip(), _steps(path.strip()), tuple(_value(t) for t in texts), texts)


def set_path(doc: Any, steps: Sequence[str | int], value: Any, path: str) -> None:
    """Set (or, for None, remove) the field at `steps` in `doc`, creating objects on the way."""
    node = doc
    for i, step in enumerate(steps[:-1]):
        nxt = steps[i + 1]
        if isinstance(step, int):
            if not isinstance(node, list) or step >= len(node):
                raise VariantError(f"{path}: no item [{step}]")
            node = node[step]
            continue
        if not isinstance(node, dict):
            raise VariantError(f"{path}: {step} is not inside an object")
        if node.get(step) is None:
            if isinstance(nxt, int):
                raise VariantError(f"{path}: no list {step}")
            node[step] = {}
        node = node[step]
    last = steps[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise VariantError(f"{path}: no item [{last}]")
        node[last] = value
    elif not isinstance(node, dict):
        raise VariantError(f"{path}: {last} is not inside an object")
    elif value is None:
        node.pop(last, None)
    else:
        node[last] = value


def variants(manifest: Mapping[str, Any], comparisons: Sequence[Comparison]) -> list[Variant]:
    """Every combination of the comparisons' values; no comparison: the manifest alone."""
    if not comparisons:
        return [Variant("", manifest)]
    out: list[Variant] = []
    for combo in itertools.product(*(range(len(c.values)) for c in comparisons)):
        doc = copy.deepcopy(dict(manifest))
        labels = []
        for comparison, i in zip(comparisons, combo, strict=True):
            set_path(doc, comparison.steps, copy.deepcopy(comparison.values[i]), comparison.path)
            labels.append(f"{comparison.path}={comparison.texts[i]}")
        out.append(Variant(" ".join(labels), doc))
    return out
