"""A catalog ready to validate: each generate model's strict schema compiled once (with
jsonschema-rs), its family rules, and an example that passes both. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema_rs

from app.catalog import rules as family_rules
from app.catalog.document import GENERATE, Document, Entry, JsonObject, version_of
from app.catalog.rules import Rule
from app.catalog.strict import NOT_BLANK, strict_schema
from app.errors import TYPE_NAMES, ErrorItem, InvalidRequest, is_of_type, json_type, type_mismatch
from app.urls import HTTP_URL_PATTERN

MASK = "the value"  # messages never echo the input (large or secret): app.errors.type_mismatch


@dataclass(frozen=True)
class ModelSpec:
    entry: Entry
    schema: JsonObject  # what poyo-relay enforces (app/catalog/strict.py)
    validator: Any  # jsonschema_rs's compiled validator
    example: JsonObject | None  # the first of PoYo's examples this model accepts

    @property
    def id(self) -> str:
        return self.entry.model_id


def compile_schema(schema: JsonObject) -> Any:
    # `format: uri` fields carry HTTP_URL_PATTERN (app/catalog/strict.py): checking the
    # format too would report each bad URL twice. Other formats are checked as standard.
    return jsonschema_rs.validator_for(
        schema, formats={"uri": _any_string}, validate_formats=True, mask=MASK
    )


def _any_string(_value: str) -> bool:
    return True


def schema_problems(validator: Any, data: Any) -> list[ErrorItem]:
    errors = list(validator.iter_errors(data))
    # A value of the wrong type fails its subschema's `type` and its `enum` (or `const`)
    # alike: one problem, which says the type sent, the type expected and the values.
    options: dict[tuple[Any, ...], list[Any]] = {}
    typed: set[tuple[Any, ...]] = set()
    for error in errors:
        if error.kind.name == "enum":
            options[_subschema(error)] = list(error.kind.options)
        elif error.kind.name == "const":
            options[_subschema(error)] = [error.kind.expected_value]
        elif error.kind.name == "type":
            typed.add(_subschema(error))
    problems: list[ErrorItem] = []
    for error in errors:
        loc = ["body", "input", *(str(part) for part in error.instance_path)]
        kind = error.kind
        if kind.name == "additionalProperties":
            problems += [
                ErrorItem(loc=[*loc, str(key)], msg="unknown field", type="additionalProperties")
                for key in kind.unexpected
            ]
            continue
        message, kind_name = error.message.removeprefix(f"{MASK} "), kind.name
        if kind.name == "required":
            loc.append(str(kind.property))
            message = "field required"
        elif kind.name == "type":
            allowed = options.get(_subschema(error), [])
            message = type_mismatch(error.instance, kind.types, allowed)
        elif kind.name in ("enum", "const"):
            if _subschema(error) in typed:
                continue  # said by the type error
            allowed = options[_subschema(error)]
            expected = _types_of(allowed)
            if not any(is_of_type(error.instance, name) for name in expected):
                message, kind_name = type_mismatch(error.instance, expected, allowed), "type"
        elif kind.name == "pattern" and kind.pattern == NOT_BLANK:
            message = "must not be blank"
        elif kind.name == "pattern" and kind.pattern == HTTP_URL_PATTERN:
            message, kind_name = "must be an http(s) URL with a host and no spaces", "url"
        problems.append(ErrorItem(loc=loc, msg=message, type=kind_name))
    return problems


def _subschema(error: Any) -> tuple[Any, ...]:
    """The value and the subschema an error is about (its keyword's parent)."""
    return (tuple(error.instance_path), tuple(error.schema_path)[:-1])


def _types_of(values: list[Any]) -> list[str]:
    """The JSON types of `values`, each once ("number" takes "integer" in)."""
    found = {json_type(value) for value in values}
    if "number" in found:
        found.discard("integer")
    return [name for name in TYPE_NAMES if name in found]


def input_problems(
    model_id: str, validator: Any, data: Any, rules: Sequence[Rule] = family_rules.RULES
) -> list[ErrorItem]:
    """What is wrong with `data` as the input of `model_id`: its schema first, then (if the
    schema holds) the family rules. The service and the command line both ask this."""
    return schema_problems(validator, data) or family_rules.check(model_id, data, rules)


class Catalog:
    """The models of one catalog version; `validate()` is what POST /v1/jobs calls."""

    def __init__(
        self,
        document: Document,
        *,
        retired: Iterable[str] = (),
        rules: Sequence[Rule] = family_rules.RULES,
    ) -> None:
        self.version = version_of(document)
        self.rules = rules
        self.chat = {e.model_id for e in document.items if e.service_type != GENERATE}
        self.models: dict[str, ModelSpec] = {}
        for entry in document.items:
            if entry.service_type == GENERATE:
                self.models[entry.model_id] = self._spec(entry)
        self.retired = set(retired) - self.models.keys() - self.chat

    def _spec(self, entry: Entry) -> ModelSpec:
        schema = strict_schema(entry)
        validator = compile_schema(schema)
        example = next(
            (
                example
                for example in entry.examples
                if not input_problems(entry.model_id, validator, example, self.rules)
            ),
            None,
        )
        return ModelSpec(entry, schema, validator, example)

    def spec(self, model_id: str) -> ModelSpec:
        """The model, or a 422 saying why there is none: unknown, dropped, or chat."""
        spec = self.models.get(model_id)
        if spec is not None:
            return spec
        if model_id in self.chat:
            reason = (
                f"{model_id!r} is a chat model, which PoYo answers synchronously; "
                "poyo-relay brokers asynchronous generation jobs only"
            )
        elif model_id in self.retired:
            reason = f"{model_id!r} is no longer offered by PoYo (catalog {self.version})"
        else:
            reason = f"unknown model {model_id!r}: GET /v1/models lists them"
        detail = ErrorItem(loc=["body", "model"], msg=reason, type="model")
        raise InvalidRequest(reason, details=[detail])

    def problems(self, model_id: str, data: Any) -> list[ErrorItem]:
        """What is wrong with `data` as the input of `model_id` (input_problems)."""
        spec = self.spec(model_id)
        if not isinstance(data, dict):
            return [ErrorItem(loc=["body", "input"], msg="must be an object", type="type")]
        return input_problems(model_id, spec.validator, data, self.rules)

    def validate(self, model_id: str, data: Any) -> None:
        """Nothing, or a 422 listing every problem, each pointing at its field."""
        problems = self.problems(model_id, data)
        if problems:
            # The message names the first problem: a client that shows only the message
            # still says what to fix.
            first = problems[0]
            message = f"invalid input for model {model_id}: {'.'.join(first['loc'][1:])}: "
            message += first["msg"]
            if len(problems) > 1:
                more = len(problems) - 1
                message += f" (and {more} more problem{'s' if more > 1 else ''}: see details)"
            raise InvalidRequest(message, details=problems)

    def search(self, *, category: str | None = None, text: str | None = None) -> list[ModelSpec]:
        """Generate models, by category and/or words in their id, title, description, tags."""
        words = (text or "").lower().split()
        found = []
        for spec in self.models.values():
            entry = spec.entry
            if category is not None and entry.category != category:
                continue
            haystack = " ".join([entry.model_id, entry.title, entry.description, *entry.tags])
            if all(word in haystack.lower() for word in words):
                found.append(spec)
        return found
