"""The delivery loop's reads and writes of the outbox, on the caller's connection.

A delivery is leased (its own lease, never the job's) by the worker sending it. One is
due when it is pending, its time has come, its lease is free, and its endpoint has fewer
than WEBHOOK_ENDPOINT_CONCURRENCY deliveries being sent (so one slow endpoint cannot take
every slot). A job's later events wait (`waiting`) behind the one an endpoint has not
heard yet (app/webhooks/outbox.py); each delivery that ends lets the next one go, so
`job.running` reaches an endpoint before `job.succeeded`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import Topic, announce
from app.db_types import UTCDateTime
from app.timeutil import utcnow
from app.webhooks.models import (
    AttemptTrigger,
    DeliveryState,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEventType,
    WebhookMessage,
)
from app.webhooks.policy import Answer, Outcome

# Due deliveries looked at per free slot: the rest of a batch may be at endpoints full.
SCAN_FACTOR = 4

_D = WebhookDelivery
_ALREADY_DISABLED = "endpoint disabled"


@dataclass(frozen=True)
class Outgoing:
    """A leased delivery with what sending it takes."""

    delivery_id: int
    message_id: str
    event_type: WebhookEventType
    payload: str
    owner: str
    job_id: str | None
    attempts: int
    manual: bool
    endpoint_id: str | None
    url: str
    secret_generation: int
    previous_secret_until: datetime | None
    failing_since: datetime | None


@dataclass(frozen=True)
class Sent:
    """One attempt of `outgoing`, answered `answer`, judged `outcome`."""

    outgoing: Outgoing
    answer: Answer
    outcome: Outcome
    latency_ms: int
    response: str
    at: datetime

    @property
    def attempt(self) -> int:
        return self.outgoing.attempts + 1


async def claim(
    conn: AsyncConnection,
    *,
    owner: str,
    now: datetime,
    until: datetime,
    limit: int,
    per_endpoint: int,
) -> list[Outgoing]:
    """Lease up to `limit` due deliveries; what sending each takes."""
    full = (
        select(_D.endpoint_id)
        .where(
            _D.state == DeliveryState.PENDING,
            _D.lease_expires_at >= now,
            _D.endpoint_id.is_not(None),
        )
        .group_by(_D.endpoint_id)
        .having(func.count() >= per_endpoint)
    )
    query = (
        select(_D.id, _D.endpoint_id)
        .where(
            _D.state == DeliveryState.PENDING,
            _D.next_attempt_at <= now,
            (_D.lease_expires_at.is_(None)) | (_D.lease_expires_at < now),
            _D.endpoint_id.is_(None) | _D.endpoint_id.not_in(full.scalar_subquery()),
        )
        .order_by(_D.next_attempt_at, _D.id)
        .limit(limit * SCAN_FACTOR)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(of=_D, skip_locked=True)
    candidates = (await conn.execute(query)).all()
    if not candidates:
        return []
    busy = await _being_sent(conn, {row.endpoint_id for row in candidates}, now)
    picked: list[int] = []
    for row in candidates:
        if row.endpoint_id is not None:
            if busy[row.endpoint_id] >= per_endpoint:
                continue
            busy[row.endpoint_id] += 1
        picked.append(row.id)
        if len(picked) == limit:
            break
    await conn.execute(
        update(_D).where(_D.id.in_(picked)).values(lease_owner=owner, lease_expires_at=until)
    )
    return await _outgoing(conn, picked)


async def _being_sent(
    conn: AsyncConnection, endpoint_ids: set[str | None], now: datetime
) -> Counter[str]:
    named = [endpoint_id for endpoint_id in endpoint_ids if endpoint_id is not None]
    if not named:
        return Counter()
    query = (
        select(_D.endpoint_id, func.count())
        .where(
            _D.endpoint_id.in_(named),
            _D.state == DeliveryState.PENDING,
            _D.lease_expires_at >= now,
        )
        .group_by(_D.endpoint_id)
    )
    busy: Counter[str] = Counter()
    for endpoint_id, count in await conn.execute(query):
        busy[str(endpoint_id)] = count
    return busy


async def _outgoing(conn: AsyncConnection, delivery_ids: list[int]) -> list[Outgoing]:
    if not delivery_ids:
        return []
    m, e = WebhookMessage, WebhookEndpoint
    query = (
        select(
            _D.id,
            m.id.label("message_id"),
            m.event_type,
            m.payload,
            m.owner,
            m.job_id,
            _D.attempts,
            _D.manual,
            _D.endpoint_id,
            func.coalesce(e.url, _D.url).label("url"),
            func.coalesce(e.secret_generation, 0).label("secret_generation"),
            e.previous_secret_until,
            e.failing_since,
        )
        .join(m, m.id == _D.message_id)
        .outerjoin(e, e.id == _D.endpoint_id)
        .where(_D.id.in_(delivery_ids))
        .order_by(_D.id)
    )
    return [Outgoing(*row) for row in await conn.execute(query)]  # type: ignore[call-arg]


async def record(conn: AsyncConnection, *, owner: str, sent: Sequence[Sent]) -> None:
    """Record attempts: the delivery log, each delivery's next state (if its lease still
    holds), and its endpoint's health."""
    if not sent:
        return
    sent = sorted(sent, key=lambda one: one.outgoing.delivery_id)  # lock order: no deadlock
    await conn.execute(
        insert(WebhookAttempt),
        [
            {
                "delivery_id": one.outgoing.delivery_id,
                "message_id": one.outgoing.message_id,
                "endpoint_id": one.outgoing.endpoint_id,
                "event_type": one.outgoing.event_type,
                "attempt": one.attempt,
                "trigger": AttemptTrigger.MANUAL
                if one.outgoing.manual
                else AttemptTrigger.SCHEDULED,
                "http_status": one.answer.http_status,
                "error": one.answer.error,
                "latency_ms": one.latency_ms,
                "response": one.response,
                "created_at": one.at,
            }
            for one in sent
        ],
    )
    await conn.execute(
        update(_D)
        .where(_D.id == bindparam("b_id"), _D.lease_owner == owner)
        .values(
            state=bindparam("b_state"),
            attempts=bindparam("b_attempts"),
            next_attempt_at=bindparam("b_next"),
            manual=False,
            lease_owner=None,
            lease_expires_at=None,
            last_http_status=bindparam("b_status"),
            last_error=bindparam("b_error"),
            updated_at=bindparam("b_at"),
        ),
        [
            {
                "b_id": one.outgoing.delivery_id,
                "b_state": one.outcome.state,
                "b_attempts": one.attempt,
                "b_next": one.outcome.next_attempt_at,
                "b_status": one.answer.http_status,
                "b_error": one.answer.error,
                "b_at": one.at,
            }
            for one in sent
        ],
    )
    ended = [one for one in sent if one.outcome.state is not DeliveryState.PENDING]
    await let_next_go(conn, [(one.outgoing.job_id, one.outgoing.endpoint_id) for one in ended])
    await _note_health(conn, sent)


# The oldest waiting delivery of a job to an endpoint becomes due, unless one is pending.
_NEXT_GOES = text(
    "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = :now, updated_at = :now "
    "WHERE id = (SELECT min(w.id) FROM webhook_deliveries w WHERE w.job_id = :job_id "
    "AND w.endpoint_id = :endpoint_id AND w.state = 'waiting') "
    "AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p WHERE p.job_id = :job_id "
    "AND p.endpoint_id = :endpoint_id AND p.state = 'pending')"
)


async def let_next_go(
    conn: AsyncConnection, ended: Sequence[tuple[str | None, str | None]]
) -> None:
    """After deliveries of (job, endpoint) ended: the next event of each job is due."""
    pairs = sorted({pair for pair in ended if pair[0] is not None and pair[1] is not None})
    if pairs:
        now = utcnow()
        await conn.execute(
            _NEXT_GOES.bindparams(bindparam("now", type_=UTCDateTime())),
            [{"job_id": j, "endpoint_id": e, "now": now} for j, e in pairs],
        )
        announce(conn, Topic.WEBHOOKS_DUE)


async def stranded(conn: AsyncConnection) -> None:
    """A safety net, run now and then: waiting deliveries with nothing pending before them
    (none should exist) are let go."""
    rows = await conn.execute(
        select(_D.job_id, _D.endpoint_id).where(_D.state == DeliveryState.WAITING).distinct()
    )
    await let_next_go(conn, [(job_id, endpoint_id) for job_id, endpoint_id in rows])


async def _note_health(conn: AsyncConnection, sent: Sequence[Sent]) -> None:
    """Each endpoint's health as its latest attempt in the batch tells it."""
    latest: dict[str, Sent] = {}
    for one in sent:
        if one.outgoing.endpoint_id is not None:
            latest[one.outgoing.endpoint_id] = one
    for endpoint_id, one in latest.items():
        outcome = one.outcome
        await conn.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == endpoint_id)
            .values(
                failing_since=(
                    None
                    if outcome.failing_since is None
                    else func.coalesce(WebhookEndpoint.failing_since, outcome.failing_since)
                )
            )
        )
        if outcome.disable_reason is not None:
            await disable(conn, endpoint_id, outcome.disable_reason, one.at)


async def disable(conn: AsyncConnection, endpoint_id: str, reason: str, now: datetime) -> None:
    """Disable an endpoint, giving up its pending deliveries (recover resends them)."""
    await conn.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id)
        .values(enabled=False, disabled_reason=reason[:300], updated_at=now)
    )
    await conn.execute(
        update(_D)
        .where(
            _D.endpoint_id == endpoint_id,
            _D.state.in_([DeliveryState.PENDING, DeliveryState.WAITING]),
        )
        .values(
            state=DeliveryState.FAILED,
            next_attempt_at=None,
            last_error=_ALREADY_DISABLED,
            updated_at=now,
        )
    )


def _trigger(outgoing: Outgoing) -> AttemptTrigger:
    return AttemptTrigger.MANUAL if outgoing.manual else AttemptTrigger.SCHEDULED
