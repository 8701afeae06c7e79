"""Retention: delete old audit events (and, on request, old finished jobs) in small batches.

Every batch is its own short transaction of at most `batch_size` rows, so pruning a long
history never holds long locks and live traffic goes on between batches. On PostgreSQL
the jobs to delete are taken with `FOR UPDATE SKIP LOCKED`, so a prune never waits for,
nor blocks, a request or a worker that is touching a job.

What goes:
- events older than the cutoff, of jobs that have ended (a live job keeps its trail);
- with `jobs=True`: jobs that ended before the cutoff, with their events and idempotency
  keys and webhook messages (a job that a worker holds a lease on, e.g. to archive its
  outputs, stays);
- with them, their archived output files (deleted once the rows are gone: a crash in
  between leaves files without a job, never a job without its files);
- with a storage, downloads abandoned in its scratch directory over an hour ago (by a
  process killed mid-download);
- webhook delivery attempts older than the cutoff, and test-sends (messages of no job);
- always: idempotency keys past their retention (IDEMPOTENCY_TTL_SECONDS; an older key
  is never honoured anyway), spent rate-limit windows and expired dashboard sign-ins.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio
import structlog
from sqlalchemy import Delete, delete, or_, select, tuple_

from app.archive.rules import job_prefix
from app.archive.storage import Storage, sweep_scratch
from app.auth.models import RateLimitWindow, UiSession
from app.auth.ratelimit import WINDOW_SECONDS
from app.db import Database
from app.ids import first_job_id_at
from app.jobs.models import IdempotencyKey, Job, JobEvent
from app.jobs.states import TERMINAL
from app.timeutil import utcnow
from app.webhooks.models import WebhookAttempt, WebhookMessage

log = structlog.get_logger(__name__)

DEFAULT_BATCH_SIZE = 1000
# A job carries a handful of events (a dozen is typical), so a batch of jobs is smaller.
JOBS_PER_EVENT_BATCH = 10
SCRATCH_MAX_AGE_SECONDS = 3600

_ENDED = [status.value for status in TERMINAL]


@dataclass
class PruneResult:
    """How many rows each part of a prune deleted."""

    cutoff: datetime
    events: int = 0
    jobs: int = 0
    idempotency_keys: int = 0
    rate_limit_windows: int = 0
    webhook_log: int = 0
    output_files: int = 0
    scratch_files: int = 0
    batches: int = 0


async def prune(
    db: Database,
    *,
    older_than: timedelta,
    idempotency_ttl: timedelta,
    jobs: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    now: datetime | None = None,
    storage: Storage | None = None,
) -> PruneResult:
    """Delete what the retention policy no longer keeps, one short transaction per batch."""
    if older_than <= timedelta(0):
        raise ValueError("older_than must be positive")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    now = now or utcnow()
    result = PruneResult(cutoff=now - older_than)
    if jobs:
        await _prune_jobs(db, result, now, max(1, batch_size // JOBS_PER_EVENT_BATCH), storage)
    await _prune_events(db, result, batch_size)
    if storage is not None:
        result.scratch_files = await anyio.to_thread.run_sync(
            sweep_scratch, storage.scratch, SCRATCH_MAX_AGE_SECONDS
        )
    result.idempotency_keys = await _in_batches(
        db, result, lambda: _expired_keys(now - idempotency_ttl, batch_size), batch_size
    )
    result.webhook_log = await _in_batches(
        db, result, lambda: _old_attempts(result.cutoff, batch_size), batch_size
    ) + await _in_batches(
        db, result, lambda: _old_test_messages(result.cutoff, batch_size), batch_size
    )
    await _in_batches(db, result, lambda: _ended_sessions(now, batch_size), batch_size)
    spent = int(time.time()) // WINDOW_SECONDS * WINDOW_SECONDS - WINDOW_SECONDS
    result.rate_limit_windows = await _in_batches(
        db, result, lambda: _spent_windows(spent, batch_size), batch_size
    )
    log.info(
        "prune_finished",
        cutoff=result.cutoff.isoformat(),
        events=result.events,
        jobs=result.jobs,
        idempotency_keys=result.idempotency_keys,
        rate_limit_windows=result.rate_limit_windows,
        webhook_log=result.webhook_log,
        output_files=result.output_files,
        scratch_files=result.scratch_files,
        batches=result.batches,
    )
    return result


async def _in_batches(
    db: Database, result: PruneResult, statement: Callable[[], Delete], batch_size: int
) -> int:
    """Run a bounded DELETE until it deletes less than a full batch; rows deleted."""
    total = 0
    while True:
        async with db.write() as conn:
            deleted = (await conn.execute(statement())).rowcount
        result.batches += 1
        total += deleted
        if deleted < batch_size:
            return total
        await asyncio.sleep(0)  # let other writers in between batches


async def _prune_events(db: Database, result: PruneResult, batch_size: int) -> None:
    def statement() -> Delete:
        old = (
            select(JobEvent.id)
            .join(Job, Job.id == JobEvent.job_id)
            .where(JobEvent.created_at < result.cutoff, Job.status.in_(_ENDED))
            .limit(batch_size)
        )
        return delete(JobEvent).where(JobEvent.id.in_(old.scalar_subquery()))

    result.events += await _in_batches(db, result, statement, batch_size)


async def _prune_jobs(
    db: Database, result: PruneResult, now: datetime, batch_size: int, storage: Storage | None
) -> None:
    # Job ids are time-ordered (app/ids.py): `id < bound` is a range scan of the
    # (status, id) index however long the history is.
    bound = first_job_id_at(result.cutoff)
    while True:
        candidates = (
            select(Job.id)
            .where(
                Job.status.in_(_ENDED),
                Job.id < bound,
                Job.completed_at < result.cutoff,
                or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now),
            )
            .order_by(Job.id)
            .limit(batch_size)
            .with_for_update(skip_locked=True)  # SQLite has one writer and ignores it
        )
        async with db.write() as conn:
            job_ids = list((await conn.execute(candidates)).scalars())
            if job_ids:
                events = await conn.execute(delete(JobEvent).where(JobEvent.job_id.in_(job_ids)))
                await conn.execute(delete(IdempotencyKey).where(IdempotencyKey.job_id.in_(job_ids)))
                removed = await conn.execute(delete(Job).where(Job.id.in_(job_ids)))
                result.events += events.rowcount
                result.jobs += removed.rowcount
        if storage is not None:
            for job_id in job_ids:
                result.output_files += await storage.delete_prefix(job_prefix(job_id))
        result.batches += 1
        if len(job_ids) < batch_size:
            return
        await asyncio.sleep(0)


def _expired_keys(cutoff: datetime, batch_size: int) -> Delete:
    old = (
        select(IdempotencyKey.owner, IdempotencyKey.key)
        .where(IdempotencyKey.created_at < cutoff)
        .limit(batch_size)
    )
    return delete(IdempotencyKey).where(tuple_(IdempotencyKey.owner, IdempotencyKey.key).in_(old))


def _spent_windows(before: int, batch_size: int) -> Delete:
    old = (
        select(RateLimitWindow.key_id, RateLimitWindow.window_start)
        .where(RateLimitWindow.window_start < before)
        .limit(batch_size)
    )
    return delete(RateLimitWindow).where(
        tuple_(RateLimitWindow.key_id, RateLimitWindow.window_start).in_(old)
    )


def _old_attempts(cutoff: datetime, batch_size: int) -> Delete:
    """The delivery log is kept as long as events are."""
    old = select(WebhookAttempt.id).where(WebhookAttempt.created_at < cutoff).limit(batch_size)
    return delete(WebhookAttempt).where(WebhookAttempt.id.in_(old.scalar_subquery()))


def _old_test_messages(cutoff: datetime, batch_size: int) -> Delete:
    """Messages of no job (test-sends) go with their deliveries; a job's go with the job."""
    old = (
        select(WebhookMessage.id)
        .where(WebhookMessage.job_id.is_(None), WebhookMessage.created_at < cutoff)
        .limit(batch_size)
    )
    return delete(WebhookMessage).where(WebhookMessage.id.in_(old.scalar_subquery()))


def _ended_sessions(now: datetime, batch_size: int) -> Delete:
    """Dashboard sign-ins past their expiry."""
    old = select(UiSession.id).where(UiSession.expires_at < now).limit(batch_size)
    return delete(UiSession).where(UiSession.id.in_(old.scalar_subquery()))
