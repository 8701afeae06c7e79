"""When to try a request again, and after how long: pure decisions shared by the sync and
async clients (they only send and sleep).

Retried: transport failures (connection refused or reset, timeouts, a connection closed
before the answer) and the answers 429, 502, 503 and 504; after `Retry-After` when the
service sent one (unless it asks for more than `max_retry_after`), else after an
exponential backoff with jitter. Never retried: any other answer (4xx are the caller's to
fix; 500 is a bug on the service's side that a retry would only repeat). Every request
the client sends is safe to repeat: reads, and job creation with its Idempotency-Key.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import httpx

from poyo_relay.client.errors import ApiError, ConnectionFailed, error_from_response

RETRY_STATUSES = frozenset({429, 502, 503, 504})
# Transport failures after which the request may have been lost on the way: worth another
# try. (Others, e.g. an unsupported URL scheme, would fail the same way again.)
RETRY_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """At most `max_retries` retries per request; backoff `base * 2**(n-1)` capped at
    `cap`, half of it random (jitter); a `Retry-After` above `max_retry_after` is not
    waited for (the error is raised at once, carrying `retry_after`)."""

    max_retries: int = 3
    base: float = 0.5
    cap: float = 8.0
    max_retry_after: float = 60.0

    def backoff(self, retry: int) -> float:
        """The delay before retry number `retry` (1, 2, …): exponential, with jitter."""
        ceiling = min(self.cap, self.base * 2.0 ** max(0, retry - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 (not cryptography)


class Retrying:
    """The retry decisions of one request: after each failed attempt, how long to wait
    before the next, or the error to raise (the last one, once retries are spent)."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.retries = 0

    def after_transport_error(self, error: httpx.TransportError) -> float:
        """The delay before trying again after `error`, or ConnectionFailed."""
        if isinstance(error, RETRY_ERRORS) and self.retries < self.policy.max_retries:
            self.retries += 1
            return self.policy.backoff(self.retries)
        raise ConnectionFailed(describe_transport_error(error)) from error

    def after_error_response(self, response: httpx.Response) -> float:
        """The delay before trying again after an error answer (its body read), or its
        ApiError."""
        error = error_from_response(response)
        delay = self.retry_delay(error)
        if delay is None:
            raise error
        self.retries += 1
        return delay

    def retry_delay(self, error: ApiError) -> float | None:
        """How long to wait before retrying after `error`; None when it must be raised."""
        if error.status_code not in RETRY_STATUSES or self.retries >= self.policy.max_retries:
            return None
        if error.retry_after is None:
            return self.policy.backoff(self.retries + 1)
        if error.retry_after > self.policy.max_retry_after:
            return None
        return error.retry_after


def describe_transport_error(error: httpx.TransportError) -> str:
    """One line naming the failure and the URL it happened on."""
    text = " ".join(str(error).split()) or type(error).__name__
    try:
        url = str(error.request.url.copy_with(query=None))
    except RuntimeError:  # an error raised before a request existed
        return text
    return f"{text} ({error.request.method} {url})"
