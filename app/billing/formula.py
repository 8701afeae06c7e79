"""PoYo's price-formula language: a tokenizer, a recursive-descent parser into a small AST,
and an evaluator. Pure, bounded, and never `eval`: a formula is data.

The language (every construct the capability catalog uses, and a few neighbours):

    expression  := ternary
    ternary     := or ( "?" ternary ":" ternary )?          right-associative
    or          := and ( "||" and )*
    and         := equality ( "&&" equality )*
    equality    := relation ( ( "==" | "!=" ) relation )*
    relation    := sum ( ( "<" | "<=" | ">" | ">=" ) sum )*
    sum         := product ( ( "+" | "-" ) product )*        left-associative
    product     := unary ( ( "*" | "/" ) unary )*            left-associative
    unary       := ( "-" | "+" | "!" ) unary | postfix
    postfix     := primary ( "[" expression "]" )*           table lookup
    primary     := number | string | "true" | "false" | name | name "(" args ")"
                 | "(" expression ")"

Numbers are decimals (`7.5`, no exponent) and evaluate exactly (fractions.Fraction): no
float noise in `1.9 * 3`. Strings are quoted with `'` or `"`, without escapes. Functions:
ceil, floor (one argument), min, max (one or more). Values are numbers, booleans, strings
and tables (JSON objects); operators are strict about kinds: arithmetic and `<` take
numbers, `?`, `&&`, `||`, `!` take booleans, `==` compares two values of the same kind.

A table lookup `table[key]` turns the key into text the way PoYo's tables spell it:
booleans "true"/"false", integral numbers "5" (then "5.0"), other numbers their decimal
text ("2.5"), strings as they are.

Limits: a formula is at most MAX_LENGTH characters and its AST at most MAX_DEPTH levels
deep (each operator, call, lookup or parenthesis is a level); a longer or deeper formula is
refused with FormulaLimitError, before anything is evaluated.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache
from typing import Any, TypeAlias

MAX_LENGTH = 500
MAX_DEPTH = 32

Value: TypeAlias = "Fraction | bool | str | Mapping[str, Any]"


# ---- errors -------------------------------------------------------------------------------


class FormulaError(Exception):
    """A formula that cannot be parsed or evaluated; the message says why."""


class FormulaSyntaxError(FormulaError):
    """Not a formula of the language; `position` is the offending character's index."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} at position {position}")
        self.position = position


class FormulaLimitError(FormulaError):
    """Longer than MAX_LENGTH characters or deeper than MAX_DEPTH levels."""


class FormulaNameError(FormulaError):
    """A name the environment does not define, or an unknown function."""

    def __init__(self, name: str, *, function: bool = False) -> None:
        kind = "function" if function else "name"
        super().__init__(f"unknown {kind} {name!r}")
        self.name = name


class FormulaKeyError(FormulaError):
    """A table has no entry for the key; `where` is the key's expression ("resolution")."""

    def __init__(self, key: str, where: str, available: Sequence[str]) -> None:
        listed = ", ".join(repr(k) for k in available[:12])
        super().__init__(f"no entry {key!r} for {where} (the table has {listed})")
        self.key = key
        self.where = where
        self.available = tuple(available)


class FormulaTypeError(FormulaError):
    """An operator or function given a value of the wrong kind."""


class FormulaZeroDivisionError(FormulaError):
    """A division by zero."""


# ---- the AST ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Number:
    value: Fraction


@dataclass(frozen=True)
class String:
    value: str


@dataclass(frozen=True)
class Boolean:
    value: bool


@dataclass(frozen=True)
class Name:
    id: str


@dataclass(frozen=True)
class Unary:
    op: str  # "-", "+", "!"
    operand: Node


@dataclass(frozen=True)
class Binary:
    op: str  # + - * / == != < <= > >= && ||
    left: Node
    right: Node


@dataclass(frozen=True)
class Conditional:
    test: Node
    then: Node
    otherwise: Node


@dataclass(frozen=True)
class Index:
    target: Node
    key: Node


@dataclass(frozen=True)
class Call:
    function: str
    args: tuple[Node, ...]


Node: TypeAlias = "Number | String | Boolean | Name | Unary | Binary | Conditional | Index | Call"


def children(node: Node) -> tuple[Node, ...]:
    if isinstance(node, Unary):
        return (node.operand,)
    if isinstance(node, Binary):
        return (node.left, node.right)
    if isinstance(node, Conditional):
        return (node.test, node.then, node.otherwise)
    if isinstance(node, Index):
        return (node.target, node.key)
    if isinstance(node, Call):
        return node.args
    return ()


def walk(node: Node) -> Iterator[Node]:
    """Every node, the root first (iterative: no recursion limit to meet)."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(children(current)))


def depth(node: Node) -> int:
    deepest, stack = 0, [(node, 1)]
    while stack:
        current, level = stack.pop()
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children(current))
    return deepest


def names(node: Node) -> frozenset[str]:
    """The free names of a formula (function names excluded): its variables and tables."""
    return frozenset(n.id for n in walk(node) if isinstance(n, Name))


def unparse(node: Node) -> str:
    """The formula as text, every compound expression in parentheses: parse(unparse(n))
    is n."""
    if isinstance(node, Number):
        return _number_text(node.value)
    if isinstance(node, String):
        quote = "'" if "'" not in node.value else '"'
        return f"{quote}{node.value}{quote}"
    if isinstance(node, Boolean):
        return "true" if node.value else "false"
    if isinstance(node, Name):
        return node.id
    if isinstance(node, Unary):
        return f"({node.op}{unparse(node.operand)})"
    if isinstance(node, Binary):
        return f"({unparse(node.left)} {node.op} {unparse(node.right)})"
    if isinstance(node, Conditional):
        parts = (unparse(node.test), unparse(node.then), unparse(node.otherwise))
        return "({} ? {} : {})".format(*parts)
    if isinstance(node, Index):
        return f"{unparse(node.target)}[{unparse(node.key)}]"
    return f"{node.function}({', '.join(unparse(arg) for arg in node.args)})"


# ---- tokens -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    kind: str  # "number", "string", "name", "op", "end"
    text: str
    position: int


_TOKEN = re.compile(
    r"""(?P<space>[ \t\r\n]+)
      | (?P<number>\d+(?:\.\d+)?|\.\d+)
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<string>'[^'\n]*'|"[^"\n]*")
      | (?P<op>==|!=|<=|>=|&&|\|\||[-+*/()\[\]?:,<>!])""",
    re.VERBOSE,
)


def tokenize(text: str) -> list[Token]:
    if len(text) > MAX_LENGTH:
        raise FormulaLimitError(f"formula longer than {MAX_LENGTH} characters")
    tokens, position = [], 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise FormulaSyntaxError(f"unexpected character {text[position]!r}", position)
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append(Token(kind, match.group(), position))
        position = match.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


# ---- the parser ---------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def parse(text: str) -> Node:
    """The AST of a formula, or FormulaSyntaxError / FormulaLimitError."""
    parser = _Parser(tokenize(text))
    node = parser.expression()
    parser.expect_end()
    if depth(node) > MAX_DEPTH:
        raise FormulaLimitError(f"formula nested deeper than {MAX_DEPTH} levels")
    return node


_EQUALITY = ("==", "!=")
_RELATION = ("<", "<=", ">", ">=")


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.at = 0
        self.nesting = 0  # recursion through expression() and unary(): bounded

    @property
    def token(self) -> Token:
        return self.tokens[self.at]

    def take(self) -> Token:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def accept(self, *ops: str) -> str | None:
        if self.token.kind == "op" and self.token.text in ops:
            return self.take().text
        return None

    def expect(self, op: str) -> None:
        if self.accept(op) is None:
            raise FormulaSyntaxError(f"expected {op!r}, found {self._found()}", self.token.position)

    def expect_end(self) -> None:
        if self.token.kind != "end":
            raise FormulaSyntaxError(f"unexpected {self._found()}", self.token.position)

    def _found(self) -> str:
        return "the end" if self.token.kind == "end" else repr(self.token.text)

    def _enter(self) -> None:
        self.nesting += 1
        if self.nesting > MAX_DEPTH:
            raise FormulaLimitError(f"formula nested deeper than {MAX_DEPTH} levels")

    def expression(self) -> Node:
        self._enter()
        try:
            return self.ternary()
        finally:
            self.nesting -= 1

    def ternary(self) -> Node:
        test = self.binary(0)
        if self.accept("?") is None:
            return test
        then = self.expression()
        self.expect(":")
        return Conditional(test, then, self.expression())

    # Binary levels, loosest first; each is left-associative.
    LEVELS: tuple[tuple[str, ...], ...] = (("||",), ("&&",), _EQUALITY, _RELATION, ("+", "-"))

    def binary(self, level: int) -> Node:
        if level == len(self.LEVELS):
            return self.product()
        left = self.binary(level + 1)
        while (op := self.accept(*self.LEVELS[level])) is not None:
            left = Binary(op, left, self.binary(level + 1))
        return left

    def product(self) -> Node:
        left = self.unary()
        while (op := self.accept("*", "/")) is not None:
            left = Binary(op, left, self.unary())
        return left

    def unary(self) -> Node:
        op = self.accept("-", "+", "!")
        if op is None:
            return self.postfix()
        self._enter()
        try:
            return Unary(op, self.unary())
        finally:
            self.nesting -= 1

    def postfix(self) -> Node:
        node = self.primary()
        while self.accept("[") is not None:
            key = self.expression()
            self.expect("]")
            node = Index(node, key)
        return node

    def primary(self) -> Node:
        token = self.token
        if token.kind == "number":
            self.take()
            return Number(Fraction(token.text))
        if token.kind == "string":
            self.take()
            return String(token.text[1:-1])
        if token.kind == "name":
            self.take()
            if token.text in ("true", "false"):
                return Boolean(token.text == "true")
            if self.accept("(") is not None:
                return Call(token.text, self.arguments())
            return Name(token.text)
        if self.accept("(") is not None:
            node = self.expression()
            self.expect(")")
            return node
        raise FormulaSyntaxError(f"expected a value, found {self._found()}", token.position)

    def arguments(self) -> tuple[Node, ...]:
        args: list[Node] = []
        if self.accept(")") is not None:
            return ()
        while True:
            args.append(self.expression())
            if self.accept(")") is not None:
                return tuple(args)
            self.expect(",")


# ---- values -------------------------------------------------------------------------------


def to_value(raw: Any) -> Value:
    """A JSON value as a formula value: numbers exact (0.1 is 1/10), objects as tables.
    null, arrays and non-finite numbers have no formula value: FormulaTypeError."""
    if isinstance(raw, bool | str | Fraction):
        return raw
    if isinstance(raw, int):
        return Fraction(raw)
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise FormulaTypeError(f"{raw!r} is not a finite number")
        return Fraction(repr(raw))
    if isinstance(raw, Mapping):
        return raw
    raise FormulaTypeError(f"a {kind_of(raw)} has no value in a formula")


def kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | Fraction):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "table"
    if value is None:
        return "null"
    return "list" if isinstance(value, list | tuple) else type(value).__name__


def key_texts(key: Value) -> tuple[str, ...]:
    """How a table may spell `key`: the first is the canonical spelling."""
    if isinstance(key, bool):
        return ("true" if key else "false",)
    if isinstance(key, Fraction):
        text = _number_text(key)
        return (text, f"{text}.0") if key.denominator == 1 else (text,)
    if isinstance(key, str):
        return (key,)
    raise FormulaTypeError("a table cannot be a table key")


def _number_text(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    decimal = Decimal(value.numerator) / Decimal(value.denominator)
    text = format(decimal.normalize(), "f")
    return text


# ---- evaluation ---------------------------------------------------------------------------


def _number(value: Value, what: str) -> Fraction:
    if isinstance(value, Fraction):
        return value
    raise FormulaTypeError(f"{what} needs a number, not a {kind_of(value)}")


def _boolean(value: Value, what: str) -> bool:
    if isinstance(value, bool):
        return value
    raise FormulaTypeError(f"{what} needs a boolean, not a {kind_of(value)}")


def _ceil(args: list[Fraction]) -> Fraction:
    return Fraction(math.ceil(args[0]))


def _floor(args: list[Fraction]) -> Fraction:
    return Fraction(math.floor(args[0]))


def _min(args: list[Fraction]) -> Fraction:
    return min(args)


def _max(args: list[Fraction]) -> Fraction:
    return max(args)


# name: (fewest arguments, most arguments or None, implementation)
FUNCTIONS: dict[str, tuple[int, int | None, Callable[[list[Fraction]], Fraction]]] = {
    "ceil": (1, 1, _ceil),
    "floor": (1, 1, _floor),
    "min": (1, None, _min),
    "max": (1, None, _max),
}


def evaluate(node: Node, env: Mapping[str, Any], *, short_tables: bool = False) -> Value:
    """The value of a parsed formula. `env` maps names to values (JSON values are taken
    as `to_value` says); a name it lacks (KeyError) is a FormulaNameError, any other
    exception it raises passes through. Only the branch a `?:` takes, and only the side
    of `&&`/`||` needed, is evaluated.

    `short_tables`: a lookup into a number is that number (a table with fewer levels on
    one branch: PoYo's omni-flash prices a video input flat, whatever the duration); the
    key is then not evaluated. Without it, such a lookup is a FormulaTypeError."""
    return _Evaluator(env, short_tables).value(node)


def evaluate_text(text: str, env: Mapping[str, Any], *, short_tables: bool = False) -> Value:
    return evaluate(parse(text), env, short_tables=short_tables)


class _Evaluator:
    def __init__(self, env: Mapping[str, Any], short_tables: bool) -> None:
        self.env = env
        self.short_tables = short_tables

    def value(self, node: Node) -> Value:
        if isinstance(node, Number | String | Boolean):
            return node.value
        if isinstance(node, Name):
            try:
                raw = self.env[node.id]
            except KeyError:
                raise FormulaNameError(node.id) from None
            return to_value(raw)
        if isinstance(node, Unary):
            operand = self.value(node.operand)
            if node.op == "!":
                return not _boolean(operand, "'!'")
            number = _number(operand, f"unary {node.op!r}")
            return -number if node.op == "-" else number
        if isinstance(node, Binary):
            return self.binary(node)
        if isinstance(node, Conditional):
            test = _boolean(self.value(node.test), "the condition of '?'")
            return self.value(node.then if test else node.otherwise)
        if isinstance(node, Index):
            return self.index(node)
        return self.call(node)

    def binary(self, node: Binary) -> Value:
        op = node.op
        if op in ("&&", "||"):
            first = _boolean(self.value(node.left), repr(op))
            if (op == "&&" and not first) or (op == "||" and first):
                return first
            return _boolean(self.value(node.right), repr(op))
        left_value, right_value = self.value(node.left), self.value(node.right)
        if op in _EQUALITY:
            if kind_of(left_value) != kind_of(right_value) or isinstance(left_value, Mapping):
                raise FormulaTypeError(
                    f"{op!r} compares two numbers, strings or booleans, "
                    f"not a {kind_of(left_value)} and a {kind_of(right_value)}"
                )
            return (left_value == right_value) == (op == "==")
        left = _number(left_value, repr(op))
        right = _number(right_value, repr(op))
        if op == "+":
            return left + right
        if op == "-":
            return left - right
        if op == "*":
            return left * right
        if op == "/":
            if right == 0:
                raise FormulaZeroDivisionError("division by zero")
            return left / right
        return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]

    def index(self, node: Index) -> Value:
        target = self.value(node.target)
        if isinstance(target, Fraction) and self.short_tables:
            return target
        if not isinstance(target, Mapping):
            raise FormulaTypeError(f"a lookup needs a table, not a {kind_of(target)}")
        spellings = key_texts(self.value(node.key))
        for spelling in spellings:
            if spelling in target:
                found = target[spelling]
                if found is None:
                    break
                return to_value(found)
        raise FormulaKeyError(spellings[0], unparse(node.key), [str(k) for k in target])

    def call(self, node: Call) -> Value:
        spec = FUNCTIONS.get(node.function)
        if spec is None:
            raise FormulaNameError(node.function, function=True)
        fewest, most, implementation = spec
        count = len(node.args)
        if count < fewest or (most is not None and count > most):
            wanted = str(fewest) if most == fewest else f"at least {fewest}"
            raise FormulaTypeError(f"{node.function}() takes {wanted} argument(s), not {count}")
        args = [_number(self.value(arg), f"{node.function}()") for arg in node.args]
        return implementation(args)
