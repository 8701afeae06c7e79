"""The job lifecycle: create, submit to the provider, apply the provider's truth.

Every state change is a compare-and-set committed together with the event that records
it. The provider is never called inside a database transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import structlog
from sqlalchemy import case, select
from sqlalchemy.exc import IntegrityError

from app.auth.ratelimit import charge
from app.catalog.models import CATALOG
from app.config import Settings
from app.db import Database
from app.errors import Conflict
from app.ids import job_id_time, new_job_id
from app.jobs import repository as repo
from app.jobs.models import IdempotencyKey, Job, JobEvent
from app.jobs.schemas import JobCreate
from app.jobs.states import (
    JobStatus,
    ProviderStatus,
    can_transition,
    from_provider,
    is_terminal,
    provider_rank,
)
from app.metrics import JOB_DURATION, JOBS_CREATED, JOBS_FINISHED
from app.provider.client import PoyoClient, ProviderError, ProviderRejected, ProviderUnavailable
from app.provider.schemas import SubmittedTask, TaskStatus
from app.timeutil import utcnow

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Caller:
    """Who is asking: the owner their jobs belong to, and whether they may see all jobs."""

    owner: str
    key_id: str | None = None
    is_admin: bool = False

    @property
    def scope(self) -> str | None:
        """The owner to filter by, or None for an admin."""
        return None if self.is_admin else self.owner


def backoff_delay(
    attempt: int, *, base: float, cap: float, retry_after: float | None = None
) -> float:
    """Exponential backoff with jitter (half fixed, half random), never before Retry-After."""
    ceiling = min(cap, base * 2 ** max(attempt - 1, 0))
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not a secret
    return float(max(delay, retry_after or 0.0))


def request_fingerprint(body: JobCreate) -> str:
    canonical = orjson.dumps(body.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


class JobService:
    def __init__(
        self,
        *,
        settings: Settings,
        db: Database,
        provider: PoyoClient,
        callback_url_for: Callable[[str], str],
        instance_id: str,
    ) -> None:
        self.settings = settings
        self.db = db
        self.provider = provider
        self.callback_url_for = callback_url_for
        self.instance_id = instance_id
        self.on_check_requested: Callable[[], None] = lambda: None
        self._submitting: set[asyncio.Task[Any]] = set()
        self._finishing: set[asyncio.Task[None]] = set()

    async def drain(self) -> None:
        """Let requests cut off by a shutdown hand their jobs over before the pool closes."""
        for tasks in (self._submitting, self._finishing):
            if tasks:
                await asyncio.wait(list(tasks), timeout=2.0)

    # ---- creation ------------------------------------------------------------------

    async def create(
        self, *, caller: Caller, body: JobCreate, idempotency_key: str | None
    ) -> tuple[Job, bool]:
        """Store the job, then submit it. Returns the job and whether it was created now."""
        entry = CATALOG.get(body.model)
        normalized_input = entry.validate_input(body.input)
        fingerprint = request_fingerprint(body) if idempotency_key else None
        if idempotency_key:
            replay = await self._replay(caller, idempotency_key, fingerprint)
            if replay is not None:
                return replay, False
        lease_owner = f"api:{self.instance_id}"
        try:
            job = await self._insert(
                caller, body, normalized_input, idempotency_key, fingerprint, lease_owner
            )
        except IntegrityError:
            # Another request with the same key won the race; answer with its job.
            assert idempotency_key is not None
            replay = await self._replay(caller, idempotency_key, fingerprint)
            if replay is None:
                raise
            return replay, False
        JOBS_CREATED.labels(job.model).inc()
        request = asyncio.current_task()
        if request is not None:
            self._submitting.add(request)
        try:
            await self.submit(job=job, lease_owner=lease_owner)
        except asyncio.CancelledError:
            # Shutting down mid-submission: hand the job to the worker now rather than
            # when the lease runs out. Its outcome is unknown, so it is treated as such.
            hand_over = asyncio.create_task(self._hand_over(job, lease_owner))
            self._finishing.add(hand_over)
            hand_over.add_done_callback(self._finishing.discard)
            await asyncio.shield(hand_over)
            raise
        finally:
            self._submitting.discard(request)
        async with self.db.read() as session:
            fresh = await repo.get_job(session, job.id)
        return (fresh or job), True

    async def _hand_over(self, job: Job, lease_owner: str) -> None:
        async with self.db.write() as session:
            await repo.update_held(
                session,
                job_id=job.id,
                lease_owner=lease_owner,
                values={"lease_owner": None, "lease_expires_at": None, "next_check_at": utcnow()},
            )

    async def _replay(self, caller: Caller, key: str, fingerprint: str | None) -> Job | None:
        cutoff = utcnow() - timedelta(seconds=self.settings.idempotency_ttl_seconds)
        async with self.db.read() as session:
            row = await session.get(IdempotencyKey, (caller.owner, key))
            if row is None or row.created_at < cutoff:
                return None
            if row.request_hash != fingerprint:
                raise Conflict(
                    "this Idempotency-Key was already used with a different request body"
                )
            return await repo.get_job(session, row.job_id)

    async def _insert(
        self,
        caller: Caller,
        body: JobCreate,
        normalized_input: dict[str, Any],
        idempotency_key: str | None,
        fingerprint: str | None,
        lease_owner: str,
    ) -> Job:
        now = utcnow()
        job_id = new_job_id(now)
        created_at = job_id_time(job_id)
        lease = timedelta(seconds=self.settings.worker_lease_seconds)
        job = Job(
            id=job_id,
            owner=caller.owner,
            model=body.model,
            status=JobStatus.PENDING.value,
            input=normalized_input,
            metadata_=dict(body.metadata),
            webhook_url=body.webhook_url,
            progress=0,
            created_at=created_at,
            updated_at=created_at,
            # The API holds the first submission attempt; if this process dies before it
            # records the outcome, the lease expires and the worker takes over.
            submit_attempts=1,
            poll_attempts=0,
            submit_started_at=now,
            next_check_at=now + lease,
            lease_owner=lease_owner,
            lease_expires_at=now + lease,
        )
        async with self.db.write() as session:
            if caller.key_id is not None:
                await charge(
                    session, key_id=caller.key_id, limit=self.settings.rate_limit_jobs_per_minute
                )
            if idempotency_key:
                await self._expire_key(session, caller.owner, idempotency_key)
            session.add(job)
            await session.flush()
            if idempotency_key:
                session.add(
                    IdempotencyKey(
                        owner=caller.owner,
                        key=idempotency_key,
                        request_hash=fingerprint,
                        job_id=job_id,
                        created_at=now,
                    )
                )
            await repo.add_event(
                session,
                job_id=job_id,
                type="job.created",
                data={"model": body.model, "key_id": caller.key_id},
                now=now,
            )
        return job

    async def _expire_key(self, session: Any, owner: str, key: str) -> None:
        """A key older than the retention window may be used again."""
        cutoff = utcnow() - timedelta(seconds=self.settings.idempotency_ttl_seconds)
        row = await session.get(IdempotencyKey, (owner, key))
        if row is not None and row.created_at < cutoff:
            await session.delete(row)
            await session.flush()

    # ---- submission ----------------------------------------------------------------

    async def submit(self, *, job: Job, lease_owner: str) -> None:
        """Send a job we hold the lease on to the provider and record what happened."""
        try:
            task = await self.provider.submit(
                model=job.model, input=job.input, callback_url=self.callback_url_for(job.id)
            )
        except ProviderRejected as exc:
            await self._record_rejection(job, lease_owner, exc)
        except ProviderUnavailable as exc:
            await self._record_submit_failure(job, lease_owner, exc)
        else:
            await self._record_submission(job, lease_owner, task)

    async def _record_submission(self, job: Job, lease_owner: str, task: SubmittedTask) -> None:
        """Record an accepted task. Even if our lease lapsed meanwhile, a task the provider
        accepted for a job that has none is this job's: recording it prevents a second one."""
        now = utcnow()
        target = from_provider(task.status)
        next_check = self._next_reconcile(now, now)
        if is_terminal(target):
            # A submit answer is not a confirmation: only the status endpoint ends a job.
            target, next_check = JobStatus.QUEUED, now
        async with self.db.write() as session:
            changed = await repo.record_task(
                session,
                job_id=job.id,
                target=target,
                values={
                    "provider_task_id": task.task_id,
                    "provider_status": task.status.value,
                    "submitted_at": now,
                    "updated_at": now,
                    "submit_started_at": None,
                    "next_check_at": self._recheck_unless_new_callback(job, next_check, now),
                    "lease_owner": None,
                    "lease_expires_at": None,
                },
            )
            event = "provider.submitted" if changed else "provider.duplicate_task"
            await repo.add_event(
                session,
                job_id=job.id,
                type=event,
                data={"task_id": task.task_id, "attempt": job.submit_attempts},
                now=now,
            )
            if changed:
                await self._status_event(session, job.id, JobStatus.PENDING, target, now)
        if not changed:
            log.warning("provider_task_not_recorded", job_id=job.id, task_id=task.task_id)

    async def _record_rejection(self, job: Job, lease_owner: str, exc: ProviderRejected) -> None:
        now = utcnow()
        error = {"code": "provider_rejected", "message": exc.message}
        async with self.db.write() as session:
            await repo.add_event(
                session,
                job_id=job.id,
                type="provider.rejected",
                data={"http_status": exc.http_status, "message": exc.message},
                now=now,
            )
            await self._fail(session, job, error, now, lease_owner=lease_owner)

    async def _record_submit_failure(
        self, job: Job, lease_owner: str, exc: ProviderUnavailable
    ) -> None:
        now = utcnow()
        attempts = job.submit_attempts
        async with self.db.write() as session:
            await repo.add_event(
                session,
                job_id=job.id,
                type="provider.submit_failed",
                data={
                    "attempt": attempts,
                    "http_status": exc.http_status,
                    "message": exc.message,
                    "retry_after": exc.retry_after,
                    "outcome_unknown": exc.ambiguous,
                },
                now=now,
            )
            if attempts >= self.settings.submit_max_attempts and not exc.ambiguous:
                # (An attempt whose outcome is unknown first waits for its callback; the
                # job fails only if none comes: see submit_due.)
                error = {
                    "code": "submit_failed",
                    "message": f"the provider could not be reached after {attempts} attempts: "
                    f"{exc.message}",
                }
                await self._fail(session, job, error, now, lease_owner=lease_owner)
                return
            if exc.ambiguous:
                # The provider may have started a task: wait for its callback before
                # trying again, so a slow answer does not become a second paid task.
                delay = max(
                    self.settings.uncertain_submit_grace_seconds,
                    backoff_delay(
                        attempts,
                        base=self.settings.retry_base_seconds,
                        cap=self.settings.retry_max_seconds,
                    ),
                )
                started = job.submit_started_at
            else:
                delay = backoff_delay(
                    attempts,
                    base=self.settings.retry_base_seconds,
                    cap=self.settings.retry_max_seconds,
                    retry_after=exc.retry_after,
                )
                started = None
            await self._hold_release(
                session,
                job,
                lease_owner,
                now,
                {"submit_started_at": started},
                now + timedelta(seconds=delay),
            )

    async def submit_due(self, *, job_id: str, lease_owner: str) -> None:
        """Worker step for a leased pending job: link, wait, give up, or (re)submit."""
        async with self.db.read() as session:
            job = await repo.get_job(session, job_id)
        if job is None:
            return
        if job.status != JobStatus.PENDING.value:
            await self._release(job, lease_owner)
            return
        if job.callback_status is not None:
            # A callback named a task for this job: we crashed after the provider accepted
            # it. Confirm and link it rather than start a second task.
            await self.refresh(job_id=job_id, lease_owner=lease_owner)
            return
        now = utcnow()
        grace = timedelta(seconds=self.settings.uncertain_submit_grace_seconds)
        if job.submit_started_at is not None and now < job.submit_started_at + grace:
            await self._postpone(job, lease_owner, job.submit_started_at + grace)
            return
        if job.submit_attempts >= self.settings.submit_max_attempts:
            error = {
                "code": "submit_failed",
                "message": f"gave up after {job.submit_attempts} submission attempts",
            }
            async with self.db.write() as session:
                await self._fail(session, job, error, now, lease_owner=lease_owner)
            return
        if not await self._begin_attempt(job, lease_owner, now):
            return
        await self.submit(job=job, lease_owner=lease_owner)

    async def _begin_attempt(self, job: Job, lease_owner: str, now: datetime) -> bool:
        """Count the attempt and mark it started before the provider hears of it."""
        async with self.db.write() as session:
            held = await repo.update_held(
                session,
                job_id=job.id,
                lease_owner=lease_owner,
                values={"submit_attempts": Job.submit_attempts + 1, "submit_started_at": now},
            )
            if held and job.submit_started_at is not None:
                await repo.add_event(
                    session,
                    job_id=job.id,
                    type="provider.resubmitting",
                    data={
                        "reason": "the previous attempt's outcome is unknown",
                        "previous_attempt_at": job.submit_started_at.isoformat(),
                    },
                    now=now,
                )
        job.submit_attempts += 1
        job.submit_started_at = now
        return held

    async def _postpone(self, job: Job, lease_owner: str, until: datetime) -> None:
        async with self.db.write() as session:
            await self._hold_release(session, job, lease_owner, utcnow(), {}, until)

    # ---- the provider's truth ------------------------------------------------------

    async def refresh_if_watched(self, job: Job) -> None:
        """A client is reading this job: if it is in flight and has not been checked for
        PROGRESS_REFRESH_SECONDS, have the worker ask the provider now."""
        seconds = self.settings.progress_refresh_seconds
        if seconds <= 0 or job.status not in (JobStatus.QUEUED.value, JobStatus.RUNNING.value):
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
            task_id = job.provider_task_id or await self._claimed_task(session, job_id)
        if is_terminal(JobStatus(job.status)) or task_id is None:
            await self._release(job, lease_owner)
            return
        now = utcnow()
        deadline_passed = job.submitted_at is not None and now >= self._deadline(job.submitted_at)
        try:
            status = await self.provider.status(task_id)
            if status.task_id != task_id:
                raise ProviderUnavailable("provider answered for another task")
        except ProviderError as exc:
            await self._record_poll_failure(job, lease_owner, task_id, exc, deadline_passed)
            return
        await self.apply(
            job=job, status=status, lease_owner=lease_owner, deadline_passed=deadline_passed
        )

    async def _claimed_task(self, session: Any, job_id: str) -> str | None:
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

    async def apply(
        self, *, job: Job, status: TaskStatus, lease_owner: str, deadline_passed: bool = False
    ) -> None:
        """Apply a confirmed provider status through the forward-only state machine."""
        now = utcnow()
        current = JobStatus(job.status)
        target, values = self._confirmed(job, status, now)
        next_check = self._next_reconcile(now, job.submitted_at or now)
        if job.callback_status and provider_rank(ProviderStatus(job.callback_status)) > (
            provider_rank(status.status)
        ):
            # A callback claimed more than the provider confirms (a forgery, or a status
            # endpoint lagging behind its callbacks): forget the claim, so the next callback
            # is heard, and look again soon.
            attempts = (job.poll_attempts or 0) + 1
            values |= {"callback_status": status.status.value, "poll_attempts": attempts}
            delay = backoff_delay(
                attempts, base=self.settings.retry_base_seconds, cap=self.settings.retry_max_seconds
            )
            next_check = min(next_check, now + timedelta(seconds=delay))
        async with self.db.write() as session:
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
            moved = can_transition(current, target) and await self._move(
                session, job, current, target, values, now, lease_owner, next_check
            )
            if not moved and deadline_passed:
                error = {
                    "code": "deadline_exceeded",
                    "message": "the job did not finish before its deadline",
                }
                moved = await self._fail(session, job, error, now, lease_owner=lease_owner)
            if not moved:
                await self._hold_release(session, job, lease_owner, now, values, next_check)

    @staticmethod
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

    async def _move(
        self,
        session: Any,
        job: Job,
        current: JobStatus,
        target: JobStatus,
        values: dict[str, Any],
        now: datetime,
        lease_owner: str,
        next_check: datetime,
    ) -> bool:
        values = dict(values) | {"updated_at": now}
        if is_terminal(target):
            values |= {"completed_at": now, "next_check_at": self._webhook_due(job, now)}
        else:
            values["next_check_at"] = self._recheck_unless_new_callback(job, next_check, now)
        values |= {"lease_owner": None, "lease_expires_at": None}
        changed = await repo.change_status(
            session, job_id=job.id, target=target, values=values, lease_owner=lease_owner
        )
        if changed:
            await self._status_event(session, job.id, current, target, now)
            self._observe_terminal(job, target, now)
        return changed

    async def _fail(
        self,
        session: Any,
        job: Job,
        error: dict[str, str],
        now: datetime,
        *,
        lease_owner: str | None,
    ) -> bool:
        current = JobStatus(job.status)
        changed = await repo.change_status(
            session,
            job_id=job.id,
            target=JobStatus.FAILED,
            lease_owner=lease_owner,
            values={
                "error": error,
                "updated_at": now,
                "completed_at": now,
                "next_check_at": self._webhook_due(job, now),
                "submit_started_at": None,
                "lease_owner": None,
                "lease_expires_at": None,
            },
        )
        if changed:
            await self._status_event(session, job.id, current, JobStatus.FAILED, now, error=error)
            self._observe_terminal(job, JobStatus.FAILED, now)
        return changed

    async def _record_poll_failure(
        self, job: Job, lease_owner: str, task_id: str, exc: ProviderError, deadline_passed: bool
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
            if deadline_passed:
                error = {
                    "code": "deadline_exceeded",
                    "message": "the job did not finish before its deadline",
                }
                if await self._fail(session, job, error, now, lease_owner=lease_owner):
                    return
            values: dict[str, Any] = {"poll_attempts": attempts, "checked_at": now}
            if job.provider_task_id is None and isinstance(exc, ProviderRejected):
                # The provider does not know the task a callback named: forget the claim
                # so the job is submitted normally.
                values["callback_status"] = None
            retry_after = exc.retry_after if isinstance(exc, ProviderUnavailable) else None
            delay = backoff_delay(
                attempts,
                base=self.settings.retry_base_seconds,
                cap=self.settings.retry_max_seconds,
                retry_after=retry_after,
            )
            submitted = job.submitted_at or now
            next_check = min(now + timedelta(seconds=delay), self._deadline(submitted))
            await self._hold_release(session, job, lease_owner, now, values, next_check)

    async def _hold_release(
        self,
        session: Any,
        job: Job,
        lease_owner: str,
        now: datetime,
        values: dict[str, Any],
        next_check: datetime,
    ) -> None:
        values = dict(values)
        values["next_check_at"] = self._recheck_unless_new_callback(job, next_check, now)
        values |= {"lease_owner": None, "lease_expires_at": None}
        await repo.update_held(session, job_id=job.id, lease_owner=lease_owner, values=values)

    async def _release(self, job: Job, lease_owner: str) -> None:
        async with self.db.write() as session:
            await repo.update_held(
                session,
                job_id=job.id,
                lease_owner=lease_owner,
                values={"lease_owner": None, "lease_expires_at": None},
            )

    # ---- helpers -------------------------------------------------------------------

    @staticmethod
    def _webhook_due(job: Job, now: datetime) -> datetime | None:
        """A job that ends owes its webhook_url a delivery; the worker makes it."""
        return now if job.webhook_url else None

    def _deadline(self, submitted_at: datetime) -> datetime:
        return submitted_at + timedelta(seconds=self.settings.job_deadline_seconds)

    def _next_reconcile(self, now: datetime, submitted_at: datetime) -> datetime:
        return min(
            now + timedelta(seconds=self.settings.reconcile_after_seconds),
            self._deadline(submitted_at),
        )

    @staticmethod
    def _recheck_unless_new_callback(job: Job, planned: datetime, now: datetime) -> Any:
        """A callback that arrived while we were busy asks for a prompt check; keep it."""
        return case(
            (Job.callback_status.is_distinct_from(job.callback_status), now),
            else_=planned,
        )

    async def _status_event(
        self,
        session: Any,
        job_id: str,
        current: JobStatus,
        target: JobStatus,
        now: datetime,
        *,
        error: dict[str, str] | None = None,
    ) -> None:
        data: dict[str, Any] = {"from": current.value, "to": target.value}
        if error is not None:
            data["error"] = error
        await repo.add_event(session, job_id=job_id, type="job.status_changed", data=data, now=now)
        log.info(
            "job_status_changed", job_id=job_id, status_from=current.value, status_to=target.value
        )

    @staticmethod
    def _observe_terminal(job: Job, target: JobStatus, now: datetime) -> None:
        if not is_terminal(target):
            return
        JOBS_FINISHED.labels(job.model, target.value).inc()
        JOB_DURATION.labels(job.model, target.value).observe((now - job.created_at).total_seconds())


__all__ = ["Caller", "JobService", "ProviderStatus", "backoff_delay"]
