"""The OpenAPI document: `POST /v1/jobs` describes each model's input exactly."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.catalog.models import CATALOG


def _job_request_schemas(job_create: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """One request variant per model, sharing the envelope's metadata and webhook_url."""
    components: dict[str, Any] = {}
    variants = []
    props = job_create["properties"]
    for entry in CATALOG:
        input_name = entry.input_schema.__name__
        components[input_name] = entry.json_schema()
        variant_name = f"JobCreate_{input_name}"
        components[variant_name] = {
            "title": f"Create a {entry.name} job",
            "type": "object",
            "additionalProperties": False,
            "required": ["model", "input"],
            "properties": {
                "model": {"type": "string", "const": entry.name, "enum": [entry.name]},
                "input": {"$ref": f"#/components/schemas/{input_name}"},
                "metadata": props["metadata"],
                "webhook_url": props["webhook_url"],
            },
        }
        variants.append({"$ref": f"#/components/schemas/{variant_name}"})
    mapping = {
        entry.name: f"#/components/schemas/JobCreate_{entry.input_schema.__name__}"
        for entry in CATALOG
    }
    schema = {"oneOf": variants, "discriminator": {"propertyName": "model", "mapping": mapping}}
    return schema, components


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        document = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schemas = document["components"]["schemas"]
        request, components = _job_request_schemas(schemas["JobCreate"])
        schemas.update(components)
        body = document["paths"]["/v1/jobs"]["post"]["requestBody"]
        body["content"]["application/json"]["schema"] = request
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
