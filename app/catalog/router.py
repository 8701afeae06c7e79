"""`GET /v1/models` and `GET /v1/models/{model_id}`: the generate models of the catalog in
use, each with the JSON Schema its input is validated against, an example, and PoYo's
billing rule."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from typing_extensions import TypedDict

from app.catalog.compiled import Catalog, ModelSpec
from app.errors import InvalidRequest, NotFound
from app.web.deps import CallerDep, RuntimeDep
from app.web.errors import error_responses
from app.web.responses import json_response

router = APIRouter(prefix="/v1/models", tags=["models"])
MAX_MODEL_ID_CHARS = 64


class ModelOut(TypedDict):
    id: str
    object: Literal["model"]
    category: str
    title: str
    description: str
    tags: list[str]
    input_schema: dict[str, Any]
    example: dict[str, Any] | None
    billing: dict[str, Any] | None
    catalog_version: str


class ModelList(TypedDict):
    object: Literal["list"]
    catalog_version: str
    data: list[ModelOut]


def model_out(catalog: Catalog, spec: ModelSpec) -> ModelOut:
    entry = spec.entry
    return {
        "id": entry.model_id,
        "object": "model",
        "category": entry.category,
        "title": entry.title,
        "description": entry.description,
        "tags": entry.tags,
        "input_schema": spec.schema,
        "example": spec.example,
        "billing": entry.billing,
        "catalog_version": catalog.version,
    }


@router.get("", response_model=ModelList, summary="List the models", responses=error_responses())
async def list_models(
    runtime: RuntimeDep,
    _caller: CallerDep,
    category: Annotated[str | None, Query(max_length=32, description="e.g. video, image")] = None,
    q: Annotated[str | None, Query(max_length=200, description="words in id or text")] = None,
) -> Response:
    catalog = await runtime.catalogs.current()
    found = catalog.search(category=category, text=q)
    listed: ModelList = {
        "object": "list",
        "catalog_version": catalog.version,
        "data": [model_out(catalog, spec) for spec in found],
    }
    return json_response(listed)


@router.get(
    "/{model_id:path}",
    response_model=ModelOut,
    summary="Get a model (ids may contain /)",
    responses=error_responses(NotFound),
)
async def get_model(model_id: str, runtime: RuntimeDep, _caller: CallerDep) -> Response:
    if len(model_id) > MAX_MODEL_ID_CHARS:
        raise NotFound("no such model")
    catalog = await runtime.catalogs.current()
    try:
        spec = catalog.spec(model_id)
    except InvalidRequest as refused:
        raise NotFound(refused.message) from None
    return json_response(model_out(catalog, spec))
