"""`GET /v1/webhook_secret`: the caller's key for verifying our webhooks."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel

from app.web.deps import CallerDep, RuntimeDep
from app.webhooks.signing import owner_secret

router = APIRouter(prefix="/v1/webhook_secret", tags=["webhooks"])


class WebhookSecret(BaseModel):
    object: Literal["webhook_secret"] = "webhook_secret"
    secret: str


@router.get(
    "",
    response_model=WebhookSecret,
    summary="The signing secret of your webhooks (Standard Webhooks, `whsec_…`)",
)
async def get_webhook_secret(runtime: RuntimeDep, caller: CallerDep) -> WebhookSecret:
    return WebhookSecret(secret=owner_secret(runtime.server_key, caller.owner))
