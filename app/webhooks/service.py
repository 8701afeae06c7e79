"""Webhook endpoints: register, change, remove, reveal and rotate secrets, read the delivery
log, redeliver, recover, test. Tenancy as for jobs: an owner sees their endpoints and
messages; an admin key sees all."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import case, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.auth.models import Caller
from app.config import Settings
from app.db import Database, Topic, announce
from app.errors import Conflict, NotFound
from app.ids import new_endpoint_id
from app.keyring.models import ServerKey
from app.timeutil import isoformat_z, utcnow
from app.webhooks import outbox
from app.webhooks import repository as delivery_repo
from app.webhooks.guard import refuse_forbidden_target
from app.webhooks.models import (
    DeliveryState,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEventType,
    WebhookMessage,
)
from app.webhooks.schemas import (
    AttemptList,
    AttemptOut,
    DeliveryOut,
    EndpointCreate,
    EndpointList,
    EndpointOut,
    EndpointSecret,
    EndpointUpdate,
    MessageList,
    MessageOut,
    Resent,
)
from app.webhooks.signing import endpoint_secret

MAX_ENDPOINTS_PER_OWNER = 50
MAX_RECOVER = 10_000


class EndpointService:
    def __init__(self, *, settings: Settings, db: Database, server_key: ServerKey) -> None:
        self.db = db
        self.server_key = server_key
        self.allow_private = settings.webhook_allow_private
        self.overlap = timedelta(seconds=settings.webhook_secret_overlap_seconds)

    # ---- endpoints -----------------------------------------------------------------------

    async def create(self, caller: Caller, body: EndpointCreate) -> EndpointOut:
        await self._check_url(body.url)
        now = utcnow()
        endpoint = WebhookEndpoint(
            id=new_endpoint_id(),
            owner=caller.owner,
            url=body.url,
            description=body.description,
            event_types=[t.value for t in body.event_types],
            enabled=body.enabled,
            disabled_reason=None if body.enabled else "disabled at creation",
            secret_generation=1,
            created_at=now,
            updated_at=now,
        )
        async with self.db.write() as conn:
            count = len(await _owned(conn, caller.owner))
            if count >= MAX_ENDPOINTS_PER_OWNER:
                raise Conflict(f"an owner may have at most {MAX_ENDPOINTS_PER_OWNER} endpoints")
            await conn.execute(
                insert(WebhookEndpoint).values(
                    {c.key: getattr(endpoint, c.key) for c in WebhookEndpoint.__table__.columns}
                )
            )
        return EndpointOut.of(endpoint, self._secret(endpoint, endpoint.secret_generation))

    async def list(self, caller: Caller, *, limit: int, cursor: str | None) -> EndpointList:
        query = select(WebhookEndpoint).order_by(WebhookEndpoint.id).limit(limit + 1)
        if caller.scope is not None:
            query = query.where(WebhookEndpoint.owner == caller.scope)
        if cursor:
            query = query.where(WebhookEndpoint.id > cursor)
        async with self.db.read() as session:
            rows = list((await session.scalars(query)).all())
        page, more = rows[:limit], len(rows) > limit
        return EndpointList(
            data=[EndpointOut.of(e) for e in page], next_cursor=page[-1].id if more else None
        )

    async def get(self, caller: Caller, endpoint_id: str) -> EndpointOut:
        return EndpointOut.of(await self._endpoint(caller, endpoint_id))

    async def update(self, caller: Caller, endpoint_id: str, body: EndpointUpdate) -> EndpointOut:
        await self._endpoint(caller, endpoint_id)
        if body.url is not None:
            await self._check_url(body.url)
        now = utcnow()
        values: dict[str, object] = {"updated_at": now}
        if body.url is not None:
            values["url"] = body.url
        if body.event_types is not None:
            values["event_types"] = [t.value for t in body.event_types]
        if body.description is not None:
            values["description"] = body.description
        async with self.db.write() as conn:
            if body.enabled is True:
                values |= {"enabled": True, "disabled_reason": None, "failing_since": None}
            elif body.enabled is False:
                await delivery_repo.disable(conn, endpoint_id, "disabled by its owner", now)
            await conn.execute(
                update(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id).values(values)
            )
        return await self.get(caller, endpoint_id)

    async def delete(self, caller: Caller, endpoint_id: str) -> None:
        await self._endpoint(caller, endpoint_id)
        async with self.db.write() as conn:
            # Its deliveries and their attempts go with it (ON DELETE CASCADE).
            await conn.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id))

    # ---- secrets -------------------------------------------------------------------------

    async def secret(self, caller: Caller, endpoint_id: str) -> EndpointSecret:
        endpoint = await self._endpoint(caller, endpoint_id)
        answer = EndpointSecret(secret=self._secret(endpoint, endpoint.secret_generation))
        until = endpoint.previous_secret_until
        if until is not None and until > utcnow():
            answer.previous_secret = self._secret(endpoint, endpoint.secret_generation - 1)
            answer.previous_secret_expires_at = isoformat_z(until)
        return answer

    async def rotate(self, caller: Caller, endpoint_id: str) -> EndpointSecret:
        """A new secret; the current one goes on signing (beside it) for the overlap."""
        await self._endpoint(caller, endpoint_id)
        async with self.db.write() as conn:
            now = utcnow()
            await conn.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.id == endpoint_id)
                .values(
                    secret_generation=WebhookEndpoint.secret_generation + 1,
                    previous_secret_until=now + self.overlap,
                    updated_at=now,
                )
            )
        return await self.secret(caller, endpoint_id)

    def _secret(self, endpoint: WebhookEndpoint, generation: int) -> str:
        return endpoint_secret(self.server_key, endpoint.id, generation)

    # ---- the delivery log and resending ----------------------------------------------

    async def attempts(
        self, caller: Caller, endpoint_id: str, *, limit: int, cursor: int | None
    ) -> AttemptList:
        """The endpoint's attempts, newest first."""
        await self._endpoint(caller, endpoint_id)
        query = (
            select(WebhookAttempt)
            .where(WebhookAttempt.endpoint_id == endpoint_id)
            .order_by(WebhookAttempt.id.desc())
            .limit(limit + 1)
        )
        if cursor is not None:
            query = query.where(WebhookAttempt.id < cursor)
        async with self.db.read() as session:
            rows = list((await session.scalars(query)).all())
        page, more = rows[:limit], len(rows) > limit
        return AttemptList(
            data=[AttemptOut.of(row) for row in page],
            next_cursor=f"atmpt_{page[-1].id}" if more else None,
        )

    async def messages(self, caller: Caller, *, job_id: str, limit: int) -> MessageList:
        """A job's messages, oldest first, each with where it stands per target."""
        query = (
            select(WebhookMessage)
            .where(WebhookMessage.job_id == job_id)
            .order_by(WebhookMessage.created_at, WebhookMessage.id)
            .limit(limit)
        )
        if caller.scope is not None:
            query = query.where(WebhookMessage.owner == caller.scope)
        async with self.db.read() as session:
            messages = list((await session.scalars(query)).all())
            ids = [m.id for m in messages]
            deliveries = (
                await session.scalars(
                    select(WebhookDelivery)
                    .where(WebhookDelivery.message_id.in_(ids))
                    .order_by(WebhookDelivery.id)
                )
            ).all()
        by_message: dict[str, list[DeliveryOut]] = {m.id: [] for m in messages}
        for d in deliveries:
            by_message[d.message_id].append(
                DeliveryOut(
                    endpoint_id=d.endpoint_id,
                    state=d.state,
                    attempts=d.attempts,
                    next_attempt_at=isoformat_z(d.next_attempt_at),
                    last_http_status=d.last_http_status,
                    last_error=d.last_error,
                )
            )
        return MessageList(
            data=[
                MessageOut(
                    id=m.id,
                    event_type=m.event_type,
                    job_id=m.job_id,
                    created_at=isoformat_z(m.created_at),
                    deliveries=by_message[m.id],
                )
                for m in messages
            ],
            next_cursor=None,
        )

    async def redeliver(self, caller: Caller, message_id: str, endpoint_id: str | None) -> Resent:
        """Send a message again, once, to its enabled targets (or the one named)."""
        async with self.db.write() as conn:
            owner_of = select(WebhookMessage.owner).where(WebhookMessage.id == message_id)
            message = (await conn.execute(owner_of)).first()
            if message is None or (caller.scope not in (None, message.owner)):
                raise NotFound(f"no webhook message {message_id}")
            targets = (
                select(WebhookDelivery.id)
                .outerjoin(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                .where(
                    WebhookDelivery.message_id == message_id,
                    WebhookDelivery.endpoint_id.is_(None) | WebhookEndpoint.enabled.is_(True),
                )
            )
            if endpoint_id is not None:
                targets = targets.where(WebhookDelivery.endpoint_id == endpoint_id)
            ids = list((await conn.execute(targets)).scalars())
            if not ids and endpoint_id is not None:
                raise NotFound(f"message {message_id} was not sent to endpoint {endpoint_id}")
            if not ids:
                raise Conflict("the message has no enabled endpoint to go to")
            await _resend(conn, ids, utcnow())
        return Resent(message_ids=[message_id], deliveries=len(ids))

    async def recover(self, caller: Caller, endpoint_id: str, since: datetime) -> Resent:
        """Send again, once each, every message that failed to reach the endpoint since
        `since` (oldest first)."""
        endpoint = await self._endpoint(caller, endpoint_id)
        if not endpoint.enabled:
            raise Conflict("the endpoint is disabled: enable it first")
        async with self.db.write() as conn:
            rows = (
                await conn.execute(
                    select(WebhookDelivery.id, WebhookDelivery.message_id)
                    .where(
                        WebhookDelivery.endpoint_id == endpoint_id,
                        WebhookDelivery.state == DeliveryState.FAILED,
                        WebhookDelivery.created_at >= since,
                    )
                    .order_by(WebhookDelivery.id)
                    .limit(MAX_RECOVER)
                )
            ).all()
            await _resend(conn, [row.id for row in rows], utcnow())
        return Resent(message_ids=[row.message_id for row in rows], deliveries=len(rows))

    async def test(self, caller: Caller, endpoint_id: str) -> Resent:
        """A `webhook.test` message to this endpoint only."""
        endpoint = await self._endpoint(caller, endpoint_id)
        if not endpoint.enabled:
            raise Conflict("the endpoint is disabled: enable it first")
        async with self.db.write() as conn:
            now = utcnow()
            message_id = await outbox.add_message(
                conn,
                owner=endpoint.owner,
                job_id=None,
                event_type=WebhookEventType.TEST,
                data={"endpoint_id": endpoint.id, "message": "a test message from poyo-relay"},
                now=now,
                targets=[outbox.Target(endpoint.id)],
            )
        return Resent(message_ids=[message_id], deliveries=1)

    # ---- helpers -----------------------------------------------------------------------

    async def _endpoint(self, caller: Caller, endpoint_id: str) -> WebhookEndpoint:
        async with self.db.read() as session:
            endpoint = await session.get(WebhookEndpoint, endpoint_id)
        if endpoint is None or caller.scope not in (None, endpoint.owner):
            raise NotFound(f"no webhook endpoint {endpoint_id}")
        return endpoint

    async def _check_url(self, url: str) -> None:
        await refuse_forbidden_target(url, field="url", allow_private=self.allow_private)


async def _owned(conn: AsyncConnection, owner: str) -> list[str]:
    query = select(WebhookEndpoint.id).where(WebhookEndpoint.owner == owner)
    return list((await conn.execute(query)).scalars())


async def _resend(conn: AsyncConnection, delivery_ids: list[int], now: datetime) -> None:
    if not delivery_ids:
        return
    # One still being retried is only brought forward: it keeps its place in the schedule.
    still_retrying = WebhookDelivery.state == DeliveryState.PENDING
    await conn.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id.in_(delivery_ids))
        .values(
            manual=case((still_retrying, WebhookDelivery.manual), else_=True),
            state=DeliveryState.PENDING,
            next_attempt_at=now,
            updated_at=now,
        )
    )
    announce(conn, Topic.WEBHOOKS_DUE)
