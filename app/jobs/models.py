"""Jobs, their append-only audit trail, and idempotency keys."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeAlias

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    Row,
    String,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column
from typing_extensions import TypedDict

from app.db import Base
from app.db_types import JSONType, UTCDateTime, str_enum
from app.jobs.states import ArchiveStatus, JobStatus
from app.provider.schemas import ProviderStatus


class JobOutput(TypedDict):
    """One file the job produced. `type` is PoYo's `file_type` as given (video, image,
    audio, media, 3d, … an open set; null when PoYo gave none). `url` is poyo-relay's own
    stable URL once the file is archived (`archived_at` set), PoYo's `provider_url` before;
    the rest describes the archived copy (null until then, and for jobs stored before
    archiving existed, whose outputs held only `url` and `type`)."""

    url: str
    type: str | None
    provider_url: str
    content_type: str | None
    size_bytes: int | None
    sha256: str | None
    archived_at: str | None
    width: int | None
    height: int | None
    duration_seconds: float | None


def provider_output(url: str, file_type: str | None) -> JobOutput:
    """An output as PoYo announced it, before it is archived."""
    return JobOutput(
        url=url,
        type=file_type,
        provider_url=url,
        content_type=None,
        size_bytes=None,
        sha256=None,
        archived_at=None,
        width=None,
        height=None,
        duration_seconds=None,
    )


def read_output(stored: Mapping[str, Any]) -> JobOutput:
    """An output as stored, in today's shape (rows written before archiving existed hold
    only `url` and `type`: their url is PoYo's)."""
    if "provider_url" in stored:
        return stored  # type: ignore[return-value]
    return provider_output(stored["url"], stored.get("type"))


class JobError(TypedDict):
    """Why a job failed: a stable `code` and a message for people."""

    code: str
    message: str


# SQLite only auto-increments an INTEGER PRIMARY KEY.
EventId = BigInteger().with_variant(Integer(), "sqlite")


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(64))
    # The catalog version the input was validated against (null: before catalogs existed).
    catalog_version: Mapped[str | None] = mapped_column(String(96))
    status: Mapped[JobStatus] = mapped_column(str_enum(JobStatus, 16))
    input: Mapped[dict[str, Any]] = mapped_column(JSONType)
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSONType)
    webhook_url: Mapped[str | None] = mapped_column(String(2048))

    provider_task_id: Mapped[str | None] = mapped_column(String(128), unique=True)
    provider_status: Mapped[ProviderStatus | None] = mapped_column(str_enum(ProviderStatus, 32))
    # The furthest provider status any callback has claimed; a claim must be confirmed.
    callback_status: Mapped[ProviderStatus | None] = mapped_column(str_enum(ProviderStatus, 32))
    progress: Mapped[int] = mapped_column(Integer, default=0)
    outputs: Mapped[list[JobOutput] | None] = mapped_column(JSONType)
    error: Mapped[JobError | None] = mapped_column(JSONType)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # Worker bookkeeping: when the job next needs attention, and who holds it.
    submit_attempts: Mapped[int] = mapped_column(Integer, default=0)
    poll_attempts: Mapped[int] = mapped_column(Integer, default=0)
    submit_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_check_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the provider was last asked about this job (a status poll, answered or not).
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Keeping a succeeded job's outputs (app/archive): null when there is nothing to keep.
    archive_status: Mapped[ArchiveStatus | None] = mapped_column(str_enum(ArchiveStatus, 16))
    archive_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    archive_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    archive_error: Mapped[str | None] = mapped_column(String(500))
    # What the job costs, in 1/1000 credit (exact sums): estimated from the catalog's
    # billing rule before it is sent (null, with the note saying why, when the rule cannot
    # tell beforehand), and charged as PoYo reports it (0 for a failed job).
    cost_estimate_millicredits: Mapped[int | None] = mapped_column(BigInteger)
    cost_estimate_note: Mapped[str | None] = mapped_column(String(200))
    cost_charged_millicredits: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        Index("ix_jobs_owner_id", "owner", "id"),
        Index("ix_jobs_owner_status_id", "owner", "status", "id"),
        Index("ix_jobs_owner_model_id", "owner", "model", "id"),
        Index("ix_jobs_status_id", "status", "id"),
        Index("ix_jobs_model_id", "model", "id"),
        Index(
            "ix_jobs_due",
            "next_check_at",
            postgresql_where=text("next_check_at IS NOT NULL"),
            sqlite_where=text("next_check_at IS NOT NULL"),
        ),
        Index(
            "ix_jobs_archive_due",
            "archive_due_at",
            postgresql_where=text("archive_due_at IS NOT NULL"),
            sqlite_where=text("archive_due_at IS NOT NULL"),
        ),
    )


class JobEvent(Base):
    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(40), ForeignKey("jobs.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(48))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)

    __table_args__ = (
        Index("ix_job_events_job_id_id", "job_id", "id"),
        Index("ix_job_events_created_at", "created_at"),
    )


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    owner: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(String(40), ForeignKey("jobs.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)


# What the read side handles: an ORM object, or a Core row selected with
# `plain_columns(...)` (queries.py), which reads like one at a fraction of the cost.
JobRecord: TypeAlias = Job | Row[Any]
EventRecord: TypeAlias = JobEvent | Row[Any]
