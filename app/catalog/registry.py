"""The registry: look a model up, validate its input, publish its JSON Schema."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from app.catalog.fields import ModelInput
from app.errors import ErrorItem, InvalidRequest, validation_details


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    input_schema: type[ModelInput]

    def json_schema(self) -> dict[str, Any]:
        return self.input_schema.model_json_schema()

    def validate_input(self, raw: Any) -> dict[str, Any]:
        """The normalised input (defaults filled in, unset optionals left out) or a 422."""
        if not isinstance(raw, dict):
            raise InvalidRequest(
                "input must be an object",
                details=[
                    ErrorItem(loc=["body", "input"], msg="must be an object", type="dict_type")
                ],
            )
        try:
            parsed = self.input_schema.model_validate(raw)
        except ValidationError as exc:
            details = validation_details(exc.errors())
            for detail in details:
                detail["loc"] = ["body", "input", *detail["loc"]]
            raise InvalidRequest(f"invalid input for model {self.name}", details=details) from None
        return parsed.model_dump(mode="json", exclude_none=True)


class Catalog:
    def __init__(self, entries: Iterable[ModelEntry]) -> None:
        self._entries = {entry.name: entry for entry in entries}

    def __iter__(self) -> Iterator[ModelEntry]:
        return iter(self._entries.values())

    @property
    def names(self) -> list[str]:
        return list(self._entries)

    def get(self, name: str) -> ModelEntry:
        entry = self._entries.get(name)
        if entry is None:
            raise InvalidRequest(
                f"unknown model {name!r}",
                details=[
                    ErrorItem(
                        loc=["body", "model"], msg=f"must be one of {self.names}", type="enum"
                    )
                ],
            )
        return entry
