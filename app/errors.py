"""Every error a client can see, defined once: its type, HTTP status and description.

Services raise these; `app.web.errors` renders each in the one envelope
`{"error": {"type", "message", "details"?}}` and the OpenAPI document takes its
descriptions and examples from here (docs/API.md lists them for people).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from pydantic import BaseModel
from typing_extensions import TypedDict


class ErrorItem(TypedDict):
    """One problem of an invalid request: where (`loc`), what (`msg`), which rule (`type`)."""

    loc: list[str]
    msg: str
    type: str


class BudgetInfo(TypedDict):
    """The budget a refused job would overrun (`budget_exceeded`), in credits."""

    period: str
    limit_credits: float
    spent_credits: float
    estimate_credits: float | None


class ErrorBody(BaseModel):
    type: str
    message: str
    details: list[ErrorItem] | None = None
    budget: BudgetInfo | None = None


class ErrorEnvelope(BaseModel):
    error: ErrorBody


class AppError(Exception):
    """The root of every error a client may see."""

    status_code: ClassVar[int] = 500
    type: ClassVar[str] = "internal_error"
    description: ClassVar[str] = "An unexpected error on our side; never a stack trace"
    example: ClassVar[str] = "an internal error occurred"

    def __init__(
        self,
        message: str | None = None,
        *,
        details: list[ErrorItem] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.example
        super().__init__(self.message)
        self.details = details
        self.headers = headers

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


class BadRequest(AppError):
    status_code = 400
    type = "bad_request"
    description = "Malformed request: the body cannot be parsed"
    example = "There was an error parsing the body"


class Unauthorized(AppError):
    status_code = 401
    type = "authentication_error"
    description = "Missing, malformed, unknown or revoked API key"
    example = "invalid or revoked API key"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class BudgetExceeded(AppError):
    status_code = 402
    type = "budget_exceeded"
    description = (
        "The job would take its owner past a daily or monthly credit budget; nothing was "
        "stored or sent. `budget` names it, what is spent of it and the job's estimate"
    )
    example = "this job (180 credits) would exceed the daily budget of 5000 credits"

    def __init__(self, message: str, *, budget: BudgetInfo) -> None:
        super().__init__(message)
        self.budget = budget

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"]["budget"] = self.budget
        return body


class Forbidden(AppError):
    status_code = 403
    type = "forbidden"
    description = "A signed output link that is invalid or has expired"
    example = "this link is invalid or has expired"


class NotFound(AppError):
    status_code = 404
    type = "not_found"
    description = "Not found (another owner's job is as unknown as a missing one)"
    example = "no job with id 'job_01jcz3q9m4b8x2v7k5n0r6t1yw'"


class MethodNotAllowed(AppError):
    status_code = 405
    type = "method_not_allowed"
    description = "This path does not answer this method (see `Allow`)"
    example = "Method Not Allowed"


class Conflict(AppError):
    status_code = 409
    type = "conflict"
    description = "Idempotency-Key reused with a different body"
    example = "this Idempotency-Key was already used with a different request body"


class PayloadTooLarge(AppError):
    status_code = 413
    type = "payload_too_large"
    description = "Body too large: 256 KiB for the client API, 1 MiB for provider callbacks"
    example = "request body exceeds 262144 bytes"


class RangeNotSatisfiable(AppError):
    status_code = 416
    type = "range_not_satisfiable"
    description = "A `Range` past the end of an output file (see `Content-Range`)"
    example = "the file has 1843200 bytes"

    def __init__(self, message: str, *, size: int) -> None:
        super().__init__(message, headers={"Content-Range": f"bytes */{size}"})


class UnsupportedMediaType(AppError):
    status_code = 415
    type = "unsupported_media_type"
    description = "Body is not JSON"
    example = "the request body must be JSON (Content-Type: application/json)"


class InvalidRequest(AppError):
    status_code = 422
    type = "invalid_request"
    description = "Invalid input; `details` lists each problem (`loc`, `msg`, `type`)"
    example = "the request is invalid"


class RateLimited(AppError):
    status_code = 429
    type = "rate_limited"
    description = "Job-creation rate limit of this API key exceeded; retry after `Retry-After`"
    example = "rate limit of 120 jobs per minute exceeded"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class Unavailable(AppError):
    status_code = 503
    type = "unavailable"
    description = (
        "The database cannot be reached right now, or this process serves as many streams "
        "and waits as it may; nothing was changed. Retry after `Retry-After` seconds"
    )
    example = "the database is unavailable; retry shortly"
    RETRY_AFTER_SECONDS: ClassVar[int] = 2

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, headers={"Retry-After": str(self.RETRY_AFTER_SECONDS)})


# Every error a client may see (each status has one).
ERRORS: tuple[type[AppError], ...] = (AppError, *AppError.__subclasses__())
BY_STATUS: dict[int, type[AppError]] = {error.status_code: error for error in ERRORS}


def for_status(status_code: int) -> type[AppError]:
    """The error a bare HTTP status stands for (500's, when it is not one of ours)."""
    return BY_STATUS.get(status_code, AppError)


def validation_details(errors: Iterable[Mapping[str, Any]]) -> list[ErrorItem]:
    """Pydantic's errors without the offending input (it may be large or secret), a value
    of the wrong JSON type in a body said as such (`5 is a number; expected a string`)."""
    return [
        ErrorItem(
            loc=[str(part) for part in error.get("loc", ())],
            msg=_message(error),
            type=str(error.get("type", "")),
        )
        for error in errors
    ]


# Pydantic's type errors, by the JSON type they expect (lax mode: only these are mismatches
# of JSON types whatever the value; a `*_parsing` error is about a string's content).
_PYDANTIC_TYPES = {
    "string_type": "string",
    "dict_type": "object",
    "model_type": "object",
    "model_attributes_type": "object",
    "list_type": "array",
    "bool_type": "boolean",
    "int_type": "integer",
    "float_type": "number",
}


def _message(error: Mapping[str, Any]) -> str:
    loc, expected = tuple(error.get("loc", ())), _PYDANTIC_TYPES.get(str(error.get("type")))
    if expected is not None and loc[:1] == ("body",) and "input" in error:
        return type_mismatch(error["input"], [expected])
    return str(error.get("msg", ""))


# ---- a value of the wrong JSON type, described -------------------------------------------

# JSON Schema's types, as a message names them, in the order it lists them.
TYPE_NAMES = {
    "string": "a string",
    "integer": "a number (integer)",
    "number": "a number",
    "boolean": "a boolean (true or false)",
    "array": "an array",
    "object": "an object",
    "null": "null",
}
_SHOWN_CHARS = 24


def json_type(value: Any) -> str:
    """The JSON type of a parsed JSON value ("integer" for a number without fraction)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list | tuple) else "object"


def is_of_type(value: Any, name: str) -> bool:
    actual = json_type(value)
    return actual == name or (name == "number" and actual == "integer")


def _shown(value: Any) -> str | None:
    """`value` as a message may quote it back, or None. Never a string unless it spells a
    number, a boolean or null (the usual slip: `"5"` for 5): input may be large or secret."""
    if isinstance(value, str):
        try:
            spelled = json.loads(value, parse_constant=_not_json)
        except (ValueError, RecursionError):
            return None
        if spelled is not None and not isinstance(spelled, bool | int | float):
            return None
    elif not (value is None or isinstance(value, bool | int | float)):
        return None
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except ValueError:
        return None
    return text if len(text) <= _SHOWN_CHARS else None


def _not_json(name: str) -> Any:
    raise ValueError(name)  # NaN and Infinity: Python's, not JSON


def type_mismatch(value: Any, expected: Iterable[str], allowed: Iterable[Any] = ()) -> str:
    """What a value of the wrong JSON type is and what was expected instead, e.g.
    `"5" is a string; expected a number (integer): 5 or 10`."""
    expected = list(expected)
    wanted = [name for name in TYPE_NAMES if name in expected] or expected
    actual, shown = json_type(value), _shown(value)
    if actual == "number" and "integer" in wanted:
        what = "is not a whole number"
    elif actual == "null":
        what = "is null"
    else:
        noun = {"integer": "a number", "boolean": "a boolean"}.get(actual, TYPE_NAMES[actual])
        what = f"is {noun}"
    message = f"{shown} {what}" if shown is not None and actual != "null" else what
    message += f"; expected {one_of([TYPE_NAMES.get(name, name) for name in wanted])}"
    options = [json.dumps(option, ensure_ascii=False) for option in allowed]
    if options:
        message += f": {one_of(options)}"
    return message


def one_of(words: list[str]) -> str:
    """`a`, `a or b`, `a, b or c`."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"
