"""`POST /v1/callbacks/poyo/{job_id}/{token}`: where PoYo reports on our jobs."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import JSONResponse, Response

from app.errors import error_body, error_responses
from app.runtime import Runtime

router = APIRouter(prefix="/v1/callbacks", tags=["callbacks"])

_ERROR_TYPES = {400: "bad_request", 401: "authentication_error", 404: "not_found"}


class CallbackAck(BaseModel):
    received: bool
    outcome: str


@router.post(
    "/poyo/{job_id}/{token}",
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
async def receive_callback(job_id: str, token: str, request: Request) -> Any:
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
