"""scalingModifiers formulas (scaler.formula): KEDA's documented expressions evaluate as
expr-lang does; anything else is a clear error, never Python."""

from __future__ import annotations

import pytest

from scaler.formula import FormulaError, compile_formula

NAMES = ("trig_one", "trig_two", "trig_three")


@pytest.mark.parametrize(
    ("formula", "values", "want"),
    [
        # The examples of KEDA's "Scaling Modifiers" documentation.
        pytest.param("trig_one + trig_two", {"trig_one": 2, "trig_two": 5}, 7, id="sum"),
        pytest.param("(trig_one + trig_two)/2", {"trig_one": 2, "trig_two": 5}, 3.5, id="average"),
        pytest.param(
            "trig_one < 2 ? trig_one+trig_two : 1",
            {"trig_one": 1, "trig_two": 5},
            6,
            id="ternary-true",
        ),
        pytest.param(
            "trig_one < 2 ? trig_one+trig_two : 1",
            {"trig_one": 3, "trig_two": 5},
            1,
            id="ternary-false",
        ),
        pytest.param(
            "count([trig_one,trig_two,trig_three],{#>1}) > 1 ? 5 : 0",
            {"trig_one": 2, "trig_two": 3, "trig_three": 0},
            5,
            id="count-closure",
        ),
        pytest.param(
            "count([trig_one,trig_two,trig_three],{#>1}) > 1 ? 5 : 0",
            {"trig_one": 2, "trig_two": 0, "trig_three": 0},
            0,
            id="count-closure-false",
        ),
        # The functions and operators the issue asks for, and expr-lang's precedence.
        pytest.param(
            "max(trig_one, trig_two) - min(trig_one, 1)",
            {"trig_one": 4, "trig_two": 9},
            8,
            id="min-max",
        ),
        pytest.param("abs(trig_one - trig_two)", {"trig_one": 4, "trig_two": 9}, 5, id="abs"),
        pytest.param("int(trig_one / 3) + float(1)", {"trig_one": 10}, 4, id="int-truncates"),
        pytest.param("int(-trig_one / 3)", {"trig_one": 10}, -3, id="int-toward-zero"),
        pytest.param(
            "round(trig_one) + ceil(0.2) + floor(1.9)", {"trig_one": 2.5}, 5, id="round-half-away"
        ),
        pytest.param("2 + 3 * 4 ** 2 / 8", {}, 8, id="precedence"),
        pytest.param("2 ^ 3 ^ 2", {}, 512, id="power-right-assoc"),
        pytest.param("-trig_one % 3", {"trig_one": 7}, -1, id="modulo-sign-of-dividend"),
        pytest.param(
            "trig_one > 1 && trig_two > 1 || false ? 1 : 2",
            {"trig_one": 2, "trig_two": 2},
            1,
            id="logic",
        ),
        pytest.param("not (trig_one == 2) ? 1 : 2", {"trig_one": 2}, 2, id="not-word"),
        pytest.param("trig_one ?? 7", {"trig_one": None}, 7, id="nil-coalescing"),
        pytest.param(
            "sum([trig_one, trig_two, 1]) + mean([2, 4]) + median([5, 1, 3])",
            {"trig_one": 1, "trig_two": 2},
            10,
            id="array-functions",
        ),
        pytest.param(
            "max([trig_one, trig_two])", {"trig_one": 1, "trig_two": 2}, 2, id="max-of-array"
        ),
        pytest.param(
            "all([trig_one, trig_two], {# > 0}) ? 1 : 0",
            {"trig_one": 1, "trig_two": 2},
            1,
            id="all",
        ),
        pytest.param("1e3 * .5", {}, 500, id="number-forms"),
    ],
)
def test_formulas_evaluate_as_expr_lang(
    formula: str, values: dict[str, float | None], want: float
) -> None:
    assert compile_formula(formula, NAMES).evaluate(values) == want


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        pytest.param("", "the formula is empty", id="empty"),
        pytest.param(
            "trig_one +", "unexpected the end of the formula at position 11", id="truncated"
        ),
        pytest.param(
            "trig_one + queue",
            "unknown name(s) queue (trigger names: trig_one, trig_three, trig_two)",
            id="unknown-name",
        ),
        pytest.param("trig_one > 2", "must give a number, it gives a bool", id="bool-result"),
        pytest.param(
            "__import__('os')",
            'unexpected character "\'" at position 12',
            id="python-is-not-a-formula",
        ),
        pytest.param("exec(trig_one)", "unknown function 'exec'", id="unknown-function"),
        pytest.param("trig_one.real", "unexpected character '.' at position 9", id="no-attributes"),
        pytest.param("true + 1", "+ needs a number, got a bool", id="bool-arithmetic"),
        pytest.param("trig_one ? 1 : 2", "?: needs a bool, got a number", id="number-condition"),
        pytest.param("abs(1, 2)", "abs() takes 1 argument(s), got 2", id="arity"),
        pytest.param(
            "count([trig_one], 1)",
            "second argument must be a {closure}",
            id="count-without-closure",
        ),
        pytest.param("# + 1", "# is only valid inside a {closure}", id="hash-outside"),
        pytest.param("(" * 100 + "1" + ")" * 100, "nested deeper than 64", id="too-deep"),
    ],
)
def test_bad_formulas_say_what_is_wrong(formula: str, message: str) -> None:
    with pytest.raises(FormulaError) as info:
        compile_formula(formula, NAMES)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("formula", "values", "message"),
    [
        pytest.param(
            "trig_one / trig_two", {"trig_one": 1, "trig_two": 0}, "division by zero", id="div-zero"
        ),
        pytest.param("trig_one + 1", {"trig_one": None}, "a value is nil", id="nil-value"),
        pytest.param("10 ** trig_one", {"trig_one": 400}, "not a finite number", id="overflow-inf"),
        pytest.param("trig_one + trig_two", {"trig_one": 1}, "no value for trig_two", id="missing"),
    ],
)
def test_a_value_that_is_not_a_finite_number_is_an_error_never_a_zero(
    formula: str, values: dict[str, float | None], message: str
) -> None:
    with pytest.raises(FormulaError, match=message):
        compile_formula(formula, NAMES).evaluate(values)


@pytest.mark.parametrize(
    ("formula", "a", "want"),
    [
        # expr-lang's precedences: `??` binds tightest, unary minus below power.
        pytest.param("a ?? 0 + 1", 3.0, 4.0, id="nil-coalescing-before-plus"),
        pytest.param("-a ** 2", 3.0, -9.0, id="unary-minus-below-power"),
        pytest.param("-a * 2", 3.0, -6.0, id="unary-minus-above-times"),
        pytest.param("a > 1 == true ? 1 : 0", 3.0, 1.0, id="comparisons-left-to-right"),
    ],
)
def test_precedence_is_expr_langs(formula: str, a: float, want: float) -> None:
    assert compile_formula(formula, ["a"]).evaluate({"a": a}) == want


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        pytest.param("-" * 1200 + "a", "nested deeper than", id="unary-chain"),
        pytest.param("!" * 1200 + "true ? a : 1", "nested deeper than", id="not-chain"),
        pytest.param("2" + "**2" * 600, "nested deeper than", id="power-chain"),
        pytest.param(
            "count([a, a], {count([a, a], {# > 0}) > 0})",
            "closures cannot be nested",
            id="nested-closures",
        ),
        pytest.param("sum([" + "a," * 101 + "a])", "more than 100 items", id="huge-array"),
    ],
)
def test_formulas_that_would_hold_the_loop_are_refused(formula: str, message: str) -> None:
    """A formula is evaluated on the event loop at every poll: its cost is bounded at compile
    time (depth, array length, one closure level), and a deep chain is a FormulaError, never a
    RecursionError escaping the parser."""
    with pytest.raises(FormulaError, match=message):
        compile_formula(formula, ["a"])


@pytest.mark.parametrize(
    "formula",
    [
        pytest.param("ceil(a * 1e300 * 1e300)", id="ceil-of-inf"),
        pytest.param("round(1e999 - 1e999)", id="round-of-nan"),
        pytest.param("a * 1e308 % 3", id="fmod-of-inf"),
    ],
)
def test_non_finite_intermediates_are_formula_errors(formula: str) -> None:
    with pytest.raises(FormulaError):
        compile_formula(formula, ["a"]).evaluate({"a": 10.0})
