"""Outgoing webhooks as rows: endpoints, and an outbox of messages, deliveries and attempts.

A message is one event (a job became `running`, say) with its body fixed when it happened;
a delivery is that message owed to one target (a registered endpoint, or a job's own
`webhook_url`); an attempt is one POST of it. Messages and deliveries are written in the
transaction of the change that caused them, so no event is lost or sent for a change that
rolled back. No secret is stored: an endpoint's is derived from the server key, its id and
its secret generation (app/webhooks/signing.py).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.db_types import JSONType, UTCDateTime, str_enum

RowId = BigInteger().with_variant(Integer(), "sqlite")


class WebhookEventType(StrEnum):
    JOB_CREATED = "job.created"
    JOB_QUEUED = "job.queued"
    JOB_RUNNING = "job.running"
    JOB_PROGRESS = "job.progress"
    JOB_SUCCEEDED = "job.succeeded"
    JOB_FAILED = "job.failed"
    JOB_ARCHIVED = "job.archived"
    # Sent only by the test-send endpoint, and only to the endpoint it names.
    TEST = "webhook.test"


class DeliveryState(StrEnum):
    # Behind an earlier delivery of the same job to the same endpoint: pending once that
    # one has succeeded or been given up (so an endpoint hears a job's events in order).
    WAITING = "waiting"
    PENDING = "pending"  # due at next_attempt_at (or being sent, while leased)
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # given up: out of attempts, 410 Gone, or the endpoint disabled


class AttemptTrigger(StrEnum):
    SCHEDULED = "scheduled"
    MANUAL = "manual"  # a redelivery or recovery someone asked for


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str] = mapped_column(String(500), default="")
    # Event type values; empty: every job event.
    event_types: Mapped[list[str]] = mapped_column(JSONType)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    disabled_reason: Mapped[str | None] = mapped_column(String(300))
    secret_generation: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # Until then the previous generation's secret signs too (a rotation's overlap).
    previous_secret_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the current run of failed attempts began (none since the last success).
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_webhook_endpoints_owner", "owner", "id"),)


class WebhookMessage(Base):
    __tablename__ = "webhook_messages"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str | None] = mapped_column(
        String(40), ForeignKey("jobs.id", ondelete="CASCADE")
    )
    event_type: Mapped[WebhookEventType] = mapped_column(str_enum(WebhookEventType, 32))
    # The body exactly as sent, on every attempt.
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_webhook_messages_job_id", "job_id", "created_at"),)


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("webhook_messages.id", ondelete="CASCADE")
    )
    # Null: the job's own webhook_url, kept in `url`.
    endpoint_id: Mapped[str | None] = mapped_column(
        String(40), ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    url: Mapped[str | None] = mapped_column(String(2048))
    # Copied from the message: deliveries to one endpoint go out in order per job.
    job_id: Mapped[str | None] = mapped_column(String(40))
    state: Mapped[DeliveryState] = mapped_column(str_enum(DeliveryState, 16))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A redelivery someone asked for is tried once, not on the retry schedule.
    manual: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_http_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
        Index("ix_webhook_deliveries_order", "job_id", "endpoint_id", "id"),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "state"),
        Index("ix_webhook_deliveries_message_id", "message_id"),
        Index("ix_webhook_deliveries_lease", "lease_expires_at"),
    )


class WebhookAttempt(Base):
    """One POST of a delivery: the delivery log."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(
        RowId, ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    message_id: Mapped[str] = mapped_column(String(40))
    endpoint_id: Mapped[str | None] = mapped_column(String(40))
    event_type: Mapped[WebhookEventType] = mapped_column(str_enum(WebhookEventType, 32))
    attempt: Mapped[int] = mapped_column(Integer)
    trigger: Mapped[AttemptTrigger] = mapped_column(str_enum(AttemptTrigger, 16))
    http_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(300))
    latency_ms: Mapped[int] = mapped_column(Integer)
    # The first 1 KiB of the answer, as text.
    response: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_webhook_attempts_endpoint", "endpoint_id", "id"),
        Index("ix_webhook_attempts_delivery_id", "delivery_id"),
        Index("ix_webhook_attempts_created_at", "created_at"),
    )
