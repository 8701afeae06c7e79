"""The error envelope (CONTRACT §3) and the handlers that render every error in it."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse

log = structlog.get_logger(__name__)


class ErrorDetail(BaseModel):
    type: str
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorEnvelope(BaseModel):
    error: ErrorDetail


class AppError(Exception):
    """The root of every error a client may see."""

    status_code = 500
    type = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers


class BadRequest(AppError):
    status_code = 400
    type = "bad_request"


class Unauthorized(AppError):
    status_code = 401
    type = "authentication_error"

    def __init__(self, message: str = "missing or invalid credentials") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class NotFound(AppError):
    status_code = 404
    type = "not_found"


class Conflict(AppError):
    status_code = 409
    type = "conflict"


class PayloadTooLarge(AppError):
    status_code = 413
    type = "payload_too_large"


class UnsupportedMediaType(AppError):
    status_code = 415
    type = "unsupported_media_type"


class InvalidRequest(AppError):
    status_code = 422
    type = "invalid_request"


class RateLimited(AppError):
    status_code = 429
    type = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class ServiceUnavailable(AppError):
    status_code = 503
    type = "service_unavailable"


def error_body(
    type_: str, message: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"type": type_, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


def error_response(exc: AppError) -> JSONResponse:
    return JSONResponse(
        error_body(exc.type, exc.message, exc.details),
        status_code=exc.status_code,
        headers=exc.headers,
    )


def validation_details(errors: Any) -> list[dict[str, Any]]:
    """Pydantic errors without the offending input: it may be large or secret."""
    return [
        {
            "loc": [str(part) for part in error.get("loc", ())],
            "msg": error.get("msg", ""),
            "type": error.get("type", ""),
        }
        for error in errors
    ]


_HTTP_TYPES = {
    400: "bad_request",
    401: "authentication_error",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


async def _app_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return error_response(exc)


async def _refused_before_auth(request: Request) -> JSONResponse | None:
    """A 401 instead of a body error when the endpoint needs a key and none valid was shown."""
    from app.deps import authentication_failure  # deps imports this module

    failure = await authentication_failure(request)
    return error_response(failure) if failure is not None else None


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    if (refused := await _refused_before_auth(request)) is not None:
        return refused
    if _body_is_not_json(request):
        return error_response(
            UnsupportedMediaType("the request body must be JSON (Content-Type: application/json)")
        )
    return JSONResponse(
        error_body("invalid_request", "the request is invalid", validation_details(exc.errors())),
        status_code=422,
    )


def _body_is_not_json(request: Request) -> bool:
    """A body was sent with a media type other than JSON (FastAPI then leaves it unparsed)."""
    content_type = request.headers.get("content-type")
    if request.method not in ("POST", "PUT", "PATCH") or not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return not (media == "application/json" or media.endswith("+json"))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and (refused := await _refused_before_auth(request)) is not None:
        return refused
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    return JSONResponse(
        error_body(_HTTP_TYPES.get(exc.status_code, "http_error"), message),
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _unexpected_error(_request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled_error", error_type=type(exc).__name__, exc_info=exc)
    return JSONResponse(error_body("internal_error", "an internal error occurred"), status_code=500)


async def _client_gone(_request: Request, _exc: Exception) -> JSONResponse:
    # The client hung up while sending its body: nothing to answer, nothing went wrong here.
    log.info("client_disconnected")
    return JSONResponse(error_body("bad_request", "the client disconnected"), status_code=400)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the error envelope."""
    descriptions = {
        400: "Malformed request",
        401: "Missing or invalid credentials",
        404: "Not found",
        409: "Idempotency key reused with another body",
        413: "Body too large",
        415: "Body is not JSON",
        422: "Invalid input",
        429: "Rate limited",
        503: "Not ready",
    }
    return {
        code: {"model": ErrorEnvelope, "description": descriptions.get(code, "Error")}
        for code in codes
    }
