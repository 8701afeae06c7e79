"""The PoYo HTTP client: submit, status and the account's balance; bearer auth, timeouts,
error mapping, retries.

Only transient failures are retried. A submission is retried inline only when the
provider answered with an error or was never reached: retrying one that timed out could
start a second paid task, so that decision is left to the worker.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import orjson
from pydantic import ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from app.backoff import retry_after_seconds
from app.metrics import PROVIDER_ERRORS, PROVIDER_LATENCY
from app.provider.schemas import AccountBalance, CatalogPage, SubmittedTask, TaskStatus, unwrap

T = TypeVar("T")

MAX_ERROR_MESSAGE_CHARS = 500
MAX_INLINE_RETRY_AFTER = 5.0
MAX_RESPONSE_BYTES = 1_048_576
CATALOG_PATH = "/v1/catalog/models"
BALANCE_PATH = "/api/user/balance"
MAX_CATALOG_ITEMS = 10_000
MAX_CATALOG_PAGE_BYTES = 16 * 1_048_576


class ProviderError(Exception):
    """A failed provider call; the message is safe to store and show."""

    kind = "error"

    def __init__(self, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status


class ProviderRejected(ProviderError):
    """The provider refused the request (4xx): retrying the same request will not help."""

    kind = "rejected"


class ProviderUnavailable(ProviderError):
    """A transient failure: timeouts, connection errors, 429, 5xx, unreadable answers."""

    kind = "unavailable"

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        retry_after: float | None = None,
        ambiguous: bool = False,
    ) -> None:
        super().__init__(message, http_status=http_status)
        self.retry_after = retry_after
        # True when the provider may have acted on the request (it timed out, the
        # connection broke mid-answer, or the answer was unreadable).
        self.ambiguous = ambiguous


def _retry_after(response: httpx.Response) -> float | None:
    return retry_after_seconds(response.headers.get("retry-after", ""))


def _error_message(response: httpx.Response) -> str:
    try:
        body = orjson.loads(response.content)
        message = body["error"]["message"]
        if isinstance(message, str) and message:
            return message[:MAX_ERROR_MESSAGE_CHARS]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        pass
    return f"provider answered HTTP {response.status_code}"


def _raise_for_status(response: httpx.Response) -> None:
    status = response.status_code
    if status < 400:
        return
    message = _error_message(response)
    if status in (408, 425, 429) or status >= 500:
        raise ProviderUnavailable(message, http_status=status, retry_after=_retry_after(response))
    raise ProviderRejected(message, http_status=status)


def _parse(response: httpx.Response, schema: type[T], max_bytes: int = MAX_RESPONSE_BYTES) -> T:
    if len(response.content) > max_bytes:
        raise ProviderUnavailable(
            "provider answer too large", http_status=response.status_code, ambiguous=True
        )
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise ProviderUnavailable(
            "provider answered with a body that is not JSON",
            http_status=response.status_code,
            ambiguous=True,
        ) from None
    code = body.get("code") if isinstance(body, dict) else None
    if isinstance(code, int) and code >= 400:
        fake = httpx.Response(code, content=response.content)
        _raise_for_status(fake)
    try:
        return schema.model_validate(unwrap(body))  # type: ignore[attr-defined, no-any-return]
    except ValidationError:
        raise ProviderUnavailable(
            "provider answered with an unexpected body",
            http_status=response.status_code,
            ambiguous=True,
        ) from None


def _wait(base: Callable[[RetryCallState], float]) -> Callable[[RetryCallState], float]:
    """Exponential backoff with jitter, but never sooner than the provider's Retry-After."""

    def wait(state: RetryCallState) -> float:
        delay = base(state)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, ProviderUnavailable) and exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        return delay

    return wait


def _inline_retryable(idempotent: bool) -> Callable[[BaseException], bool]:
    def check(exc: BaseException) -> bool:
        if not isinstance(exc, ProviderUnavailable):
            return False
        if exc.retry_after is not None and exc.retry_after > MAX_INLINE_RETRY_AFTER:
            return False  # too long to hold a caller; the worker reschedules instead
        return idempotent or not exc.ambiguous

    return check


class PoyoClient:
    """Async client for PoYo's unified generation API."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        max_connections: int = 100,
        attempts: int = 3,
        backoff_initial: float = 0.2,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Accept": "application/json", "User-Agent": "poyo-relay"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            transport=transport,
            follow_redirects=False,
        )
        self._attempts = attempts
        self._backoff_initial = backoff_initial

    async def aclose(self) -> None:
        await self._http.aclose()

    async def submit(
        self, *, model: str, input: dict[str, Any], callback_url: str, idempotency_key: str
    ) -> SubmittedTask:
        """Start a task. Retried inline only when the provider did not act on it. The
        Idempotency-Key (our job id) lets PoYo answer a repeated submission with its first
        task rather than start a second one."""
        body = {"model": model, "callback_url": callback_url, "input": input}
        headers = {"Idempotency-Key": idempotency_key}

        async def call() -> SubmittedTask:
            response = await self._request("submit", "POST", "/api/generate/submit", body, headers)
            return _parse(response, SubmittedTask)

        return await self._retrying(call, idempotent=False)

    async def catalog(self, etag: str | None) -> tuple[dict[str, Any], str | None] | None:
        """PoYo's capability catalog, every page (`{"schema_version", "items"}`) and the
        first page's ETag; None when it has not changed since `etag`."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        first_etag: str | None = None
        while True:
            params = {"limit": "100", **({"cursor": cursor} if cursor else {})}
            headers = {"If-None-Match": etag} if etag and cursor is None else {}
            try:
                response = await self._http.get(CATALOG_PATH, params=params, headers=headers)
            except httpx.HTTPError as exc:
                raise ProviderUnavailable(
                    f"could not read the catalog from {self._http.base_url} ({type(exc).__name__})"
                ) from None
            if response.status_code == 304 and cursor is None:
                return None
            _raise_for_status(response)
            page = _parse(response, CatalogPage, MAX_CATALOG_PAGE_BYTES)
            if cursor is None:
                first_etag, schema_version = response.headers.get("etag"), page.schema_version
            items += page.items
            if not page.has_more or not page.next_cursor or len(items) > MAX_CATALOG_ITEMS:
                return {"schema_version": schema_version, "items": items}, first_etag
            cursor = page.next_cursor

    async def status(self, task_id: str) -> TaskStatus:
        """The provider's view of a task: the truth a callback is checked against."""

        async def call() -> TaskStatus:
            path = "/api/generate/status/" + quote(task_id, safe="")
            response = await self._request("status", "GET", path, None)
            return _parse(response, TaskStatus)

        return await self._retrying(call, idempotent=True)

    async def balance(self) -> float:
        """The account's credit balance. An answer without a readable amount is a
        provider error like any other (counted, and retried inline)."""

        async def call() -> float:
            response = await self._request("balance", "GET", BALANCE_PATH, None)
            try:
                amount = _parse(response, AccountBalance).amount
            except ProviderError as exc:
                PROVIDER_ERRORS.labels("balance", exc.kind).inc()
                raise
            assert amount is not None  # (the schema refuses an answer without one)
            return amount

        return await self._retrying(call, idempotent=True)

    async def _retrying(self, call: Callable[[], Awaitable[T]], *, idempotent: bool) -> T:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=_wait(
                wait_exponential_jitter(
                    multiplier=self._backoff_initial, max=5.0, jitter=self._backoff_initial
                )
            ),
            retry=retry_if_exception(_inline_retryable(idempotent)),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await call()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _request(
        self,
        endpoint: str,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        started = time.perf_counter()
        try:
            response = await self._send(method, path, body, headers or {})
            _raise_for_status(response)
            return response
        except ProviderError as exc:
            PROVIDER_ERRORS.labels(endpoint, exc.kind).inc()
            raise
        finally:
            PROVIDER_LATENCY.labels(endpoint).observe(time.perf_counter() - started)

    async def _send(
        self, method: str, path: str, body: dict[str, Any] | None, headers: dict[str, str]
    ) -> httpx.Response:
        content = orjson.dumps(body) if body is not None else None
        if body is not None:
            headers = {**headers, "Content-Type": "application/json"}
        try:
            return await self._http.request(method, path, content=content, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise ProviderUnavailable(
                f"could not connect to the provider ({type(exc).__name__})"
            ) from None
        except httpx.HTTPError as exc:
            # A timeout or a broken connection after the request went out: it may have
            # been acted on.
            raise ProviderUnavailable(
                f"provider request failed ({type(exc).__name__})", ambiguous=True
            ) from None
