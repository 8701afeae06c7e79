"""Taking a job in and handing it to the provider: create, submit, retry, give up.

The job is stored (pending) before the provider hears of it, and the provider is never
called inside a database transaction. Every state change goes through the one writer
(repository.py); what the provider later says about the job is applied by confirmation.py.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta

import orjson
import structlog
from sqlalchemy.exc import IntegrityError

from app.auth.models import Caller
from app.auth.ratelimit import charge
from app.billing import service as budgets
from app.billing.estimate import Estimate, estimate
from app.catalog.compiled import Catalog
from app.catalog.service import CatalogService
from app.config import Settings
from app.db import Database, is_unavailable
from app.errors import Conflict
from app.ids import job_id_time, new_job_id
from app.jobs import queries
from app.jobs import repository as repo
from app.jobs.confirmation import Confirmation
from app.jobs.decisions import Policy, Submit
from app.jobs.events import EventType, NewEvent
from app.jobs.models import IdempotencyKey, Job, JobError, JobRecord
from app.jobs.repository import JobPatch, Lease, StatusChange
from app.jobs.schemas import JobCreate
from app.jobs.states import JobStatus, from_provider, is_terminal
from app.metrics import JOBS_CREATED
from app.provider.client import PoyoClient, ProviderRejected, ProviderUnavailable
from app.provider.schemas import SubmittedTask
from app.timeutil import utcnow
from app.webhooks.guard import refuse_forbidden_target
from app.writer_turns import Priority

log = structlog.get_logger(__name__)


def request_fingerprint(body: JobCreate) -> str:
    canonical = orjson.dumps(body.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def _estimate(catalog: Catalog, body: JobCreate) -> Estimate:
    """The job's estimated cost; a price rule we fail to read never stops a job."""
    try:
        return estimate(catalog.spec(body.model).entry, body.input)
    except Exception:
        log.exception("estimate_failed", model=body.model)
        return Estimate.unknown("the model's price rule could not be applied to this input")


class JobService:
    def __init__(
        self,
        *,
        settings: Settings,
        db: Database,
        provider: PoyoClient,
        callback_url_for: Callable[[str], str],
        catalogs: CatalogService,
        confirmation: Confirmation,
        instance_id: str,
    ) -> None:
        self.settings = settings
        self.db = db
        self.provider = provider
        self.callback_url_for = callback_url_for
        self.catalogs = catalogs
        self.confirmation = confirmation
        self.policy = Policy.from_settings(settings)
        # The API holds a new job's first submission under this lease.
        self.request_lease_owner = f"api:{instance_id}"

    # ---- creation ------------------------------------------------------------------

    async def create(
        self, *, caller: Caller, body: JobCreate, idempotency_key: str | None
    ) -> tuple[JobRecord, bool]:
        """Store the job, then submit it. Returns the job and whether it was created now."""
        catalog = await self.catalogs.current()
        catalog.validate(body.model, body.input)
        cost = _estimate(catalog, body)
        fingerprint = request_fingerprint(body) if idempotency_key else None
        if idempotency_key:
            replay = await self._replay(caller, idempotency_key, fingerprint)
            if replay is not None:
                return replay, False
        if body.webhook_url is not None:
            # A URL no message could ever reach is refused now (422, nothing stored),
            # rather than failed at every attempt; each attempt checks it again (DNS moves).
            await refuse_forbidden_target(
                body.webhook_url,
                field="webhook_url",
                allow_private=self.settings.webhook_allow_private,
            )
        try:
            job = await self._insert(
                caller, body, catalog.version, cost, idempotency_key, fingerprint
            )
        except IntegrityError:
            # Another request with the same key won the race; answer with its job.
            assert idempotency_key is not None
            replay = await self._replay(caller, idempotency_key, fingerprint)
            if replay is None:
                raise
            return replay, False
        JOBS_CREATED.labels(job.model).inc()
        try:
            await self.submit(Lease(job, self.request_lease_owner))
            # The row as recorded (one prepared statement, no transaction: cheaper than
            # loading the ORM object in a session).
            return await queries.get_job(self.db, caller=caller, job_id=job.id), True
        except asyncio.CancelledError:
            # Shut down mid-submission: hand the job to the worker now rather than when
            # the lease runs out. Its outcome is unknown, so it waits for a callback first.
            await asyncio.shield(self._hand_over(job))
            raise
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            # The job is stored: it is the client's, whatever happened to the record of
            # its submission. The worker takes it over when the lease runs out.
            log.warning("submission_not_recorded", job_id=job.id, error_type=type(exc).__name__)
            return job, True

    async def estimate(self, body: JobCreate) -> tuple[str, Estimate]:
        """What `body` would cost as a job (its input checked as a job's would be), and
        the catalog version that says so; nothing is stored or sent."""
        catalog = await self.catalogs.current()
        catalog.validate(body.model, body.input)
        return catalog.version, _estimate(catalog, body)

    async def _replay(self, caller: Caller, key: str, fingerprint: str | None) -> Job | None:
        cutoff = utcnow() - timedelta(seconds=self.settings.idempotency_ttl_seconds)
        async with self.db.read() as session:
            row = await repo.idempotency_key(session, caller.owner, key)
            if row is None or row.created_at < cutoff:
                return None
            if row.request_hash != fingerprint:
                raise Conflict()
            return await repo.load(session, row.job_id)

    async def _insert(
        self,
        caller: Caller,
        body: JobCreate,
        catalog_version: str,
        cost: Estimate,
        idempotency_key: str | None,
        fingerprint: str | None,
    ) -> Job:
        # New work waits behind work in progress on SQLite; the clock (and so the lease)
        # starts once its turn has come.
        async with self.db.write(Priority.ADMISSION) as conn:
            now = utcnow()
            job = self._new_job(caller, body, catalog_version, cost, now)
            if caller.key_id is not None:
                await charge(
                    conn, key_id=caller.key_id, limit=self.settings.rate_limit_jobs_per_minute
                )
            await budgets.admit(
                conn,
                owner=job.owner,
                model=job.model,
                day=job.created_at.date(),
                estimate=job.cost_estimate_millicredits,
            )
            created = NewEvent(
                EventType.JOB_CREATED, {"model": body.model, "key_id": caller.key_id}
            )
            await repo.add_job(conn, job, created)
            if idempotency_key and fingerprint:
                key = IdempotencyKey(
                    owner=caller.owner,
                    key=idempotency_key,
                    request_hash=fingerprint,
                    job_id=job.id,
                    created_at=now,
                )
                expired = now - timedelta(seconds=self.settings.idempotency_ttl_seconds)
                await repo.claim_idempotency_key(conn, key, expired_before=expired)
        return job

    def _new_job(
        self, caller: Caller, body: JobCreate, catalog_version: str, cost: Estimate, now: datetime
    ) -> Job:
        job_id = new_job_id(now)
        created_at = job_id_time(job_id)
        lease = timedelta(seconds=self.settings.worker_lease_seconds)
        return Job(
            id=job_id,
            owner=caller.owner,
            model=body.model,
            catalog_version=catalog_version,
            status=JobStatus.PENDING,
            input=body.input,  # as given: PoYo receives exactly what the client sent
            metadata_=dict(body.metadata),
            webhook_url=body.webhook_url,
            cost_estimate_millicredits=cost.millicredits,
            cost_estimate_note=cost.reason,
            created_at=created_at,
            updated_at=created_at,
            # The API holds the first submission attempt; if this process dies before it
            # records the outcome, the lease expires and the worker takes over.
            submit_attempts=1,
            poll_attempts=0,
            submit_started_at=now,
            next_check_at=now + lease,
            lease_owner=self.request_lease_owner,
            lease_expires_at=now + lease,
        )

    async def _hand_over(self, job: Job) -> None:
        async with self.db.write() as conn:
            now = utcnow()
            await repo.release(conn, Lease(job, self.request_lease_owner), now, recheck_at=now)

    # ---- submission ----------------------------------------------------------------

    async def submit(self, lease: Lease) -> None:
        """Send a leased job to the provider and record what happened."""
        job = lease.job
        try:
            task = await self.provider.submit(
                model=job.model,
                input=job.input,
                callback_url=self.callback_url_for(job.id),
                idempotency_key=job.id,
            )
        except ProviderRejected as exc:
            await self._record_rejection(lease, exc)
        except ProviderUnavailable as exc:
            await self._record_submit_failure(lease, exc)
        else:
            await self._record_accepted(job, task)

    async def _record_accepted(self, job: Job, task: SubmittedTask) -> None:
        """Record an accepted task, first in line: until it is recorded, a crash would
        leave the job's outcome unknown and may cost a second paid task."""
        now = utcnow()
        target = from_provider(task.status)
        next_check = self.policy.next_reconcile(now, now)
        if is_terminal(target):
            # A submit answer is not a confirmation: only the status endpoint ends a job.
            target, next_check = JobStatus.QUEUED, now
        submitted = NewEvent(
            EventType.PROVIDER_SUBMITTED, {"task_id": task.task_id, "attempt": job.submit_attempts}
        )
        patch = JobPatch(
            provider_task_id=task.task_id,
            provider_status=task.status,
            submitted_at=now,
            submit_started_at=None,
        )
        duplicate = NewEvent(EventType.PROVIDER_DUPLICATE_TASK, submitted.data)
        change = StatusChange(job, target, now, next_check, patch, (submitted,), (duplicate,))
        async with self.db.single_write(Priority.RECORD) as conn:
            recorded = await repo.record_task(conn, change)
        if not recorded:
            log.warning("provider_task_not_recorded", job_id=job.id, task_id=task.task_id)

    async def _record_rejection(self, lease: Lease, exc: ProviderRejected) -> None:
        rejected = NewEvent(
            EventType.PROVIDER_REJECTED, {"http_status": exc.http_status, "message": exc.message}
        )
        error = JobError(code="provider_rejected", message=exc.message)
        await self._fail(lease, error, rejected)

    async def _record_submit_failure(self, lease: Lease, exc: ProviderUnavailable) -> None:
        now, attempt = utcnow(), lease.job.submit_attempts
        failed = NewEvent(
            EventType.PROVIDER_SUBMIT_FAILED,
            {
                "attempt": attempt,
                "http_status": exc.http_status,
                "message": exc.message,
                "retry_after": exc.retry_after,
                "outcome_unknown": exc.ambiguous,
            },
        )
        retry_at = self.policy.after_submit_failure(
            attempt=attempt, ambiguous=exc.ambiguous, retry_after=exc.retry_after, now=now
        )
        if retry_at is None:
            error = JobError(
                code="submit_failed",
                message=f"the provider could not be reached after {attempt} attempts: "
                f"{exc.message}",
            )
            await self._fail(lease, error, failed)
            return
        # An attempt whose outcome is unknown stays marked started: its callback may come.
        started = JobPatch(submit_started_at=lease.job.submit_started_at if exc.ambiguous else None)
        async with self.db.write() as conn:
            await repo.add_events(conn, lease.job.id, [failed], now)
            await repo.release(conn, lease, now, started, retry_at)

    async def _fail(self, lease: Lease, error: JobError, *events: NewEvent) -> None:
        async with self.db.write() as conn:
            await repo.fail(conn, lease, error, utcnow(), events)

    async def submit_due(self, *, job_id: str, lease_owner: str) -> None:
        """Worker step for a leased pending job: link, wait, give up, or (re)submit."""
        async with self.db.read() as session:
            job = await repo.load(session, job_id)
        if job is None:
            return
        now, lease = utcnow(), Lease(job, lease_owner)
        step, until = self.policy.next_submit_step(job, now)
        if step is Submit.LINK:
            await self.confirmation.refresh(job_id=job_id, lease_owner=lease_owner)
            return
        if step is Submit.GIVE_UP:
            error = JobError(
                code="submit_failed",
                message=f"gave up after {job.submit_attempts} submission attempts",
            )
            await self._fail(lease, error)
            return
        if step is Submit.SEND:
            async with self.db.write() as conn:
                held = await repo.begin_submit_attempt(conn, lease, now)
            if held:
                job.submit_attempts += 1
                job.submit_started_at = now
                await self.submit(lease)
            return
        async with self.db.write() as conn:
            await repo.release(conn, lease, now, recheck_at=until)
