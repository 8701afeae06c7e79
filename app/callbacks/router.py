"""`POST /v1/callbacks/poyo/{job_id}/{token}`: where PoYo reports on our jobs.

Callbacks arrive in bursts, so the route that serves them is a bare ASGI one placed in
front of FastAPI's routing (`fast_route`); the FastAPI route below describes the same
handler in the OpenAPI document.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from app.callbacks.credentials import CALLBACK_PATH
from app.errors import error_body, error_responses
from app.runtime import Runtime

router = APIRouter(prefix=CALLBACK_PATH, tags=["callbacks"])
ROUTE_PATH = "/{job_id}/{token}"

_ERROR_TYPES = {400: "bad_request", 401: "authentication_error", 404: "not_found"}


class CallbackAck(BaseModel):
    received: bool
    outcome: str


@router.post(
    ROUTE_PATH,
    response_model=CallbackAck,
    summary="Provider callback (called by PoYo, not by clients)",
    responses=error_responses(400, 401, 404, 413),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def receive_callback(job_id: str, token: str, request: Request) -> Response:
    """Authenticate, store the raw body, and queue a status check; answered after storing."""
    # The hot path: the runtime is read off the app, without a dependency to resolve.
    runtime: Runtime = request.app.state.runtime
    body = await request.body()
    result = await runtime.callbacks.ingest(
        job_id=job_id, token=token, body=body, headers=request.headers
    )
    if result.http_status >= 400:
        return JSONResponse(
            error_body(_ERROR_TYPES.get(result.http_status, "bad_request"), result.message),
            status_code=result.http_status,
        )
    return Response(
        orjson.dumps({"received": True, "outcome": result.outcome}), media_type="application/json"
    )


class _CallbackApp:
    """The handler as a bare ASGI app (a function endpoint would get Starlette's wrapper)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = scope["path_params"]
        request = Request(scope, receive)
        response = await receive_callback(params["job_id"], params["token"], request)
        await response(scope, receive, send)


class _FastRoute(Route):
    """Matched before FastAPI's routes, and without FastAPI's per-request work (parameter
    validation, dependency solving): on this route, most of the stack's cost."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self  # the access log and metrics name the template
        return match, child_scope


def fast_route() -> Route:
    return _FastRoute(CALLBACK_PATH + ROUTE_PATH, _CallbackApp(), methods=["POST"])
