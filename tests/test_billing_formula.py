"""app/billing/formula.py: PoYo's price-formula language. Every operator, precedence and
associativity (also against Python's own arithmetic on random expressions), lookups, the
functions, laziness, every error, the limits, and every formula of the catalog."""

from __future__ import annotations

import random
import re
from fractions import Fraction
from typing import Any

import pytest

from app.billing import formula as f
from app.billing.estimate import PROSE_FORMULAS, VARIABLES
from app.catalog.document import GENERATE, load_snapshot
from app.catalog.strict import UNDECLARED_INPUTS

GENERATE_MODELS = [e for e in load_snapshot().items if e.service_type == GENERATE]
CATALOG_FORMULAS = sorted(
    {e.billing["formula"] for e in GENERATE_MODELS if e.billing and e.billing.get("formula")}
)
TABLES = {
    "sound_credits": {"true": 24, "false": 13},
    "duration_credits": {"5": 55, "10": 110},
    "half": {"2.5": 1, "0.5": 2},
    "price_table": {"720p": {"5": 21, "10": 42}, "1080p": {"5": 43}},
    "flat": {"true": {"4k": 400}, "false": {"4k": {"6": 300}}},
    "with_null": {"a": None},
}


def value(text: str, **env: Any) -> f.Value:
    return f.evaluate_text(text, {**TABLES, **env})


def test_numbers_strings_and_booleans() -> None:
    assert value("42") == 42
    assert value("7.5") == Fraction(15, 2)
    assert value(".5") == Fraction(1, 2)
    assert value("007") == 7
    assert value("'detailed'") == "detailed"
    assert value('"it\'s"') == "it's"
    assert value("''") == ""
    assert value("true") is True
    assert value("false") is False


def test_arithmetic_is_exact() -> None:
    assert value("1.9 * 3") == Fraction(57, 10)
    assert value("0.1 + 0.2") == Fraction(3, 10)
    assert value("1 / 3 * 3") == 1
    assert value("chars / 1000 * 2.4", chars=1234) == Fraction("2.9616")
    assert value("x * 2", x=0.1) == Fraction(1, 5)  # a float input is taken as written


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2 + 3", 5),
        ("2 - 3", -1),
        ("2 * 3", 6),
        ("3 / 2", Fraction(3, 2)),
        ("-3", -3),
        ("+3", 3),
        ("- -3", 3),
        ("2 - -3", 5),
        # precedence
        ("1 + 2 * 3", 7),
        ("2 * 3 + 1", 7),
        ("(1 + 2) * 3", 9),
        ("1 + 6 / 3", 3),
        ("-2 * 3", -6),
        ("-(2 + 3) * 2", -10),
        ("2 * -3", -6),
        # associativity: left for + - * /
        ("10 - 4 - 3", 3),
        ("10 - (4 - 3)", 9),
        ("24 / 4 / 2", 3),
        ("24 / (4 / 2)", 12),
        ("2 * 3 / 4", Fraction(3, 2)),
        ("1 - 2 + 3", 2),
        # whitespace anywhere, or none
        ("1+2*3", 7),
        ("  1 +\n\t2  ", 3),
    ],
)
def test_arithmetic_precedence_and_associativity(text: str, expected: Fraction) -> None:
    assert value(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 < 2", True),
        ("2 < 2", False),
        ("2 <= 2", True),
        ("3 > 2", True),
        ("2 > 2", False),
        ("2 >= 2", True),
        ("1 + 1 == 2", True),
        ("1 + 1 != 2", False),
        ("'a' == 'a'", True),
        ("'a' != 'b'", True),
        ("true == true", True),
        ("true != false", True),
        ("1 < 2 == true", True),  # relations bind tighter than equality
        ("2 * 3 > 5", True),  # arithmetic binds tighter than relations
        ("true || false && false", True),  # && binds tighter than ||
        ("(true || false) && false", False),
        ("!true", False),
        ("!!true", True),
        ("!false && true", True),
        ("1 < 2 && 2 < 3", True),
        ("false || 1 == 1", True),
    ],
)
def test_comparisons_and_logic(text: str, expected: bool) -> None:
    assert value(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true ? 1 : 2", 1),
        ("false ? 1 : 2", 2),
        ("true ? 1 : 0 + 5", 1),  # ?: is the loosest
        ("false ? 1 : 0 + 5", 5),
        ("1 + (false ? 24 : 0)", 1),
        ("false ? 1 : true ? 2 : 3", 2),  # right-associative: false ? 1 : (true ? 2 : 3)
        ("false ? 1 : false ? 2 : 3", 3),
        ("true ? false ? 1 : 2 : 3", 2),  # true ? (false ? 1 : 2) : 3
        ("1 == 1 ? 'yes' : 'no'", "yes"),
        ("q == 'detailed' ? 30 : 0", 30),
    ],
)
def test_the_conditional(text: str, expected: Any) -> None:
    assert value(text, q="detailed") == expected


def test_lookups_spell_keys_as_poyo_tables_do() -> None:
    assert value("sound_credits[sound]", sound=True) == 24
    assert value("sound_credits[sound]", sound=False) == 13
    assert value("duration_credits[duration]", duration=10) == 110
    assert value("duration_credits[duration]", duration=10.0) == 110  # JSON's 10.0 is 10
    assert value("duration_credits[2 * 5]") == 110  # a key is any expression
    assert value("half[x]", x=2.5) == 1
    assert value("half[x]", x=Fraction(1, 2)) == 2
    assert value("price_table['720p'][10]") == 42
    assert value("price_table[r][d]", r="1080p", d=5) == 43
    assert value("duration * sound_credits[sound]", duration=5, sound=True) == 120
    # an integral key also matches a table spelling it "5.0"
    assert value("t[5]", t={"5.0": 7}) == 7
    assert f.key_texts(Fraction(5)) == ("5", "5.0")
    assert f.key_texts(Fraction(5, 2)) == ("2.5",)
    assert f.key_texts(Fraction(1, 3))[0].startswith("0.3333")
    assert f.key_texts(True) == ("true",)
    assert f.key_texts("4K") == ("4K",)  # strings as they are: no case folding


def test_a_missing_key_is_a_typed_error_naming_it() -> None:
    with pytest.raises(f.FormulaKeyError) as caught:
        value("price_table[resolution][duration]", resolution="1080p", duration=10)
    assert caught.value.key == "10"
    assert caught.value.where == "duration"
    assert caught.value.available == ("5",)
    with pytest.raises(f.FormulaKeyError) as caught:
        value("sound_credits['TRUE']")
    assert caught.value.where == "'TRUE'"
    with pytest.raises(f.FormulaKeyError):
        value("with_null['a']")  # a null price is no price


def test_short_tables_stop_at_a_price() -> None:
    env = {**TABLES, "video": True, "group": "4k"}
    assert f.evaluate_text("flat[video][group][d]", env, short_tables=True) == 400
    # the key past the price is not evaluated: `d` is not even defined
    with pytest.raises(f.FormulaTypeError, match="needs a table"):
        f.evaluate_text("flat[video][group][d]", {**env, "d": 6})
    env["video"] = False
    assert f.evaluate_text("flat[video][group][d]", {**env, "d": 6}, short_tables=True) == 300


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ceil(45 / 60)", 1),
        ("ceil(60 / 60)", 1),
        ("ceil(61 / 60)", 2),
        ("ceil(-0.5)", 0),
        ("floor(2.9)", 2),
        ("floor(-0.5)", -1),
        ("min(3, 1, 2)", 1),
        ("max(0, 2 - 5)", 0),
        ("max(7)", 7),
        ("max(0, 7 - 5) * 6.4", Fraction("12.8")),
        ("ceil(duration / 60) * 128", 256),
    ],
)
def test_functions(text: str, expected: Fraction) -> None:
    assert value(text, duration=61) == expected


def test_laziness_only_the_branch_taken_is_evaluated() -> None:
    assert value("true ? 1 : undefined_name") == 1
    assert value("false ? 1 / 0 : 2") == 2
    assert value("false && undefined_name") is False
    assert value("true || undefined_name") is True
    with pytest.raises(f.FormulaNameError):
        value("true && undefined_name")


def test_environment_errors_other_than_a_missing_name_pass_through() -> None:
    class Unknowable(Exception):
        pass

    class Env(dict[str, Any]):
        def __getitem__(self, key: str) -> Any:
            raise Unknowable(key)

    with pytest.raises(Unknowable):
        f.evaluate_text("x + 1", Env())


@pytest.mark.parametrize(
    ("text", "env", "error"),
    [
        ("1 / 0", {}, f.FormulaZeroDivisionError),
        ("x / (y - y)", {"x": 1, "y": 3}, f.FormulaZeroDivisionError),
        ("nope + 1", {}, f.FormulaNameError),
        ("round(1.5)", {}, f.FormulaNameError),  # only ceil, floor, min, max
        ("__import__('os')", {}, f.FormulaNameError),  # a name, never Python
        ("1 + true", {}, f.FormulaTypeError),
        ("'a' * 2", {}, f.FormulaTypeError),
        ("-true", {}, f.FormulaTypeError),
        ("!1", {}, f.FormulaTypeError),
        ("1 ? 2 : 3", {}, f.FormulaTypeError),  # conditions are booleans, not truthy
        ("1 && true", {}, f.FormulaTypeError),
        ("1 == '1'", {}, f.FormulaTypeError),
        ("true == 1", {}, f.FormulaTypeError),
        ("sound_credits == sound_credits", {}, f.FormulaTypeError),
        ("'a' < 'b'", {}, f.FormulaTypeError),
        ("5[1]", {}, f.FormulaTypeError),  # a lookup into a number
        ("sound_credits[sound_credits]", {}, f.FormulaTypeError),
        ("ceil()", {}, f.FormulaTypeError),
        ("ceil(1, 2)", {}, f.FormulaTypeError),
        ("min()", {}, f.FormulaTypeError),
        ("max('a', 1)", {}, f.FormulaTypeError),
        ("sound_credits + 1", {}, f.FormulaTypeError),
        ("x + 1", {"x": [1, 2]}, f.FormulaTypeError),
        ("x + 1", {"x": None}, f.FormulaTypeError),
        ("x + 1", {"x": float("nan")}, f.FormulaTypeError),
        ("x + 1", {"x": float("inf")}, f.FormulaTypeError),
    ],
)
def test_evaluation_errors_are_typed(
    text: str, env: dict[str, Any], error: type[f.FormulaError]
) -> None:
    with pytest.raises(error):
        value(text, **env)


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("", 0),
        ("1 +", 3),
        ("(1 + 2", 6),
        ("1 + 2)", 5),
        ("a[1", 3),
        ("a[]", 2),
        ("1 ? 2", 5),
        ("max(1,", 6),
        ("max(1 2)", 6),
        ("1 2", 2),
        ("a b", 2),
        ("@", 0),
        ("a.b", 1),  # no attributes
        ("1e3", 1),  # no exponents
        ("'open", 0),
        ("a = 1", 2),  # no assignment
        ("1 === 1", 4),
        ("a & b", 2),
        ("x % 2", 2),
        ("* 2", 0),
        ("[1]", 0),
    ],
)
def test_syntax_errors_say_where(text: str, position: int) -> None:
    with pytest.raises(f.FormulaSyntaxError) as caught:
        f.parse(text)
    assert caught.value.position == position
    assert f"at position {position}" in str(caught.value)


def test_the_length_limit() -> None:
    longest = "1" + " + 1" * ((f.MAX_LENGTH - 1) // 4)
    longest += " " * (f.MAX_LENGTH - len(longest))
    assert len(longest) == f.MAX_LENGTH
    with pytest.raises(f.FormulaLimitError):  # within length, but 125 levels deep
        f.parse(longest)
    spaced = "1" + " " * (f.MAX_LENGTH - 1)
    assert f.evaluate_text(spaced, {}) == 1
    with pytest.raises(f.FormulaLimitError, match="longer than 500"):
        f.parse(spaced + " ")
    with pytest.raises(f.FormulaLimitError):
        f.parse("x" * 10_000)


def test_the_depth_limit() -> None:
    def nested(levels: int) -> str:
        return "(" * levels + "1" + ")" * levels

    assert f.evaluate_text(nested(f.MAX_DEPTH - 1), {}) == 1
    with pytest.raises(f.FormulaLimitError, match="deeper than 32"):
        f.parse(nested(f.MAX_DEPTH + 1))
    with pytest.raises(f.FormulaLimitError):
        f.parse(nested(240))  # refused by the limit, never a RecursionError
    with pytest.raises(f.FormulaLimitError):
        f.parse("-" * 200 + "1")
    with pytest.raises(f.FormulaLimitError):
        f.parse("!" * 200 + "true")
    with pytest.raises(f.FormulaLimitError):
        f.parse("t" + "[1]" * 40)
    with pytest.raises(f.FormulaLimitError):
        f.parse("1" + " + 1" * 40)  # a long chain is deep too
    assert f.evaluate_text("1" + " + 1" * (f.MAX_DEPTH - 1), {}) == f.MAX_DEPTH
    assert f.depth(f.parse("1")) == 1
    assert f.depth(f.parse("a ? b[c] : -d")) == 3


def test_names_are_the_free_variables() -> None:
    node = f.parse("max(0, a - b) * t[k][2] + (c ? 1 : 'x')")
    assert f.names(node) == {"a", "b", "t", "k", "c"}
    assert f.names(f.parse("ceil(1)")) == frozenset()


def test_the_ast_is_plain_frozen_data() -> None:
    assert f.parse("a + 2 * b") == f.Binary(
        "+", f.Name("a"), f.Binary("*", f.Number(Fraction(2)), f.Name("b"))
    )
    assert f.parse("a ? b : c") == f.Conditional(f.Name("a"), f.Name("b"), f.Name("c"))
    assert f.parse("t[k]") == f.Index(f.Name("t"), f.Name("k"))
    assert f.parse("max(1)") == f.Call("max", (f.Number(Fraction(1)),))
    assert f.parse("-x") == f.Unary("-", f.Name("x"))
    assert f.parse("'s'") == f.String("s")
    name = f.parse("a")
    assert isinstance(name, f.Name)
    with pytest.raises(AttributeError):
        name.id = "b"  # type: ignore[misc]
    assert f.parse("a + 1") is f.parse("a + 1")  # cached: parsing is pure


@pytest.mark.parametrize(
    "text",
    [
        "1 + 2 * 3 - 4 / 5",
        "-(a + b) * -c",
        "a ? b ? 1 : 2 : c ? 3 : 4",
        "t[a][b + 1] * max(0, x - 5, y)",
        "!(a && b) || c == 'q' && d != \"it's\"",
        "x <= 1 == (y > 2)",
        "2.5 * ceil(0.75) + floor(z)",
    ],
)
def test_unparse_round_trips(text: str) -> None:
    node = f.parse(text)
    assert f.parse(f.unparse(node)) == node


def _python_expression(rng: random.Random, depth: int) -> str:
    if depth == 0 or rng.random() < 0.25:
        return str(rng.randint(0, 9))
    kind = rng.random()
    if kind < 0.15:
        return "-" + _python_expression(rng, depth - 1)
    if kind < 0.3:
        return "(" + _python_expression(rng, depth - 1) + ")"
    op = rng.choice(["+", "-", "*", "/"])
    return f"{_python_expression(rng, depth - 1)} {op} {_python_expression(rng, depth - 1)}"


def test_precedence_and_associativity_agree_with_python_on_random_expressions() -> None:
    rng = random.Random(20260807)
    checked = 0
    for _ in range(600):
        text = _python_expression(rng, 5)
        if len(text) > f.MAX_LENGTH:
            continue
        exact = re.sub(r"(\d+)", r"Fraction(\1)", text)
        try:
            python = eval(exact, {"Fraction": Fraction})  # the oracle, in the test only
        except ZeroDivisionError:
            with pytest.raises((f.FormulaZeroDivisionError, f.FormulaLimitError)):
                f.evaluate_text(text, {})
            continue
        try:
            ours = f.evaluate_text(text, {})
        except f.FormulaLimitError:  # deeper than MAX_DEPTH: refused, fine
            continue
        assert ours == python, text
        checked += 1
    assert checked > 300


# ---- the catalog's formulas ----------------------------------------------------------------


def test_every_formula_of_the_catalog_parses_but_one_in_prose() -> None:
    failing = []
    for text in CATALOG_FORMULAS:
        try:
            node = f.parse(text)
        except f.FormulaSyntaxError:
            failing.append(text)
            continue
        assert f.parse(f.unparse(node)) == node
        assert f.depth(node) <= 6
    assert len(CATALOG_FORMULAS) == 33
    # seedance-2.5's rule is prose; app/billing/estimate.py states it as a formula
    assert failing == list(PROSE_FORMULAS)
    for text in PROSE_FORMULAS.values():
        f.parse(text)


def test_every_name_in_a_catalog_formula_is_accounted_for() -> None:
    unexplained = {}
    for entry in GENERATE_MODELS:
        billing = entry.billing or {}
        text = billing.get("formula")
        if not text:
            continue
        node = f.parse(PROSE_FORMULAS.get(" ".join(text.split()), text))
        known = (
            set(billing)
            | set(billing.get("parameters") or {})
            | set(VARIABLES)
            | set(entry.input_schema.get("properties", {}))
            | UNDECLARED_INPUTS
        )
        if f.names(node) - known:
            unexplained[entry.model_id] = f.names(node) - known
    assert unexplained == {}


def test_the_catalog_uses_these_constructs() -> None:
    kinds: set[str] = set()
    for text in CATALOG_FORMULAS:
        if text in PROSE_FORMULAS:
            continue
        for node in f.walk(f.parse(text)):
            kinds.add(type(node).__name__)
            if isinstance(node, f.Binary | f.Unary):
                kinds.add(node.op)
            if isinstance(node, f.Call):
                kinds.add(node.function + "()")
    assert kinds == {
        "Number",
        "Name",
        "String",
        "Binary",
        "Conditional",
        "Index",
        "Call",
        "+",
        "*",
        "/",
        "-",
        "==",
        "ceil()",
        "max()",
    }
