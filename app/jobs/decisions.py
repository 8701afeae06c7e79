"""What to do with a job, decided without I/O: the worker's timing rules, the next step
of a pending job, and what a confirmed provider answer changes. Tested exhaustively in
tests/test_decisions.py; the services carry the decisions out."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.backoff import Backoff
from app.config import Settings
from app.jobs.models import Job, JobError, provider_output
from app.jobs.repository import JobPatch, StatusChange
from app.jobs.states import (
    ArchiveStatus,
    JobStatus,
    can_transition,
    from_provider,
    provider_rank,
)
from app.provider.schemas import TaskStatus

DEADLINE_EXCEEDED = JobError(
    code="deadline_exceeded", message="the job did not finish before its deadline"
)
MAX_ERROR_MESSAGE_CHARS = 500


@dataclass(frozen=True)
class Policy:
    """The worker's timing rules (from Settings)."""

    retry: Backoff
    reconcile_after: timedelta
    deadline: timedelta
    uncertain_grace: timedelta
    submit_max_attempts: int
    # A job that succeeds has its outputs archived (ARCHIVE_ENABLED).
    archive_outputs: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            retry=Backoff(settings.retry_base_seconds, settings.retry_max_seconds),
            reconcile_after=timedelta(seconds=settings.reconcile_after_seconds),
            deadline=timedelta(seconds=settings.job_deadline_seconds),
            uncertain_grace=timedelta(seconds=settings.uncertain_submit_grace_seconds),
            submit_max_attempts=settings.submit_max_attempts,
            archive_outputs=settings.archive_enabled,
        )

    def deadline_of(self, submitted_at: datetime) -> datetime:
        return submitted_at + self.deadline

    def is_overdue(self, job: Job, now: datetime) -> bool:
        return job.submitted_at is not None and now >= self.deadline_of(job.submitted_at)

    def next_reconcile(self, now: datetime, submitted_at: datetime) -> datetime:
        """When a silent job is next asked about: after RECONCILE_AFTER, by its deadline."""
        return min(now + self.reconcile_after, self.deadline_of(submitted_at))

    def retry_at(self, now: datetime, attempt: int, retry_after: float | None = None) -> datetime:
        return now + timedelta(seconds=self.retry.delay(attempt, retry_after))

    def next_submit_step(self, job: Job, now: datetime) -> tuple[Submit, datetime | None]:
        """What the submit loop does with a pending job it leased (and, to wait, until when)."""
        if job.status is not JobStatus.PENDING:
            return Submit.LEAVE, None
        if job.callback_status is not None:
            # A callback named a task for this job: we crashed after the provider accepted
            # it. Confirm and link it rather than start a second task.
            return Submit.LINK, None
        if job.submit_started_at is not None and now < job.submit_started_at + self.uncertain_grace:
            # The last attempt's outcome is unknown: wait for its callback first.
            return Submit.WAIT, job.submit_started_at + self.uncertain_grace
        if job.submit_attempts >= self.submit_max_attempts:
            return Submit.GIVE_UP, None
        return Submit.SEND, None

    def after_submit_failure(
        self, *, attempt: int, ambiguous: bool, retry_after: float | None, now: datetime
    ) -> datetime | None:
        """When to try a failed submission again; None: give up now. An attempt whose
        outcome is unknown first waits for its callback (the grace), and never ends the job
        here: only the next step, with no callback come, may."""
        if ambiguous:
            return now + max(self.uncertain_grace, timedelta(seconds=self.retry.delay(attempt)))
        if attempt >= self.submit_max_attempts:
            return None
        return self.retry_at(now, attempt, retry_after)


class Submit(enum.Enum):
    LEAVE = "leave"  # not pending any more: hand it back untouched
    LINK = "link"  # a callback named its task: confirm it with the provider
    WAIT = "wait"  # the last attempt's outcome is unknown: wait for its callback
    GIVE_UP = "give_up"  # out of attempts: the job fails with submit_failed
    SEND = "send"  # submit (again)


def confirm(policy: Policy, job: Job, status: TaskStatus, now: datetime) -> StatusChange:
    """What a provider answer (confirmed by its status endpoint) changes on the job as
    loaded: the status to move to (the current one, or an earlier one: then nothing
    moves), the columns to set, and when the job is next looked at if it does not end."""
    target = from_provider(status.status)
    outputs = [provider_output(file.file_url, file.file_type) for file in status.files or []]
    if target is JobStatus.SUCCEEDED and not outputs:
        target = JobStatus.RUNNING  # finished without files yet: look again later
    patch = JobPatch(poll_attempts=0, checked_at=now)
    if job.provider_task_id is None:
        # A task a callback named, now confirmed by the provider: it is this job's.
        patch.update(
            JobPatch(provider_task_id=status.task_id, submitted_at=now, submit_started_at=None)
        )
    next_check = policy.next_reconcile(now, job.submitted_at or now)
    if job.callback_status is not None and provider_rank(job.callback_status) > provider_rank(
        status.status
    ):
        # A callback claimed more than the provider confirms (a forgery, or a status
        # endpoint lagging behind its callbacks): forget the claim, so that the next
        # callback is heard, and look again soon.
        attempt = job.poll_attempts + 1
        patch.update(JobPatch(callback_status=status.status, poll_attempts=attempt))
        next_check = min(next_check, policy.retry_at(now, attempt))
    if can_transition(target, job.status):
        return StatusChange(job, target, now, next_check, patch)  # stale: winds nothing back
    visible = JobPatch(provider_status=status.status)
    if status.progress is not None and status.progress > job.progress:
        visible["progress"] = status.progress
    if target is JobStatus.SUCCEEDED:
        visible.update(JobPatch(outputs=outputs, progress=100))
        if status.credits_amount is not None:
            visible["cost_charged_millicredits"] = round(status.credits_amount * 1000)
        if policy.archive_outputs:
            patch.update(JobPatch(archive_status=ArchiveStatus.PENDING, archive_due_at=now))
    if target is JobStatus.FAILED:
        message = status.error_message or "the provider reported a failure"
        visible["error"] = JobError(
            code="provider_failed", message=message[:MAX_ERROR_MESSAGE_CHARS]
        )
    if any(getattr(job, key) != value for key, value in visible.items()):
        visible["updated_at"] = now
    patch.update(visible)
    return StatusChange(job, target, now, next_check, patch)
