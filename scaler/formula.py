"""`advanced.scalingModifiers.formula`: the subset of expr-lang KEDA's documentation uses.

Parsed once into a tree, type-checked (the result must be a number, as KEDA's
``expr.AsFloat64()`` compile option demands) and evaluated over the triggers' values by walking
the tree — never Python's ``eval``. The language:

* numbers (``2``, ``0.5``, ``1e3``), trigger names as variables, ``true``, ``false``, ``nil``;
* arithmetic ``+ - * / %`` and ``**`` / ``^`` (power), unary ``-`` ``+``;
* comparisons ``== != < <= > >=``; logic ``&& || !`` (also ``and or not``);
* the ternary ``cond ? a : b`` and nil-coalescing ``a ?? b``;
* functions ``min(a, b, ...)``, ``max(...)``, ``abs``, ``float``, ``int`` (truncates),
  ``ceil``, ``floor``, ``round`` (half away from zero, as expr-lang);
* arrays of numbers ``[a, b, c]`` for ``min``, ``max``, ``sum``, ``mean``, ``median`` and the
  predicates ``count``, ``all``, ``any``, ``none``, ``one`` with a ``{# > 1}`` closure (KEDA's
  ``count([trig_one, trig_two, trig_three], {# > 1}) > 1 ? 5 : 0``).

A value that is not a finite number (a division by zero, an overflow) is an error: the composite
metric is then unavailable, never a zero.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from scaler.errors import TidalError

MAX_LENGTH = 2048  # characters of a formula
MAX_DEPTH = 64  # nesting of the parsed tree

Value = float | bool | None
Kind = Literal["number", "bool", "nil", "array"]


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
class _Num:
    value: float


@dataclass(frozen=True, slots=True)
class _Const:
    value: bool | None


@dataclass(frozen=True, slots=True)
class _Var:
    name: str


@dataclass(frozen=True, slots=True)
class _Unary:
    op: str
    operand: _Node


@dataclass(frozen=True, slots=True)
class _Binary:
    op: str
    left: _Node
    right: _Node


@dataclass(frozen=True, slots=True)
class _Cond:
    test: _Node
    then: _Node
    otherwise: _Node


@dataclass(frozen=True, slots=True)
class _Call:
    name: str
    args: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Array:
    items: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Pred:
    """``{...}``: a closure over ``#``, the array element."""

    body: _Node


@dataclass(frozen=True, slots=True)
class _Elem:
    """``#`` inside a closure."""


_Node = _Num | _Const | _Var | _Unary | _Binary | _Cond | _Call | _Array | _Pred | _Elem

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
_ARRAY_FUNCTIONS: dict[str, Callable[[Sequence[float]], float]] = {
    "sum": lambda xs: float(sum(xs)),
    "mean": lambda xs: sum(xs) / len(xs),
    "median": _median,
}
# Predicates: (array, {closure}) -> number (count) or bool.
_PREDICATES: dict[str, Callable[[Sequence[bool]], float | bool]] = {
    "count": lambda bs: float(sum(bs)),
    "all": all,
    "any": any,
    "none": lambda bs: not any(bs),
    "one": lambda bs: sum(bs) == 1,
}

_FUNCTIONS: dict[str, tuple[int, int | None, Callable[..., float]]] = {
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

    def parse(self) -> _Node:
        node = self.expression()
        tok = self.peek()
        if tok.kind != "end":
            raise FormulaError(f"unexpected {_show(tok)} at position {tok.at + 1}")
        return node

    def expression(self) -> _Node:
        """A whole expression: binary operators, then the (lowest) ternary."""
        with self._nested():
            test = self.binary(0)
            if self.peek().kind == "op" and self.peek().text == "?":
                self.take()
                then = self.expression()
                self.expect(":")
                return _Cond(test, then, self.expression())
            return test

    def binary(self, min_precedence: int) -> _Node:
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
                node = _Binary(op, node, self.binary(right_min))

    def unary(self) -> _Node:
        tok = self.peek()
        if tok.kind == "op" and tok.text in _UNARY:
            self.take()
            return _Unary(tok.text, self.binary(_UNARY[tok.text]))
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

    def primary(self) -> _Node:
        tok = self.take()
        if tok.kind == "op" and tok.text == "[":
            items: list[_Node] = []
            if not (self.peek().kind == "op" and self.peek().text == "]"):
                items.append(self.expression())
                while self.peek().kind == "op" and self.peek().text == ",":
                    self.take()
                    items.append(self.expression())
            self.expect("]")
            if len(items) > MAX_ARRAY:
                raise FormulaError(f"an array has more than {MAX_ARRAY} items")
            return _Array(tuple(items))
        if tok.kind == "op" and tok.text == "{":
            body = self.expression()
            self.expect("}")
            return _Pred(body)
        if tok.kind == "op" and tok.text == "#":
            return _Elem()
        if tok.kind == "number":
            return _Num(float(tok.text))
        if tok.kind == "name":
            if tok.text in ("true", "false"):
                return _Const(tok.text == "true")
            if tok.text == "nil":
                return _Const(None)
            if self.peek().kind == "op" and self.peek().text == "(":
                return self.call(tok)
            return _Var(tok.text)
        if tok.kind == "op" and tok.text == "(":
            node = self.expression()
            self.expect(")")
            return node
        raise FormulaError(f"unexpected {_show(tok)} at position {tok.at + 1}")

    def call(self, name: _Tok) -> _Node:
        if name.text not in _KNOWN:
            known = ", ".join(sorted(_KNOWN))
            raise FormulaError(
                f"unknown function {name.text!r} at position {name.at + 1} (known: {known})"
            )
        self.expect("(")
        args: list[_Node] = []
        if not (self.peek().kind == "op" and self.peek().text == ")"):
            args.append(self.expression())
            while self.peek().kind == "op" and self.peek().text == ",":
                self.take()
                args.append(self.expression())
        self.expect(")")
        if name.text in _PREDICATES:
            if len(args) != 2 or not isinstance(args[0], _Array | _Var | _Call):
                raise FormulaError(f"{name.text}() takes an array and a {{closure}}")
            if not isinstance(args[1], _Pred):
                raise FormulaError(f"{name.text}()'s second argument must be a {{closure}}")
            return _Call(name.text, tuple(args))
        if name.text in _ARRAY_FUNCTIONS:
            if len(args) != 1:
                raise FormulaError(f"{name.text}() takes one array")
            return _Call(name.text, tuple(args))
        low, high, _ = _FUNCTIONS[name.text]
        if len(args) < low or (high is not None and len(args) > high):
            want = str(low) if high == low else f"at least {low}"
            raise FormulaError(f"{name.text}() takes {want} argument(s), got {len(args)}")
        return _Call(name.text, tuple(args))


_KNOWN = frozenset(_FUNCTIONS) | frozenset(_ARRAY_FUNCTIONS) | frozenset(_PREDICATES)


def _show(tok: _Tok) -> str:
    return "the end of the formula" if tok.kind == "end" else repr(tok.text)


# ------------------------------------------------------------------------------------- typing

_NUMERIC = ("+", "-", "*", "/", "%", "**")


def _kind(node: _Node, in_closure: bool = False) -> Kind:
    """Static type of a node; raises FormulaError for a bool where a number must be, etc."""
    if isinstance(node, _Elem):
        if not in_closure:
            raise FormulaError("# is only valid inside a {closure}")
        return "number"
    if isinstance(node, _Array):
        for item in node.items:
            _need(_kind(item, in_closure), "number", "[...]")
        return "array"
    if isinstance(node, _Pred):
        raise FormulaError("a {closure} is only valid as the second argument of count, all, ...")
    if isinstance(node, _Num | _Var):
        return "number"
    if isinstance(node, _Const):
        return "nil" if node.value is None else "bool"
    if isinstance(node, _Unary):
        inner = _kind(node.operand, in_closure)
        if node.op == "!":
            _need(inner, "bool", "!")
            return "bool"
        _need(inner, "number", node.op)
        return "number"
    if isinstance(node, _Binary):
        left, right = _kind(node.left, in_closure), _kind(node.right, in_closure)
        if node.op == "??":
            return right if left == "nil" else left
        if node.op in _NUMERIC:
            _need(left, "number", node.op)
            _need(right, "number", node.op)
            return "number"
        if node.op in ("&&", "||"):
            _need(left, "bool", node.op)
            _need(right, "bool", node.op)
            return "bool"
        if node.op in ("<", "<=", ">", ">="):
            _need(left, "number", node.op)
            _need(right, "number", node.op)
        return "bool"
    if isinstance(node, _Cond):
        _need(_kind(node.test, in_closure), "bool", "?:")
        then, otherwise = _kind(node.then, in_closure), _kind(node.otherwise, in_closure)
        if then != otherwise and "nil" not in (then, otherwise):
            raise FormulaError("the two branches of ?: give different types (number and bool)")
        return otherwise if then == "nil" else then
    if node.name in _PREDICATES:
        if in_closure:  # each level multiplies the work: [100] ** depth evaluations
            raise FormulaError(f"{node.name}() inside a {{closure}}: closures cannot be nested")
        array, pred = node.args
        _need(_kind(array, in_closure), "array", f"{node.name}()")
        assert isinstance(pred, _Pred)
        _need(_kind(pred.body, True), "bool", f"{node.name}()'s closure")
        return "number" if node.name == "count" else "bool"
    if node.name in _ARRAY_FUNCTIONS:
        _need(_kind(node.args[0], in_closure), "array", f"{node.name}()")
        return "number"
    kinds = [_kind(arg, in_closure) for arg in node.args]
    if node.name in ("min", "max") and kinds == ["array"]:
        return "number"
    for kind in kinds:
        _need(kind, "number", f"{node.name}()")
    return "number"


def _need(kind: Kind, want: Kind, where: str) -> None:
    if kind != want and kind != "nil":
        article = "an" if want == "array" else "a"
        raise FormulaError(
            f"{where} needs {article} {want}, got {'an' if kind == 'array' else 'a'} {kind}"
        )


# ------------------------------------------------------------------------------------- evaluation


def _eval(node: _Node, env: Mapping[str, float | None], elem: float | None = None) -> Value:
    if isinstance(node, _Elem):
        return elem
    if isinstance(node, _Num):
        return node.value
    if isinstance(node, _Const):
        return node.value
    if isinstance(node, _Var):
        return env[node.name]
    if isinstance(node, _Array | _Pred):
        raise FormulaError("an array or closure is not a value")  # the type check prevents it
    if isinstance(node, _Unary):
        v = _eval(node.operand, env, elem)
        if node.op == "!":
            return not _bool(v, "!")
        x = _num(v, node.op)
        return -x if node.op == "-" else x
    if isinstance(node, _Binary):
        return _binary(node, env, elem)
    if isinstance(node, _Cond):
        branch = node.then if _bool(_eval(node.test, env, elem), "?:") else node.otherwise
        return _eval(branch, env, elem)
    return _call(node, env, elem)


def _array(node: _Node, env: Mapping[str, float | None], elem: float | None) -> list[float]:
    if not isinstance(node, _Array):
        raise FormulaError("an array is needed here")
    return [_num(_eval(i, env, elem), "[...]") for i in node.items]


def _call(node: _Call, env: Mapping[str, float | None], elem: float | None) -> Value:
    name = node.name
    if name in _PREDICATES:
        array, pred = node.args
        assert isinstance(pred, _Pred)
        tests = [_bool(_eval(pred.body, env, x), name) for x in _array(array, env, elem)]
        return _PREDICATES[name](tests)
    if name in _ARRAY_FUNCTIONS:
        xs = _array(node.args[0], env, elem)
        if not xs:
            raise FormulaError(f"{name}() of an empty array")
        return _ARRAY_FUNCTIONS[name](xs)
    if name in ("min", "max") and len(node.args) == 1 and isinstance(node.args[0], _Array):
        xs = _array(node.args[0], env, elem)
        if not xs:
            raise FormulaError(f"{name}() of an empty array")
        return min(xs) if name == "min" else max(xs)
    args = [_num(_eval(a, env, elem), f"{name}()") for a in node.args]
    return _FUNCTIONS[name][2](*args)


def _binary(node: _Binary, env: Mapping[str, float | None], elem: float | None) -> Value:
    op = node.op
    if op == "??":
        left = _eval(node.left, env, elem)
        return _eval(node.right, env, elem) if left is None else left
    if op == "&&":
        return _bool(_eval(node.left, env, elem), op) and _bool(_eval(node.right, env, elem), op)
    if op == "||":
        return _bool(_eval(node.left, env, elem), op) or _bool(_eval(node.right, env, elem), op)
    left, right = _eval(node.left, env, elem), _eval(node.right, env, elem)
    if op == "==":
        return left == right
    if op == "!=":
        return left != right
    a, b = _num(left, op), _num(right, op)
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == ">":
        return a > b
    if op == ">=":
        return a >= b
    if op in ("/", "%") and b == 0:
        raise FormulaError(f"division by zero ({op})")
    try:
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            return a / b
        if op == "%":
            return float(math.fmod(a, b))
        power = a**b
        if isinstance(power, complex):
            raise FormulaError("**: a negative number to a fractional power is not a real number")
        return float(power)
    except OverflowError:
        raise FormulaError(f"{op} overflowed: not a finite number") from None
    except ZeroDivisionError as exc:  # 0 ** -1
        raise FormulaError(f"{op}: {exc}") from None


def _num(v: Value, where: str) -> float:
    if v is None:
        raise FormulaError(f"{where}: a value is nil (a trigger without a value)")
    if isinstance(v, bool):
        raise FormulaError(f"{where} needs a number, got a bool")
    return v


def _bool(v: Value, where: str) -> bool:
    if not isinstance(v, bool):
        raise FormulaError(f"{where} needs a bool, got {'nil' if v is None else 'a number'}")
    return v


# ------------------------------------------------------------------------------------- API


@dataclass(frozen=True, slots=True)
class Formula:
    text: str
    variables: frozenset[str]  # the trigger names it reads
    _tree: _Node

    def evaluate(self, values: Mapping[str, float | None]) -> float:
        """The formula's number for these trigger values; FormulaError when it is not a finite
        number (or a variable has no value and no ``??`` covers it)."""
        missing = self.variables - set(values)
        if missing:
            raise FormulaError(f"no value for {', '.join(sorted(missing))}")
        try:
            result = _eval(self._tree, values)
        except (ArithmeticError, ValueError) as exc:  # ceil(inf), fmod(inf, 1), ...
            if isinstance(exc, FormulaError):
                raise
            raise FormulaError(f"the formula gave no number: {exc}") from None
        if result is None or isinstance(result, bool):
            raise FormulaError(f"the formula gave {result!r}, not a number")
        if not math.isfinite(result):
            raise FormulaError(f"the formula gave {result}, not a finite number")
        return result


def compile_formula(text: str, names: Sequence[str]) -> Formula:
    """Parse and type-check `text` over the trigger `names`; FormulaError says what is wrong."""
    if not text.strip():
        raise FormulaError("the formula is empty")
    if len(text) > MAX_LENGTH:
        raise FormulaError(f"the formula is longer than {MAX_LENGTH} characters")
    try:
        tree = _Parser(text).parse()
    except RecursionError:  # the depth bound is checked first; this is the last guard
        raise FormulaError(f"formula nested deeper than {MAX_DEPTH} levels") from None
    variables = frozenset(_variables(tree))
    unknown = sorted(variables - set(names))
    if unknown:
        known = ", ".join(sorted(names)) or "none: give the triggers names"
        raise FormulaError(f"unknown name(s) {', '.join(unknown)} (trigger names: {known})")
    kind = _kind(tree)
    if kind != "number":
        raise FormulaError(f"the formula must give a number, it gives a {kind}")
    return Formula(text, variables, tree)


def _variables(node: _Node) -> list[str]:
    if isinstance(node, _Var):
        return [node.name]
    if isinstance(node, _Unary):
        return _variables(node.operand)
    if isinstance(node, _Binary):
        return _variables(node.left) + _variables(node.right)
    if isinstance(node, _Cond):
        return _variables(node.test) + _variables(node.then) + _variables(node.otherwise)
    if isinstance(node, _Call | _Array):
        return [
            v for a in (node.args if isinstance(node, _Call) else node.items) for v in _variables(a)
        ]
    if isinstance(node, _Pred):
        return _variables(node.body)
    return []
