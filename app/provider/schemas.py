"""PoYo's wire format (docs/API.md, "The provider"): lenient where it may grow, strict where
it matters."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


class ProviderStatus(StrEnum):
    NOT_STARTED = "not_started"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"


def _storable(value: str) -> str:
    """PostgreSQL text and JSONB cannot hold U+0000: keep the text, replace the NUL."""
    return value.replace("\x00", "\ufffd")


def _output_url(value: str) -> str:
    """An output is handed to clients as a link: only a plain http(s) URL will do."""
    scheme, sep, rest = value.partition("://")
    host = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    if not sep or scheme.lower() not in ("http", "https") or not host:
        raise ValueError("file_url must be an http(s) URL with a host")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ValueError("file_url must not contain spaces or control characters")
    return value


# Task ids go into URLs and a unique column: no spaces or control characters.
TaskId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\s\x00-\x1f\x7f]+$")]
Text = Annotated[str, AfterValidator(_storable)]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ProviderFile(_Lenient):
    file_url: Annotated[str, AfterValidator(_output_url)] = Field(max_length=4096)
    # As PoYo gives it (video, image, audio, media, 3d, …): an open set.
    file_type: Text | None = Field(default=None, max_length=32)


class SubmittedTask(_Lenient):
    task_id: TaskId
    status: ProviderStatus = ProviderStatus.NOT_STARTED
    created_time: str | None = None


class TaskStatus(_Lenient):
    """A task as the status endpoint (or a callback) describes it."""

    task_id: TaskId
    status: ProviderStatus
    progress: int | None = Field(default=None, ge=0, le=100)
    files: list[ProviderFile] | None = Field(default=None, max_length=32)
    created_time: str | None = None
    error_message: Text | None = Field(default=None, max_length=4096)


class CatalogPage(_Lenient):
    """A page of `GET /v1/catalog/models`."""

    schema_version: str
    items: list[dict[str, Any]] = Field(max_length=1000)
    next_cursor: str | None = None
    has_more: bool = False


def unwrap(body: Any) -> Any:
    """Accept both the wrapped (`{"code", "data": {...}}`) and the flat form."""
    if isinstance(body, dict) and isinstance(body.get("data"), dict):
        return body["data"]
    return body
