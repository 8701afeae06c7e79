"""`/healthz`, `/readyz`, `/metrics`."""

from __future__ import annotations

from typing import Literal

import structlog
from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.responses import Response

from app.errors import Unavailable
from app.metrics import REGISTRY
from app.web.deps import RuntimeDep
from app.web.errors import error_responses

router = APIRouter(tags=["operations"])
log = structlog.get_logger(__name__)


class Health(BaseModel):
    status: Literal["ok"] = "ok"


@router.get("/healthz", response_model=Health, summary="The process is up")
async def healthz() -> Health:
    return Health()


@router.get(
    "/readyz",
    response_model=Health,
    summary="The database is reachable",
    responses=error_responses(Unavailable),
)
async def readyz(runtime: RuntimeDep) -> Health:
    try:
        await runtime.db.ping()
    except Exception as exc:
        log.warning("readiness_failed", error_type=type(exc).__name__)
        raise Unavailable("database unreachable") from None
    return Health()


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
