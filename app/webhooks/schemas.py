"""What the webhook endpoints API takes and answers."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.timeutil import isoformat_z
from app.urls import HttpUrl
from app.webhooks.models import (
    AttemptTrigger,
    DeliveryState,
    WebhookAttempt,
    WebhookEndpoint,
    WebhookEventType,
)

MAX_DESCRIPTION_CHARS = 500
JOB_EVENT_TYPES = [t for t in WebhookEventType if t is not WebhookEventType.TEST]
EventTypes = Annotated[
    list[WebhookEventType],
    Field(
        max_length=len(JOB_EVENT_TYPES),
        description="The job events sent to this endpoint; empty (the default): all of them.",
    ),
]


def _job_events_only(value: list[WebhookEventType] | None) -> list[WebhookEventType] | None:
    if value is None:
        return None
    if WebhookEventType.TEST in value:
        raise ValueError("webhook.test is sent by the test endpoint only; it is not a filter")
    return [t for t in JOB_EVENT_TYPES if t in value]


class EndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: HttpUrl
    event_types: EventTypes = Field(default_factory=list)
    description: str = Field(default="", max_length=MAX_DESCRIPTION_CHARS)
    enabled: bool = True

    _filter = field_validator("event_types")(_job_events_only)


class EndpointUpdate(BaseModel):
    """`PATCH`: the fields given change; enabling an endpoint clears why it was disabled."""

    model_config = ConfigDict(extra="forbid")

    url: HttpUrl | None = None
    event_types: EventTypes | None = None
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION_CHARS)
    enabled: bool | None = None

    _filter = field_validator("event_types")(_job_events_only)


class EndpointOut(BaseModel):
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    id: str
    owner: str
    url: str
    event_types: list[WebhookEventType]
    description: str
    enabled: bool
    disabled_reason: str | None = Field(
        description="Why the endpoint was disabled (410 Gone, failing too long, or by you)"
    )
    failing_since: str | None = Field(description="When its current run of failures began")
    created_at: str
    updated_at: str
    secret: str | None = Field(
        default=None, description="The signing secret: answered once, at creation"
    )

    @classmethod
    def of(cls, endpoint: WebhookEndpoint, secret: str | None = None) -> EndpointOut:
        return cls(
            id=endpoint.id,
            owner=endpoint.owner,
            url=endpoint.url,
            event_types=[WebhookEventType(t) for t in endpoint.event_types],
            description=endpoint.description,
            enabled=endpoint.enabled,
            disabled_reason=endpoint.disabled_reason,
            failing_since=isoformat_z(endpoint.failing_since),
            created_at=isoformat_z(endpoint.created_at),
            updated_at=isoformat_z(endpoint.updated_at),
            secret=secret,
        )


class EndpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[EndpointOut]
    next_cursor: str | None


class EndpointSecret(BaseModel):
    object: Literal["webhook_endpoint_secret"] = "webhook_endpoint_secret"
    secret: str
    previous_secret: str | None = Field(
        default=None, description="After a rotation: the old secret, which signs too until…"
    )
    previous_secret_expires_at: str | None = None


class AttemptOut(BaseModel):
    object: Literal["webhook_attempt"] = "webhook_attempt"
    id: str
    message_id: str
    endpoint_id: str | None
    event_type: WebhookEventType
    attempt: int
    trigger: AttemptTrigger
    http_status: int | None
    error: str | None
    latency_ms: int
    response: str = Field(description="The first 1 KiB of the answer")
    created_at: str

    @classmethod
    def of(cls, row: WebhookAttempt) -> AttemptOut:
        return cls(
            id=f"atmpt_{row.id}",
            message_id=row.message_id,
            endpoint_id=row.endpoint_id,
            event_type=row.event_type,
            attempt=row.attempt,
            trigger=row.trigger,
            http_status=row.http_status,
            error=row.error,
            latency_ms=row.latency_ms,
            response=row.response,
            created_at=isoformat_z(row.created_at),
        )


class AttemptList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AttemptOut]
    next_cursor: str | None


class DeliveryOut(BaseModel):
    endpoint_id: str | None = Field(description="None: the job's own webhook_url")
    state: DeliveryState
    attempts: int
    next_attempt_at: str | None
    last_http_status: int | None
    last_error: str | None


class MessageOut(BaseModel):
    object: Literal["webhook_message"] = "webhook_message"
    id: str
    event_type: WebhookEventType
    job_id: str | None
    created_at: str
    deliveries: list[DeliveryOut]


class MessageList(BaseModel):
    object: Literal["list"] = "list"
    data: list[MessageOut]
    next_cursor: str | None


class Resent(BaseModel):
    """What a redelivery, recovery or test-send queued."""

    object: Literal["webhook_resend"] = "webhook_resend"
    message_ids: list[str]
    deliveries: int
