"""`GET /v1/models`: the supported models and their input JSON Schemas."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel

from app.catalog.models import CATALOG
from app.web.deps import CallerDep

router = APIRouter(prefix="/v1/models", tags=["models"])


class ModelOut(BaseModel):
    id: str
    object: Literal["model"] = "model"
    description: str
    input_schema: dict[str, Any]


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelOut]


_MODELS = ModelList(
    data=[
        ModelOut(id=entry.name, description=entry.description, input_schema=entry.json_schema())
        for entry in CATALOG
    ]
)


@router.get("", response_model=ModelList, summary="List models")
async def list_models(_caller: CallerDep) -> ModelList:
    return _MODELS
