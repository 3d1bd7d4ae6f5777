"""`advanced.scalingModifiers.formula`: compiling a formula and evaluating it.

A formula is parsed once into a tree (scaler.formula_syntax: the language, its grammar and
functions), type-checked (the result must be a number, as KEDA's ``expr.AsFloat64()`` compile
option demands) and evaluated over the triggers' values by walking the tree — never Python's
``eval``.

A value that is not a finite number (a division by zero, an overflow) is an error: the composite
metric is then unavailable, never a zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from scaler.formula_syntax import (
    ARRAY_FUNCTIONS,
    FUNCTIONS,
    PREDICATES,
    Array,
    Binary,
    Call,
    Cond,
    Const,
    Elem,
    FormulaError,
    Node,
    Num,
    Pred,
    Unary,
    Var,
    parse,
)

__all__ = ["Formula", "FormulaError", "compile_formula"]

Value = float | bool | None
Kind = Literal["number", "bool", "nil", "array"]


# ------------------------------------------------------------------------------------- typing

_NUMERIC = ("+", "-", "*", "/", "%", "**")


def _kind(node: Node, in_closure: bool = False) -> Kind:
    """Static type of a node; raises FormulaError for a bool where a number must be, etc."""
    if isinstance(node, Elem):
        if not in_closure:
            raise FormulaError("# is only valid inside a {closure}")
        return "number"
    if isinstance(node, Array):
        for item in node.items:
            _need(_kind(item, in_closure), "number", "[...]")
        return "array"
    if isinstance(node, Pred):
        raise FormulaError("a {closure} is only valid as the second argument of count, all, ...")
    if isinstance(node, Num | Var):
        return "number"
    if isinstance(node, Const):
        return "nil" if node.value is None else "bool"
    if isinstance(node, Unary):
        inner = _kind(node.operand, in_closure)
        if node.op == "!":
            _need(inner, "bool", "!")
            return "bool"
        _need(inner, "number", node.op)
        return "number"
    if isinstance(node, Binary):
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
    if isinstance(node, Cond):
        _need(_kind(node.test, in_closure), "bool", "?:")
        then, otherwise = _kind(node.then, in_closure), _kind(node.otherwise, in_closure)
        if then != otherwise and "nil" not in (then, otherwise):
            raise FormulaError("the two branches of ?: give different types (number and bool)")
        return otherwise if then == "nil" else then
    if node.name in PREDICATES:
        if in_closure:  # each level multiplies the work: [100] ** depth evaluations
            raise FormulaError(f"{node.name}() inside a {{closure}}: closures cannot be nested")
        array, pred = node.args
        _need(_kind(array, in_closure), "array", f"{node.name}()")
        assert isinstance(pred, Pred)
        _need(_kind(pred.body, True), "bool", f"{node.name}()'s closure")
        return "number" if node.name == "count" else "bool"
    if node.name in ARRAY_FUNCTIONS:
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


def _eval(node: Node, env: Mapping[str, float | None], elem: float | None = None) -> Value:
    if isinstance(node, Elem):
        return elem
    if isinstance(node, Num):
        return node.value
    if isinstance(node, Const):
        return node.value
    if isinstance(node, Var):
        return env[node.name]
    if isinstance(node, Array | Pred):
        raise FormulaError("an array or closure is not a value")  # the type check prevents it
    if isinstance(node, Unary):
        v = _eval(node.operand, env, elem)
        if node.op == "!":
            return not _bool(v, "!")
        x = _num(v, node.op)
        return -x if node.op == "-" else x
    if isinstance(node, Binary):
        return _binary(node, env, elem)
    if isinstance(node, Cond):
        branch = node.then if _bool(_eval(node.test, env, elem), "?:") else node.otherwise
        return _eval(branch, env, elem)
    return _call(node, env, elem)


def _array(node: Node, env: Mapping[str, float | None], elem: float | None) -> list[float]:
    if not isinstance(node, Array):
        raise FormulaError("an array is needed here")
    return [_num(_eval(i, env, elem), "[...]") for i in node.items]


def _call(node: Call, env: Mapping[str, float | None], elem: float | None) -> Value:
    name = node.name
    if name in PREDICATES:
        array, pred = node.args
        assert isinstance(pred, Pred)
        tests = [_bool(_eval(pred.body, env, x), name) for x in _array(array, env, elem)]
        return PREDICATES[name](tests)
    if name in ARRAY_FUNCTIONS:
        xs = _array(node.args[0], env, elem)
        if not xs:
            raise FormulaError(f"{name}() of an empty array")
        return ARRAY_FUNCTIONS[name](xs)
    if name in ("min", "max") and len(node.args) == 1 and isinstance(node.args[0], Array):
        xs = _array(node.args[0], env, elem)
        if not xs:
            raise FormulaError(f"{name}() of an empty array")
        return min(xs) if name == "min" else max(xs)
    args = [_num(_eval(a, env, elem), f"{name}()") for a in node.args]
    return FUNCTIONS[name][2](*args)


def _binary(node: Binary, env: Mapping[str, float | None], elem: float | None) -> Value:
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
    _tree: Node

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
    tree = parse(text)
    variables = frozenset(_variables(tree))
    unknown = sorted(variables - set(names))
    if unknown:
        known = ", ".join(sorted(names)) or "none: give the triggers names"
        raise FormulaError(f"unknown name(s) {', '.join(unknown)} (trigger names: {known})")
    kind = _kind(tree)
    if kind != "number":
        raise FormulaError(f"the formula must give a number, it gives a {kind}")
    return Formula(text, variables, tree)


def _variables(node: Node) -> list[str]:
    if isinstance(node, Var):
        return [node.name]
    if isinstance(node, Unary):
        return _variables(node.operand)
    if isinstance(node, Binary):
        return _variables(node.left) + _variables(node.right)
    if isinstance(node, Cond):
        return _variables(node.test) + _variables(node.then) + _variables(node.otherwise)
    if isinstance(node, Call | Array):
        return [
            v for a in (node.args if isinstance(node, Call) else node.items) for v in _variables(a)
        ]
    if isinstance(node, Pred):
        return _variables(node.body)
    return []
