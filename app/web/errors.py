"""Render every error in the one envelope, and describe errors for the OpenAPI document.

- Our own errors (app.errors) render as themselves.
- Starlette's and FastAPI's: a bare HTTP status becomes the error class of that status; a
  request FastAPI could not parse is a 422 (a 415 when its body is not JSON), unless the
  endpoint needs an API key and none valid was shown: then `401`, before anything else.
  A body that is not valid JSON says where (line, column) and why.
- The database unreachable or dropping connections: `503` with Retry-After; the request
  changed nothing.
- Anything else: `500`, logged, never a stack trace.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse

from app.db import is_unavailable
from app.errors import (
    AppError,
    BadRequest,
    ErrorEnvelope,
    ErrorItem,
    InvalidRequest,
    Unavailable,
    UnsupportedMediaType,
    for_status,
    validation_details,
)
from app.web.deps import authentication_failure

log = structlog.get_logger(__name__)


def error_response(error: AppError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status_code, headers=error.headers)


async def _app_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return error_response(exc)


async def _refused_before_auth(request: Request) -> JSONResponse | None:
    """A 401 instead of a body error when the endpoint needs a key and none valid was shown."""
    try:
        failure = await authentication_failure(request)
    except Exception as exc:
        return await _failure(request, exc)
    return error_response(failure) if failure is not None else None


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    if (refused := await _refused_before_auth(request)) is not None:
        return refused
    if _body_is_not_json(request):
        return error_response(UnsupportedMediaType())
    errors = exc.errors()
    malformed = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if malformed is not None:
        return error_response(_malformed_json(malformed, exc.body))
    return error_response(InvalidRequest(details=validation_details(errors)))


def _malformed_json(error: Mapping[str, Any], document: Any) -> InvalidRequest:
    """A body that is not JSON: where (line and column, counted from 1) and why, as the
    parser says. FastAPI gives the character offset in `loc` and the document itself."""
    loc, ctx = tuple(error.get("loc", ())), error.get("ctx") or {}
    reason = str(ctx.get("error") or "not valid JSON")
    offset = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else None
    if offset is None:
        where = ""
    elif isinstance(document, str) and 0 <= offset <= len(document):
        line = document.count("\n", 0, offset) + 1
        column = offset - document.rfind("\n", 0, offset)
        where = f" at line {line}, column {column}"
    else:
        where = f" at character {offset + 1}"
    message = f"Malformed JSON{where}: {reason}"
    detail = ErrorItem(loc=["body"], msg=message, type="json_invalid")
    return InvalidRequest(message, details=[detail])


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
    error = for_status(exc.status_code)(exc.detail if isinstance(exc.detail, str) else None)
    return JSONResponse(error.body(), status_code=exc.status_code, headers=exc.headers)


async def _failure(_request: Request, exc: Exception) -> JSONResponse:
    """The database unreachable (503: nothing changed, retry), or a bug (500, logged)."""
    if is_unavailable(exc):
        log.warning("database_unavailable", error_type=type(exc).__name__)
        return error_response(Unavailable())
    log.error("unhandled_error", error_type=type(exc).__name__, exc_info=exc)
    return error_response(AppError())


async def _client_gone(_request: Request, _exc: Exception) -> JSONResponse:
    # The client hung up while sending its body: nothing to answer, nothing went wrong here.
    log.info("client_disconnected")
    return error_response(BadRequest("the client disconnected"))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Database errors are answered here rather than by the last-resort handler, which
    # would hand them on to the server as crashes after answering.
    app.add_exception_handler(SQLAlchemyError, _failure)
    app.add_exception_handler(ConnectionError, _failure)
    app.add_exception_handler(Exception, _failure)


def error_responses(*errors: type[AppError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for errors an operation answers with (the document
    adds the envelope's example, and the errors every request can meet)."""
    return {e.status_code: {"model": ErrorEnvelope, "description": e.description} for e in errors}
