"""The provider's truth: ask PoYo's status endpoint about a job and apply the answer.

Callbacks only make a job due; this is what moves it. It is also how a job whose callback
was lost gets finished (reconcile), how one past its deadline fails (expire), and how a
client watching a job sees its progress.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db import Database
from app.jobs import repository as repo
from app.jobs.models import Job, JobEvent, JobRecord
from app.jobs.states import (
    JobStatus,
    ProviderStatus,
    can_transition,
    from_provider,
    is_terminal,
    provider_rank,
)
from app.jobs.transitions import DEADLINE_EXCEEDED, Transitions
from app.provider.client import PoyoClient, ProviderError, ProviderRejected, ProviderUnavailable
from app.provider.schemas import TaskStatus
from app.timeutil import utcnow

IN_FLIGHT = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)


class Confirmation:
    def __init__(
        self,
        *,
        settings: Settings,
        db: Database,
        provider: PoyoClient,
        transitions: Transitions,
        on_check_requested: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.db = db
        self.provider = provider
        self.transitions = transitions
        self.on_check_requested = on_check_requested

    async def refresh_if_watched(self, job: JobRecord) -> None:
        """A client is reading this job: if it is in flight and has not been checked for
        PROGRESS_REFRESH_SECONDS, have the worker ask the provider now."""
        seconds = self.settings.progress_refresh_seconds
        if seconds <= 0 or job.status not in IN_FLIGHT:
            return
        now = utcnow()
        cutoff = now - timedelta(seconds=seconds)
        last = job.checked_at or job.submitted_at
        if (last is not None and last > cutoff) or (
            job.next_check_at is not None and job.next_check_at <= now
        ):
            return
        async with self.db.write() as session:
            asked = await repo.request_check(session, job_id=job.id, now=now, cutoff=cutoff)
        if asked:
            self.on_check_requested()

    async def refresh(self, *, job_id: str, lease_owner: str) -> None:
        """Fetch a leased job's task status from the provider and apply it."""
        async with self.db.read() as session:
            job = await repo.get_job(session, job_id)
            if job is None:
                return
            task_id = job.provider_task_id or await _claimed_task(session, job_id)
        if is_terminal(JobStatus(job.status)) or task_id is None:
            await self.transitions.release(job, lease_owner)
            return
        submitted = job.submitted_at
        overdue = submitted is not None and utcnow() >= self.transitions.deadline(submitted)
        try:
            status = await self.provider.status(task_id)
            if status.task_id != task_id:
                raise ProviderUnavailable("provider answered for another task")
        except ProviderError as exc:
            await self._record_poll_failure(job, lease_owner, task_id, exc, overdue)
            return
        await self.apply(job=job, status=status, lease_owner=lease_owner, overdue=overdue)

    async def apply(
        self, *, job: Job, status: TaskStatus, lease_owner: str, overdue: bool = False
    ) -> None:
        """Apply a confirmed provider status through the forward-only state machine."""
        now = utcnow()
        target, values = _confirmed(job, status, now)
        next_check = self.transitions.next_reconcile(now, job.submitted_at or now)
        if job.callback_status and provider_rank(ProviderStatus(job.callback_status)) > (
            provider_rank(status.status)
        ):
            # A callback claimed more than the provider confirms (a forgery, or a status
            # endpoint lagging behind its callbacks): forget the claim, so the next callback
            # is heard, and look again soon.
            attempts = (job.poll_attempts or 0) + 1
            values |= {"callback_status": status.status.value, "poll_attempts": attempts}
            next_check = min(
                next_check, now + timedelta(seconds=self.transitions.backoff(attempts))
            )
        async with self.db.write() as session:
            await _record_poll(session, job, status, now)
            moved = can_transition(JobStatus(job.status), target) and await self.transitions.move(
                session,
                job,
                target,
                values,
                now=now,
                lease_owner=lease_owner,
                next_check=next_check,
            )
            if not moved and overdue:
                moved = await self.transitions.fail(
                    session, job, DEADLINE_EXCEEDED, now=now, lease_owner=lease_owner
                )
            if not moved:
                await self.transitions.hold_release(
                    session,
                    job,
                    lease_owner=lease_owner,
                    now=now,
                    values=values,
                    next_check=next_check,
                )

    async def _record_poll_failure(
        self, job: Job, lease_owner: str, task_id: str, exc: ProviderError, overdue: bool
    ) -> None:
        now = utcnow()
        attempts = (job.poll_attempts or 0) + 1
        async with self.db.write() as session:
            await repo.add_event(
                session,
                job_id=job.id,
                type="provider.poll_failed",
                data={
                    "task_id": task_id,
                    "attempt": attempts,
                    "message": exc.message,
                    "http_status": exc.http_status,
                },
                now=now,
            )
            if overdue and await self.transitions.fail(
                session, job, DEADLINE_EXCEEDED, now=now, lease_owner=lease_owner
            ):
                return
            values: dict[str, Any] = {"poll_attempts": attempts, "checked_at": now}
            if job.provider_task_id is None and isinstance(exc, ProviderRejected):
                # The provider does not know the task a callback named: forget the claim
                # so the job is submitted normally.
                values["callback_status"] = None
            retry_after = exc.retry_after if isinstance(exc, ProviderUnavailable) else None
            next_check = min(
                now + timedelta(seconds=self.transitions.backoff(attempts, retry_after)),
                self.transitions.deadline(job.submitted_at or now),
            )
            await self.transitions.hold_release(
                session,
                job,
                lease_owner=lease_owner,
                now=now,
                values=values,
                next_check=next_check,
            )


async def _claimed_task(session: AsyncSession, job_id: str) -> str | None:
    """The task a callback said belongs to this job, when we never recorded one."""
    query = (
        select(JobEvent.data)
        .where(JobEvent.job_id == job_id, JobEvent.type == "callback.received")
        .order_by(JobEvent.id.desc())
        .limit(1)
    )
    data = (await session.execute(query)).scalar_one_or_none()
    task_id = data.get("task_id") if isinstance(data, dict) else None
    return task_id if isinstance(task_id, str) else None


async def _record_poll(session: AsyncSession, job: Job, status: TaskStatus, now: datetime) -> None:
    await repo.add_event(
        session,
        job_id=job.id,
        type="provider.polled",
        data={
            "task_id": status.task_id,
            "status": status.status.value,
            "progress": status.progress,
        },
        now=now,
    )
    if job.provider_task_id is None:
        await repo.add_event(
            session,
            job_id=job.id,
            type="provider.task_linked",
            data={"task_id": status.task_id},
            now=now,
        )


def _confirmed(job: Job, status: TaskStatus, now: datetime) -> tuple[JobStatus, dict[str, Any]]:
    """The status a confirmed provider answer leads to, and the columns it sets."""
    target = from_provider(status.status)
    outputs = status.outputs()
    if target is JobStatus.SUCCEEDED and not outputs:
        target = JobStatus.RUNNING  # finished without files yet: look again later
    values: dict[str, Any] = {"poll_attempts": 0, "checked_at": now}
    if job.provider_task_id is None:
        # A task a callback named, now confirmed by the provider: it is this job's.
        values |= {
            "provider_task_id": status.task_id,
            "submitted_at": now,
            "submit_started_at": None,
        }
    if can_transition(target, JobStatus(job.status)):
        return target, values  # a stale answer: it must not wind anything back
    visible: dict[str, Any] = {"provider_status": status.status.value}
    if status.progress is not None and status.progress > (job.progress or 0):
        visible["progress"] = status.progress
    if target is JobStatus.SUCCEEDED:
        visible |= {"outputs": outputs, "progress": 100}
    if target is JobStatus.FAILED:
        visible["error"] = {
            "code": "provider_failed",
            "message": (status.error_message or "the provider reported a failure")[:500],
        }
    if any(getattr(job, key) != value for key, value in visible.items()):
        visible["updated_at"] = now
    return target, values | visible
