"""`POST /v1/callbacks/poyo/{job_id}/{token}`: where PoYo reports on our jobs.

Callbacks arrive in bursts, so this route is a bare Starlette one, matched before
FastAPI's routes and without FastAPI's per-request work (parameter validation, dependency
solving: on this route, most of the stack's cost). It describes itself in the OpenAPI
document (`openapi_operation`), next to the handler it documents.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import TypeAdapter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send
from typing_extensions import TypedDict

from app.callbacks.classify import Outcome
from app.callbacks.credentials import CALLBACK_PATH
from app.errors import BadRequest, NotFound, PayloadTooLarge, Unauthorized
from app.provider.schemas import TaskStatus
from app.runtime import Runtime
from app.web.openapi import described
from app.web.responses import json_response

PATH = CALLBACK_PATH + "/{job_id}/{token}"
REF = "#/components/schemas/{model}"


class CallbackAck(TypedDict):
    received: Literal[True]
    outcome: Outcome


async def receive_callback(request: Request) -> Response:
    """Called by PoYo, not by clients. The path carries the job id and its per-job
    credential (`401` when wrong). When POYO_WEBHOOK_SECRET is set, `X-Webhook-Timestamp`
    and `X-Webhook-Signature` are required as well (`401` when missing, stale, or not
    matching; recorded on the job's events as `callback.rejected`). The body is stored
    raw before the answer, and only the provider's status endpoint can then move the job."""
    runtime: Runtime = request.app.state.runtime
    params = request.path_params
    result = await runtime.callbacks.ingest(
        job_id=params["job_id"],
        token=params["token"],
        body=await request.body(),
        headers=request.headers,
    )
    if result.error is not None:
        error = result.error(result.message)
        return JSONResponse(error.body(), status_code=error.status_code)
    ack: CallbackAck = {"received": True, "outcome": result.outcome}
    return json_response(ack)


class _Endpoint:
    """The handler as a bare ASGI app (a function endpoint would get Starlette's wrapper)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await receive_callback(Request(scope, receive))
        await response(scope, receive, send)


class CallbackRoute(Route):
    def __init__(self) -> None:
        super().__init__(PATH, _Endpoint(), methods=["POST"], name="receive_callback")

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self  # the access log and metrics name the template
        return match, child_scope

    def openapi_operation(self, components: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
        """This route in the OpenAPI document: (path, method, operation)."""
        for name, shape in (("ProviderTaskStatus", TaskStatus), ("CallbackAck", CallbackAck)):
            schema = TypeAdapter(shape).json_schema(ref_template=REF)
            components.update(schema.pop("$defs", {}))  # nested models: components too
            components[name] = schema
        flat = {"$ref": REF.format(model="ProviderTaskStatus")}
        wrapped = {"type": "object", "required": ["data"], "properties": {"data": flat}}
        body = {"description": "PoYo's task status, wrapped or flat", "oneOf": [wrapped, flat]}
        ack = {"$ref": REF.format(model="CallbackAck")}
        operation = {
            "tags": ["callbacks"],
            "summary": "Provider callback (called by PoYo, not by clients)",
            "description": " ".join((receive_callback.__doc__ or "").split()),
            "operationId": "receive_callback",
            "security": [],  # the credential is in the URL; no API key
            "parameters": [
                _parameter("job_id", "path", "The job the callback is about"),
                _parameter("token", "path", "The job's callback credential"),
                _parameter(
                    "X-Webhook-Timestamp",
                    "header",
                    "Unix time of sending (with POYO_WEBHOOK_SECRET: required, within 300 s)",
                    pattern="^[0-9]{1,12}$",
                ),
                _parameter(
                    "X-Webhook-Signature",
                    "header",
                    "With POYO_WEBHOOK_SECRET: required, "
                    'base64(HMAC-SHA256(secret, task_id + "." + timestamp))',
                    maxLength=256,
                ),
            ],
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": {
                "200": {
                    "description": "Stored, or known as a duplicate, stale or late callback",
                    "content": {"application/json": {"schema": ack}},
                },
                **described(
                    BadRequest, "The body is not JSON, has no task_id, or names another task"
                ),
                **described(
                    Unauthorized,
                    "Wrong callback credential, or a missing, stale or invalid signature",
                ),
                **described(NotFound, "No such job"),
                **described(PayloadTooLarge, "Body over 1 MiB"),
            },
        }
        return PATH, "post", operation


def _parameter(name: str, where: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "description": description,
        "schema": {"type": "string", **schema},
    }
