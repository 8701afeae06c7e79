"""The API's objects as frozen dataclasses: parsed from its JSON, timestamps as aware
datetimes, the JSON itself kept in `raw`. Fields the server adds later are ignored (and
stay in `raw`), and a status this version does not know is kept as it came."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class _OpenStrEnum(StrEnum):
    """A StrEnum that keeps a value it does not know (a newer server's) instead of failing."""

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if not isinstance(value, str):
            return None
        member = str.__new__(cls, value)
        member._name_ = value.upper()
        member._value_ = value
        return member


class JobStatus(_OpenStrEnum):
    """Where a job is: `pending` → `queued` → `running` → `succeeded` | `failed` (steps may
    be skipped; the last two are terminal and never change again)."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        """True for `succeeded` and `failed`."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED)


class ArchiveStatus(_OpenStrEnum):
    """Keeping a succeeded job's outputs: `pending`, `archived` or `failed` (given up)."""

    PENDING = "pending"
    ARCHIVED = "archived"
    FAILED = "failed"


def parse_time(value: Any) -> datetime:
    """An RFC 3339 timestamp (`2025-11-12T10:30:00.000Z`) as an aware datetime."""
    if not isinstance(value, str):
        raise TypeError(f"expected a timestamp string, got {type(value).__name__}")
    return datetime.fromisoformat(value)


def _optional_time(value: Any) -> datetime | None:
    return None if value is None else parse_time(value)


def _mapping(value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class JobOutput:
    """One file a job produced. `url` is poyo-relay's stable URL once the file is archived
    (`archived_at` set), PoYo's `provider_url` before; `type` is PoYo's file type as given
    (`video`, `image`, `audio`, `3d`, … or None)."""

    url: str
    type: str | None
    provider_url: str | None = None
    content_type: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    archived_at: datetime | None = None
    width: int | None = None
    height: int | None = None
    duration_seconds: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobOutput:
        """Parse one entry of a job's `outputs`."""
        return cls(
            url=data["url"],
            type=data.get("type"),
            provider_url=data.get("provider_url"),
            content_type=data.get("content_type"),
            size_bytes=data.get("size_bytes"),
            sha256=data.get("sha256"),
            archived_at=_optional_time(data.get("archived_at")),
            width=data.get("width"),
            height=data.get("height"),
            duration_seconds=data.get("duration_seconds"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class JobError:
    """Why a job failed: a stable `code` (`provider_rejected`, `provider_failed`,
    `submit_failed`, `deadline_exceeded`, …) and a message for people."""

    code: str
    message: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobError:
        """Parse a job's `error`."""
        return cls(code=str(data.get("code", "")), message=str(data.get("message", "")))


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchiveState:
    """The archiving of a succeeded job's outputs: its status, attempts so far and the
    last error (while retrying, or after giving up)."""

    status: ArchiveStatus
    attempts: int
    error: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArchiveState:
        """Parse a job's `archive`."""
        return cls(
            status=ArchiveStatus(data["status"]),
            attempts=int(data.get("attempts", 0)),
            error=data.get("error"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderState:
    """The provider's side of a job: its name, task id and PoYo's own status of the task
    (`not_started`, `running`, `finished`, `failed`; None before submission)."""

    name: str
    task_id: str | None = None
    status: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProviderState:
        """Parse a job's `provider`."""
        return cls(
            name=str(data.get("name", "poyo")),
            task_id=data.get("task_id"),
            status=data.get("status"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """A generation job as the API shows it (`GET /v1/jobs/{id}`); `raw` is that JSON."""

    id: str
    model: str
    status: JobStatus
    input: Mapping[str, Any] = field(hash=False)
    metadata: Mapping[str, str] = field(hash=False)
    progress: int
    outputs: tuple[JobOutput, ...]
    error: JobError | None
    provider: ProviderState
    archive: ArchiveState | None
    webhook_url: str | None
    catalog_version: str | None
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None
    completed_at: datetime | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @property
    def is_terminal(self) -> bool:
        """True once the job succeeded or failed: it will never change again (its outputs'
        archive may still progress)."""
        return self.status.is_terminal

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        """Parse the job JSON of the API (also a webhook's `data`)."""
        error = data.get("error")
        archive = data.get("archive")
        return cls(
            id=data["id"],
            model=data["model"],
            status=JobStatus(data["status"]),
            input=_mapping(data.get("input")),
            metadata=_mapping(data.get("metadata")),
            progress=int(data.get("progress") or 0),
            outputs=tuple(JobOutput.from_dict(o) for o in data.get("outputs") or ()),
            error=None if error is None else JobError.from_dict(error),
            provider=ProviderState.from_dict(_mapping(data.get("provider"))),
            archive=None if archive is None else ArchiveState.from_dict(archive),
            webhook_url=data.get("webhook_url"),
            catalog_version=data.get("catalog_version"),
            created_at=parse_time(data["created_at"]),
            updated_at=parse_time(data["updated_at"]),
            submitted_at=_optional_time(data.get("submitted_at")),
            completed_at=_optional_time(data.get("completed_at")),
            raw=data,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class JobEvent:
    """One entry of a job's audit trail: `id` (`evt_<n>`), `type` (`job.created`,
    `job.status_changed`, `provider.polled`, …), when, and its data."""

    id: str
    type: str
    created_at: datetime
    data: Mapping[str, Any] = field(hash=False)

    @property
    def sequence(self) -> int | None:
        """The event's number (`evt_42` → 42): events of a job are numbered in order."""
        number = self.id.removeprefix("evt_")
        return int(number) if number.isdigit() else None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobEvent:
        """Parse an event of the audit trail or of a stream (whose id is a bare number)."""
        event_id = data["id"]
        return cls(
            id=f"evt_{event_id}" if isinstance(event_id, int) else str(event_id),
            type=str(data["type"]),
            created_at=parse_time(data["created_at"]),
            data=_mapping(data.get("data")),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class JobUpdate:
    """One message of a stream: the job as it is now, the event that changed it (None for
    a message that only reports the current state), and `id`, the stream position (the
    SSE event id) to resume after."""

    id: str | None
    event: JobEvent | None
    job: Job

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, id: str | None = None) -> JobUpdate:
        """Parse a stream message's data: `{"event": {...} | null, "job": {...}}`."""
        event = data.get("event")
        return cls(
            id=id,
            event=None if event is None else JobEvent.from_dict(event),
            job=Job.from_dict(data["job"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Estimate:
    """What a job would cost (`POST /v1/estimates`), in PoYo credits (1 credit ≈ US$0.005);
    `credits` is None when the model's billing rule cannot tell before the job runs, and
    `reason` says why."""

    model: str
    credits: float | None
    usd: float | None
    reason: str | None
    catalog_version: str | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Estimate:
        credits, usd = data.get("credits"), data.get("currency_estimate_usd")
        return cls(
            model=str(data.get("model", "")),
            credits=None if credits is None else float(credits),
            usd=None if usd is None else float(usd),
            reason=data.get("reason"),
            catalog_version=data.get("catalog_version"),
            raw=data,
        )


@dataclass(frozen=True)
class Model:
    """A model jobs can use: its id, category, the JSON Schema its input is validated
    against, one of PoYo's examples and PoYo's billing rule."""

    id: str
    category: str
    title: str
    description: str
    tags: tuple[str, ...]
    input_schema: Mapping[str, Any] = field(hash=False)
    example: Mapping[str, Any] | None = field(hash=False)
    billing: Mapping[str, Any] | None = field(hash=False)
    catalog_version: str | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Model:
        """Parse a model of `GET /v1/models`."""
        example = data.get("example")
        billing = data.get("billing")
        return cls(
            id=data["id"],
            category=str(data.get("category", "")),
            title=str(data.get("title", "")),
            description=str(data.get("description", "")),
            tags=tuple(data.get("tags") or ()),
            input_schema=_mapping(data.get("input_schema")),
            example=None if example is None else _mapping(example),
            billing=None if billing is None else _mapping(billing),
            catalog_version=data.get("catalog_version"),
            raw=data,
        )
