"""A job's input from the command line: `--input JSON` and `field=value` pairs, typed by the
model's JSON Schema (`duration=5` is the integer 5 when the schema says integer; a string
field keeps "5"). Pure: no I/O.

- `field=value`: the value typed by the field's schema; an array field collects repeated
  pairs (`image_urls=a image_urls=b`) or takes a JSON array (`image_urls='["a","b"]'`).
- `field:=json`: the value as JSON, whatever the schema says (`seed:=7`, `flag:=null`).

A value that does not fit its type stays a string, so that validation names the field and
what it expects.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.catalog.document import JsonObject


class InputError(ValueError):
    """A pair or --input that cannot be read; the message says which and why."""


def parse_object(text: str, *, what: str) -> JsonObject:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{what} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InputError(f"{what} must be a JSON object")
    return value


def apply_pairs(base: JsonObject, pairs: list[str], schema: JsonObject) -> JsonObject:
    """`base` with each pair set on it, in order."""
    properties = schema.get("properties")
    fields: dict[str, Any] = properties if isinstance(properties, dict) else {}
    result = dict(base)
    from_pairs: set[str] = set()
    for pair in pairs:
        name, raw_json, text = _split(pair)
        if raw_json:
            try:
                result[name] = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise InputError(f"{name}:= needs a JSON value: {exc}") from None
            continue
        field = fields.get(name)
        field = field if isinstance(field, dict) else {}
        if "array" in _types(field) and not text.lstrip().startswith("["):
            item = field.get("items")
            value = typed(text, item if isinstance(item, dict) else {})
            current = result.get(name) if name in from_pairs else None
            result[name] = [*current, value] if isinstance(current, list) else [value]
        else:
            result[name] = typed(text, field)
        from_pairs.add(name)
    return result


def _split(pair: str) -> tuple[str, bool, str]:
    name, equals, text = pair.partition("=")
    raw_json = name.endswith(":")
    name = name.removesuffix(":")
    if not equals or not name:
        raise InputError(f"{pair!r} is not field=value (or field:=json)")
    return name, raw_json, text


def typed(text: str, field: JsonObject) -> Any:
    """`text` as the type `field` declares (string first, when it allows one)."""
    enum = field.get("enum")
    if isinstance(enum, list):
        for allowed in enum:
            if allowed is not None and _spelled(allowed) == text:
                return allowed
    types = _types(field)
    if not types or "string" in types:
        return text
    for kind in types:
        value = _as(kind, text)
        if value is not _NOT:
            return value
    return text


_NOT = object()
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "integer": (int,),
    "number": (int, float),
    "array": (list,),
    "object": (dict,),
}


def _as(kind: str, text: str) -> Any:
    if kind == "boolean":
        return {"true": True, "false": False}.get(text, _NOT)
    if kind == "null":
        return None if text == "null" else _NOT
    if kind in _JSON_TYPES:
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            return _NOT
        wanted = _JSON_TYPES[kind]
        if isinstance(value, wanted) and not isinstance(value, bool):
            return value
    return _NOT


def _types(field: JsonObject) -> list[str]:
    kind = field.get("type")
    if isinstance(kind, str):
        return [kind]
    return [k for k in kind if isinstance(k, str)] if isinstance(kind, list) else []


def _spelled(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()
