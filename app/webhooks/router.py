"""Webhook endpoints, their delivery log and resending; and the owner's secret for jobs'
own `webhook_url`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import AwareDatetime, BaseModel

from app.errors import BadRequest, Conflict, InvalidRequest, NotFound, UnsupportedMediaType
from app.web.deps import CallerDep, RuntimeDep
from app.web.errors import error_responses
from app.webhooks.schemas import (
    AttemptList,
    EndpointCreate,
    EndpointList,
    EndpointOut,
    EndpointSecret,
    EndpointUpdate,
    MessageList,
    Resent,
)
from app.webhooks.signing import owner_secret

router = APIRouter(tags=["webhooks"])

EndpointId = Annotated[str, Path(max_length=40, pattern=r"^ep_[0-9a-z]{26}$")]
MessageId = Annotated[str, Path(max_length=40, pattern=r"^msg_[0-9a-z]{26}$")]
Limit = Annotated[int, Query(ge=1, le=100)]
BODY_ERRORS = (BadRequest, UnsupportedMediaType, InvalidRequest)
ENDPOINTS = "/v1/webhook_endpoints"
ONE = ENDPOINTS + "/{endpoint_id}"


class WebhookSecret(BaseModel):
    object: Literal["webhook_secret"] = "webhook_secret"
    secret: str


@router.get(
    "/v1/webhook_secret",
    response_model=WebhookSecret,
    summary="The secret signing your jobs' own webhook_url messages (`whsec_…`)",
)
async def get_webhook_secret(runtime: RuntimeDep, caller: CallerDep) -> WebhookSecret:
    return WebhookSecret(secret=owner_secret(runtime.server_key, caller.owner))


@router.post(
    ENDPOINTS,
    status_code=201,
    response_model=EndpointOut,
    summary="Register an endpoint; its signing secret is in this answer only",
    responses=error_responses(*BODY_ERRORS, Conflict),
)
async def create_endpoint(
    runtime: RuntimeDep, caller: CallerDep, body: EndpointCreate
) -> EndpointOut:
    return await runtime.webhook_endpoints.create(caller, body)


@router.get(ENDPOINTS, response_model=EndpointList, summary="Your endpoints")
async def list_endpoints(
    runtime: RuntimeDep,
    caller: CallerDep,
    limit: Limit = 20,
    cursor: Annotated[str | None, Query(max_length=40)] = None,
) -> EndpointList:
    return await runtime.webhook_endpoints.list(caller, limit=limit, cursor=cursor)


@router.get(ONE, response_model=EndpointOut, responses=error_responses(NotFound))
async def get_endpoint(
    runtime: RuntimeDep, caller: CallerDep, endpoint_id: EndpointId
) -> EndpointOut:
    return await runtime.webhook_endpoints.get(caller, endpoint_id)


@router.patch(
    ONE,
    response_model=EndpointOut,
    summary="Change an endpoint; `enabled: true` re-enables one that was disabled",
    responses=error_responses(*BODY_ERRORS, NotFound),
)
async def update_endpoint(
    runtime: RuntimeDep, caller: CallerDep, endpoint_id: EndpointId, body: EndpointUpdate
) -> EndpointOut:
    return await runtime.webhook_endpoints.update(caller, endpoint_id, body)


@router.delete(ONE, status_code=204, responses=error_responses(NotFound))
async def delete_endpoint(
    runtime: RuntimeDep, caller: CallerDep, endpoint_id: EndpointId
) -> Response:
    await runtime.webhook_endpoints.delete(caller, endpoint_id)
    return Response(status_code=204)


@router.get(
    ONE + "/secret",
    response_model=EndpointSecret,
    summary="Reveal the endpoint's signing secret (and the previous one during a rotation)",
    responses=error_responses(NotFound),
)
async def reveal_secret(
    runtime: RuntimeDep, caller: CallerDep, endpoint_id: EndpointId
) -> EndpointSecret:
    return await runtime.webhook_endpoints.secret(caller, endpoint_id)


@router.post(
    ONE + "/rotate_secret",
    response_model=EndpointSecret,
    summary="A new secret; the old one signs too for WEBHOOK_SECRET_OVERLAP_SECONDS",
    responses=error_responses(NotFound),
)
async def rotate_secret(
    runtime: RuntimeDep, caller: CallerDep, endpoint_id: EndpointId
) -> EndpointSecret:
    return await runtime.webhook_endpoints.rotate(caller, endpoint_id)


@router.get(
    ONE + "/deliveries",
    response_model=AttemptList,
    summary="The endpoint's delivery attempts, newest first",
    responses=error_responses(NotFound, InvalidRequest),
)
async def list_attempts(
    runtime: RuntimeDep,
    caller: CallerDep,
    endpoint_id: EndpointId,
    limit: Limit = 20,
    cursor: Annotated[str | None, Query(max_length=40, pattern=r"^atmpt_[0-9]{1,18}$")] = None,
) -> AttemptList:
    after = int(cursor.removeprefix("atmpt_")) if cursor else None
    return await runtime.webhook_endpoints.attempts(caller, endpoint_id, limit=limit, cursor=after)


@router.post(
    ONE + "/recover",
    status_code=202,
    response_model=Resent,
    summary="Send again every message that failed to reach the endpoint since a time",
    responses=error_responses(NotFound, Conflict, InvalidRequest),
)
async def recover(
    runtime: RuntimeDep,
    caller: CallerDep,
    endpoint_id: EndpointId,
    since: Annotated[AwareDatetime, Query(description="RFC 3339 with a time zone")],
) -> Resent:
    return await runtime.webhook_endpoints.recover(caller, endpoint_id, _utc(since))


@router.post(
    ONE + "/test",
    status_code=202,
    response_model=Resent,
    summary="Send a `webhook.test` message to the endpoint",
    responses=error_responses(NotFound, Conflict),
)
async def send_test(runtime: RuntimeDep, caller: CallerDep, endpoint_id: EndpointId) -> Resent:
    return await runtime.webhook_endpoints.test(caller, endpoint_id)


@router.get(
    "/v1/webhook_messages",
    response_model=MessageList,
    summary="A job's webhook messages, each with where it stands per endpoint",
    responses=error_responses(InvalidRequest),
)
async def list_messages(
    runtime: RuntimeDep,
    caller: CallerDep,
    job_id: Annotated[str, Query(max_length=40, pattern=r"^job_[0-9a-z]{26}$")],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> MessageList:
    return await runtime.webhook_endpoints.messages(caller, job_id=job_id, limit=limit)


@router.post(
    "/v1/webhook_messages/{message_id}/redeliver",
    status_code=202,
    response_model=Resent,
    summary="Send a message again, once, to its enabled endpoints (or the one named)",
    responses=error_responses(NotFound, Conflict, InvalidRequest),
)
async def redeliver(
    runtime: RuntimeDep,
    caller: CallerDep,
    message_id: MessageId,
    endpoint_id: Annotated[str | None, Query(max_length=40, pattern=r"^ep_[0-9a-z]{26}$")] = None,
) -> Resent:
    return await runtime.webhook_endpoints.redeliver(caller, message_id, endpoint_id)


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)
