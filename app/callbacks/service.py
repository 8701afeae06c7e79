"""Ingest a provider callback: authenticate, store it raw, and ask for confirmation.

The body is a hint, never the truth: a callback only records what it claims and makes the
job due for a status check; the worker confirms with the provider's status endpoint and
only that answer moves the job (jobs.service.JobService.apply).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from sqlalchemy import or_, select, update

from app.callbacks.credentials import CallbackCredentials, verify_webhook_signature
from app.db import Database
from app.jobs import repository as repo
from app.jobs.models import Job
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
    if not isinstance(task_id, str) or not 0 < len(task_id) <= MAX_TASK_ID_CHARS:
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
        self.db = db
        self.credentials = credentials
        self.webhook_secret = webhook_secret
        self.webhook_tolerance = webhook_tolerance
        self.on_received = on_received

    async def ingest(
        self, *, job_id: str, token: str, body: bytes, headers: Mapping[str, str]
    ) -> CallbackResult:
        """Authenticate and store one callback; the answer to give the provider."""
        if not self.credentials.verify(job_id, token):
            result = CallbackResult(401, "rejected_credential", "invalid callback credential")
        else:
            try:
                result = await self._ingest(job_id, body, headers)
            except _Rejected as rejected:
                result = rejected.result
        CALLBACKS.labels(result.outcome).inc()
        log.info("callback", job_id=job_id, outcome=result.outcome, http_status=result.http_status)
        return result

    async def _ingest(self, job_id: str, body: bytes, headers: Mapping[str, str]) -> CallbackResult:
        try:
            claim = _parse(body)
        except _Rejected as rejected:
            await self._record_rejection(job_id, body, rejected.result)
            raise
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
                result = CallbackResult(401, "rejected_signature", f"invalid signature: {problem}")
                await self._record_rejection(job_id, body, result, task_id=claim.task_id)
                return result
        return await self._store(job_id, body, claim, signed)

    async def _store(self, job_id: str, body: bytes, claim: _Claim, signed: bool) -> CallbackResult:
        now = utcnow()
        async with self.db.write_connection() as conn:
            row = (
                await conn.execute(
                    select(Job.status, Job.provider_task_id, Job.callback_status).where(
                        Job.id == job_id
                    )
                )
            ).one_or_none()
            if row is None:
                return CallbackResult(404, "unknown_job", "no such job")
            status, recorded_task, seen = row
            data: dict[str, Any] = {
                "task_id": claim.task_id,
                "status": claim.status.value if claim.status else None,
                "signed": signed,
                "raw": body.decode("utf-8", errors="replace"),
            }
            if recorded_task is not None and recorded_task != claim.task_id:
                data["reason"] = "names another task"
                await repo.add_event(
                    conn, job_id=job_id, type="callback.rejected", data=data, now=now
                )
                return CallbackResult(400, "rejected_task", "callback names another task")
            verdict = _classify(status, seen, claim)
            if verdict is None and not await self._request_check(conn, job_id, claim, now):
                verdict = ("callback.duplicate", "a concurrent callback was received first")
            if verdict is not None:
                event_type, data["reason"] = verdict
            else:
                event_type = "callback.received"
            await repo.add_event(conn, job_id=job_id, type=event_type, data=data, now=now)
        if verdict is not None:
            outcome = event_type.removeprefix("callback.")
            return CallbackResult(200, outcome, data["reason"])
        self.on_received()
        return CallbackResult(200, "received", "stored; the status will be confirmed")

    async def _request_check(self, conn: Any, job_id: str, claim: _Claim, now: Any) -> bool:
        """Compare-and-set the furthest claimed status; make the job due for confirmation."""
        conditions = [Job.id == job_id, Job.status.in_([s.value for s in ACTIVE])]
        values: dict[str, Any] = {"next_check_at": now}
        if claim.status is not None:
            lower = [
                s.value for s in ProviderStatus if provider_rank(s) < provider_rank(claim.status)
            ]
            conditions.append(or_(Job.callback_status.is_(None), Job.callback_status.in_(lower)))
            values["callback_status"] = claim.status.value
        result = await conn.execute(update(Job).where(*conditions).values(**values))
        return bool(result.rowcount == 1)

    async def _record_rejection(
        self, job_id: str, body: bytes, result: CallbackResult, *, task_id: str | None = None
    ) -> None:
        """Rejections of an authenticated URL are evidence: keep them on the job's trail."""
        now = utcnow()
        async with self.db.write_connection() as conn:
            exists = (await conn.execute(select(Job.id).where(Job.id == job_id))).scalar()
            if exists is None:
                raise _Rejected(CallbackResult(404, "unknown_job", "no such job"))
            await repo.add_event(
                conn,
                job_id=job_id,
                type="callback.rejected",
                data={
                    "reason": result.message,
                    "task_id": task_id,
                    "raw": body[:65_536].decode("utf-8", errors="replace"),
                },
                now=now,
            )
