"""The formula language's syntax: KEDA's ``advanced.scalingModifiers.formula``, the subset of
expr-lang its documentation uses. `parse` turns a formula's text into a tree of the node classes
here, or raises FormulaError saying where it is wrong; the function tables say what each name
takes and computes. Checking and evaluating the tree is scaler.formula's job. The language:

* numbers (``2``, ``0.5``, ``1e3``), trigger names as variables, ``true``, ``false``, ``nil``;
* arithmetic ``+ - * / %`` and ``**`` / ``^`` (power), unary ``-`` ``+``;
* comparisons ``== != < <= > >=``; logic ``&& || !`` (also ``and or not``);
* the ternary ``cond ? a : b`` and nil-coalescing ``a ?? b``;
* functions ``min(a, b, ...)``, ``max(...)``, ``abs``, ``float``, ``int`` (truncates),
  ``ceil``, ``floor``, ``round`` (half away from zero, as expr-lang);
* arrays of numbers ``[a, b, c]`` for ``min``, ``max``, ``sum``, ``mean``, ``median`` and the
  predicates ``count``, ``all``, ``any``, ``none``, ``one`` with a ``{# > 1}`` closure (KEDA's
  ``count([trig_one, trig_two, trig_three], {# > 1}) > 1 ? 5 : 0``).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from scaler.errors import TidalError

MAX_LENGTH = 2048  # characters of a formula
MAX_DEPTH = 64  # nesting of the parsed tree


class FormulaError(TidalError, ValueError):
    """A formula that does not parse, type-check or evaluate; the message says where."""


_TOKEN = re.compile(
    r"\s*(?:(?P<number>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>\*\*|\?\?|&&|\|\||==|!=|<=|>=|[-+*/%^<>!?:(),\[\]{}#]))"
)
_WORDS = {"and": "&&", "or": "||", "not": "!"}


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: Literal["number", "name", "op", "end"]
    text: str
    at: int


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None:
            at = pos + len(text[pos:]) - len(text[pos:].lstrip())
            raise FormulaError(f"unexpected character {text[at]!r} at position {at + 1}")
        kind = m.lastgroup
        value = m.group(kind or "op")
        at = m.start(kind or "op")
        if kind == "name" and value in _WORDS:
            out.append(_Tok("op", _WORDS[value], at))
        else:
            out.append(_Tok(kind, value, at))  # type: ignore[arg-type]
        pos = m.end()
    out.append(_Tok("end", "", len(text)))
    return out


# ------------------------------------------------------------------------------------- the tree


@dataclass(frozen=True, slots=True)
class Num:
    value: float


@dataclass(frozen=True, slots=True)
class Const:
    value: bool | None


@dataclass(frozen=True, slots=True)
class Var:
    name: str


@dataclass(frozen=True, slots=True)
class Unary:
    op: str
    operand: Node


@dataclass(frozen=True, slots=True)
class Binary:
    op: str
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Cond:
    test: Node
    then: Node
    otherwise: Node


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Array:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Pred:
    """``{...}``: a closure over ``#``, the array element."""

    body: Node


@dataclass(frozen=True, slots=True)
class Elem:
    """``#`` inside a closure."""


Node = Num | Const | Var | Unary | Binary | Cond | Call | Array | Pred | Elem

# expr-lang's precedences (parser/operator/operator.go): binary operators, and unary ones whose
# operand takes every binary operator of a precedence at least theirs (`-a ** 2` is -(a ** 2),
# `-a * b` is (-a) * b).
_BINARY: dict[str, int] = {
    "||": 10,
    "&&": 15,
    "==": 20,
    "!=": 20,
    "<": 20,
    "<=": 20,
    ">": 20,
    ">=": 20,
    "+": 30,
    "-": 30,
    "*": 60,
    "/": 60,
    "%": 60,
    "**": 100,
    "^": 100,
    "??": 500,
}
_RIGHT_ASSOCIATIVE = frozenset({"**", "^"})
_UNARY: dict[str, int] = {"!": 50, "-": 90, "+": 90}
MAX_ARRAY = 100  # items of an array literal


def _round(x: float) -> float:
    return float(math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5))


def _median(xs: Sequence[float]) -> float:
    ordered = sorted(xs)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


# Functions over arrays: min/max take an array or numbers; these take exactly one array.
ARRAY_FUNCTIONS: dict[str, Callable[[Sequence[float]], float]] = {
    "sum": lambda xs: float(sum(xs)),
    "mean": lambda xs: sum(xs) / len(xs),
    "median": _median,
}
# Predicates: (array, {closure}) -> number (count) or bool.
PREDICATES: dict[str, Callable[[Sequence[bool]], float | bool]] = {
    "count": lambda bs: float(sum(bs)),
    "all": all,
    "any": any,
    "none": lambda bs: not any(bs),
    "one": lambda bs: sum(bs) == 1,
}

FUNCTIONS: dict[str, tuple[int, int | None, Callable[..., float]]] = {
    # name: (min args, max args or None, implementation over floats)
    "min": (1, None, lambda *xs: min(xs)),
    "max": (1, None, lambda *xs: max(xs)),
    "abs": (1, 1, abs),
    "float": (1, 1, float),
    "int": (1, 1, lambda x: float(math.trunc(x))),
    "ceil": (1, 1, lambda x: float(math.ceil(x))),
    "floor": (1, 1, lambda x: float(math.floor(x))),
    "round": (1, 1, _round),
}


def parse(text: str) -> Node:
    """`text` as a tree; FormulaError says where it is not in the language (or too long or deep)."""
    if not text.strip():
        raise FormulaError("the formula is empty")
    if len(text) > MAX_LENGTH:
        raise FormulaError(f"the formula is longer than {MAX_LENGTH} characters")
    try:
        return _Parser(text).parse()
    except RecursionError:  # the depth bound is checked first; this is the last guard
        raise FormulaError(f"formula nested deeper than {MAX_DEPTH} levels") from None


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect(self, op: str) -> None:
        tok = self.take()
        if tok.kind != "op" or tok.text != op:
            raise FormulaError(f"expected {op!r} at position {tok.at + 1}, found {_show(tok)}")

    def parse(self) -> Node:
        node = self.expression()
        tok = self.peek()
        if tok.kind != "end":
            raise FormulaError(f"unexpected {_show(tok)} at position {tok.at + 1}")
        return node

    def expression(self) -> Node:
        """A whole expression: binary operators, then the (lowest) ternary."""
        with self._nested():
            test = self.binary(0)
            if self.peek().kind == "op" and self.peek().text == "?":
                self.take()
                then = self.expression()
                self.expect(":")
                return Cond(test, then, self.expression())
            return test

    def binary(self, min_precedence: int) -> Node:
        """Precedence climbing over `_BINARY`, left-associative but for power."""
        with self._nested():
            node = self.unary()
            while True:
                tok = self.peek()
                precedence = _BINARY.get(tok.text, -1) if tok.kind == "op" else -1
                if precedence < min_precedence or precedence < 0:
                    return node
                self.take()
                op = "**" if tok.text == "^" else tok.text
                right_min = precedence if tok.text in _RIGHT_ASSOCIATIVE else precedence + 1
                node = Binary(op, node, self.binary(right_min))

    def unary(self) -> Node:
        tok = self.peek()
        if tok.kind == "op" and tok.text in _UNARY:
            self.take()
            return Unary(tok.text, self.binary(_UNARY[tok.text]))
        return self.primary()

    @contextlib.contextmanager
    def _nested(self) -> Iterator[None]:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise FormulaError(f"formula nested deeper than {MAX_DEPTH} levels")
        try:
            yield
        finally:
            self.depth -= 1

    def primary(self) -> Node:
        tok = self.take()
        if tok.kind == "op" and tok.text == "[":
            items: list[Node] = []
            if not (self.peek().kind == "op" and self.peek().text == "]"):
                items.append(self.expression())
                while self.peek().kind == "op" and self.peek().text == ",":
                    self.take()
                    items.append(self.expression())
            self.expect("]")
            if len(items) > MAX_ARRAY:
                raise FormulaError(f"an array has more than {MAX_ARRAY} items")
            return Array(tuple(items))
        if tok.kind == "op" and tok.text == "{":
            body = self.expression()
            self.expect("}")
            return Pred(body)
        if tok.kind == "op" and tok.text == "#":
            return Elem()
        if tok.kind == "number":
            return Num(float(tok.text))
        if tok.kind == "name":
            if tok.text in ("true", "false"):
                return Const(tok.text == "true")
            if tok.text == "nil":
                return Const(None)
            if self.peek().kind == "op" and self.peek().text == "(":
                return self.call(tok)
            return Var(tok.text)
        if tok.kind == "op" and tok.text == "(":
            node = self.expression()
            self.expect(")")
            return node
        raise FormulaError(f"unexpected {_show(tok)} at position {tok.at + 1}")

    def call(self, name: _Tok) -> Node:
        if name.text not in _KNOWN:
            known = ", ".join(sorted(_KNOWN))
            raise FormulaError(
                f"unknown function {name.text!r} at position {name.at + 1} (known: {known})"
            )
        self.expect("(")
        args: list[Node] = []
        if not (self.peek().kind == "op" and self.peek().text == ")"):
            args.append(self.expression())
            while self.peek().kind == "op" and self.peek().text == ",":
                self.take()
                args.append(self.expression())
        self.expect(")")
        if name.text in PREDICATES:
            if len(args) != 2 or not isinstance(args[0], Array | Var | Call):
                raise FormulaError(f"{name.text}() takes an array and a {{closure}}")
            if not isinstance(args[1], Pred):
                raise FormulaError(f"{name.text}()'s second argument must be a {{closure}}")
            return Call(name.text, tuple(args))
        if name.text in ARRAY_FUNCTIONS:
            if len(args) != 1:
                raise FormulaError(f"{name.text}() takes one array")
            return Call(name.text, tuple(args))
        low, high, _ = FUNCTIONS[name.text]
        if len(args) < low or (high is not None and len(args) > high):
            want = str(low) if high == low else f"at least {low}"
            raise FormulaError(f"{name.text}() takes {want} argument(s), got {len(args)}")
        return Call(name.text, tuple(args))


_KNOWN = frozenset(FUNCTIONS) | frozenset(ARRAY_FUNCTIONS) | frozenset(PREDICATES)


def _show(tok: _Tok) -> str:
    return "the end of the formula" if tok.kind == "end" else repr(tok.text)
