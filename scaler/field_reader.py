"""Typed reads of a manifest's untrusted JSON, field by field, that record every problem (with
the field it is about) instead of raising at the first: the ScaledObject and ScaledJob parsers
read through one `FieldReader` and then report all of its `FieldProblem`s at once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from scaler.objects import EMPTY


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One problem of a manifest: the field it is about (``spec.triggers[1].metadata``) and
    KEDA's message; `unsupported` marks a KEDA feature Tidal deliberately lacks."""

    path: str
    message: str
    unsupported: bool = False


class FieldReader:
    """Typed reads from untrusted JSON that record problems instead of raising."""

    def __init__(self) -> None:
        self.problems: list[FieldProblem] = []
        self.unsupported: list[FieldProblem] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(FieldProblem(path, message))

    def refuse(self, path: str, message: str) -> None:
        self.unsupported.append(FieldProblem(path, message, unsupported=True))

    def obj(self, parent: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any] | None:
        value = parent.get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self.fail(path, f"{path} must be an object")
            return None
        return value

    def opt_int(self, parent: Mapping[str, Any], key: str, path: str, minimum: int) -> int | None:
        value = parent.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"{path} must be an integer")
            return None
        if value < minimum:
            self.fail(path, f"{path} must be greater than or equal to {minimum}")
        return value

    def int_(
        self, parent: Mapping[str, Any], key: str, path: str, default: int, minimum: int
    ) -> int:
        value = self.opt_int(parent, key, path, minimum)
        return default if value is None else value

    def str_(self, parent: Mapping[str, Any], key: str, path: str, default: str = "") -> str:
        value = parent.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            self.fail(path, f"{path} must be a string")
            return default
        return value

    def bool_(self, parent: Mapping[str, Any], key: str, path: str) -> bool:
        value = parent.get(key)
        if value is None:
            return False
        if not isinstance(value, bool):
            self.fail(path, f"{path} must be a boolean")
            return False
        return value

    def str_map(self, parent: Mapping[str, Any], key: str, path: str) -> Mapping[str, str]:
        value = parent.get(key)
        if value is None:
            return EMPTY
        if not isinstance(value, Mapping):
            self.fail(path, f"{path} must be a map of strings")
            return EMPTY
        out: dict[str, str] = {}
        for k, v in value.items():
            if not isinstance(v, str):
                self.fail(f"{path}.{k}", f"{path}.{k} must be a string")
                continue
            out[str(k)] = v
        return MappingProxyType(out)
