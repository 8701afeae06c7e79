"""Inputs derived from a model's catalog entry alone, valid and invalid, for
tests/test_every_model.py. Pure.

Valid: the catalog's example (the first one the model accepts), then the example with each
allowed enum value in turn. Invalid, each from the example with one thing broken: a
required field removed, an enum value that is not allowed, each length, bound and array
size passed by one, a value of the wrong type (the string "5" for a number, "true" for a
boolean: no coercion), an unknown field.

`python -m tests.derive` prints the counts per kind.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

from app.catalog.compiled import Catalog, ModelSpec
from app.catalog.document import JsonObject, load_snapshot

URL = "https://example.com/derived.png"


@dataclass(frozen=True)
class Case:
    model: str
    kind: str  # "example", "enum", "required", "enum-broken", "bound", "type", "unknown"
    label: str  # what was changed, for messages
    input: JsonObject
    field: str | None = None  # the input field a refusal must point at


def types_of(field: JsonObject) -> set[str]:
    kind = field.get("type")
    if isinstance(kind, str):
        return {kind}
    return {k for k in kind if isinstance(k, str)} if isinstance(kind, list) else set()


def properties(spec: ModelSpec) -> dict[str, JsonObject]:
    found = spec.schema.get("properties") or {}
    return {name: f for name, f in found.items() if isinstance(f, dict)}


def with_field(example: JsonObject, name: str, value: Any) -> JsonObject:
    return {**example, name: value}


def valid_cases(spec: ModelSpec) -> list[Case]:
    assert spec.example is not None, f"{spec.id}: no example of the catalog is accepted"
    cases = [Case(spec.id, "example", "the catalog's example", spec.example)]
    for name, field in properties(spec).items():
        for value in field.get("enum") or []:
            if spec.example.get(name) != value:
                changed = with_field(spec.example, name, value)
                cases.append(Case(spec.id, "enum", f"{name}={value!r}", changed, name))
        items = field.get("items")
        if isinstance(items, dict) and isinstance(items.get("enum"), list):
            for value in items["enum"]:
                changed = with_field(spec.example, name, [value])
                cases.append(Case(spec.id, "enum", f"{name}=[{value!r}]", changed, name))
    return cases


def invalid_cases(spec: ModelSpec) -> list[Case]:
    example = spec.example
    assert example is not None
    cases: list[Case] = []

    def add(kind: str, label: str, data: JsonObject, field: str) -> None:
        cases.append(Case(spec.id, kind, label, data, field))

    for name in spec.schema.get("required", []):
        rest = {key: value for key, value in example.items() if key != name}
        add("required", f"without {name}", rest, name)
    for name, field in properties(spec).items():
        for label, value in broken_values(field, example.get(name)):
            kind = "enum-broken" if label.startswith("enum") else "bound"
            kind = "type" if label.startswith("type") else kind
            add(kind, f"{name}: {label}", with_field(example, name, value), name)
    add("unknown", "an unknown field", with_field(example, "colour_typo", "red"), "colour_typo")
    return cases


def broken_values(field: JsonObject, current: Any) -> list[tuple[str, Any]]:
    """(label, value) pairs that `field` must refuse."""
    broken: list[tuple[str, Any]] = []
    enum = field.get("enum")
    if isinstance(enum, list):
        outsider: Any = "not-an-allowed-value"
        numbers = [v for v in enum if isinstance(v, int | float) and not isinstance(v, bool)]
        if numbers:
            outsider = max(numbers) + 1
        broken.append(("enum: a value not allowed", outsider))
    broken += _bounds(field, current)
    wrong = _wrong_type(types_of(field))
    if wrong is not _NONE:
        broken.append(("type: the wrong type", wrong))
    return broken


def _bounds(field: JsonObject, current: Any) -> list[tuple[str, Any]]:
    kinds = types_of(field)
    found: list[tuple[str, Any]] = []
    if kinds & {"integer", "number"}:
        step = 1 if "integer" in kinds else 0.5
        for key, sign in (("minimum", -1), ("maximum", 1)):
            if isinstance(field.get(key), int | float):
                found.append((f"{key} passed", field[key] + sign * step))
        for key in ("exclusiveMinimum", "exclusiveMaximum"):
            if isinstance(field.get(key), int | float):
                found.append((f"{key} reached", field[key]))
    if "string" in kinds:
        if isinstance(field.get("maxLength"), int):
            found.append(("maxLength passed", "x" * (field["maxLength"] + 1)))
        if field.get("minLength", 0) > 1:
            found.append(("minLength not reached", "x" * (field["minLength"] - 1)))
    if "array" in kinds:
        item = _an_item(field, current)
        if isinstance(field.get("maxItems"), int):
            found.append(("maxItems passed", [item] * (field["maxItems"] + 1)))
        if field.get("minItems", 0) > 0:
            found.append(("minItems not reached", [item] * (field["minItems"] - 1)))
    return found


def _an_item(field: JsonObject, current: Any) -> Any:
    if isinstance(current, list) and current:
        return current[0]
    items = field.get("items") if isinstance(field.get("items"), dict) else {}
    assert isinstance(items, dict)
    if isinstance(items.get("enum"), list) and items["enum"]:
        return items["enum"][0]
    kinds = types_of(items)
    if "integer" in kinds or "number" in kinds:
        return items.get("minimum", 1)
    return URL if items.get("format") == "uri" or not kinds or "string" in kinds else {}


_NONE = object()
# A value of each JSON type that another type must not accept, starting with the coercions
# a lenient validator would allow.
_WRONG = [
    ({"integer", "number"}, "5"),
    ({"boolean"}, "true"),
    ({"string"}, 5),
    ({"array"}, URL),
    ({"object"}, "x"),
]


def _wrong_type(allowed: set[str]) -> Any:
    if not allowed:
        return _NONE
    for kinds, value in _WRONG:
        if allowed & kinds and not _accepts(allowed, value):
            return value
    return _NONE


def _accepts(allowed: set[str], value: Any) -> bool:
    if isinstance(value, str):
        return "string" in allowed
    if isinstance(value, bool):
        return "boolean" in allowed
    if isinstance(value, int):
        return bool(allowed & {"integer", "number"})
    return False


def every_case(catalog: Catalog) -> tuple[list[Case], list[Case]]:
    valid: list[Case] = []
    invalid: list[Case] = []
    for spec in catalog.models.values():
        valid += valid_cases(spec)
        invalid += invalid_cases(spec)
    return valid, invalid


if __name__ == "__main__":
    catalog = Catalog(load_snapshot())
    valid, invalid = every_case(catalog)
    print(f"{len(catalog.models)} models: {len(valid)} valid inputs, {len(invalid)} invalid")
    for name, cases in (("valid", valid), ("invalid", invalid)):
        counts = collections.Counter(case.kind for case in cases)
        print(f"  {name}: " + ", ".join(f"{kind} {n}" for kind, n in counts.most_common()))
