"""The worker's loops: each claims due jobs as leases and hands them to the job service.

- submit: pending jobs (first attempts that failed, crashed API requests, retries);
- reconcile: queued/running jobs a callback asked to confirm, or silent for too long;
- expire: queued/running jobs past their deadline (a last status check, then failure);
- webhook: ended jobs that owe their webhook_url a delivery.

Claims are leases in the database, taken with `FOR UPDATE SKIP LOCKED` on PostgreSQL and
by a single atomic UPDATE on SQLite, so any number of workers never hold the same job.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

import structlog
from sqlalchemy import ColumnElement

from app.jobs import repository as repo
from app.jobs.models import Job
from app.jobs.states import JobStatus
from app.metrics import WORKER_ITEMS
from app.runtime import Runtime
from app.timeutil import utcnow

log = structlog.get_logger(__name__)

Handler = Callable[[str, str], Awaitable[None]]
CLAIM_ERROR_PAUSE_SECONDS = 1.0


class ClaimLoop:
    """Claim a batch of due jobs, run the handler on each (bounded concurrency), repeat."""

    def __init__(
        self,
        *,
        name: str,
        runtime: Runtime,
        statuses: Sequence[JobStatus],
        handler: Handler,
        lease_owner: str,
        extra: Callable[[], Sequence[ColumnElement[bool]]] = lambda: (),
    ) -> None:
        self.name = name
        self.runtime = runtime
        self.statuses = tuple(statuses)
        self.handler = handler
        self.lease_owner = lease_owner
        self.extra = extra
        # Claim no more than can start at once: a claimed job waiting for a free slot would
        # spend its lease waiting.
        self.limit = min(runtime.settings.worker_batch_size, runtime.settings.worker_concurrency)

    async def claim(self, limit: int | None = None) -> list[str]:
        settings = self.runtime.settings
        async with self.runtime.db.write() as session:
            now = utcnow()  # once our turn has come: the lease starts now, not while queued
            return await repo.claim_due(
                session,
                statuses=self.statuses,
                now=now,
                lease_owner=self.lease_owner,
                lease_until=now + timedelta(seconds=settings.worker_lease_seconds),
                limit=min(limit or self.limit, self.limit),
                skip_locked=not self.runtime.db.is_sqlite,
                extra=self.extra(),
            )

    async def run_once(self) -> int:
        """One pass: how many jobs were handled."""
        job_ids = await self.claim()
        handlers = [asyncio.create_task(self._handle(job_id)) for job_id in job_ids]
        try:
            await asyncio.gather(*handlers)
        except asyncio.CancelledError:
            # Stopping: the handlers were cancelled with us and are releasing their leases;
            # the loop ends only when every one of them has (cancelling them again would
            # abandon those releases).
            await asyncio.gather(*handlers, return_exceptions=True)
            raise
        return len(job_ids)

    async def serve(self, stopping: asyncio.Event, woken: asyncio.Event, idle: float) -> None:
        """Keep every slot busy: claim as soon as one frees, not when a whole batch is done
        (one slow provider call would otherwise hold up the rest of its batch)."""
        running: set[asyncio.Task[None]] = set()
        try:
            while not stopping.is_set():
                woken.clear()
                free = self.limit - len(running)
                if free <= 0:
                    await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    continue
                claimed = await self._claim_or_pause(free)
                for job_id in claimed:
                    handler = asyncio.create_task(self._handle(job_id))
                    running.add(handler)
                    handler.add_done_callback(running.discard)
                if len(claimed) < free:  # nothing more is due: wait to be woken
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(woken.wait(), idle)
            await asyncio.gather(*running, return_exceptions=True)
        except asyncio.CancelledError:
            await asyncio.gather(*running, return_exceptions=True)  # leases get released
            raise

    async def _claim_or_pause(self, limit: int) -> list[str]:
        try:
            return await self.claim(limit)
        except Exception as exc:
            log.exception("worker_claim_failed", loop=self.name, error_type=type(exc).__name__)
            await asyncio.sleep(CLAIM_ERROR_PAUSE_SECONDS)
            return []

    async def _handle(self, job_id: str) -> None:
        structlog.contextvars.bind_contextvars(job_id=job_id, loop=self.name)
        try:
            await self.handler(job_id, self.lease_owner)
            WORKER_ITEMS.labels(self.name, "ok").inc()
        except asyncio.CancelledError:
            WORKER_ITEMS.labels(self.name, "cancelled").inc()
            await asyncio.shield(self._release(job_id))
            raise
        except Exception as exc:
            # One bad job must not stop the loop; its lease expires and it is retried.
            WORKER_ITEMS.labels(self.name, "error").inc()
            log.exception("worker_item_failed", error_type=type(exc).__name__)

    async def _release(self, job_id: str) -> None:
        try:
            async with self.runtime.db.write() as session:
                await repo.release_leases(session, lease_owner=self.lease_owner, job_ids=[job_id])
        except Exception as exc:
            log.warning("lease_release_failed", job_id=job_id, error_type=type(exc).__name__)


def build_loops(runtime: Runtime, lease_owner: str) -> list[ClaimLoop]:
    jobs = runtime.jobs
    settings = runtime.settings

    async def submit(job_id: str, owner: str) -> None:
        await jobs.submit_due(job_id=job_id, lease_owner=owner)

    async def refresh(job_id: str, owner: str) -> None:
        await runtime.confirmation.refresh(job_id=job_id, lease_owner=owner)

    def past_deadline() -> Sequence[ColumnElement[bool]]:
        cutoff = utcnow() - timedelta(seconds=settings.job_deadline_seconds)
        return (Job.submitted_at <= cutoff,)

    async def deliver(job_id: str, owner: str) -> None:
        await runtime.webhooks.deliver(job_id=job_id, lease_owner=owner)

    in_flight = (JobStatus.QUEUED, JobStatus.RUNNING)
    return [
        ClaimLoop(
            name="expire",
            runtime=runtime,
            statuses=in_flight,
            handler=refresh,
            lease_owner=lease_owner,
            extra=past_deadline,
        ),
        ClaimLoop(
            name="submit",
            runtime=runtime,
            statuses=(JobStatus.PENDING,),
            handler=submit,
            lease_owner=lease_owner,
        ),
        ClaimLoop(
            name="reconcile",
            runtime=runtime,
            statuses=in_flight,
            handler=refresh,
            lease_owner=lease_owner,
        ),
        ClaimLoop(
            name="webhook",
            runtime=runtime,
            statuses=(JobStatus.SUCCEEDED, JobStatus.FAILED),
            handler=deliver,
            lease_owner=lease_owner,
        ),
    ]
