"""PoYo's wire format (CONTRACT §1): lenient where it may grow, strict where it matters."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.jobs.states import ProviderStatus


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ProviderFile(_Lenient):
    file_url: str = Field(max_length=4096)
    file_type: str = Field(default="video", max_length=32)


class SubmittedTask(_Lenient):
    task_id: str = Field(min_length=1, max_length=128)
    status: ProviderStatus = ProviderStatus.NOT_STARTED
    created_time: str | None = None


class TaskStatus(_Lenient):
    """A task as the status endpoint (or a callback) describes it."""

    task_id: str = Field(min_length=1, max_length=128)
    status: ProviderStatus
    progress: int | None = Field(default=None, ge=0, le=100)
    files: list[ProviderFile] | None = Field(default=None, max_length=32)
    created_time: str | None = None
    error_message: str | None = Field(default=None, max_length=4096)

    def outputs(self) -> list[dict[str, Any]]:
        return [
            {"url": item.file_url, "type": item.file_type or "video"} for item in self.files or []
        ]


def unwrap(body: Any) -> Any:
    """Accept both the wrapped (`{"code", "data": {...}}`) and the flat form."""
    if isinstance(body, dict) and isinstance(body.get("data"), dict):
        return body["data"]
    return body
