"""The input schema poyo-relay enforces: PoYo's own, made exact where PoYo leaves it open.
Pure; every change is listed in docs/CATALOG.md ("What poyo-relay adds").

- Unknown fields are refused: a typo must not cost credits. `additionalProperties: false`
  on every object that lists its properties and does not say otherwise, and on the input
  itself even where PoYo's schema allows more (6 models; a field PoYo adds to their
  schema is accepted once the catalog in use has it).
- A required string must not be blank.
- `nullable: true` (OpenAPI's spelling) becomes a `null` in the type.
- An input the billing rule reads but the schema forgot is added, its values the billing
  table's keys: PoYo bills `gpt-image-1*-official` by `quality`, which their schemas omit.
  Only names in UNDECLARED_INPUTS: the other variables of PoYo's formulas are derived or
  measured by PoYo (`resolution_group`, `texture_mode`, …) or another name for a declared
  field (`size` is `aspect_ratio` in wan2.5-text-to-video), not inputs.

- A `format: uri` string must be an http(s) URL with a host, at most 2,048 characters: a
  `pattern` and `maxLength` say so in the schema itself, so that a client validating
  with the published schema agrees with poyo-relay (app/urls.py).
"""

from __future__ import annotations

import copy
import re
from typing import Any

from app.catalog.document import Entry, JsonObject
from app.urls import HTTP_URL_PATTERN, MAX_URL_CHARS

NOT_BLANK = r"\S"
UNDECLARED_INPUTS = frozenset({"quality"})
_BILLED_BY = re.compile(r"(\w+)\[(\w+)\]")
_BRANCHES = ("oneOf", "anyOf", "allOf")


def strict_schema(entry: Entry) -> JsonObject:
    schema = copy.deepcopy(entry.input_schema)
    _add_billed_fields(schema, entry.billing or {})
    if isinstance(schema.get("properties"), dict):
        schema["additionalProperties"] = False
    _tighten(schema)
    return schema


def _tighten(schema: Any) -> None:
    if not isinstance(schema, dict):
        return
    if schema.pop("nullable", False) is True and isinstance(schema.get("type"), str):
        schema["type"] = [schema["type"], "null"]
        if isinstance(schema.get("enum"), list) and None not in schema["enum"]:
            schema["enum"] = [*schema["enum"], None]
    if schema.get("format") == "uri":
        _add_pattern(schema, HTTP_URL_PATTERN)
        schema["maxLength"] = min(schema.get("maxLength", MAX_URL_CHARS), MAX_URL_CHARS)
    properties = schema.get("properties")
    if isinstance(properties, dict):
        schema.setdefault("additionalProperties", False)
        for name in schema.get("required", []):
            field = properties.get(name)
            if isinstance(field, dict) and field.get("type") == "string":
                _not_blank(field)
        for field in properties.values():
            _tighten(field)
    for key in ("items", "not", "additionalProperties"):
        _tighten(schema.get(key))
    for key in _BRANCHES:
        for branch in schema.get(key, []):
            _tighten(branch)


def _not_blank(field: JsonObject) -> None:
    _add_pattern(field, NOT_BLANK)


def _add_pattern(field: JsonObject, pattern: str) -> None:
    if "pattern" not in field:
        field["pattern"] = pattern
    else:
        field.setdefault("allOf", []).append({"pattern": pattern})


def _add_billed_fields(schema: JsonObject, billing: JsonObject) -> None:
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return
    for table, name in _BILLED_BY.findall(str(billing.get("formula") or "")):
        prices = billing.get(table)
        if name in UNDECLARED_INPUTS and name not in properties and isinstance(prices, dict):
            properties[name] = {
                "type": "string",
                "enum": sorted(prices),
                "description": f"Billed by this field ({table}); not in PoYo's schema",
            }
