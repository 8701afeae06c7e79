"""Writing a job's state: compare-and-set transitions committed with their events, lease
hand-backs, and the schedule of the job's next check. Submission and confirmation share it.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import case
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db import Database
from app.jobs import repository as repo
from app.jobs.models import Job
from app.jobs.states import JobStatus, is_terminal
from app.metrics import JOB_DURATION, JOBS_FINISHED
from app.timeutil import utcnow

log = structlog.get_logger(__name__)

DEADLINE_EXCEEDED = {
    "code": "deadline_exceeded",
    "message": "the job did not finish before its deadline",
}


def backoff_delay(
    attempt: int, *, base: float, cap: float, retry_after: float | None = None
) -> float:
    """Exponential backoff with jitter (half fixed, half random), never before Retry-After."""
    ceiling = min(cap, base * 2 ** max(attempt - 1, 0))
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not a secret
    return float(max(delay, retry_after or 0.0))


class Transitions:
    def __init__(self, *, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        return backoff_delay(
            attempt,
            base=self.settings.retry_base_seconds,
            cap=self.settings.retry_max_seconds,
            retry_after=retry_after,
        )

    def deadline(self, submitted_at: datetime) -> datetime:
        return submitted_at + timedelta(seconds=self.settings.job_deadline_seconds)

    def next_reconcile(self, now: datetime, submitted_at: datetime) -> datetime:
        """When a silent job is next asked about: after RECONCILE_AFTER, by its deadline."""
        return min(
            now + timedelta(seconds=self.settings.reconcile_after_seconds),
            self.deadline(submitted_at),
        )

    async def move(
        self,
        session: AsyncSession,
        job: Job,
        target: JobStatus,
        values: dict[str, Any],
        *,
        now: datetime,
        lease_owner: str,
        next_check: datetime,
    ) -> bool:
        """Move a leased job forward to `target`; False if someone else moved it first."""
        values = dict(values) | {"updated_at": now, "lease_owner": None, "lease_expires_at": None}
        if is_terminal(target):
            values |= {"completed_at": now, "next_check_at": webhook_due(job, now)}
        else:
            values["next_check_at"] = recheck_unless_new_callback(job, next_check, now)
        changed = await repo.change_status(
            session, job_id=job.id, target=target, values=values, lease_owner=lease_owner
        )
        if changed:
            await status_event(session, job, JobStatus(job.status), target, now)
        return changed

    async def fail(
        self,
        session: AsyncSession,
        job: Job,
        error: dict[str, str],
        *,
        now: datetime,
        lease_owner: str | None,
    ) -> bool:
        """Fail a job (with this error) unless it already ended."""
        changed = await repo.change_status(
            session,
            job_id=job.id,
            target=JobStatus.FAILED,
            lease_owner=lease_owner,
            values={
                "error": error,
                "updated_at": now,
                "completed_at": now,
                "next_check_at": webhook_due(job, now),
                "submit_started_at": None,
                "lease_owner": None,
                "lease_expires_at": None,
            },
        )
        if changed:
            await status_event(session, job, JobStatus(job.status), JobStatus.FAILED, now, error)
        return changed

    async def hold_release(
        self,
        session: AsyncSession,
        job: Job,
        *,
        lease_owner: str,
        now: datetime,
        values: dict[str, Any],
        next_check: datetime,
    ) -> None:
        """Hand a job back with its bookkeeping, due again at `next_check`."""
        values = dict(values) | {
            "next_check_at": recheck_unless_new_callback(job, next_check, now),
            "lease_owner": None,
            "lease_expires_at": None,
        }
        await repo.update_held(session, job_id=job.id, lease_owner=lease_owner, values=values)

    async def release(self, job: Job, lease_owner: str, *, due_now: bool = False) -> None:
        """Give up our lease; `due_now` makes the job due for the worker at once."""
        async with self.db.write() as session:
            values: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None}
            if due_now:
                values["next_check_at"] = utcnow()
            await repo.update_held(session, job_id=job.id, lease_owner=lease_owner, values=values)


def webhook_due(job: Job, now: datetime) -> datetime | None:
    """A job that ends owes its webhook_url a delivery; the worker makes it."""
    return now if job.webhook_url else None


def recheck_unless_new_callback(job: Job, planned: datetime, now: datetime) -> Any:
    """A callback that arrived while we were busy asks for a prompt check; keep it."""
    return case(
        (Job.callback_status.is_distinct_from(job.callback_status), now),
        else_=planned,
    )


async def status_event(
    session: AsyncSession,
    job: Job,
    current: JobStatus,
    target: JobStatus,
    now: datetime,
    error: dict[str, str] | None = None,
) -> None:
    """Record a status change (committed with it) and count a job that ended."""
    data = status_change_data(current, target, error)
    await repo.add_event(session, job_id=job.id, type="job.status_changed", data=data, now=now)
    note_status_change(job, current, target, now)


def status_change_data(
    current: JobStatus, target: JobStatus, error: dict[str, str] | None = None
) -> dict[str, Any]:
    """The data of a `job.status_changed` event."""
    data: dict[str, Any] = {"from": current.value, "to": target.value}
    if error is not None:
        data["error"] = error
    return data


def note_status_change(job: Job, current: JobStatus, target: JobStatus, now: datetime) -> None:
    """Log a committed status change and count a job that ended."""
    log.info("job_status_changed", job_id=job.id, status_from=current.value, status_to=target.value)
    if is_terminal(target):
        JOBS_FINISHED.labels(job.model, target.value).inc()
        JOB_DURATION.labels(job.model, target.value).observe((now - job.created_at).total_seconds())
