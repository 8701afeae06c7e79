"""Deliver a job's final state to its `webhook_url`, signed per Standard Webhooks.

The worker claims ended jobs that still owe a webhook (a job with a webhook_url is due
when it ends). A 2xx answer delivers it; anything else is retried with backoff until
WEBHOOK_MAX_ATTEMPTS, and every attempt is on the job's events.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import orjson
import structlog
from standardwebhooks.webhooks import Webhook

from app.backoff import Backoff
from app.config import Settings
from app.db import Database
from app.jobs import repository as repo
from app.jobs.events import EventType, NewEvent
from app.jobs.models import Job
from app.jobs.repository import JobPatch, Lease
from app.jobs.schemas import job_to_dict
from app.jobs.states import TERMINAL
from app.keyring.models import ServerKey
from app.timeutil import utcnow
from app.webhooks.guard import ForbiddenTarget, check_target
from app.webhooks.signing import owner_secret

log = structlog.get_logger(__name__)


class WebhookSender:
    def __init__(self, *, settings: Settings, db: Database, server_key: ServerKey) -> None:
        self.db = db
        self.server_key = server_key
        self.max_attempts = settings.webhook_max_attempts
        self.allow_private = settings.webhook_allow_private
        self.retry = Backoff(settings.retry_base_seconds, settings.retry_max_seconds)
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.webhook_timeout_seconds, connect=5.0),
            follow_redirects=False,
            headers={"User-Agent": "poyo-relay-webhooks"},
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def deliver(self, *, job_id: str, lease_owner: str) -> None:
        """One delivery attempt for a leased job that ended."""
        async with self.db.read() as session:
            job = await repo.load(session, job_id)
        if job is None:
            return
        lease = Lease(job, lease_owner)
        if job.webhook_url is None or job.status not in TERMINAL:
            await self._finish(lease, None)
            return
        attempt = job.webhook_attempts + 1
        delivered, detail = await self._send(job, job.webhook_url)
        data = {"attempt": attempt, **detail}
        if delivered:
            await self._finish(lease, NewEvent(EventType.WEBHOOK_DELIVERED, data))
        elif attempt >= self.max_attempts:
            log.warning("webhook_abandoned", job_id=job.id)
            await self._finish(lease, NewEvent(EventType.WEBHOOK_ABANDONED, data))
        else:
            await self._retry_later(lease, NewEvent(EventType.WEBHOOK_FAILED, data))

    async def _send(self, job: Job, url: str) -> tuple[bool, dict[str, Any]]:
        now = utcnow()
        body = orjson.dumps(
            {"type": f"job.{job.status}", "timestamp": now.isoformat(), "data": job_to_dict(job)}
        ).decode()
        message_id = f"msg_{job.id}_{job.status}"
        signature = Webhook(owner_secret(self.server_key, job.owner)).sign(message_id, now, body)
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
        }
        try:
            await check_target(url, allow_private=self.allow_private)
            response = await self.http.post(url, content=body, headers=headers)
        except ForbiddenTarget as exc:
            return False, {"error": f"target refused: {exc}"}
        except httpx.HTTPError as exc:
            return False, {"error": type(exc).__name__}
        return response.is_success, {"http_status": response.status_code}

    async def _finish(self, lease: Lease, event: NewEvent | None) -> None:
        """No more deliveries: counted when one was attempted, recorded with its event."""
        attempts = lease.job.webhook_attempts + (1 if event else 0)
        patch = JobPatch(next_check_at=None, webhook_attempts=attempts)
        async with self.db.write() as conn:
            now = utcnow()
            if await repo.release(conn, lease, now, patch) and event is not None:
                await repo.add_events(conn, lease.job.id, [event], now)

    async def _retry_later(self, lease: Lease, failed: NewEvent) -> None:
        attempt = lease.job.webhook_attempts + 1
        async with self.db.write() as conn:
            now = utcnow()
            retry_at = now + timedelta(seconds=self.retry.delay(attempt))
            if await repo.release(conn, lease, now, JobPatch(webhook_attempts=attempt), retry_at):
                await repo.add_events(conn, lease.job.id, [failed], now)
