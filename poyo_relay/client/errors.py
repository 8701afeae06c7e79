"""The client's exceptions: `PoyoRelayError` at the root; `ApiError` (and a subclass per
status) for an answer in the API's error envelope; `ConnectionFailed` when the service
could not be reached, even after retries."""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx


class PoyoRelayError(Exception):
    """The root of every error this client raises."""


class ConnectionFailed(PoyoRelayError):
    """The service could not be reached, or the connection broke, after every retry; the
    transport error (httpx's) is the `__cause__`."""


class InvalidResponse(PoyoRelayError):
    """The service answered something that is not the API's (not JSON, a shape this client
    cannot read, a stream that is not an event stream)."""


class WebhookVerificationError(PoyoRelayError):
    """A webhook whose signature, timestamp or headers do not verify."""


@dataclass(frozen=True, slots=True)
class ErrorDetail:
    """One problem of an invalid request: where (`loc`, e.g. `("body", "input", "prompt")`),
    what (`msg`) and which rule (`type`)."""

    loc: tuple[str | int, ...]
    msg: str
    type: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ErrorDetail:
        """Parse an item of the envelope's `details`."""
        loc = data.get("loc") or ()
        return cls(
            loc=tuple(p if isinstance(p, int) else str(p) for p in loc),
            msg=str(data.get("msg", "")),
            type=str(data.get("type", "")),
        )


class ApiError(PoyoRelayError):
    """The API answered with an error: `{"error": {"type", "message", "details"?}}`.

    `status_code` is the HTTP status, `type` the envelope's (`not_found`, `invalid_request`,
    …; None when the body was not an envelope), `message` its text, `details` each problem
    of an invalid request, `request_id` the service's `X-Request-ID` (quote it when asking
    for help), `body` the parsed JSON (or text), `retry_after` the `Retry-After` in seconds
    when the service sent one, `response` the httpx response (its body already read).
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        type: str | None = None,
        details: Sequence[ErrorDetail] = (),
        request_id: str | None = None,
        body: Any = None,
        retry_after: float | None = None,
        response: httpx.Response | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.type = type
        self.details = tuple(details)
        self.request_id = request_id
        self.body = body
        self.retry_after = retry_after
        self.response = response

    def __str__(self) -> str:
        kind = f", {self.type}" if self.type else ""
        lines = [f"{self.message} (HTTP {self.status_code}{kind})"]
        lines += [f"  {'.'.join(map(str, d.loc))}: {d.msg}" for d in self.details]
        return "\n".join(lines)


class BadRequest(ApiError):
    """400: the request could not be parsed."""


class AuthenticationError(ApiError):
    """401: missing, malformed, unknown or revoked API key."""


class PermissionDenied(ApiError):
    """403: not allowed (a signed output link that is wrong or has expired)."""


class NotFound(ApiError):
    """404: no such job or model (another owner's job is as unknown as a missing one)."""


class Conflict(ApiError):
    """409: an Idempotency-Key reused with a different request body."""


class InvalidRequest(ApiError):
    """422: invalid input; `details` lists each problem."""


class RateLimited(ApiError):
    """429: the job-creation rate limit; `retry_after` says when to try again."""


class ServerError(ApiError):
    """5xx: the service failed (500 is a bug on its side; it is logged there)."""


class ServiceUnavailable(ServerError):
    """503: the service's database is unreachable; nothing was changed; retry after
    `retry_after` seconds."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    422: InvalidRequest,
    429: RateLimited,
    503: ServiceUnavailable,
}


def error_class(status_code: int) -> type[ApiError]:
    """The exception an error status stands for."""
    if status_code in _BY_STATUS:
        return _BY_STATUS[status_code]
    return ServerError if status_code >= 500 else ApiError


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """`Retry-After` in seconds: a number of seconds or an HTTP date; None if absent or
    unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


def error_from_response(response: httpx.Response) -> ApiError:
    """The ApiError for an error answer whose body has been read."""
    status = response.status_code
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    envelope = body.get("error") if isinstance(body, dict) else None
    kind: str | None = None
    message = f"the service answered HTTP {status}"
    details: list[ErrorDetail] = []
    if isinstance(envelope, dict):
        kind = str(envelope["type"]) if envelope.get("type") is not None else None
        message = str(envelope.get("message") or message)
        raw_details = envelope.get("details")
        if isinstance(raw_details, list):
            details = [ErrorDetail.from_dict(d) for d in raw_details if isinstance(d, dict)]
    return error_class(status)(
        message,
        status_code=status,
        type=kind,
        details=details,
        request_id=response.headers.get("x-request-id"),
        body=body,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
        response=response,
    )
