"""Leases: how a worker (or a request) reserves due jobs so that no one else works on them.

A lease is written to the job row (`lease_owner`, `lease_expires_at`). Claims take due
jobs of one queue with `FOR UPDATE SKIP LOCKED` on PostgreSQL (SQLite has one writer and
ignores the clause), so any number of claimers never get the same job; a crashed owner's
leases simply expire and are taken over.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.jobs.models import Job
from app.jobs.repository import LEASE_RETURNED
from app.jobs.states import JobStatus


@dataclass(frozen=True)
class Queue:
    """Due jobs in these statuses; with `overdue_after`, only those submitted longer ago.
    A job is due when its `due_at` column (`next_check_at`, or the archive's own) has come."""

    statuses: tuple[JobStatus, ...]
    overdue_after: timedelta | None = None
    due_at: Literal["next_check_at", "archive_due_at"] = "next_check_at"

    @property
    def due_column(self) -> ColumnElement[datetime]:
        column: ColumnElement[datetime] = Job.__table__.c[self.due_at]
        return column

    def due(self, now: datetime) -> list[ColumnElement[bool]]:
        conditions = [self.due_column <= now, Job.status.in_(self.statuses)]
        if self.overdue_after is not None:
            conditions.append(Job.submitted_at <= now - self.overdue_after)
        return conditions


def _lease_free(now: datetime) -> ColumnElement[bool]:
    return or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now)


async def claim(
    conn: AsyncConnection,
    queue: Queue,
    *,
    owner: str,
    now: datetime,
    until: datetime,
    limit: int,
) -> list[str]:
    """Lease up to `limit` due jobs of `queue` to `owner` until `until`, oldest due first."""
    candidates = (
        select(Job.id)
        .where(*queue.due(now), _lease_free(now))
        .order_by(queue.due_column)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    result = await conn.execute(
        update(Job)
        .where(Job.id.in_(candidates.scalar_subquery()), _lease_free(now))
        .values(lease_owner=owner, lease_expires_at=until)
        .returning(Job.id)
    )
    return list(result.scalars())


async def release(conn: AsyncConnection, *, owner: str, job_ids: Iterable[str]) -> None:
    """Give leases back untouched (a handler was cut off before it could)."""
    await conn.execute(
        update(Job)
        .where(Job.id.in_(list(job_ids)), Job.lease_owner == owner)
        .values(**LEASE_RETURNED)
    )


async def extend(conn: AsyncConnection, *, owner: str, job_id: str, until: datetime) -> bool:
    """Keep holding a lease for long work (an archive download); False once it was lost."""
    result = await conn.execute(
        update(Job).where(Job.id == job_id, Job.lease_owner == owner).values(lease_expires_at=until)
    )
    return bool(result.rowcount == 1)


async def depth(conn: AsyncConnection, queue: Queue, now: datetime) -> tuple[int, datetime | None]:
    """How many jobs of `queue` are due, and since when the oldest of them is."""
    row = (
        await conn.execute(select(func.count(), func.min(queue.due_column)).where(*queue.due(now)))
    ).one()
    return int(row[0]), row[1]
