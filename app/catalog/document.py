"""PoYo's capability catalog as a document: parsing, its version, and what changed between
two of them. Pure: no I/O (app/catalog/data/ holds the snapshot poyo-relay ships)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

SNAPSHOT = Path(__file__).parent / "data" / "capability-catalog.json"
GENERATE = "generate"  # asynchronous: submit, then callback; what poyo-relay brokers
MAX_DOCUMENT_BYTES = 32 * 1_048_576
JsonObject = dict[str, Any]


class CatalogError(Exception):
    """A document that is not a usable catalog; the message says why."""


class Entry(BaseModel):
    """One model as PoYo describes it. Unknown keys are kept (PoYo may add some)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    model_id: str = Field(min_length=1, max_length=64, pattern=r"^[^\s\x00-\x1f]+$")
    service_type: str
    category: str
    title: str = ""
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    input_schema: JsonObject
    examples: list[JsonObject] = Field(default_factory=list)
    billing: JsonObject | None = None
    status: str | None = None


class Document(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    schema_version: str = Field(min_length=1, max_length=64)
    items: list[Entry]


def parse(raw: bytes) -> Document:
    """A catalog document (the file, or PoYo's `data` object), or CatalogError."""
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise CatalogError(f"larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CatalogError(f"not JSON: {exc}") from None
    return from_json(body)


def from_json(body: Any) -> Document:
    """A catalog document from decoded JSON, or CatalogError."""
    if isinstance(body, dict) and isinstance(body.get("data"), dict):
        body = body["data"]  # PoYo's envelope
    try:
        document = Document.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise CatalogError(f"not a capability catalog: {where}: {first['msg']}") from None
    ids = [entry.model_id for entry in document.items]
    if len(ids) != len(set(ids)):
        raise CatalogError("a model id appears twice")
    if not any(entry.service_type == GENERATE for entry in document.items):
        raise CatalogError("no generate model in it")
    return document


def load_snapshot() -> Document:
    return parse(SNAPSHOT.read_bytes())


def version_of(document: Document) -> str:
    """`<schema_version>-<12 hex of the content's hash>`: equal documents, equal versions."""
    items = [entry.model_dump(mode="json") for entry in document.items]
    digest = hashlib.sha256(orjson.dumps(items, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"{document.schema_version}-{digest[:12]}"


@dataclass
class Diff:
    """What a new catalog changes: models added, removed, and fields changed per model."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: dict[str, list[str]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


def diff(old: Document | None, new: Document) -> Diff:
    before = {entry.model_id: entry for entry in (old.items if old else [])}
    after = {entry.model_id: entry for entry in new.items}
    result = Diff(
        added=sorted(after.keys() - before.keys()), removed=sorted(before.keys() - after.keys())
    )
    for model_id in sorted(before.keys() & after.keys()):
        changes = _changed_fields(before[model_id], after[model_id])
        if changes:
            result.changed[model_id] = changes
    return result


def _changed_fields(old: Entry, new: Entry) -> list[str]:
    """`input.<field>` for each input field added, removed or redefined; else the top
    keys that differ (billing, description, …)."""
    changes: list[str] = []
    old_fields = old.input_schema.get("properties", {})
    new_fields = new.input_schema.get("properties", {})
    for name in sorted(old_fields.keys() | new_fields.keys()):
        if old_fields.get(name) != new_fields.get(name):
            changes.append(f"input.{name}")
    old_top, new_top = old.model_dump(), new.model_dump()
    for key in sorted(old_top.keys() | new_top.keys()):
        if key != "input_schema" and old_top.get(key) != new_top.get(key):
            changes.append(key)
    if old.input_schema.get("required") != new.input_schema.get("required"):
        changes.append("input.required")
    return changes
