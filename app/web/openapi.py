"""The OpenAPI document: every operation lists the errors it can really answer with (in
the one envelope, described once in app.errors), and routes served outside FastAPI's
routing describe themselves. Each model's input schema is served by `GET /v1/models/{id}`
(the catalog changes without a new release, so it is not frozen in here).

It is browsable at `/docs` (Swagger UI) and `/redoc` (ReDoc), whose scripts and styles are
served by poyo-relay itself from the fastapi-offline package: the pages work offline, and
no visitor's browser calls a CDN, Google Fonts or Swagger's validator."""

from __future__ import annotations

import copy
from typing import Any, Protocol, runtime_checkable

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.openapi.utils import get_openapi
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from app.errors import (
    AppError,
    ErrorEnvelope,
    InvalidRequest,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    Unavailable,
    for_status,
)
from app.jobs.schemas import JOB_EXAMPLE

ENVELOPE_REF = "#/components/schemas/ErrorEnvelope"
DOCS_URL = "/docs"
REDOC_URL = "/redoc"
# swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js and favicon.png
DOCS_ASSETS_URL = "/docs/assets"
DOCS_ASSETS_PACKAGE = ("fastapi_offline", "static")
# Otherwise Swagger UI shows a badge loaded from validator.swagger.io, which is sent the
# document's URL.
SWAGGER_UI_PARAMETERS: dict[str, Any] = {"validatorUrl": None}
# The pages may load and call nothing but this service, whatever their bundles would fetch
# (ReDoc's footer asks a CDN for Redocly's logo): the browser refuses it. Swagger UI starts
# from an inline script and ReDoc injects its styles, hence 'unsafe-inline'; ReDoc's
# search runs in a blob: worker.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; worker-src 'self' blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# Every request can meet these: the body limit stands in front of every route, and every
# route reads or writes the database.
_ALWAYS = (PayloadTooLarge, Unavailable)
_WAIT = {"description": "Seconds to wait", "schema": {"type": "integer", "minimum": 1}}
_BEARER = {"description": "`Bearer`, the scheme expected", "schema": {"type": "string"}}
_HEADERS: dict[type[AppError], dict[str, Any]] = {
    Unauthorized: {"WWW-Authenticate": _BEARER},
    RateLimited: {"Retry-After": _WAIT},
    Unavailable: {"Retry-After": _WAIT},
}


@runtime_checkable
class DescribedRoute(Protocol):
    """A route served outside FastAPI's routing that describes itself."""

    def openapi_operation(self, components: dict[str, Any]) -> tuple[str, str, dict[str, Any]]: ...


def described(error: type[AppError], description: str | None = None) -> dict[str, Any]:
    """A `responses` entry of a self-described route: the document renders the envelope."""
    return {str(error.status_code): {"description": description or error.description}}


_JOB_REQUEST_EXAMPLES = {
    "image-to-video": {
        "summary": "Animate an image (Wan 2.5)",
        "value": {key: JOB_EXAMPLE[key] for key in ("model", "input", "metadata")},
    },
    "text-to-video": {
        "summary": "A video from a prompt (Wan 2.5)",
        "value": {
            "model": "wan2.5-text-to-video",
            "input": {"prompt": "a lighthouse at dusk", "aspect_ratio": "1280*720"},
        },
    },
    "text-to-image": {
        "summary": "Two images from a prompt (Seedream 4)",
        "value": {"model": "seedream-4", "input": {"prompt": "a red fox in snow", "n": 2}},
    },
}


def _error_response(error: type[AppError], description: str | None) -> dict[str, Any]:
    example: dict[str, Any] = {"type": error.type, "message": error.example}
    if error is InvalidRequest:
        detail = {"loc": ["body", "input", "duration"], "msg": "Input should be 5 or 10"}
        example["details"] = [detail | {"type": "literal_error"}]
    response: dict[str, Any] = {
        "description": description or error.description,
        "content": {
            "application/json": {"schema": {"$ref": ENVELOPE_REF}, "example": {"error": example}}
        },
    }
    if error in _HEADERS:
        response["headers"] = copy.deepcopy(_HEADERS[error])
    return response


def _own_description(response: dict[str, Any] | None) -> str | None:
    """The description an operation gave an error (FastAPI's default 422 is not one)."""
    if response is None or response.get("description") == "Validation Error":
        return None
    description = response.get("description")
    return description if isinstance(description, str) else None


def _finish_operation(operation: dict[str, Any]) -> None:
    """Every error in the envelope, with an example; the errors every request can meet."""
    responses: dict[str, Any] = operation.setdefault("responses", {})
    codes = {int(code) for code in responses if int(code) >= 400}
    codes |= {error.status_code for error in _ALWAYS}
    if operation.get("security"):
        codes.add(Unauthorized.status_code)
    for status in sorted(codes):
        existing = responses.get(str(status))
        responses[str(status)] = _error_response(for_status(status), _own_description(existing))


def _finish_jobs(paths: dict[str, Any]) -> None:
    create = paths["/v1/jobs"]["post"]
    media = create["requestBody"]["content"]["application/json"]
    media["examples"] = _JOB_REQUEST_EXAMPLES
    links = {
        "GetJob": {
            "operationId": paths["/v1/jobs/{job_id}"]["get"]["operationId"],
            "parameters": {"job_id": "$response.body#/id"},
            "description": "The job just created",
        },
        "ListJobEvents": {
            "operationId": paths["/v1/jobs/{job_id}/events"]["get"]["operationId"],
            "parameters": {"job_id": "$response.body#/id"},
            "description": "Its audit trail",
        },
    }
    for code in ("200", "201"):
        create["responses"][code]["links"] = copy.deepcopy(links)
    get_job = paths["/v1/jobs/{job_id}"]["get"]
    get_job["responses"]["200"]["links"] = {"ListJobEvents": copy.deepcopy(links["ListJobEvents"])}


def build_document(app: FastAPI) -> dict[str, Any]:
    document = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schemas = document["components"]["schemas"]
    schemas.update(_envelope_schemas())
    paths: dict[str, Any] = document["paths"]
    for route in app.routes:
        if isinstance(route, DescribedRoute):
            path, method, operation = route.openapi_operation(schemas)
            paths.setdefault(path, {})[method] = operation
    for item in paths.values():
        for operation in item.values():
            _finish_operation(operation)
    _finish_jobs(paths)
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return document


def _envelope_schemas() -> dict[str, Any]:
    schema = ErrorEnvelope.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions: dict[str, Any] = schema.pop("$defs", {})
    return {**definitions, "ErrorEnvelope": schema}


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        app.openapi_schema = build_document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    if app.openapi_url is not None:
        _install_docs(app, app.openapi_url)


def _install_docs(app: FastAPI, openapi_url: str) -> None:
    """FastAPI's own /docs and /redoc (turned off in app.main) with the assets served here."""
    app.mount(DOCS_ASSETS_URL, StaticFiles(packages=[DOCS_ASSETS_PACKAGE]), name="docs-assets")
    oauth2_redirect_url = app.swagger_ui_oauth2_redirect_url
    parameters = {**SWAGGER_UI_PARAMETERS, **(app.swagger_ui_parameters or {})}

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return _confined(
            get_swagger_ui_html(
                openapi_url=root + openapi_url,
                title=f"{app.title} - Swagger UI",
                swagger_js_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
                swagger_css_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui.css",
                swagger_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
                oauth2_redirect_url=root + oauth2_redirect_url if oauth2_redirect_url else None,
                init_oauth=app.swagger_ui_init_oauth,
                swagger_ui_parameters=parameters,
            )
        )

    async def swagger_ui_redirect(_request: Request) -> HTMLResponse:
        return _confined(get_swagger_ui_oauth2_redirect_html())

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return _confined(
            get_redoc_html(
                openapi_url=root + openapi_url,
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{root}{DOCS_ASSETS_URL}/redoc.standalone.js",
                redoc_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
                with_google_fonts=False,
            )
        )

    app.add_route(DOCS_URL, swagger_ui, include_in_schema=False)
    if oauth2_redirect_url:
        app.add_route(oauth2_redirect_url, swagger_ui_redirect, include_in_schema=False)
    app.add_route(REDOC_URL, redoc, include_in_schema=False)


def _confined(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page
