"""The read side: one job, a page of jobs, a job's audit trail. Tenancy is applied here.

Pages are keyset-paginated on the job id, which is time-ordered (ids.py), so the cost of
a page does not depend on how deep it is or how long the history grows. Reads are plain
Core statements on a read connection: clients poll these endpoints in tight loops, and
the ORM's session and identity map would cost more than the query itself.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, bindparam, select

from app.auth.models import Caller
from app.db import Database, plain_columns
from app.errors import ErrorItem, InvalidRequest, NotFound
from app.ids import first_job_id_at
from app.jobs.models import EventRecord, Job, JobEvent, JobRecord
from app.jobs.states import JobStatus

JOB_ID = re.compile(r"^job_[0-9a-z]{26}$")
_JOBS = Job.__table__.c
_EVENTS = JobEvent.__table__.c
_JOB_FIELDS = plain_columns(Job)
_EVENT_FIELDS = plain_columns(JobEvent)


# Built once, for the endpoint clients poll.
_JOB_BY_ID = select(*_JOB_FIELDS).where(_JOBS.id == bindparam("job_id"))
_OWN_JOB_BY_ID = _JOB_BY_ID.where(_JOBS.owner == bindparam("owner"))


def _jobs_of(caller: Caller) -> Select[Any]:
    query = select(*_JOB_FIELDS)
    return query if caller.scope is None else query.where(_JOBS.owner == caller.scope)


@dataclass(frozen=True)
class JobFilter:
    status: JobStatus | None = None
    model: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    # Any of these models (a category's, say); an empty tuple matches nothing.
    models: tuple[str, ...] | None = None


def encode_cursor(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).rstrip(b"=").decode()


def decode_cursor(cursor: str, pattern: re.Pattern[str]) -> str:
    try:
        value = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        value = ""
    if not pattern.match(value):
        raise _invalid_cursor()
    return value


def _invalid_cursor() -> InvalidRequest:
    return InvalidRequest(
        "invalid cursor",
        details=[
            ErrorItem(
                loc=["query", "cursor"], msg="not a cursor this API returned", type="value_error"
            )
        ],
    )


def _ms_ceiling(moment: datetime) -> datetime:
    """created_at is stored to the millisecond; round a bound up to the next one."""
    if moment.microsecond % 1000:
        # At the last representable instant there is nothing to round up to.
        with contextlib.suppress(OverflowError):
            moment = moment + timedelta(microseconds=1000 - moment.microsecond % 1000)
    return moment


async def get_job(db: Database, *, caller: Caller, job_id: str) -> JobRecord:
    """The caller's job; another owner's job is as unknown as a missing one."""
    if JOB_ID.match(job_id):
        if caller.scope is None:
            query, params = _JOB_BY_ID, {"job_id": job_id}
        else:
            query, params = _OWN_JOB_BY_ID, {"job_id": job_id, "owner": caller.scope}
        async with db.read_connection() as conn:
            job: JobRecord | None = (await conn.execute(query, params)).first()
        if job is not None:
            return job
    shown = job_id if len(job_id) <= 64 else job_id[:61] + "..."
    raise NotFound(f"no job with id {shown!r}")


async def list_jobs(
    db: Database, *, caller: Caller, filters: JobFilter, limit: int, cursor: str | None
) -> tuple[list[JobRecord], str | None]:
    """A page of jobs, newest first, and the cursor of the next page (None at the end)."""
    query = _jobs_of(caller).order_by(_JOBS.id.desc()).limit(limit + 1)
    if filters.status is not None:
        query = query.where(_JOBS.status == filters.status)
    if filters.model is not None:
        query = query.where(_JOBS.model == filters.model)
    if filters.models is not None:
        query = query.where(_JOBS.model.in_(filters.models))
    if filters.created_after is not None:
        query = query.where(_JOBS.id >= first_job_id_at(_ms_ceiling(filters.created_after)))
    if filters.created_before is not None:
        query = query.where(_JOBS.id < first_job_id_at(_ms_ceiling(filters.created_before)))
    if cursor is not None:
        query = query.where(_JOBS.id < decode_cursor(cursor, JOB_ID))
    async with db.read_connection() as conn:
        jobs: list[JobRecord] = list((await conn.execute(query)).all())
    if len(jobs) > limit:
        return jobs[:limit], encode_cursor(jobs[limit - 1].id)
    return jobs, None


EVENT_CURSOR = re.compile(r"^[0-9]{1,19}$")
MAX_EVENT_ID = 2**63 - 1  # event ids are signed 64-bit integers


async def list_events(
    db: Database, *, caller: Caller, job_id: str, limit: int, cursor: str | None
) -> tuple[list[EventRecord], str | None]:
    """The job's audit trail, oldest first."""
    await get_job(db, caller=caller, job_id=job_id)
    query = (
        select(*_EVENT_FIELDS).where(_EVENTS.job_id == job_id).order_by(_EVENTS.id).limit(limit + 1)
    )
    if cursor is not None:
        after = int(decode_cursor(cursor, EVENT_CURSOR))
        if after > MAX_EVENT_ID:
            raise _invalid_cursor()
        query = query.where(_EVENTS.id > after)
    async with db.read_connection() as conn:
        events: list[EventRecord] = list((await conn.execute(query)).all())
    if len(events) > limit:
        return events[:limit], encode_cursor(str(events[limit - 1].id))
    return events, None
