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

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.jobs.models import Job
from app.jobs.repository import LEASE_RETURNED
from app.jobs.states import JobStatus


@dataclass(frozen=True)
class Queue:
    """Due jobs in these statuses; with `overdue_after`, only those submitted longer ago."""

    statuses: tuple[JobStatus, ...]
    overdue_after: timedelta | None = None

    def due(self, now: datetime) -> list[ColumnElement[bool]]:
        conditions = [Job.next_check_at <= now, Job.status.in_(self.statuses)]
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
        .order_by(Job.next_check_at)
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


async def depth(conn: AsyncConnection, queue: Queue, now: datetime) -> tuple[int, datetime | None]:
    """How many jobs of `queue` are due, and since when the oldest of them is."""
    row = (
        await conn.execute(select(func.count(), func.min(Job.next_check_at)).where(*queue.due(now)))
    ).one()
    return int(row[0]), row[1]
