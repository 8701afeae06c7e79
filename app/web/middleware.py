"""Pure ASGI middleware: request ids and access logs, requests in flight, body size limits."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from typing import Any

import orjson
import structlog
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PayloadTooLarge
from app.metrics import HTTP_REQUESTS

access_log = structlog.get_logger("poyo_relay.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# /v1/jobs/{job_id}… and /v1/callbacks/poyo/{job_id}/…: the job a request is about.
_JOB_IN_PATH = re.compile(r"/(job_[0-9a-z]{26})(?=/|$)")


class InFlight:
    """The requests being served, so that a shutdown can let those cut off by the server's
    drain hand their work over before the database pool closes."""

    def __init__(self) -> None:
        self.requests: set[asyncio.Task[Any]] = set()

    async def drain(self, seconds: float) -> None:
        """Wait (at most `seconds`) for the requests still running."""
        if self.requests:
            await asyncio.wait(list(self.requests), timeout=seconds)


class RequestContext:
    """Accepts or makes an X-Request-ID, binds it (and the job id a path names) to every
    log line of the request, writes the access log, and keeps the request `in_flight`.

    The access log names the route template, never the raw path: callback paths carry
    credentials.
    """

    def __init__(self, app: ASGIApp, *, in_flight: InFlight, access_log_enabled: bool) -> None:
        self.app = app
        self.in_flight = in_flight.requests
        self.access_log_enabled = access_log_enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        job = _JOB_IN_PATH.search(scope["path"])
        if job is not None:
            structlog.contextvars.bind_contextvars(job_id=job.group(1))
        request = asyncio.current_task()
        if request is not None:
            self.in_flight.add(request)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.in_flight.discard(request)
            route = _route_template(scope)
            HTTP_REQUESTS.labels(route, scope["method"], f"{status // 100}xx").inc()
            if self.access_log_enabled:
                access_log.info(
                    "request",
                    method=scope["method"],
                    route=route,
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )
            structlog.contextvars.clear_contextvars()


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _REQUEST_ID.match(text) else None
    return None


def _route_template(scope: Scope) -> str:
    """The route as the OpenAPI document spells it (`/v1/models/{model_id}`, without the
    `:path` converter), under the path of the app it is mounted in (the sandbox's
    `/sandbox/api/generate/submit`), or "unmatched"."""
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return scope.get("root_path", "") + path if isinstance(path, str) else "unmatched"


class BodyTooLarge(HTTPException):
    """Raised from `receive`, so that whoever is reading the body answers 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds {limit} bytes")


# How much of an oversized body is read and thrown away before the 413, so that the client,
# still sending, reads our answer instead of a connection reset. Beyond this, it is reset;
# a client that stops sending (it waits for our answer) gets it after a short pause.
DRAIN_MAX_BYTES = 16 * 1_048_576
DRAIN_MAX_SECONDS = 5.0
DRAIN_IDLE_SECONDS = 0.25


class BodySizeLimit:
    """413 for bodies over the limit of their path, whether announced or streamed."""

    def __init__(self, app: ASGIApp, *, default_limit: int, limits: dict[str, int]) -> None:
        self.app = app
        self.default_limit = default_limit
        self.limits = sorted(limits.items(), key=lambda item: len(item[0]), reverse=True)

    def _limit_for(self, path: str) -> int:
        for prefix, limit in self.limits:
            if path.startswith(prefix):
                return limit
        return self.default_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit_for(scope["path"])
        headers = Headers(scope=scope)
        declared = _content_length(headers)
        if declared is not None and declared > limit:
            # A client that waits for 100-continue sends its body only once told to.
            if declared <= DRAIN_MAX_BYTES and headers.get("expect", "").lower() != "100-continue":
                await _drain(receive)
            await _reject(send, limit)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if message.get("more_body", False):
                        await _drain(receive)
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _reject(send, limit)


async def _drain(receive: Receive) -> None:
    """Read and discard the rest of the body while it keeps coming, within the bounds above."""
    drained = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_MAX_SECONDS):
            while drained <= DRAIN_MAX_BYTES:
                message = await asyncio.wait_for(receive(), DRAIN_IDLE_SECONDS)
                if message["type"] != "http.request":
                    return
                drained += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return


def _content_length(headers: Headers) -> int | None:
    value = headers.get("content-length")
    return int(value) if value is not None and value.isdigit() else None


async def _reject(send: Send, limit: int) -> None:
    body = orjson.dumps(PayloadTooLarge(f"request body exceeds {limit} bytes").body())
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
