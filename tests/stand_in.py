"""A hand-written PoYo stand-in on loopback: it records exactly what reaches the provider.

It speaks the wire format of docs/API.md, The provider, (submit, status, the error body) and nothing
else. Tests steer it per request with hooks, or by setting a task's status, and read
back every request it received (method, path, headers, body, arrival time).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support import LiveServer

SUBMIT_PATH = "/api/generate/submit"
STATUS_PREFIX = "/api/generate/status/"
STAND_IN_KEY = "stand-in-provider-key-9876543210"
JOB_IN_CALLBACK = re.compile(r"/v1/callbacks/poyo/(job_[0-9a-z]{26})/([^/?#]+)$")


@dataclass
class Call:
    """One request as the provider saw it."""

    method: str
    path: str
    raw_path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return orjson.loads(self.body)


Hook = Callable[[Call], Awaitable[Response | None]]


def poyo_error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    """PoYo's error body (docs/API.md)."""
    return JSONResponse({"code": status, "error": {"message": message, "type": kind}}, status)


def wrapped(data: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"code": 200, "msg": "success", "data": data})


def callback_job_id(callback_url: str) -> str:
    match = JOB_IN_CALLBACK.search(callback_url)
    assert match, f"callback URL does not name a job: {callback_url}"
    return match.group(1)


@dataclass
class ProviderStandIn:
    """State and behaviour of the stand-in; `server` is set once it is serving."""

    api_key: str = STAND_IN_KEY
    calls: list[Call] = field(default_factory=list)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    callback_urls: dict[str, str | None] = field(default_factory=dict)
    submit_hook: Hook | None = None
    status_hook: Hook | None = None
    release: asyncio.Event = field(default_factory=asyncio.Event)
    server: LiveServer | None = None
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def reset(self) -> None:
        """Forget everything and let any stalled answer go: a clean provider for the next test."""
        self.release.set()
        self.release = asyncio.Event()
        self.calls.clear()
        self.tasks.clear()
        self.callback_urls.clear()
        self.submit_hook = None
        self.status_hook = None

    # ---- what was received --------------------------------------------------------

    def submits(self) -> list[Call]:
        return [c for c in self.calls if c.method == "POST" and c.path == SUBMIT_PATH]

    def status_calls(self, task_id: str | None = None) -> list[Call]:
        return [
            c
            for c in self.calls
            if c.method == "GET"
            and c.path.startswith(STATUS_PREFIX)
            and (task_id is None or c.path == STATUS_PREFIX + task_id)
        ]

    # ---- steering -----------------------------------------------------------------

    def set_task(
        self,
        task_id: str,
        status: str,
        *,
        files: list[dict[str, str]] | None = None,
        progress: int | None = None,
        error_message: str | None = None,
    ) -> None:
        task = self.tasks[task_id]
        task["status"] = status
        task["files"] = files or []
        task["progress"] = (
            progress if progress is not None else (100 if status in ("finished", "failed") else 0)
        )
        task["error_message"] = error_message

    async def hang(self) -> Response:
        """Answer only when released (tests release at teardown): a provider that stalls."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.release.wait(), 30)
        return poyo_error(503, "released")

    # ---- the ASGI app -------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        call = Call(
            method=request.method,
            path=request.url.path,
            raw_path=request.scope.get("raw_path", b"").decode("latin-1"),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=await request.body(),
            at=time.monotonic(),
        )
        self.calls.append(call)
        if call.headers.get("authorization") != f"Bearer {self.api_key}":
            return poyo_error(401, "invalid API key", "authentication_error")
        if call.method == "POST" and call.path == SUBMIT_PATH:
            if self.submit_hook is not None:
                answer = await self.submit_hook(call)
                if answer is not None:
                    return answer
            return self._submit(call)
        if call.method == "GET" and call.path.startswith(STATUS_PREFIX):
            if self.status_hook is not None:
                answer = await self.status_hook(call)
                if answer is not None:
                    return answer
            task = self.tasks.get(call.path.removeprefix(STATUS_PREFIX))
            if task is None:
                return poyo_error(404, "task not found", "not_found_error")
            return wrapped(dict(task))
        return poyo_error(404, "no such endpoint", "not_found_error")

    def _submit(self, call: Call, status: str = "not_started") -> Response:
        body = call.json()
        task_id = f"task-unified-standin-{next(self._ids):06d}"
        self.tasks[task_id] = {
            "task_id": task_id,
            "status": status,
            "progress": 0,
            "files": [],
            "created_time": "2025-11-12T10:30:00",
            "error_message": None,
        }
        self.callback_urls[task_id] = body.get("callback_url")
        return wrapped(
            {"task_id": task_id, "status": status, "created_time": "2025-11-12T10:30:00"}
        )

    def accept(self, call: Call, status: str = "not_started") -> Response:
        """The default answer to a submit, for hooks that only observe."""
        return self._submit(call, status)

    def app(self) -> Starlette:
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        return Starlette(routes=[Route("/{path:path}", self._handle, methods=methods)])


@contextlib.asynccontextmanager
async def serve_stand_in(api_key: str = STAND_IN_KEY) -> AsyncIterator[ProviderStandIn]:
    stand_in = ProviderStandIn(api_key=api_key)
    stand_in.server = await LiveServer().start(stand_in.app())
    try:
        yield stand_in
    finally:
        stand_in.release.set()
        await stand_in.server.stop()
