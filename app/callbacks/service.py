"""Ingest a provider callback: authenticate it, store it raw, and ask for confirmation.

Callbacks that arrive while transactions are being written share the next one (group
commit); none waits for a timer, and none is answered before its commit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import structlog

from app.callbacks.classify import (
    BAD_CREDENTIAL,
    Arrival,
    CallbackResult,
    Claim,
    Outcome,
    Plan,
    bad_signature,
    parse,
)
from app.callbacks.credentials import CallbackCredentials
from app.db import Database
from app.jobs import repository as repo
from app.metrics import CALLBACKS
from app.provider import signature
from app.timeutil import utcnow

log = structlog.get_logger(__name__)

MAX_BATCH = 256


class CallbackService:
    def __init__(
        self,
        *,
        db: Database,
        credentials: CallbackCredentials,
        webhook_secret: str,
        webhook_tolerance: int,
        on_received: Callable[[], None],
    ) -> None:
        self.credentials = credentials
        self.webhook_secret = webhook_secret
        self.webhook_tolerance = webhook_tolerance
        self.on_received = on_received
        self.writer = CallbackWriter(db)

    async def ingest(
        self, *, job_id: str, token: str, body: bytes, headers: Mapping[str, str]
    ) -> CallbackResult:
        """Authenticate and store one callback; the answer to give the provider."""
        structlog.contextvars.bind_contextvars(job_id=job_id)
        if not self.credentials.verify(job_id, token):
            result = BAD_CREDENTIAL
        else:
            result = await self.writer.write(self._arrival(job_id, body, headers))
        CALLBACKS.labels(result.outcome).inc()
        structlog.contextvars.bind_contextvars(callback_outcome=result.outcome)
        if result.outcome is Outcome.RECEIVED:
            self.on_received()
        return result

    def _arrival(self, job_id: str, body: bytes, headers: Mapping[str, str]) -> Arrival:
        """Everything that needs no database: parsing and the signature."""
        claim = parse(body)
        if not isinstance(claim, Claim):
            return Arrival(job_id, body, None, claim, signed=False)
        structlog.contextvars.bind_contextvars(task_id=claim.task_id)
        if not self.webhook_secret:
            return Arrival(job_id, body, claim, None, signed=False)
        problem = signature.verify(
            secret=self.webhook_secret,
            task_id=claim.task_id,
            timestamp=headers.get("x-webhook-timestamp"),
            signature=headers.get("x-webhook-signature"),
            now=time.time(),
            tolerance=self.webhook_tolerance,
        )
        refusal = bad_signature(problem) if problem is not None else None
        return Arrival(job_id, body, claim, refusal, signed=True)


@dataclass
class _Waiting:
    arrival: Arrival
    answer: asyncio.Future[CallbackResult] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class CallbackWriter:
    """Group commit, with as many transactions in flight as the database lets writers run
    at once (PostgreSQL: a few, whose row locks keep two callbacks for one job in
    sequence; SQLite: one)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._queue: list[_Waiting] = []
        self._in_flight = 0
        self._flushers: set[asyncio.Task[None]] = set()

    async def write(self, arrival: Arrival) -> CallbackResult:
        waiting = _Waiting(arrival)
        self._queue.append(waiting)
        self._start_flushing()
        return await waiting.answer

    def _start_flushing(self) -> None:
        if self._queue and self._in_flight < self.db.write_concurrency:
            self._in_flight += 1
            flusher = asyncio.create_task(self._flush())
            self._flushers.add(flusher)
            flusher.add_done_callback(self._flushers.discard)

    async def _flush(self) -> None:
        # The batch is taken when the flusher runs, so that everything queued meanwhile
        # (say, by callbacks arriving together) goes into one transaction.
        batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
        try:
            if batch:
                await self._write(batch)
        except Exception as exc:
            log.warning("callback_batch_failed", size=len(batch), error_type=type(exc).__name__)
            # Write one by one, so that one bad callback cannot fail its neighbours.
            for waiting in batch:
                await self._write_alone(waiting)
        finally:
            self._in_flight -= 1
            self._start_flushing()

    async def _write_alone(self, waiting: _Waiting) -> None:
        try:
            await self._write([waiting])
        except Exception as exc:
            log.warning(
                "callback_store_failed",
                job_id=waiting.arrival.job_id,
                error_type=type(exc).__name__,
            )
            if not waiting.answer.done():
                waiting.answer.set_exception(exc)

    async def _write(self, batch: list[_Waiting]) -> None:
        async with self.db.write() as conn:
            now = utcnow()
            jobs = await repo.lock_for_callbacks(conn, {w.arrival.job_id for w in batch})
            plan = Plan(now)
            results = [plan.add(w.arrival, jobs.get(w.arrival.job_id)) for w in batch]
            await repo.note_callbacks(conn, plan.claims, now)
            await repo.add_many_events(conn, plan.events, now)
        for waiting, result in zip(batch, results, strict=True):
            if not waiting.answer.done():
                waiting.answer.set_result(result)
