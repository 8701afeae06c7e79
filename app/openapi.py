"""The OpenAPI document: `POST /v1/jobs` describes each model's input exactly, every
operation lists the errors it can really answer with (in the one error envelope), and the
provider callback documents its credential and optional signature headers."""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.catalog.fields import MAX_PROMPT_CHARS, MAX_URL_CHARS
from app.catalog.models import CATALOG
from app.jobs.schemas import MAX_METADATA_KEY_CHARS, MAX_METADATA_PAIRS, MAX_METADATA_VALUE_CHARS

ENVELOPE_REF = "#/components/schemas/ErrorEnvelope"
_FASTAPI_VALIDATION = "#/components/schemas/HTTPValidationError"
CALLBACK_OPERATION = ("/v1/callbacks/poyo/{job_id}/{token}", "post")

_ERROR_DESCRIPTIONS = {
    400: "Malformed request: the body cannot be parsed",
    401: "Missing, malformed, unknown or revoked API key",
    404: "Not found (another owner's job is as unknown as a missing one)",
    409: "Idempotency-Key reused with a different body",
    413: "Body too large: 64 KiB for the client API, 1 MiB for provider callbacks",
    415: "Body is not JSON",
    422: "Invalid input; `details` lists each problem (`loc`, `msg`, `type`)",
    429: "Job-creation rate limit of this API key exceeded; retry after `Retry-After` seconds",
    503: "Not ready",
}

_ERROR_EXAMPLES: dict[int, dict[str, Any]] = {
    400: {"type": "bad_request", "message": "There was an error parsing the body"},
    401: {"type": "authentication_error", "message": "invalid or revoked API key"},
    404: {"type": "not_found", "message": "no job with id 'job_01jcz3q9m4b8x2v7k5n0r6t1yw'"},
    409: {
        "type": "conflict",
        "message": "this Idempotency-Key was already used with a different request body",
    },
    413: {"type": "payload_too_large", "message": "request body exceeds 65536 bytes"},
    415: {"type": "unsupported_media_type", "message": "the body must be JSON"},
    422: {
        "type": "invalid_request",
        "message": "invalid input for model wan2.5-text-to-video",
        "details": [
            {
                "loc": ["body", "input", "prompt"],
                "msg": f"String should have at most {MAX_PROMPT_CHARS} characters",
                "type": "string_too_long",
            }
        ],
    },
    429: {"type": "rate_limited", "message": "rate limit of 120 jobs per minute exceeded"},
    503: {"type": "service_unavailable", "message": "database unreachable"},
}

_ERROR_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "`Bearer`: the scheme the client API expects",
            "schema": {"type": "string"},
        }
    },
    429: {
        "Retry-After": {
            "description": "Seconds until this key may create jobs again",
            "schema": {"type": "integer", "minimum": 1},
        }
    },
}

_JOB_REQUEST_EXAMPLES = {
    "image-to-video": {
        "summary": "Animate an image",
        "value": {
            "model": "wan2.5-image-to-video",
            "input": {
                "prompt": "a red fox running through snow",
                "image_urls": ["https://example.com/fox.jpg"],
                "resolution": "720p",
                "duration": 5,
            },
            "metadata": {"order": "42"},
        },
    },
    "text-to-video": {
        "summary": "A video from a prompt",
        "value": {
            "model": "wan2.5-text-to-video",
            "input": {"prompt": "a lighthouse at dusk", "aspect_ratio": "1280*720"},
        },
    },
}

_CALLBACK_BODY = {
    "title": "ProviderCallback",
    "description": (
        "The provider's task status, wrapped (`{code, data: {...}}`) or flat. It is a hint: "
        "the job only moves once the provider's status endpoint confirms it."
    ),
    "type": "object",
    "properties": {
        "code": {"type": "integer"},
        "msg": {"type": "string"},
        "data": {"$ref": "#/components/schemas/ProviderTaskStatus"},
        "task_id": {"type": "string", "minLength": 1, "maxLength": 128},
        "status": {"type": "string", "enum": ["not_started", "running", "finished", "failed"]},
    },
    "example": {
        "code": 200,
        "msg": "success",
        "data": {
            "task_id": "task-unified-1731407400-ab12cd34",
            "status": "finished",
            "progress": 100,
            "files": [{"file_url": "https://cdn.example.com/out.mp4", "file_type": "video"}],
            "created_time": "2025-11-12T10:30:00",
            "error_message": None,
        },
    },
}

_PROVIDER_TASK_STATUS = {
    "title": "ProviderTaskStatus",
    "type": "object",
    "required": ["task_id"],
    "properties": {
        "task_id": {"type": "string", "minLength": 1, "maxLength": 128},
        "status": {"type": "string", "enum": ["not_started", "running", "finished", "failed"]},
        "progress": {"type": "integer", "minimum": 0, "maximum": 100},
        "files": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"file_url": {"type": "string"}, "file_type": {"type": "string"}},
            },
        },
        "created_time": {"type": "string"},
        "error_message": {"type": ["string", "null"]},
    },
}

_CALLBACK_HEADERS = [
    {
        "name": "X-Webhook-Timestamp",
        "in": "header",
        "required": False,
        "description": (
            "Unix time of sending. Required when POYO_WEBHOOK_SECRET is set: it must be "
            "within 300 s of the server's clock."
        ),
        "schema": {"type": "string", "pattern": "^[0-9]{1,12}$"},
        "example": "1731407530",
    },
    {
        "name": "X-Webhook-Signature",
        "in": "header",
        "required": False,
        "description": (
            "Required when POYO_WEBHOOK_SECRET is set: "
            'base64(HMAC-SHA256(secret, task_id + "." + timestamp)).'
        ),
        "schema": {"type": "string", "maxLength": 256},
        "example": "3q2+7w0XkqS0m8o1ZyOBqZ3Qe2m6Jc0J8kqv1sY9bqE=",
    },
]


def _job_request_schemas(job_create: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """One request variant per model, sharing the envelope's metadata and webhook_url."""
    components: dict[str, Any] = {}
    variants = []
    props = job_create["properties"]
    metadata = copy.deepcopy(props["metadata"])
    metadata["description"] = (
        f"Up to {MAX_METADATA_PAIRS} string pairs; keys 1-{MAX_METADATA_KEY_CHARS} characters, "
        f"values up to {MAX_METADATA_VALUE_CHARS}. Returned as given."
    )
    webhook_url = copy.deepcopy(props["webhook_url"])
    webhook_url["description"] = (
        f"http(s) URL of at most {MAX_URL_CHARS} characters that hears when the job ends."
    )
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
                "metadata": metadata,
                "webhook_url": webhook_url,
            },
        }
        variants.append({"$ref": f"#/components/schemas/{variant_name}"})
    mapping = {
        entry.name: f"#/components/schemas/JobCreate_{entry.input_schema.__name__}"
        for entry in CATALOG
    }
    schema = {"oneOf": variants, "discriminator": {"propertyName": "model", "mapping": mapping}}
    return schema, components


def _error_response(code: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _ERROR_DESCRIPTIONS.get(code, "Error"),
        "content": {
            "application/json": {
                "schema": {"$ref": ENVELOPE_REF},
                "example": {"error": _ERROR_EXAMPLES[code]} if code in _ERROR_EXAMPLES else None,
            }
        },
    }
    if response["content"]["application/json"]["example"] is None:
        del response["content"]["application/json"]["example"]
    if code in _ERROR_HEADERS:
        response["headers"] = copy.deepcopy(_ERROR_HEADERS[code])
    return response


def _is_error_envelope(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return schema.get("$ref") in (ENVELOPE_REF, _FASTAPI_VALIDATION)


def _finish_operation(path: str, method: str, operation: dict[str, Any]) -> None:
    """Every error in the envelope, with an example; the errors every request can meet."""
    responses: dict[str, Any] = operation.setdefault("responses", {})
    codes = {int(code) for code in responses if int(code) >= 400}
    codes.add(413)  # the body size limit stands in front of every route
    if operation.get("security"):
        codes.add(401)
    if (path, method) == CALLBACK_OPERATION:
        codes.discard(422)  # path parameters are plain strings; the body is read raw
    for key in [key for key in responses if int(key) >= 400 and int(key) not in codes]:
        del responses[key]
    for status in sorted(codes):
        existing = responses.get(str(status))
        if existing is None or _is_error_envelope(existing):
            responses[str(status)] = _error_response(status)


def _finish_jobs(paths: dict[str, Any]) -> None:
    create = paths["/v1/jobs"]["post"]
    create["responses"]["400"] = _error_response(400)
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


def _finish_callback(document: dict[str, Any]) -> None:
    path, method = CALLBACK_OPERATION
    operation = document["paths"].get(path, {}).get(method)
    if operation is None:
        return
    operation["security"] = []  # the credential is in the URL; no API key
    operation["description"] = (
        "Called by PoYo, not by clients. The path carries the job id and its per-job "
        "credential (`401` when wrong). When POYO_WEBHOOK_SECRET is set, "
        "`X-Webhook-Timestamp` and `X-Webhook-Signature` are required as well (`401` when "
        "missing, stale, or not matching; recorded on the job's events as `callback.rejected`)."
    )
    parameters = [p for p in operation.get("parameters", []) if p.get("in") != "header"]
    operation["parameters"] = parameters + copy.deepcopy(_CALLBACK_HEADERS)
    document["components"]["schemas"]["ProviderTaskStatus"] = _PROVIDER_TASK_STATUS
    operation["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": _CALLBACK_BODY}},
    }
    ok = operation["responses"]["200"]["content"]["application/json"]
    ok["example"] = {"received": True, "outcome": "received"}
    operation["responses"]["400"]["description"] = (
        "The body is not JSON, has no task_id, or names another task than the job's"
    )
    operation["responses"]["401"]["description"] = (
        "Wrong callback credential, or (with POYO_WEBHOOK_SECRET set) a missing, stale or "
        "invalid signature"
    )
    operation["responses"]["401"].pop("headers", None)
    operation["responses"]["413"]["description"] = "Body over 1 MiB"


def build_document(app: FastAPI) -> dict[str, Any]:
    document = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schemas = document["components"]["schemas"]
    request, components = _job_request_schemas(schemas.pop("JobCreate"))
    schemas.update(components)
    paths: dict[str, Any] = document["paths"]
    body = paths["/v1/jobs"]["post"]["requestBody"]
    body["content"]["application/json"]["schema"] = request
    for path, item in paths.items():
        for method, operation in item.items():
            _finish_operation(path, method, operation)
    _finish_jobs(paths)
    _finish_callback(document)
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return document


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        app.openapi_schema = build_document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
