"""The dashboard's "new job" form, generated from a model's input JSON Schema. Pure: schema ->
field descriptions (for the templates), submitted form -> the job's JSON `input`, and the
API's 422 details -> messages per field.

The form only gets the input into shape (types, lists, JSON); whether it is a valid input is
the catalog's call (`Catalog.problems`), whose details `field_errors` places on the form.
A field left empty is omitted, so the schema's default applies and a missing required field
is reported once, by the catalog.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

MAX_VALUE_CHARS = 100_000  # one form value; longer ones are refused before any parsing

_TEXTAREA_MIN_LENGTH = 200  # a string allowed more than this is prose: give it room
_PROSE_NAMES = ("prompt", "text", "lyrics")
# What `<input type=number>` submits, in ASCII only: Python's int() and float() would also
# take "1_000", "nan", "inf" and other scripts' digits, none of which a JSON input may carry.
_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


class FieldKind(StrEnum):
    SELECT = "select"  # enum (string or integer or number): <select>
    TEXT = "text"  # short string: <input type=text>
    TEXTAREA = "textarea"  # prose (prompts, lyrics, long strings)
    URL = "url"  # string, format uri: <input type=url>
    URL_LIST = "url_list"  # array of strings (URLs or not): textarea, one per line
    INTEGER = "integer"  # <input type=number step=1>
    NUMBER = "number"  # <input type=number step=any>
    BOOLEAN = "boolean"  # <select> "true"/"false", plus "" when optional
    JSON = "json"  # anything else (objects, arrays of objects, untyped): textarea of JSON


@dataclass(frozen=True)
class FormField:
    name: str
    kind: FieldKind
    label: str  # name humanized: "image_urls" -> "Image urls"
    description: str  # from the schema ("" if none)
    required: bool
    options: tuple[str, ...]  # SELECT/BOOLEAN: the values as text, in enum order
    minimum: str | None  # INTEGER/NUMBER: as text for the HTML attribute
    maximum: str | None
    max_length: int | None  # strings; URL_LIST: each line's
    max_items: int | None  # URL_LIST / JSON arrays
    default: str  # the schema's default as form text, else ""
    # SELECT: the enum's typed values, parallel to `options` (5 where options has "5"), so
    # that parse_form gives back what the schema lists: integer enums take ints.
    values: tuple[Any, ...] = ()


def form_fields(schema: Mapping[str, Any]) -> list[FormField]:
    """One field per property: the required ones first, each group in schema order."""
    properties: Mapping[str, Any] = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    fields = [_field(name, prop, name in required) for name, prop in properties.items()]
    return sorted(fields, key=lambda field: not field.required)  # sorted() is stable


def _field(name: str, prop: Mapping[str, Any], required: bool) -> FormField:
    kind = _kind(name, prop)
    values: tuple[Any, ...] = ()
    options: tuple[str, ...] = ()
    if kind is FieldKind.SELECT:
        # "" and null cannot be told from "left empty": the empty choice stands for them
        # (it omits the field; in the snapshot, meshy-6's `pose_mode` defaults to "").
        values = tuple(v for v in prop["enum"] if v is not None and v != "")
        options = tuple(_text(v) for v in values)
    elif kind is FieldKind.BOOLEAN:
        options = ("true", "false")
    numeric = kind in (FieldKind.INTEGER, FieldKind.NUMBER)
    default = prop.get("default")
    return FormField(
        name=name,
        kind=kind,
        label=_label(name),
        description=str(prop.get("description") or ""),
        required=required,
        options=options,
        minimum=_text(prop["minimum"]) if numeric and "minimum" in prop else None,
        maximum=_text(prop["maximum"]) if numeric and "maximum" in prop else None,
        max_length=(_items(prop) if kind is FieldKind.URL_LIST else prop).get("maxLength"),
        max_items=prop.get("maxItems"),
        default="" if default is None else _form_text(kind, default),
        values=values,
    )


def _kind(name: str, prop: Mapping[str, Any]) -> FieldKind:
    kind = _type_of(prop)
    if isinstance(prop.get("enum"), list) and all(_is_option(v) for v in prop["enum"]):
        return FieldKind.SELECT
    if kind == "string":
        if prop.get("format") == "uri":
            return FieldKind.URL
        long = prop.get("maxLength", 0) > _TEXTAREA_MIN_LENGTH
        if long or any(word in name.lower() for word in _PROSE_NAMES):
            return FieldKind.TEXTAREA
        return FieldKind.TEXT
    if kind == "array" and _type_of(_items(prop)) == "string":
        return FieldKind.URL_LIST
    if kind == "integer":
        return FieldKind.INTEGER
    if kind == "number":
        return FieldKind.NUMBER
    if kind == "boolean":
        return FieldKind.BOOLEAN
    return FieldKind.JSON


def _type_of(prop: Mapping[str, Any]) -> str | None:
    """The schema's type, reading ["string", "null"] as "string": a form cannot send null
    (an empty field is omitted instead)."""
    kind = prop.get("type")
    if isinstance(kind, list):
        non_null = [k for k in kind if k != "null"]
        return non_null[0] if len(non_null) == 1 else None
    return kind if isinstance(kind, str) else None


def _items(prop: Mapping[str, Any]) -> Mapping[str, Any]:
    items = prop.get("items")
    return items if isinstance(items, Mapping) else {}


def _is_option(value: Any) -> bool:
    return value is None or (isinstance(value, str | int | float) and not isinstance(value, bool))


def _label(name: str) -> str:
    words = name.replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def _form_text(kind: FieldKind, value: Any) -> str:
    """A value as the text its field shows (and a browser would submit)."""
    if kind is FieldKind.JSON:
        return json.dumps(value, ensure_ascii=False)
    if kind is FieldKind.URL_LIST and isinstance(value, list):
        return "\n".join(_text(item) for item in value)
    return _text(value)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return repr(value)  # repr(0.1) == "0.1": the shortest text that reads back the same
    return json.dumps(value, ensure_ascii=False)


def parse_form(
    fields: Sequence[FormField], form: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The job's input from the submitted form, and what could not be read, by field name.
    Empty (or blank) values are left out; keys that are not fields (csrf, model) ignored."""
    data: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for field in fields:
        text = form.get(field.name, "")
        if len(text) > MAX_VALUE_CHARS:
            errors[field.name] = f"too long: at most {MAX_VALUE_CHARS:,} characters"
            continue
        if not text.strip():
            continue
        try:
            data[field.name] = _parse(field, text)
        except ValueError as error:
            errors[field.name] = str(error)
    return data, errors


def _parse(field: FormField, text: str) -> Any:
    """The typed value of one non-blank form value, or ValueError with the message to show."""
    kind = field.kind
    if kind is FieldKind.TEXT:
        return text
    if kind is FieldKind.TEXTAREA:
        return text.replace("\r\n", "\n")  # browsers submit a textarea's newlines as CRLF
    if kind is FieldKind.URL:
        return text.strip()
    if kind is FieldKind.URL_LIST:
        return [line.strip() for line in text.splitlines() if line.strip()]
    if kind is FieldKind.SELECT:
        if text.strip() not in field.options:
            raise ValueError("must be one of the options")
        return field.values[field.options.index(text.strip())]
    if kind is FieldKind.BOOLEAN:
        if text.strip() not in ("true", "false"):
            raise ValueError("must be true or false")
        return text.strip() == "true"
    if kind is FieldKind.INTEGER:
        if not _INTEGER.fullmatch(text.strip()):
            raise ValueError("must be a whole number")
        return _integer(text.strip())
    if kind is FieldKind.NUMBER:
        return _number(text.strip())
    return _json(text)


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # Python refuses to convert more than 4,300 digits
        raise ValueError("too large a number") from None


def _number(text: str) -> int | float:
    if _INTEGER.fullmatch(text):
        return _integer(text)  # "5" stays 5, as a JSON client would send it
    if not _NUMBER.fullmatch(text) or not math.isfinite(number := float(text)):
        raise ValueError("must be a number")
    return number


def _json(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno}, column {error.colno}"
        raise ValueError(f"not valid JSON: {error.msg} ({where})") from None
    except RecursionError:
        raise ValueError("not valid JSON: nested too deeply") from None


def _no_constant(name: str) -> Any:
    # NaN and Infinity are Python's extension, not JSON: the API would refuse the body.
    raise ValueError(f"not valid JSON: {name} is not a JSON value")


def field_errors(details: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """The API's 422 details as messages by field name, in order: a detail located in
    ["body", "input", <name>, ...] goes to <name>; any other (the input as a whole, the
    model, …) to "", shown at the top of the form."""
    messages: dict[str, list[str]] = {}
    for detail in details:
        loc = detail.get("loc")
        key = ""
        if isinstance(loc, list | tuple) and len(loc) > 2 and list(loc[:2]) == ["body", "input"]:
            key = str(loc[2])
        messages.setdefault(key, []).append(str(detail.get("msg", "")))
    return messages
