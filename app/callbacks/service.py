"""Ingest a provider callback: authenticate, store it raw, and ask for confirmation.

The body is a hint, never the truth: a callback only records what it claims and makes the
job due for a status check; the worker confirms with the provider's status endpoint and
only that answer moves the job (jobs.service.JobService.apply).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import structlog
from sqlalchemy import bindparam, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.callbacks.credentials import CallbackCredentials, verify_webhook_signature
from app.db import Database
from app.jobs.models import Job, JobEvent
from app.jobs.states import ACTIVE, JobStatus, ProviderStatus, from_provider, provider_rank
from app.metrics import CALLBACKS
from app.provider.schemas import unwrap
from app.timeutil import utcnow

log = structlog.get_logger(__name__)

MAX_TASK_ID_CHARS = 128


@dataclass(frozen=True)
class CallbackResult:
    http_status: int
    outcome: str
    message: str


@dataclass(frozen=True)
class _Claim:
    task_id: str
    status: ProviderStatus | None


class _Rejected(Exception):
    def __init__(self, result: CallbackResult) -> None:
        self.result = result


def _parse(body: bytes) -> _Claim:
    try:
        payload = unwrap(orjson.loads(body))
    except orjson.JSONDecodeError:
        raise _Rejected(CallbackResult(400, "rejected_body", "body is not JSON")) from None
    if not isinstance(payload, dict):
        raise _Rejected(CallbackResult(400, "rejected_body", "body is not a JSON object"))
    task_id = payload.get("task_id")
    if (
        not isinstance(task_id, str)
        or not 0 < len(task_id) <= MAX_TASK_ID_CHARS
        or "\x00" in task_id
    ):
        raise _Rejected(CallbackResult(400, "rejected_body", "body has no valid task_id"))
    raw_status = payload.get("status")
    try:
        status = ProviderStatus(raw_status) if isinstance(raw_status, str) else None
    except ValueError:
        status = None  # an unknown status is still worth a look at the status endpoint
    return _Claim(task_id=task_id, status=status)


def _classify(job_status: str, seen: str | None, claim: _Claim) -> tuple[str, str] | None:
    """The event type and reason for a callback that changes nothing, or None if it may."""
    current = JobStatus(job_status)
    if current in (JobStatus.SUCCEEDED, JobStatus.FAILED):
        if claim.status is not None and from_provider(claim.status) is current:
            return "callback.duplicate", f"job already {current.value}"
        return "callback.ignored", f"late: job already {current.value}"
    if claim.status is None or seen is None:
        return None
    seen_rank = provider_rank(ProviderStatus(seen))
    if provider_rank(claim.status) == seen_rank:
        return "callback.duplicate", f"already received {seen}"
    if provider_rank(claim.status) < seen_rank:
        return "callback.ignored", f"stale: {claim.status.value} after {seen}"
    return None


def _printable(body: bytes) -> str:
    """The raw body as text that any database can store (PostgreSQL refuses U+0000)."""
    return body.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


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
            result = CallbackResult(401, "rejected_credential", "invalid callback credential")
        else:
            result = await self.writer.write(self._prepare(job_id, body, headers))
        CALLBACKS.labels(result.outcome).inc()
        structlog.contextvars.bind_contextvars(callback_outcome=result.outcome)
        if result.outcome == "received":
            self.on_received()
        return result

    def _prepare(self, job_id: str, body: bytes, headers: Mapping[str, str]) -> _Item:
        """Everything that needs no database: parsing and the signature."""
        try:
            claim = _parse(body)
        except _Rejected as rejected:
            return _Item(job_id, body, None, rejected.result, signed=False)
        structlog.contextvars.bind_contextvars(task_id=claim.task_id)
        signed = bool(self.webhook_secret)
        if signed:
            problem = verify_webhook_signature(
                secret=self.webhook_secret,
                task_id=claim.task_id,
                timestamp=headers.get("x-webhook-timestamp"),
                signature=headers.get("x-webhook-signature"),
                now=time.time(),
                tolerance=self.webhook_tolerance,
            )
            if problem is not None:
                rejection = CallbackResult(
                    401, "rejected_signature", f"invalid signature: {problem}"
                )
                return _Item(job_id, body, claim, rejection, signed=True)
        return _Item(job_id, body, claim, None, signed=signed)


@dataclass
class _Item:
    job_id: str
    body: bytes
    claim: _Claim | None
    # Set when the callback is refused; it is still kept on the job's trail as evidence.
    rejection: CallbackResult | None
    signed: bool
    future: asyncio.Future[CallbackResult] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


_UNKNOWN_JOB = CallbackResult(404, "unknown_job", "no such job")
_RECEIVED = CallbackResult(200, "received", "stored; the status will be confirmed")
MAX_BATCH = 256
MAX_TRANSACTIONS_IN_FLIGHT = 3


class CallbackWriter:
    """Group commit: callbacks that arrive while transactions are being written share the
    next one. No callback waits for a timer, and none is answered before its commit.

    PostgreSQL gets a few transactions in flight at once (their row locks, taken in id
    order, keep two callbacks for one job in sequence); SQLite has one writer anyway.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._queue: list[_Item] = []
        self._in_flight = 0
        self._max_in_flight = 1 if db.is_sqlite else MAX_TRANSACTIONS_IN_FLIGHT
        self._flushers: set[asyncio.Task[None]] = set()

    async def write(self, item: _Item) -> CallbackResult:
        self._queue.append(item)
        self._start_flushing()
        return await item.future

    def _start_flushing(self) -> None:
        if self._queue and self._in_flight < self._max_in_flight:
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
            for item in batch:
                await self._write_alone(item)
        finally:
            self._in_flight -= 1
            self._start_flushing()

    async def _write_alone(self, item: _Item) -> None:
        try:
            await self._write([item])
        except Exception as exc:
            log.exception("callback_store_failed", job_id=item.job_id)
            if not item.future.done():
                item.future.set_exception(exc)

    async def _write(self, batch: list[_Item]) -> None:
        now = utcnow()
        job_ids = sorted({item.job_id for item in batch})
        async with self.db.write_connection() as conn:
            query = (
                select(Job.id, Job.status, Job.provider_task_id, Job.callback_status)
                .where(Job.id.in_(job_ids))
                .order_by(Job.id)
            )
            if not self.db.is_sqlite:
                query = query.with_for_update()  # concurrent batches queue, in id order
            jobs = {row.id: _JobState(*row[1:]) for row in await conn.execute(query)}
            plan = _Plan(now)
            results = [plan.add(item, jobs.get(item.job_id)) for item in batch]
            await plan.execute(conn)
        for item, result in zip(batch, results, strict=True):
            if not item.future.done():
                item.future.set_result(result)


@dataclass
class _JobState:
    status: str
    task_id: str | None
    seen: str | None


class _Plan:
    """What one batch writes: events for every callback, and at most one update per job."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.events: list[dict[str, Any]] = []
        self.due: dict[str, str | None] = {}

    def add(self, item: _Item, job: _JobState | None) -> CallbackResult:
        if job is None:
            return _UNKNOWN_JOB
        claim = item.claim
        data: dict[str, Any] = {
            "task_id": claim.task_id if claim else None,
            "status": claim.status.value if claim and claim.status else None,
            "signed": item.signed,
            "raw": _printable(item.body),
        }
        if (
            item.rejection is None
            and claim is not None
            and job.task_id not in (None, claim.task_id)
        ):
            item.rejection = CallbackResult(400, "rejected_task", "callback names another task")
        if item.rejection is not None:
            data["reason"] = item.rejection.message
            self._event(item.job_id, "callback.rejected", data)
            return item.rejection
        assert claim is not None
        verdict = _classify(job.status, job.seen, claim)
        if verdict is not None:
            event_type, data["reason"] = verdict
            self._event(item.job_id, event_type, data)
            return CallbackResult(200, event_type.removeprefix("callback."), data["reason"])
        if claim.status is not None:
            job.seen = claim.status.value  # later callbacks in this batch compare against it
        self.due[item.job_id] = job.seen
        self._event(item.job_id, "callback.received", data)
        return _RECEIVED

    def _event(self, job_id: str, type: str, data: dict[str, Any]) -> None:
        self.events.append({"job_id": job_id, "type": type, "data": data, "created_at": self.now})

    async def execute(self, conn: AsyncConnection) -> None:
        if self.due:
            await conn.execute(
                update(Job)
                # Spelled out: an IN list cannot be expanded inside an executemany.
                .where(Job.id == bindparam("b_id"), or_(*(Job.status == s for s in _ACTIVE)))
                .values(callback_status=bindparam("b_seen"), next_check_at=bindparam("b_due")),
                [
                    {"b_id": job_id, "b_seen": seen, "b_due": self.now}
                    for job_id, seen in self.due.items()
                ],
            )
        if self.events:
            await conn.execute(insert(JobEvent), self.events)


_ACTIVE = [status.value for status in ACTIVE]
