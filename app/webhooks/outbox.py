"""Writing webhook messages and their deliveries, on the caller's connection: in the
transaction of the change they tell of, so a message exists exactly when its change does.

Who hears a job's event: its owner's enabled endpoints whose filter takes the event type,
and, for the job's end, the job's own `webhook_url` (a one-off endpoint signed with the
owner's secret). Nothing is built (not even the body) for an event nobody hears.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import Topic, announce, plain_columns
from app.ids import new_message_id
from app.jobs.models import Job, JobRecord
from app.jobs.schemas import job_to_dict
from app.jobs.states import JobStatus
from app.webhooks.models import (
    DeliveryState,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEventType,
    WebhookMessage,
)

STATUS_EVENTS: dict[JobStatus, WebhookEventType] = {
    JobStatus.QUEUED: WebhookEventType.JOB_QUEUED,
    JobStatus.RUNNING: WebhookEventType.JOB_RUNNING,
    JobStatus.SUCCEEDED: WebhookEventType.JOB_SUCCEEDED,
    JobStatus.FAILED: WebhookEventType.JOB_FAILED,
}
# What a job's own webhook_url hears: that it ended.
JOB_URL_EVENTS = frozenset({WebhookEventType.JOB_SUCCEEDED, WebhookEventType.JOB_FAILED})
JOB_EVENTS = frozenset(WebhookEventType) - {WebhookEventType.TEST}

_JOB_BY_ID = select(*plain_columns(Job))


@dataclass(frozen=True)
class Target:
    """Where a message goes: a registered endpoint, or (endpoint_id None) a job's URL."""

    endpoint_id: str | None
    url: str | None = None


def hears(event_types: Sequence[str], event_type: WebhookEventType) -> bool:
    """An endpoint's filter: empty takes every job event."""
    return event_type.value in event_types if event_types else event_type in JOB_EVENTS


async def subscribed(
    conn: AsyncConnection, owner: str, event_type: WebhookEventType
) -> list[Target]:
    query = select(WebhookEndpoint.id, WebhookEndpoint.event_types).where(
        WebhookEndpoint.owner == owner, WebhookEndpoint.enabled.is_(True)
    )
    rows = await conn.execute(query)
    return [Target(row.id) for row in rows if hears(row.event_types, event_type)]


async def job_event(
    conn: AsyncConnection,
    job: JobRecord,
    event_type: WebhookEventType,
    now: datetime,
    *,
    endpoints: bool = True,
    job_url: bool = False,
) -> str | None:
    """Queue `event_type` of `job` (as loaded before the change; the body is the job as
    the change left it) for the owner's endpoints and, with `job_url`, the job's own URL;
    the message id, or None when nobody hears it."""
    targets = await subscribed(conn, job.owner, event_type) if endpoints else []
    if job_url and job.webhook_url and event_type in JOB_URL_EVENTS:
        targets.append(Target(None, job.webhook_url))
    if not targets:
        return None
    changed = (await conn.execute(_JOB_BY_ID.where(Job.id == job.id))).one()
    return await add_message(
        conn,
        owner=job.owner,
        job_id=job.id,
        event_type=event_type,
        data=job_to_dict(changed),
        now=now,
        targets=targets,
    )


async def progress(
    conn: AsyncConnection, job: JobRecord, now: datetime, interval: timedelta
) -> str | None:
    """Queue job.progress unless one was queued for this job less than `interval` ago."""
    event_type = WebhookEventType.JOB_PROGRESS
    if not await subscribed(conn, job.owner, event_type):
        return None
    last = await conn.scalar(
        select(func.max(WebhookMessage.created_at)).where(
            WebhookMessage.job_id == job.id, WebhookMessage.event_type == event_type
        )
    )
    if last is not None and now - last < interval:
        return None
    return await job_event(conn, job, event_type, now)


async def told_job_url(conn: AsyncConnection, job_id: str) -> bool:
    """Whether the job's own webhook_url was ever sent a message (backfilled archives
    must not tell it twice)."""
    query = select(WebhookDelivery.id).where(
        WebhookDelivery.job_id == job_id, WebhookDelivery.endpoint_id.is_(None)
    )
    return (await conn.execute(query.limit(1))).first() is not None


async def add_message(
    conn: AsyncConnection,
    *,
    owner: str,
    job_id: str | None,
    event_type: WebhookEventType,
    data: object,
    now: datetime,
    targets: Sequence[Target],
) -> str:
    """A message (its body fixed now) and one delivery per target: due at once, or waiting
    behind the job's earlier message the endpoint has not heard yet."""
    message_id = new_message_id()
    behind = await _still_owed(conn, job_id, [t.endpoint_id for t in targets])
    body = {"type": event_type.value, "timestamp": now.isoformat(), "data": data}
    await conn.execute(
        insert(WebhookMessage).values(
            id=message_id,
            owner=owner,
            job_id=job_id,
            event_type=event_type,
            payload=orjson.dumps(body).decode(),
            created_at=now,
        )
    )
    await conn.execute(
        insert(WebhookDelivery),
        [
            {
                "message_id": message_id,
                "endpoint_id": target.endpoint_id,
                "url": target.url,
                "job_id": job_id,
                "state": DeliveryState.WAITING if target.endpoint_id in behind else _DUE,
                "attempts": 0,
                "next_attempt_at": None if target.endpoint_id in behind else now,
                "manual": False,
                "created_at": now,
                "updated_at": now,
            }
            for target in targets
        ],
    )
    if any(target.endpoint_id not in behind for target in targets):
        announce(conn, Topic.WEBHOOKS_DUE)
    return message_id


_DUE = DeliveryState.PENDING
_OWED = (DeliveryState.PENDING, DeliveryState.WAITING)


async def _still_owed(
    conn: AsyncConnection, job_id: str | None, endpoint_ids: Sequence[str | None]
) -> set[str]:
    """The endpoints still owed an earlier message of this job. On PostgreSQL those
    deliveries are locked (in id order, as the delivery loop updates them), so one ending
    meanwhile either lets this one go after we commit, or is seen as ended here."""
    named = [endpoint_id for endpoint_id in endpoint_ids if endpoint_id is not None]
    if job_id is None or not named:
        return set()
    query = (
        select(WebhookDelivery.endpoint_id)
        .where(
            WebhookDelivery.job_id == job_id,
            WebhookDelivery.endpoint_id.in_(named),
            WebhookDelivery.state.in_(_OWED),
        )
        .order_by(WebhookDelivery.id)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return {str(endpoint_id) for endpoint_id in (await conn.execute(query)).scalars()}
