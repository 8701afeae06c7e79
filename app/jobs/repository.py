"""The one writer of job state: every change to a job row is built here.

A status change is a compare-and-set, `UPDATE jobs SET status = :target … WHERE id = :id
AND status IN (the statuses that may precede :target) AND <guard>`, written together with
the events that record it, so duplicate, late or concurrent writers never move a job twice
or backwards. PostgreSQL does it in one statement (the UPDATE … RETURNING feeds the INSERT
of the events: atomic by itself); SQLite runs the UPDATE and its INSERTs in the caller's
transaction. Every write by the holder of a job's lease hands the lease back.

Functions execute on the caller's connection; the caller's unit of work commits.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import (
    ColumnElement,
    String,
    Update,
    bindparam,
    case,
    delete,
    exists,
    insert,
    literal,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from typing_extensions import TypedDict

from app.billing import repository as usage
from app.billing.budgets import final_spend
from app.db import row_values
from app.db_types import JSONType, UTCDateTime
from app.jobs.events import EventType, NewEvent
from app.jobs.models import IdempotencyKey, Job, JobError, JobEvent, JobOutput
from app.jobs.states import ACTIVE, IN_FLIGHT, ArchiveStatus, JobStatus, is_terminal, sources_of
from app.metrics import JOB_DURATION, JOBS_FINISHED
from app.provider.schemas import ProviderStatus
from app.webhooks import outbox
from app.webhooks.models import WebhookEventType

log = structlog.get_logger(__name__)

# The lease, named once: a write by the job's lease holder gives it back.
LEASE_RETURNED: Mapping[str, None] = {"lease_owner": None, "lease_expires_at": None}
_ACTIVE = tuple(ACTIVE)


class JobPatch(TypedDict, total=False):
    """Columns a write sets besides the status and the lease; a key left out is kept."""

    provider_task_id: str
    provider_status: ProviderStatus
    callback_status: ProviderStatus | None
    progress: int
    outputs: list[JobOutput]
    error: JobError
    submitted_at: datetime
    submit_started_at: datetime | None
    poll_attempts: int
    checked_at: datetime
    updated_at: datetime
    next_check_at: datetime | None
    archive_status: ArchiveStatus | None
    archive_attempts: int
    archive_due_at: datetime | None
    archive_error: str | None
    cost_charged_millicredits: int


@dataclass(frozen=True)
class Lease:
    """A job as loaded by the one who holds its lease: a worker, or the request that
    created it. Writes made under it hold only while the lease does."""

    job: Job
    owner: str


@dataclass(frozen=True)
class StatusChange:
    """Move `job` (as loaded) forward to `target` at `now`, setting `patch`. A job that
    does not end is next looked at `next_check`. `events` are written with the change,
    `if_refused` instead of it; the webhook message it makes, with it."""

    job: Job
    target: JobStatus
    now: datetime
    next_check: datetime
    patch: JobPatch
    events: tuple[NewEvent, ...] = ()
    if_refused: tuple[NewEvent, ...] = ()


# ---- reads of the writers ------------------------------------------------------------------


async def load(session: AsyncSession, job_id: str) -> Job | None:
    return await session.get(Job, job_id)


async def claimed_task(session: AsyncSession, job_id: str) -> str | None:
    """The task a callback said belongs to this job, when we never recorded one."""
    query = (
        select(JobEvent.data)
        .where(JobEvent.job_id == job_id, JobEvent.type == EventType.CALLBACK_RECEIVED)
        .order_by(JobEvent.id.desc())
        .limit(1)
    )
    data = (await session.execute(query)).scalar_one_or_none()
    task_id = data.get("task_id") if isinstance(data, dict) else None
    return task_id if isinstance(task_id, str) else None


async def archived_jobs(
    session: AsyncSession, *, after: str, since: datetime | None, limit: int
) -> list[Job]:
    """Jobs with archived outputs, in id order after `after` (a keyset page)."""
    query = (
        select(Job)
        .where(Job.id > after, Job.archive_status.is_not(None))
        .order_by(Job.id)
        .limit(limit)
    )
    if since is not None:
        query = query.where(Job.completed_at >= since)
    return list((await session.scalars(query)).all())


async def idempotency_key(session: AsyncSession, owner: str, key: str) -> IdempotencyKey | None:
    return await session.get(IdempotencyKey, (owner, key))


# ---- taking a job in ----------------------------------------------------------------------


async def add_job(conn: AsyncConnection, job: Job, event: NewEvent) -> None:
    """Store a new job with its first event."""
    await conn.execute(insert(Job).values(row_values(job)))
    await add_events(conn, job.id, [event], job.created_at)
    await outbox.job_event(conn, job, WebhookEventType.JOB_CREATED, job.created_at)


async def claim_idempotency_key(
    conn: AsyncConnection, key: IdempotencyKey, *, expired_before: datetime
) -> None:
    """Store the key; one older than `expired_before` may be used again. A live one makes
    the INSERT fail (IntegrityError): another request took it first."""
    await conn.execute(
        delete(IdempotencyKey).where(
            IdempotencyKey.owner == key.owner,
            IdempotencyKey.key == key.key,
            IdempotencyKey.created_at < expired_before,
        )
    )
    await conn.execute(insert(IdempotencyKey).values(row_values(key)))


# ---- status changes: one compare-and-set path ------------------------------------------------


async def move(conn: AsyncConnection, change: StatusChange, owner: str) -> bool:
    """Move a job while `owner` holds its lease; False if it moved (or was taken) first."""
    return await _change_status(conn, change, Job.lease_owner == owner)


async def fail(
    conn: AsyncConnection,
    lease: Lease,
    error: JobError,
    now: datetime,
    events: tuple[NewEvent, ...] = (),
) -> bool:
    """Fail a leased job, unless it ended first; `events` are recorded either way."""
    job = lease.job
    change = StatusChange(job, JobStatus.FAILED, now, now, JobPatch(error=error), events, events)
    return await move(conn, change, lease.owner)


async def record_task(conn: AsyncConnection, change: StatusChange) -> bool:
    """Record the task the provider accepted for a pending job that has none yet, whoever
    holds its lease by now: a task accepted for a job without one is this job's, and
    recording it is what prevents a second one."""
    return await _change_status(conn, change, Job.provider_task_id.is_(None))


async def _change_status(
    conn: AsyncConnection, change: StatusChange, guard: ColumnElement[bool]
) -> bool:
    job, now, target = change.job, change.now, change.target
    values: dict[str, Any] = {**change.patch, "status": target, "updated_at": now}
    values |= LEASE_RETURNED
    # A job's own webhook_url hears of its end now or, when its outputs are to be archived
    # first, once the first archive attempt is over (so it usually carries our URLs).
    archiving = change.patch.get("archive_status") is ArchiveStatus.PENDING
    if is_terminal(target):
        values |= {"completed_at": now, "submit_started_at": None, "next_check_at": None}
        if target is JobStatus.FAILED:
            values["cost_charged_millicredits"] = 0  # PoYo does not charge a failed task
    else:
        values["next_check_at"] = _due(job, change.next_check, now)
    statement = (
        update(Job)
        .where(Job.id == job.id, Job.status.in_(sources_of(target)), guard)
        .values(**values)
    )
    status_data: dict[str, Any] = {"from": job.status.value, "to": target.value}
    if "error" in change.patch:
        status_data["error"] = change.patch["error"]
    events = (*change.events, NewEvent(EventType.JOB_STATUS_CHANGED, status_data))
    if conn.dialect.name == "postgresql":
        changed = await _change_in_one_statement(conn, statement, job.id, events, change)
    else:
        changed = (await conn.execute(statement)).rowcount == 1
        await add_events(conn, job.id, events if changed else change.if_refused, now)
    if changed:
        if is_terminal(target):
            await _record_spend(conn, job, target, change.patch)
        event_type = outbox.STATUS_EVENTS[target]
        await outbox.job_event(conn, job, event_type, now, job_url=not archiving)
        _note_status_change(job, target, now)
    return bool(changed)


async def _record_spend(
    conn: AsyncConnection, job: Job, target: JobStatus, patch: JobPatch
) -> None:
    """The ended job's reservation becomes what it spent, in its owner's usage."""
    failed = target is JobStatus.FAILED
    charged = 0 if failed else patch.get("cost_charged_millicredits")
    estimate = job.cost_estimate_millicredits
    spent = final_spend(estimate=estimate, charged=charged, failed=failed)
    await usage.record_ended(
        conn,
        owner=job.owner,
        day=job.created_at.date(),
        model=job.model,
        spend_change=spent - (estimate or 0),
        charged=charged or 0,
        succeeded=not failed,
    )


async def _change_in_one_statement(
    conn: AsyncConnection,
    statement: Any,
    job_id: str,
    events: Sequence[NewEvent],
    change: StatusChange,
) -> bool:
    moved = statement.returning(Job.id).cte("moved")

    def row(event: NewEvent) -> Any:
        return select(
            literal(job_id, String),
            literal(event.type.value, String),
            literal(event.data, JSONType),
            literal(change.now, UTCDateTime),
        )

    rows = [row(event).select_from(moved) for event in events]
    rows += [row(event).where(~exists(select(moved.c.id))) for event in change.if_refused]
    result = await conn.execute(
        insert(JobEvent)
        .from_select(["job_id", "type", "data", "created_at"], union_all(*rows))
        .add_cte(moved)
        .returning(JobEvent.type)
    )
    return EventType.JOB_STATUS_CHANGED in result.scalars().all()


def _due(job: Job, planned: datetime, now: datetime) -> ColumnElement[datetime]:
    """When a job handed back is next looked at: as planned, unless a callback arrived
    since it was loaded, which asks for a prompt check."""
    return case((Job.callback_status.is_distinct_from(job.callback_status), now), else_=planned)


def _note_status_change(job: Job, target: JobStatus, now: datetime) -> None:
    log.info("job_status_changed", job_id=job.id, status_from=job.status, status_to=target)
    if is_terminal(target):
        JOBS_FINISHED.labels(job.model, target).inc()
        JOB_DURATION.labels(job.model, target).observe((now - job.created_at).total_seconds())


# ---- bookkeeping while holding the lease -----------------------------------------------------


async def release(
    conn: AsyncConnection,
    lease: Lease,
    now: datetime,
    patch: JobPatch | None = None,
    recheck_at: datetime | None = None,
) -> bool:
    """Hand a leased job back, with its bookkeeping. With `recheck_at` it is due again
    then (at once if a callback arrived since it was loaded)."""
    values: dict[str, Any] = {**(patch or {}), **LEASE_RETURNED}
    if recheck_at is not None:
        values["next_check_at"] = _due(lease.job, recheck_at, now)
    result = await conn.execute(_held(lease).values(**values))
    return bool(result.rowcount == 1)


def _held(lease: Lease) -> Update:
    return update(Job).where(Job.id == lease.job.id, Job.lease_owner == lease.owner)


async def begin_submit_attempt(conn: AsyncConnection, lease: Lease, now: datetime) -> bool:
    """Count a submission attempt and mark it started, before the provider hears of it;
    False when the lease is lost."""
    job = lease.job
    result = await conn.execute(
        _held(lease).values(submit_attempts=Job.submit_attempts + 1, submit_started_at=now)
    )
    held = bool(result.rowcount == 1)
    if held and job.submit_started_at is not None:
        resubmitting = NewEvent(
            EventType.PROVIDER_RESUBMITTING,
            {
                "reason": "the previous attempt's outcome is unknown",
                "previous_attempt_at": job.submit_started_at.isoformat(),
            },
        )
        await add_events(conn, job.id, [resubmitting], now)
    return held


async def request_check(
    conn: AsyncConnection, *, job_id: str, now: datetime, checked_before: datetime
) -> bool:
    """Make an in-flight job, not checked since `checked_before`, due now (once, not per
    reader)."""
    result = await conn.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.status.in_(IN_FLIGHT),
            or_(Job.checked_at.is_(None), Job.checked_at < checked_before),
            Job.next_check_at > now,
        )
        .values(next_check_at=now)
    )
    return bool(result.rowcount == 1)


async def request_archive(
    conn: AsyncConnection, *, since: datetime | None, now: datetime, limit: int
) -> list[str]:
    """Make up to `limit` succeeded jobs whose outputs are not archived (never tried, or
    given up on) due for archiving now, with fresh attempts; their ids."""
    candidates = (
        select(Job.id)
        .where(
            Job.status == JobStatus.SUCCEEDED,
            Job.outputs.is_not(None),
            or_(Job.archive_status.is_(None), Job.archive_status == ArchiveStatus.FAILED),
        )
        .order_by(Job.id)
        .limit(limit)
    )
    if since is not None:
        candidates = candidates.where(Job.completed_at >= since)
    result = await conn.execute(
        update(Job)
        .where(Job.id.in_(candidates.scalar_subquery()))
        .values(
            archive_status=ArchiveStatus.PENDING,
            archive_attempts=0,
            archive_due_at=now,
            archive_error=None,
        )
        .returning(Job.id)
    )
    job_ids = list(result.scalars())
    requested = NewEvent(EventType.ARCHIVE_REQUESTED, {"reason": "backfill"})
    await add_many_events(conn, [(job_id, requested) for job_id in job_ids], now)
    return job_ids


# ---- callbacks ----------------------------------------------------------------------------


@dataclass
class CallbackView:
    """What a callback is judged against: the job's status, task, and the furthest
    provider status a callback has claimed so far."""

    status: JobStatus
    task_id: str | None
    seen: ProviderStatus | None


async def lock_for_callbacks(
    conn: AsyncConnection, job_ids: Collection[str]
) -> dict[str, CallbackView]:
    """The jobs a batch of callbacks names, locked in id order on PostgreSQL (so batches
    in flight at once queue per job, never deadlock); SQLite has one writer anyway."""
    query = (
        select(Job.id, Job.status, Job.provider_task_id, Job.callback_status)
        .where(Job.id.in_(sorted(job_ids)))
        .order_by(Job.id)
        .with_for_update()
    )
    return {row.id: CallbackView(*row[1:]) for row in await conn.execute(query)}


async def note_callbacks(
    conn: AsyncConnection, claims: Mapping[str, ProviderStatus | None], now: datetime
) -> None:
    """Jobs a callback spoke about: remember the furthest status claimed, and make each
    due for a status check now (the worker confirms; a callback never moves a job)."""
    if not claims:
        return
    await conn.execute(
        update(Job)
        # Spelled out: an IN list cannot be expanded inside an executemany.
        .where(Job.id == bindparam("b_id"), or_(*(Job.status == s for s in _ACTIVE)))
        .values(callback_status=bindparam("b_seen"), next_check_at=bindparam("b_due")),
        [{"b_id": job_id, "b_seen": seen, "b_due": now} for job_id, seen in claims.items()],
    )


# ---- events --------------------------------------------------------------------------------


async def add_events(
    conn: AsyncConnection, job_id: str, events: Sequence[NewEvent], now: datetime
) -> None:
    await add_many_events(conn, [(job_id, event) for event in events], now)


async def add_many_events(
    conn: AsyncConnection, events: Sequence[tuple[str, NewEvent]], now: datetime
) -> None:
    """Append events to several jobs' trails in one statement."""
    if not events:
        return
    await conn.execute(
        insert(JobEvent),
        [
            {"job_id": job_id, "type": event.type.value, "data": event.data, "created_at": now}
            for job_id, event in events
        ],
    )
