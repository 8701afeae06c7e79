"""The provider's truth: ask PoYo's status endpoint about a job and apply the answer.

Callbacks only make a job due; this is what moves it. It is also how a job whose callback
was lost gets finished (reconcile), how one past its deadline fails (expire), and how a
client watching a job sees its progress.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import structlog

from app.config import Settings
from app.db import Database, is_unavailable
from app.jobs import repository as repo
from app.jobs.decisions import DEADLINE_EXCEEDED, Policy, confirm
from app.jobs.events import EventType, NewEvent
from app.jobs.models import JobRecord
from app.jobs.repository import JobPatch, Lease
from app.jobs.states import IN_FLIGHT, can_transition, is_terminal
from app.provider.client import PoyoClient, ProviderError, ProviderRejected, ProviderUnavailable
from app.provider.schemas import TaskStatus
from app.timeutil import utcnow
from app.webhooks import outbox

log = structlog.get_logger(__name__)


class Confirmation:
    def __init__(
        self,
        *,
        settings: Settings,
        db: Database,
        provider: PoyoClient,
        on_check_requested: Callable[[], None],
    ) -> None:
        self.db = db
        self.provider = provider
        self.policy = Policy.from_settings(settings)
        self.progress_refresh = timedelta(seconds=settings.progress_refresh_seconds)
        self.progress_webhook_interval = timedelta(seconds=settings.webhook_progress_seconds)
        self.on_check_requested = on_check_requested

    async def refresh_if_watched(self, job: JobRecord) -> None:
        """A client is reading this job: if it is in flight and has not been checked for
        PROGRESS_REFRESH_SECONDS, have the worker ask the provider now."""
        if not self.progress_refresh or job.status not in IN_FLIGHT:
            return
        now = utcnow()
        cutoff = now - self.progress_refresh
        last = job.checked_at or job.submitted_at
        if (last is not None and last > cutoff) or (
            job.next_check_at is not None and job.next_check_at <= now
        ):
            return
        try:
            async with self.db.write() as conn:
                asked = await repo.request_check(
                    conn, job_id=job.id, now=now, checked_before=cutoff
                )
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            # Best effort: the reader still gets the job; the reconcile loop comes anyway.
            log.warning("progress_refresh_failed", job_id=job.id, error_type=type(exc).__name__)
            return
        if asked:
            self.on_check_requested()

    async def refresh(self, *, job_id: str, lease_owner: str) -> None:
        """Fetch a leased job's task status from the provider and apply it."""
        async with self.db.read() as session:
            job = await repo.load(session, job_id)
            if job is None:
                return
            task_id = job.provider_task_id or await repo.claimed_task(session, job_id)
        lease = Lease(job, lease_owner)
        if is_terminal(job.status) or task_id is None:
            async with self.db.write() as conn:
                await repo.release(conn, lease, utcnow())
            return
        # Judged before asking: a slow answer must not save a job from its deadline.
        overdue = self.policy.is_overdue(job, utcnow())
        try:
            status = await self.provider.status(task_id)
            if status.task_id != task_id:
                raise ProviderUnavailable("provider answered for another task")
        except ProviderError as exc:
            await self._record_poll_failure(lease, task_id, exc, overdue)
            return
        await self.apply(lease, status, overdue)

    async def apply(self, lease: Lease, status: TaskStatus, overdue: bool) -> None:
        """Apply a confirmed provider status through the forward-only state machine."""
        job = lease.job
        polled = [
            NewEvent(
                EventType.PROVIDER_POLLED,
                {"task_id": status.task_id, "status": status.status, "progress": status.progress},
            )
        ]
        if job.provider_task_id is None:
            polled.append(NewEvent(EventType.PROVIDER_TASK_LINKED, {"task_id": status.task_id}))
        async with self.db.write() as conn:
            # Once our turn has come: events are stamped in the order they are written.
            now = utcnow()
            change = confirm(self.policy, job, status, now)
            await repo.add_events(conn, job.id, polled, now)
            moved = can_transition(job.status, change.target) and await repo.move(
                conn, change, lease.owner
            )
            if not moved and not (overdue and await repo.fail(conn, lease, DEADLINE_EXCEEDED, now)):
                released = await repo.release(conn, lease, now, change.patch, change.next_check)
                if released and change.patch.get("progress", job.progress) > job.progress:
                    await outbox.progress(conn, job, now, self.progress_webhook_interval)

    async def _record_poll_failure(
        self, lease: Lease, task_id: str, exc: ProviderError, overdue: bool
    ) -> None:
        job = lease.job
        attempt = job.poll_attempts + 1
        failed = NewEvent(
            EventType.PROVIDER_POLL_FAILED,
            {
                "task_id": task_id,
                "attempt": attempt,
                "message": exc.message,
                "http_status": exc.http_status,
            },
        )
        retry_after = exc.retry_after if isinstance(exc, ProviderUnavailable) else None
        async with self.db.write() as conn:
            now = utcnow()  # once our turn has come, as in apply()
            patch = JobPatch(poll_attempts=attempt, checked_at=now)
            if job.provider_task_id is None and isinstance(exc, ProviderRejected):
                # The provider does not know the task a callback named: forget the claim so
                # the job is submitted normally.
                patch["callback_status"] = None
            retry_at = min(
                self.policy.retry_at(now, attempt, retry_after),
                self.policy.deadline_of(job.submitted_at or now),
            )
            await repo.add_events(conn, job.id, [failed], now)
            # A job past its deadline fails with deadline_exceeded, whatever the provider says.
            if not (overdue and await repo.fail(conn, lease, DEADLINE_EXCEEDED, now)):
                await repo.release(conn, lease, now, patch, retry_at)
