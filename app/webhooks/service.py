"""Deliver a job's final state to its `webhook_url`, signed per Standard Webhooks.

The worker claims terminal jobs that still owe a webhook (next_check_at is set when a job
with a webhook_url ends). A 2xx answer delivers it; anything else is retried with backoff
until WEBHOOK_MAX_ATTEMPTS, and every attempt is on the job's events.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import orjson
import structlog
from standardwebhooks.webhooks import Webhook

from app.callbacks.credentials import CallbackCredentials
from app.config import Settings
from app.db import Database
from app.jobs import repository as repo
from app.jobs.models import Job
from app.jobs.schemas import job_to_dict
from app.jobs.states import JobStatus
from app.jobs.transitions import backoff_delay
from app.timeutil import utcnow
from app.webhooks.guard import ForbiddenTarget, check_target
from app.webhooks.signing import owner_secret

log = structlog.get_logger(__name__)


class WebhookSender:
    def __init__(
        self, *, settings: Settings, db: Database, credentials: CallbackCredentials
    ) -> None:
        self.settings = settings
        self.db = db
        self.credentials = credentials
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.webhook_timeout_seconds, connect=5.0),
            follow_redirects=False,
            headers={"User-Agent": "poyo-relay-webhooks"},
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def deliver(self, *, job_id: str, lease_owner: str) -> None:
        """One delivery attempt for a leased terminal job."""
        async with self.db.read() as session:
            job = await repo.get_job(session, job_id)
        if job is None:
            return
        if job.webhook_url is None or job.status not in (
            JobStatus.SUCCEEDED.value,
            JobStatus.FAILED.value,
        ):
            await self._finish(job, lease_owner, None, None)
            return
        attempt = job.webhook_attempts + 1
        outcome, detail = await self._send(job)
        if outcome == "delivered":
            await self._finish(
                job, lease_owner, "webhook.delivered", {"attempt": attempt, **detail}
            )
        elif attempt >= self.settings.webhook_max_attempts:
            await self._finish(
                job, lease_owner, "webhook.abandoned", {"attempt": attempt, **detail}
            )
        else:
            await self._retry_later(job, lease_owner, attempt, detail)

    async def _send(self, job: Job) -> tuple[str, dict[str, Any]]:
        assert job.webhook_url is not None
        now = utcnow()
        body = orjson.dumps(
            {"type": f"job.{job.status}", "timestamp": now.isoformat(), "data": job_to_dict(job)}
        ).decode()
        message_id = f"msg_{job.id}_{job.status}"
        signature = Webhook(owner_secret(self.credentials, job.owner)).sign(message_id, now, body)
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
        }
        try:
            await check_target(job.webhook_url, allow_private=self.settings.webhook_allow_private)
            response = await self.http.post(job.webhook_url, content=body, headers=headers)
        except ForbiddenTarget as exc:
            return "failed", {"error": f"target refused: {exc}"}
        except httpx.HTTPError as exc:
            return "failed", {"error": type(exc).__name__}
        detail = {"http_status": response.status_code}
        return ("delivered" if response.is_success else "failed"), detail

    async def _finish(
        self, job: Job, lease_owner: str, event: str | None, data: dict[str, Any] | None
    ) -> None:
        async with self.db.write() as session:
            held = await repo.update_held(
                session,
                job_id=job.id,
                lease_owner=lease_owner,
                values={
                    "next_check_at": None,
                    "lease_owner": None,
                    "lease_expires_at": None,
                    "webhook_attempts": Job.webhook_attempts + (1 if event else 0),
                },
            )
            if held and event is not None and data is not None:
                await repo.add_event(session, job_id=job.id, type=event, data=data, now=utcnow())
        if event == "webhook.abandoned":
            log.warning("webhook_abandoned", job_id=job.id)

    async def _retry_later(
        self, job: Job, lease_owner: str, attempt: int, detail: dict[str, Any]
    ) -> None:
        now = utcnow()
        delay = backoff_delay(
            attempt, base=self.settings.retry_base_seconds, cap=self.settings.retry_max_seconds
        )
        async with self.db.write() as session:
            held = await repo.update_held(
                session,
                job_id=job.id,
                lease_owner=lease_owner,
                values={
                    "next_check_at": now + timedelta(seconds=delay),
                    "lease_owner": None,
                    "lease_expires_at": None,
                    "webhook_attempts": attempt,
                },
            )
            if held:
                await repo.add_event(
                    session,
                    job_id=job.id,
                    type="webhook.failed",
                    data={"attempt": attempt, **detail},
                    now=now,
                )
