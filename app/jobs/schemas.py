"""The client API's job shapes, each described once: `job_to_dict` builds exactly the
typed dict that the OpenAPI document shows (mypy checks one against the other)."""

from __future__ import annotations

from fractions import Fraction
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    field_validator,
    with_config,
)
from typing_extensions import TypedDict

from app.billing.estimate import USD_PER_CREDIT
from app.jobs.models import EventRecord, JobError, JobOutput, JobRecord, read_output
from app.jobs.states import ArchiveStatus, JobStatus
from app.timeutil import isoformat_z
from app.urls import MAX_URL_CHARS, HttpUrl

MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
# PostgreSQL cannot store U+0000 in text or jsonb: refused up front, on every backend alike.
NO_NUL_PATTERN = r"^[^\x00]*$"

MetadataKey = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_METADATA_KEY_CHARS, pattern=NO_NUL_PATTERN)
]
MetadataValue = Annotated[
    str, StringConstraints(max_length=MAX_METADATA_VALUE_CHARS, pattern=NO_NUL_PATTERN)
]
Metadata = Annotated[dict[MetadataKey, MetadataValue], Field(max_length=MAX_METADATA_PAIRS)]


def _nul_at(value: Any, path: str) -> str | None:
    """Where a string (or key) inside `value` holds U+0000, or None."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in str(key):
                return path
            found = _nul_at(item, f"{path}.{key}")
            if found:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_at(item, f"{path}[{index}]")
            if found:
                return found
    return None


class JobCreate(BaseModel):
    """`POST /v1/jobs`: the model, its input (checked against the model's schema) and extras."""

    model_config = ConfigDict(extra="forbid")

    model: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    input: dict[str, Any]
    metadata: Metadata = Field(
        default_factory=dict,
        description=f"Up to {MAX_METADATA_PAIRS} string pairs; keys 1-{MAX_METADATA_KEY_CHARS} "
        f"characters, values up to {MAX_METADATA_VALUE_CHARS}. Returned as given.",
    )
    webhook_url: HttpUrl | None = Field(
        default=None,
        description=f"An http(s) URL (at most {MAX_URL_CHARS} characters) told when the job "
        "ends. Its host must resolve to public addresses only (unless the service allows "
        "private ones): otherwise 422, type `forbidden_target`.",
    )

    @field_validator("input", "webhook_url")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        found = _nul_at(value, "value")
        if found:
            raise ValueError(f"must not contain the NUL character (U+0000), found at {found}")
        return value


JOB_ID_PATTERN = r"^job_[0-9a-z]{26}$"
Timestamp = Annotated[
    str,
    Field(
        description="RFC 3339, UTC, millisecond precision",
        json_schema_extra={"format": "date-time"},
        examples=["2025-11-12T10:30:00.000Z"],
    ),
]
JOB_EXAMPLE: dict[str, JsonValue] = {
    "id": "job_01jcz3q9m4b8x2v7k5n0r6t1yw",
    "object": "job",
    "model": "wan2.5-image-to-video",
    "catalog_version": "v1-a437888866ef-9d2128c0a46c",
    "status": "succeeded",
    "input": {
        "prompt": "a red fox running through snow",
        "image_urls": ["https://example.com/fox.jpg"],
        "resolution": "720p",
        "duration": 5,
    },
    "metadata": {"order": "42"},
    "webhook_url": None,
    "provider": {
        "name": "poyo",
        "task_id": "task-unified-1731407400-ab12cd34",
        "status": "finished",
    },
    "progress": 100,
    "outputs": [
        {
            "url": "https://relay.example.com/v1/jobs/job_01jcz3q9m4b8x2v7k5n0r6t1yw/outputs/0",
            "type": "video",
            "provider_url": "https://cdn.example.com/out.mp4",
            "content_type": "video/mp4",
            "size_bytes": 1843200,
            "sha256": "9f2c5e0b8d4a7c1e3f6b0a9d2c5e8f1b4a7d0c3e6f9b2a5d8c1e4f7a0b3d6c9e",
            "archived_at": "2025-11-12T10:32:12.000Z",
            "width": None,
            "height": None,
            "duration_seconds": 5.042,
        }
    ],
    "archive": {"status": "archived", "attempts": 1, "error": None},
    "cost": {
        "credits_estimated": 90.0,
        "credits_charged": 90.0,
        "currency_estimate_usd": 0.45,
        "estimate_reason": None,
    },
    "error": None,
    "created_at": "2025-11-12T10:30:00.000Z",
    "updated_at": "2025-11-12T10:32:10.000Z",
    "submitted_at": "2025-11-12T10:30:00.120Z",
    "completed_at": "2025-11-12T10:32:10.000Z",
}


class CostInfo(TypedDict):
    """What the job costs, in PoYo credits (1 credit ≈ US$0.005): estimated from the
    model's billing rule before it was sent (null when the rule cannot tell beforehand:
    `estimate_reason` says why), and charged as PoYo reported it (0 for a failed job; null
    until known). The dollar figure is of the charge when known, else of the estimate."""

    credits_estimated: float | None
    credits_charged: float | None
    currency_estimate_usd: float | None
    estimate_reason: str | None


class ArchiveInfo(TypedDict):
    """Keeping the outputs of a succeeded job: `pending` (due, or retrying after `error`),
    `archived`, or `failed` (given up after ARCHIVE_MAX_ATTEMPTS; `archive backfill` tries
    again). The job's `status` never depends on it."""

    status: ArchiveStatus
    attempts: int
    error: str | None


class ProviderInfo(TypedDict):
    name: Literal["poyo"]
    task_id: str | None
    status: str | None


@with_config(ConfigDict(title="JobOut", json_schema_extra={"examples": [JOB_EXAMPLE]}))
class JobOut(TypedDict):
    id: Annotated[str, Field(pattern=JOB_ID_PATTERN)]
    object: Literal["job"]
    model: str
    catalog_version: str | None
    status: JobStatus
    input: dict[str, Any]
    metadata: dict[str, str]
    webhook_url: str | None
    provider: ProviderInfo
    progress: Annotated[int, Field(ge=0, le=100)]
    outputs: list[JobOutput]
    archive: ArchiveInfo | None
    cost: CostInfo
    error: JobError | None
    created_at: Timestamp
    updated_at: Timestamp
    submitted_at: Timestamp | None
    completed_at: Timestamp | None


class JobList(TypedDict):
    object: Literal["list"]
    data: list[JobOut]
    next_cursor: str | None


class EventOut(TypedDict):
    id: Annotated[str, Field(pattern=r"^evt_[0-9]+$")]
    type: str
    created_at: Timestamp
    data: dict[str, Any]


class EventList(TypedDict):
    object: Literal["list"]
    data: list[EventOut]
    next_cursor: str | None


def job_to_dict(job: JobRecord) -> JobOut:
    """The public JSON of a job; built by hand because this is the hottest read path."""
    return {
        "id": job.id,
        "object": "job",
        "model": job.model,
        "catalog_version": job.catalog_version,
        "status": job.status,
        "input": job.input,
        "metadata": job.metadata_ or {},
        "webhook_url": job.webhook_url,
        "provider": {
            "name": "poyo",
            "task_id": job.provider_task_id,
            "status": job.provider_status,
        },
        "progress": job.progress or 0,
        "outputs": [read_output(output) for output in job.outputs] if job.outputs else [],
        "archive": _archive_info(job),
        "cost": _cost_info(job),
        "error": job.error,
        "created_at": isoformat_z(job.created_at),
        "updated_at": isoformat_z(job.updated_at),
        "submitted_at": isoformat_z(job.submitted_at),
        "completed_at": isoformat_z(job.completed_at),
    }


def _credits(millicredits: int | None) -> float | None:
    return None if millicredits is None else millicredits / 1000


def _cost_info(job: JobRecord) -> CostInfo:
    estimated = job.cost_estimate_millicredits
    charged = job.cost_charged_millicredits
    basis = charged if charged is not None else estimated
    return {
        "credits_estimated": _credits(estimated),
        "credits_charged": _credits(charged),
        "currency_estimate_usd": (
            None if basis is None else round(float(Fraction(basis, 1000) * USD_PER_CREDIT), 4)
        ),
        "estimate_reason": job.cost_estimate_note,
    }


def _archive_info(job: JobRecord) -> ArchiveInfo | None:
    if job.archive_status is None:
        return None
    return {
        "status": job.archive_status,
        "attempts": job.archive_attempts,
        "error": job.archive_error,
    }


def job_list(jobs: list[JobRecord], next_cursor: str | None) -> JobList:
    return {
        "object": "list",
        "data": [job_to_dict(job) for job in jobs],
        "next_cursor": next_cursor,
    }


def event_to_dict(event: EventRecord) -> EventOut:
    return {
        "id": f"evt_{event.id}",
        "type": event.type,
        "created_at": isoformat_z(event.created_at),
        "data": event.data,
    }


def event_list(events: list[EventRecord], next_cursor: str | None) -> EventList:
    return {
        "object": "list",
        "data": [event_to_dict(event) for event in events],
        "next_cursor": next_cursor,
    }
