"""The worker's loops, in the style of Prefect's LoopService: `run_once()` is the
production body (and what tests drive), `serve()` only schedules it. Each loop leases due
jobs of one queue (app/jobs/leases.py) and hands each to the one service method that
handles it (app/runtime.py builds them: submit, reconcile, expire, archive).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from datetime import timedelta
from typing import Protocol

import structlog

from app.db import Database
from app.jobs import leases
from app.jobs.leases import Queue
from app.metrics import WORKER_ITEMS
from app.timeutil import utcnow

log = structlog.get_logger(__name__)

ERROR_PAUSE_SECONDS = 1.0


class Handler(Protocol):
    """The service method that handles one leased job."""

    def __call__(self, *, job_id: str, lease_owner: str) -> Awaitable[None]: ...


class ClaimLoop:
    """Lease due jobs of `queue` and run `handle` on each, `slots` at a time."""

    def __init__(
        self,
        *,
        name: str,
        db: Database,
        queue: Queue,
        handle: Handler,
        lease_owner: str,
        lease_seconds: float,
        slots: int,
        poll_seconds: float,
        woken: asyncio.Event,
    ) -> None:
        self.name = name
        self.db = db
        self.queue = queue
        self.handle = handle
        self.lease_owner = lease_owner
        self.lease = timedelta(seconds=lease_seconds)
        self.slots = slots
        self.poll_seconds = poll_seconds
        self._woken = woken
        self._stopping = asyncio.Event()
        self._handling: set[asyncio.Task[None]] = set()

    @property
    def free(self) -> int:
        return self.slots - len(self._handling)

    async def run_once(self) -> int:
        """Lease as many due jobs as there are free slots and start handling each; how
        many were leased. (Claim no more than can start at once: a job waiting for a slot
        would spend its lease waiting.)"""
        if self._stopping.is_set() or self.free <= 0:
            return 0
        job_ids = await self.claim(self.free)
        for job_id in job_ids:
            handling = asyncio.create_task(self._handle(job_id))
            self._handling.add(handling)
            handling.add_done_callback(self._handling.discard)
        return len(job_ids)

    async def claim(self, limit: int) -> list[str]:
        """Lease up to `limit` due jobs of the queue (one short transaction)."""
        async with self.db.write() as conn:
            now = utcnow()  # once our turn has come: the lease starts now, not while queued
            return await leases.claim(
                conn,
                self.queue,
                owner=self.lease_owner,
                now=now,
                until=now + self.lease,
                limit=limit,
            )

    async def drain(self) -> None:
        """Wait for every job being handled."""
        await asyncio.gather(*self._handling, return_exceptions=True)

    async def serve(self) -> None:
        """Run a pass whenever a slot is free (not when a whole batch is done: one slow
        provider call would hold up the rest), and wait to be woken (or poll) when nothing
        more is due. On stop, what is being handled finishes; on cancel, it hands its
        leases back."""
        try:
            while not self._stopping.is_set():
                self._woken.clear()
                if self.free <= 0:
                    await asyncio.wait(self._handling, return_when=asyncio.FIRST_COMPLETED)
                    continue
                free = self.free
                if await self._pass() < free:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._woken.wait(), self.poll_seconds)
            await self.drain()
        except asyncio.CancelledError:
            for handling in self._handling:
                handling.cancel()
            await self.drain()
            raise

    def request_stop(self) -> None:
        """Stop leasing new jobs; what is being handled goes on."""
        self._stopping.set()
        self._woken.set()

    async def _pass(self) -> int:
        try:
            return await self.run_once()
        except Exception as exc:
            log.warning("worker_claim_failed", loop=self.name, error_type=type(exc).__name__)
            await asyncio.sleep(ERROR_PAUSE_SECONDS)
            return 0

    async def _handle(self, job_id: str) -> None:
        structlog.contextvars.bind_contextvars(job_id=job_id, loop=self.name)
        try:
            await self.handle(job_id=job_id, lease_owner=self.lease_owner)
            WORKER_ITEMS.labels(self.name, "ok").inc()
        except asyncio.CancelledError:
            WORKER_ITEMS.labels(self.name, "cancelled").inc()
            await asyncio.shield(self._give_back(job_id))
            raise
        except Exception as exc:
            # One bad job must not stop the loop; its lease expires and it is retried.
            WORKER_ITEMS.labels(self.name, "error").inc()
            log.warning("worker_item_failed", error_type=type(exc).__name__, exc_info=exc)

    async def _give_back(self, job_id: str) -> None:
        try:
            async with self.db.write() as conn:
                await leases.release(conn, owner=self.lease_owner, job_ids=[job_id])
        except Exception as exc:
            log.warning("lease_release_failed", job_id=job_id, error_type=type(exc).__name__)
