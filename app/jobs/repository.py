"""SQL for jobs and their events. Functions here only execute and flush; callers commit."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.db_types import JSONType, UTCDateTime
from app.jobs.models import Job, JobEvent
from app.jobs.states import JobStatus, sources_of


async def add_event(
    session: AsyncSession | AsyncConnection,
    *,
    job_id: str,
    type: str,
    data: dict[str, Any],
    now: datetime,
) -> None:
    await session.execute(
        insert(JobEvent).values(job_id=job_id, type=type, data=data, created_at=now)
    )


async def get_job(session: AsyncSession, job_id: str, *, owner: str | None = None) -> Job | None:
    """The job, or None when it does not exist or belongs to someone else."""
    query = select(Job).where(Job.id == job_id)
    if owner is not None:
        query = query.where(Job.owner == owner)
    return (await session.execute(query)).scalar_one_or_none()


async def change_status(
    session: AsyncSession,
    *,
    job_id: str,
    target: JobStatus,
    values: dict[str, Any],
    lease_owner: str | None = None,
) -> bool:
    """Compare-and-set: move the job to `target` only from a status that may precede it."""
    conditions = [Job.id == job_id, Job.status.in_([s.value for s in sources_of(target)])]
    if lease_owner is not None:
        conditions.append(Job.lease_owner == lease_owner)
    result = await session.execute(
        update(Job)
        .where(*conditions)
        .values(status=target.value, **values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined, no-any-return]


def _task_unrecorded(job_id: str) -> tuple[ColumnElement[bool], ...]:
    return (
        Job.id == job_id,
        Job.status == JobStatus.PENDING.value,
        Job.provider_task_id.is_(None),
    )


async def record_task(
    session: AsyncSession, *, job_id: str, target: JobStatus, values: dict[str, Any]
) -> bool:
    """Compare-and-set a pending job that has no provider task yet to `target`."""
    result = await session.execute(
        update(Job)
        .where(*_task_unrecorded(job_id))
        .values(status=target.value, **values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined, no-any-return]


async def record_task_in_one_statement(
    conn: AsyncConnection,
    *,
    job_id: str,
    target: JobStatus,
    values: dict[str, Any],
    task_data: dict[str, Any],
    status_data: dict[str, Any],
    now: datetime,
) -> bool:
    """`record_task` and its events as one PostgreSQL statement (atomic on its own).

    On an autocommit connection this is one round trip instead of five (BEGIN, UPDATE,
    two INSERTs, COMMIT); the shorter the time between "the provider accepted" and "we
    recorded it", the fewer crashes fall inside it.
    """
    moved = (
        update(Job)
        .where(*_task_unrecorded(job_id))
        .values(status=target.value, **values)
        .returning(Job.id)
        .cte("moved")
    )

    def event(type_: str, data: dict[str, Any]) -> Select[str, str, Any, datetime]:
        return select(
            literal(job_id, String),
            literal(type_, String),
            literal(data, JSONType),
            literal(now, UTCDateTime),
        )

    events = union_all(
        event("provider.submitted", task_data).select_from(moved),
        event("job.status_changed", status_data).select_from(moved),
        event("provider.duplicate_task", task_data).where(~exists(select(moved.c.id))),
    )
    result = await conn.execute(
        insert(JobEvent)
        .from_select(["job_id", "type", "data", "created_at"], events)
        .add_cte(moved)
        .returning(JobEvent.type)
    )
    return "provider.submitted" in result.scalars().all()


async def request_check(
    session: AsyncSession, *, job_id: str, now: datetime, cutoff: datetime
) -> bool:
    """Make an in-flight job, not checked since `cutoff`, due now (once, not per reader)."""
    result = await session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]),
            or_(Job.checked_at.is_(None), Job.checked_at < cutoff),
            Job.next_check_at > now,
        )
        .values(next_check_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined, no-any-return]


async def update_held(
    session: AsyncSession, *, job_id: str, lease_owner: str, values: dict[str, Any]
) -> bool:
    """Update bookkeeping on a job only while we still hold its lease."""
    result = await session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == lease_owner)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined, no-any-return]


def _lease_free(now: datetime) -> ColumnElement[bool]:
    return or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now)


async def claim_due(
    session: AsyncSession,
    *,
    statuses: Iterable[JobStatus],
    now: datetime,
    lease_owner: str,
    lease_until: datetime,
    limit: int,
    skip_locked: bool,
    extra: Sequence[ColumnElement[bool]] = (),
) -> list[str]:
    """Lease up to `limit` due jobs to `lease_owner`; no two claimers ever get the same job."""
    candidates = (
        select(Job.id)
        .where(
            Job.next_check_at <= now,
            Job.status.in_([s.value for s in statuses]),
            _lease_free(now),
            *extra,
        )
        .order_by(Job.next_check_at)
        .limit(limit)
    )
    if skip_locked:
        candidates = candidates.with_for_update(skip_locked=True)
    result = await session.execute(
        update(Job)
        .where(Job.id.in_(candidates.scalar_subquery()), _lease_free(now))
        .values(lease_owner=lease_owner, lease_expires_at=lease_until)
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    )
    return list(result.scalars())


async def release_leases(
    session: AsyncSession, *, lease_owner: str, job_ids: Iterable[str]
) -> None:
    await session.execute(
        update(Job)
        .where(Job.id.in_(list(job_ids)), Job.lease_owner == lease_owner)
        .values(lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )


async def count_due(session: AsyncSession, *, statuses: Iterable[JobStatus], now: datetime) -> int:
    query = select(func.count()).where(
        Job.next_check_at <= now, Job.status.in_([s.value for s in statuses])
    )
    return int((await session.execute(query)).scalar_one())


async def oldest_due(
    session: AsyncSession, *, statuses: Iterable[JobStatus], now: datetime
) -> datetime | None:
    query = (
        select(Job.next_check_at)
        .where(Job.next_check_at <= now, Job.status.in_([s.value for s in statuses]))
        .order_by(Job.next_check_at)
        .limit(1)
    )
    return (await session.execute(query)).scalar_one_or_none()
