"""The reads behind the change feed: the audit trail's newest rows, in id order, and the
jobs they belong to. Plain Core statements on a read connection."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import plain_columns
from app.jobs.models import EventRecord, Job, JobEvent, JobRecord

_EVENTS = JobEvent.__table__.c
_JOBS = Job.__table__.c
_EVENT_FIELDS = plain_columns(JobEvent)
_JOB_FIELDS = plain_columns(Job)

_NEWEST_ID = select(func.max(_EVENTS.id))
# The next ids and their jobs only: an event's data (a callback's raw body) is read when a
# stream wants it.
_IDS_AFTER = (
    select(_EVENTS.id, _EVENTS.job_id)
    .where(_EVENTS.id > bindparam("after"))
    .order_by(_EVENTS.id)
    .limit(bindparam("limit"))
)


async def newest_event_id(conn: AsyncConnection) -> int:
    return int((await conn.execute(_NEWEST_ID)).scalar_one_or_none() or 0)


async def ids_after(conn: AsyncConnection, after: int, limit: int) -> list[tuple[int, str]]:
    """(id, job_id) of the events after `after`, oldest first."""
    result = await conn.execute(_IDS_AFTER, {"after": after, "limit": limit})
    return [(event_id, job_id) for event_id, job_id in result]


async def events_by_id(conn: AsyncConnection, ids: Collection[int]) -> list[EventRecord]:
    query = select(*_EVENT_FIELDS).where(_EVENTS.id.in_(sorted(ids))).order_by(_EVENTS.id)
    return list((await conn.execute(query)).all())


async def jobs_by_id(conn: AsyncConnection, ids: Collection[str]) -> dict[str, JobRecord]:
    query = select(*_JOB_FIELDS).where(_JOBS.id.in_(sorted(ids)))
    return {row.id: row for row in await conn.execute(query)}


async def job_events_between(
    conn: AsyncConnection, job_id: str, after: int, upto: int, limit: int
) -> list[EventRecord]:
    """One job's events with `after` < id ≤ `upto`, oldest first."""
    query = (
        select(*_EVENT_FIELDS)
        .where(_EVENTS.job_id == job_id, _EVENTS.id > after, _EVENTS.id <= upto)
        .order_by(_EVENTS.id)
        .limit(limit)
    )
    return list((await conn.execute(query)).all())


async def latest_job_event(conn: AsyncConnection, job_id: str, upto: int) -> EventRecord | None:
    query = (
        select(*_EVENT_FIELDS)
        .where(_EVENTS.job_id == job_id, _EVENTS.id <= upto)
        .order_by(_EVENTS.id.desc())
        .limit(1)
    )
    row: EventRecord | None = (await conn.execute(query)).first()
    return row


async def owner_events_between(
    conn: AsyncConnection, owner: str | None, after: int, upto: int, limit: int
) -> list[EventRecord]:
    """The events of `owner`'s jobs (every job's when None) with `after` < id ≤ `upto`."""
    query = (
        select(*_EVENT_FIELDS)
        .where(_EVENTS.id > after, _EVENTS.id <= upto)
        .order_by(_EVENTS.id)
        .limit(limit)
    )
    if owner is not None:
        query = query.join(Job.__table__, _JOBS.id == _EVENTS.job_id).where(_JOBS.owner == owner)
    return list((await conn.execute(query)).all())
