"""What the simulator knows of PoYo's models: each one's published input schema (checked as
PoYo would check it), the kind of files it makes, and the catalog endpoints' pages."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import jsonschema_rs

from app.billing.estimate import estimate
from app.catalog.compiled import MASK, schema_problems
from app.catalog.document import GENERATE, Document, Entry, version_of
from app.sandbox.media import AUDIO, IMAGE, MODEL_3D, TIMESTAMPS, VIDEO, Kind

MAX_IMAGES = 15
VIDEO_CATEGORIES = {"video", "img2vid", "text2vid", "video2video"}
AUDIO_CATEGORIES = {"audio", "text2audio", "audio2audio"}


def kind_of(entry: Entry) -> Kind:
    if entry.category == "3d":
        return MODEL_3D
    if entry.category in VIDEO_CATEGORIES or "video" in entry.model_id:
        return VIDEO
    if entry.category in AUDIO_CATEGORIES:
        return AUDIO
    return IMAGE


@dataclass(frozen=True)
class Played:
    entry: Entry
    validator: Any
    kind: Kind


class PlayedCatalog:
    def __init__(self, document: Document) -> None:
        self.document = document
        self.etag = f'"{version_of(document)}"'
        self.models = {
            entry.model_id: Played(entry, _published(entry.input_schema), kind_of(entry))
            for entry in document.items
            if entry.service_type == GENERATE
        }

    def refusal(self, model_id: Any, data: Any) -> str | None:
        """Why PoYo would refuse this submission, or None."""
        played = self.models.get(model_id) if isinstance(model_id, str) else None
        if played is None:
            return "unknown or missing model"
        if not isinstance(data, dict):
            return "input must be an object"
        problems = schema_problems(played.validator, data)
        if problems:
            first = problems[0]
            return f"invalid input: {'.'.join(first['loc'][2:]) or 'input'}: {first['msg']}"
        return None

    def charge(self, model_id: str, data: dict[str, Any]) -> float | None:
        """What a finished task costs: the catalog's price for this input, as poyo-relay
        estimates it (None where the rule depends on what the task made)."""
        return estimate(self.models[model_id].entry, data).credits

    def outputs(self, model_id: str, data: dict[str, Any]) -> list[Kind]:
        """The files a finished task returns: `n` images when asked, TTS audio with its
        word timestamps, else one file of the model's kind."""
        kind = self.models[model_id].kind
        if kind is IMAGE:
            n = data.get("n")
            count = n if isinstance(n, int) and not isinstance(n, bool) else 1
            return [IMAGE] * max(1, min(count, MAX_IMAGES))
        if kind is AUDIO and "tts" in model_id:
            return [AUDIO, TIMESTAMPS]
        return [kind]

    def page(
        self, *, limit: int, cursor: str | None, filters: dict[str, str | None]
    ) -> dict[str, Any] | None:
        """A page of `GET /v1/catalog/models` (None: a cursor it never gave)."""
        start = _offset(cursor) if cursor else 0
        if start is None:
            return None
        items = [
            entry.model_dump(mode="json")
            for entry in self.document.items
            if _matches(entry, filters)
        ]
        chunk = items[start : start + limit]
        more = start + limit < len(items)
        return {
            "schema_version": self.document.schema_version,
            "items": chunk,
            "next_cursor": _cursor(start + limit) if more else None,
            "has_more": more,
        }


def _published(schema: dict[str, Any]) -> Any:
    """PoYo's own schema, checked by the standard (formats included), not poyo-relay's
    stricter one: a request poyo-relay let through that PoYo would refuse shows."""
    return jsonschema_rs.validator_for(schema, validate_formats=True, mask=MASK)


def _matches(entry: Entry, filters: dict[str, str | None]) -> bool:
    if filters.get("category") and entry.category != filters["category"]:
        return False
    if filters.get("service_type") and entry.service_type != filters["service_type"]:
        return False
    text = (filters.get("q") or "").lower()
    return not text or text in f"{entry.model_id} {entry.title} {entry.description}".lower()


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode().rstrip("=")


def _offset(cursor: str) -> int | None:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    prefix, _, number = text.partition(":")
    return int(number) if prefix == "offset" and number.isdigit() else None
