"""Taking a job in and handing it to the provider: create, submit, retry, give up.

Every state change is a compare-and-set committed together with the event that records
it (transitions.py). The provider is never called inside a database transaction. What the
provider then says about the job is applied by confirmation.py.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import structlog
from sqlalchemy.exc import IntegrityError

from app.auth.ratelimit import charge
from app.catalog.models import CATALOG
from app.config import Settings
from app.db import Database
from app.errors import Conflict
from app.ids import job_id_time, new_job_id
from app.jobs import repository as repo
from app.jobs.confirmation import Confirmation
from app.jobs.models import IdempotencyKey, Job
from app.jobs.schemas import JobCreate
from app.jobs.states import JobStatus, from_provider, is_terminal
from app.jobs.transitions import (
    Transitions,
    note_status_change,
    recheck_unless_new_callback,
    status_change_data,
)
from app.metrics import JOBS_CREATED
from app.provider.client import PoyoClient, ProviderRejected, ProviderUnavailable
from app.provider.schemas import SubmittedTask
from app.timeutil import utcnow
from app.writer_turns import Priority

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
        transitions: Transitions,
        confirmation: Confirmation,
    ) -> None:
        self.settings = settings
        self.db = db
        self.provider = provider
        self.callback_url_for = callback_url_for
        self.instance_id = instance_id
        self.transitions = transitions
        self.confirmation = confirmation
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
            hand_over = asyncio.create_task(
                self.transitions.release(job, lease_owner, due_now=True)
            )
            self._finishing.add(hand_over)
            hand_over.add_done_callback(self._finishing.discard)
            await asyncio.shield(hand_over)
            raise
        finally:
            self._submitting.discard(request)
        async with self.db.read() as session:
            fresh = await repo.get_job(session, job.id)
        return (fresh or job), True

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
        # New work waits behind work in progress on SQLite; the clock (and so the lease)
        # starts once its turn has come.
        async with self.db.write(Priority.ADMISSION) as session:
            now = utcnow()
            job = self._new_job(caller, body, normalized_input, lease_owner, now)
            job_id = job.id
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

    def _new_job(
        self,
        caller: Caller,
        body: JobCreate,
        normalized_input: dict[str, Any],
        lease_owner: str,
        now: datetime,
    ) -> Job:
        job_id = new_job_id(now)
        created_at = job_id_time(job_id)
        lease = timedelta(seconds=self.settings.worker_lease_seconds)
        return Job(
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
        next_check = self.transitions.next_reconcile(now, now)
        if is_terminal(target):
            # A submit answer is not a confirmation: only the status endpoint ends a job.
            target, next_check = JobStatus.QUEUED, now
        values = {
            "provider_task_id": task.task_id,
            "provider_status": task.status.value,
            "submitted_at": now,
            "updated_at": now,
            "submit_started_at": None,
            "next_check_at": recheck_unless_new_callback(job, next_check, now),
            "lease_owner": None,
            "lease_expires_at": None,
        }
        task_data = {"task_id": task.task_id, "attempt": job.submit_attempts}
        if self.db.is_sqlite:
            changed = await self._record_task_in_turn(job, target, values, task_data, now)
        else:
            async with self.db.statement_connection() as conn:
                changed = await repo.record_task_in_one_statement(
                    conn,
                    job_id=job.id,
                    target=target,
                    values=values,
                    task_data=task_data,
                    status_data=status_change_data(JobStatus.PENDING, target),
                    now=now,
                )
        if changed:
            note_status_change(job, JobStatus.PENDING, target, now)
        else:
            log.warning("provider_task_not_recorded", job_id=job.id, task_id=task.task_id)

    async def _record_task_in_turn(
        self,
        job: Job,
        target: JobStatus,
        values: dict[str, Any],
        task_data: dict[str, Any],
        now: datetime,
    ) -> bool:
        """SQLite: the task is recorded in the first write turn that comes free."""
        async with self.db.write(Priority.RECORD) as session:
            changed = await repo.record_task(session, job_id=job.id, target=target, values=values)
            event = "provider.submitted" if changed else "provider.duplicate_task"
            await repo.add_event(session, job_id=job.id, type=event, data=task_data, now=now)
            if changed:
                data = status_change_data(JobStatus.PENDING, target)
                await repo.add_event(
                    session, job_id=job.id, type="job.status_changed", data=data, now=now
                )
        return changed

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
            await self.transitions.fail(session, job, error, now=now, lease_owner=lease_owner)

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
                await self.transitions.fail(session, job, error, now=now, lease_owner=lease_owner)
                return
            if exc.ambiguous:
                # The provider may have started a task: wait for its callback before
                # trying again, so a slow answer does not become a second paid task.
                delay = max(
                    self.settings.uncertain_submit_grace_seconds,
                    self.transitions.backoff(attempts),
                )
                started = job.submit_started_at
            else:
                delay = self.transitions.backoff(attempts, exc.retry_after)
                started = None
            await self.transitions.hold_release(
                session,
                job,
                lease_owner=lease_owner,
                now=now,
                values={"submit_started_at": started},
                next_check=now + timedelta(seconds=delay),
            )

    async def submit_due(self, *, job_id: str, lease_owner: str) -> None:
        """Worker step for a leased pending job: link, wait, give up, or (re)submit."""
        async with self.db.read() as session:
            job = await repo.get_job(session, job_id)
        if job is None:
            return
        if job.status != JobStatus.PENDING.value:
            await self.transitions.release(job, lease_owner)
            return
        if job.callback_status is not None:
            # A callback named a task for this job: we crashed after the provider accepted
            # it. Confirm and link it rather than start a second task.
            await self.confirmation.refresh(job_id=job_id, lease_owner=lease_owner)
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
                await self.transitions.fail(session, job, error, now=now, lease_owner=lease_owner)
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
            await self.transitions.hold_release(
                session, job, lease_owner=lease_owner, now=utcnow(), values={}, next_check=until
            )


__all__ = ["Caller", "JobService"]
