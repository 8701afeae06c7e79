"""A PoYo simulator: the same endpoints and bodies as PoYo (docs/API.md), with fault knobs.

It plays every generate model of the capability catalog: a submission is checked against
the model's published input schema (as PoYo would), a repeated `Idempotency-Key` gets the
first task back, and a finished task returns small real files of the model's kind (an
image, a video, audio, a 3D model; `n` images when asked). It also serves the catalog
itself (`/v1/catalog/models`, paged, with ETag), so `poyo-relay catalog sync` works offline.

Tasks move not_started → running → finished (or failed) on a clock, and when they end
the simulator really POSTs the callback to the task's callback URL. Faults (errors, 429,
slow or reset connections, garbage bodies, answers delayed or lost after a task was
accepted, dropped, duplicated, delayed or reordered callbacks) are drawn from a seeded
random generator, so runs can be repeated. In a prompt, `[fail]` makes the task fail and
`[reject]` makes the submission refused.

The account has a balance (`GET /api/user/balance`, starting at `balance_credits`): each
task that finishes consumes what it costs (its `credits_amount`), once; a failed one costs
nothing.

Operators drive it over HTTP: `PATCH /_sandbox/faults`, `GET /_sandbox/stats`,
`GET /_sandbox/tasks`, `POST /_sandbox/reset`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import re
import secrets
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

import httpx
import orjson
import structlog
from fastapi import FastAPI, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from app.catalog.document import Document, load_snapshot
from app.provider import signature
from app.sandbox import media
from app.sandbox.catalog import PlayedCatalog
from app.sandbox.media import KINDS, Kind

log = structlog.get_logger("poyo_relay.sandbox")

_JOB_IN_URL = re.compile(r"/callbacks/poyo/(job_[0-9a-z]{26})/")


class Faults(BaseModel):
    """What can go wrong, as probabilities in [0, 1] and durations in seconds."""

    model_config = ConfigDict(extra="forbid")

    queue_seconds: float = Field(default=0.5, ge=0, le=3600)
    run_seconds: float = Field(default=2.0, ge=0, le=3600)
    fail_rate: float = Field(default=0, ge=0, le=1)
    submit_error_rate: float = Field(default=0, ge=0, le=1)
    status_error_rate: float = Field(default=0, ge=0, le=1)
    rate_limit_rate: float = Field(default=0, ge=0, le=1)
    retry_after_seconds: int = Field(default=1, ge=0, le=3600)
    slow_rate: float = Field(default=0, ge=0, le=1)
    slow_seconds: float = Field(default=2.0, ge=0, le=600)
    reset_rate: float = Field(default=0, ge=0, le=1)
    # Faults after a submission was accepted: the task exists (and will call back), but
    # the answer is late (`slow_seconds`) or never arrives whole: the window in which a
    # client cannot know whether it started a paid task.
    slow_after_accept_rate: float = Field(default=0, ge=0, le=1)
    reset_after_accept_rate: float = Field(default=0, ge=0, le=1)
    garbage_rate: float = Field(default=0, ge=0, le=1)
    drop_callback_rate: float = Field(default=0, ge=0, le=1)
    duplicate_callback_rate: float = Field(default=0, ge=0, le=1)
    reorder_callback_rate: float = Field(default=0, ge=0, le=1)
    callback_delay_seconds: float = Field(default=0, ge=0, le=3600)
    flat_callbacks: bool = False
    webhook_secret: str | None = Field(default=None, max_length=256)
    # Off: a repeated Idempotency-Key starts a second task (a PoYo that does not dedupe).
    honour_idempotency_keys: bool = True
    # The output file server: files expire this long after their task finished (PoYo's
    # "may expire"; null: never), and faults of its own (a 500, a body cut off mid-way,
    # an HTML page for the file, an answer that takes `slow_seconds`, a body sent without
    # Content-Length).
    file_ttl_seconds: float | None = Field(default=None, ge=0, le=30 * 86_400)
    file_error_rate: float = Field(default=0, ge=0, le=1)
    file_reset_rate: float = Field(default=0, ge=0, le=1)
    file_wrong_type_rate: float = Field(default=0, ge=0, le=1)
    file_slow_rate: float = Field(default=0, ge=0, le=1)
    file_unsized_rate: float = Field(default=0, ge=0, le=1)
    # A pause between the 4 KiB pieces of a body sent without Content-Length (a trickle).
    file_chunk_delay_seconds: float = Field(default=0, ge=0, le=60)
    # The account's balance in credits; setting it (PATCH) tops the account up or down
    # to this amount now, and tasks finishing afterwards consume it.
    balance_credits: float = Field(default=100_000, ge=0, le=1e9)
    balance_error_rate: float = Field(default=0, ge=0, le=1)
    seed: int | None = None


@dataclass
class SimTask:
    task_id: str
    model: str
    input: dict[str, Any]
    callback_url: str | None
    files: list[dict[str, str]]  # file_url and file_type of each output
    created: float
    created_wall: datetime
    queue_seconds: float
    run_seconds: float
    fails: bool
    credits: float | None = None  # charged when it finishes (a failed task costs nothing)
    callbacks_sent: int = 0

    @property
    def finished_at(self) -> float:
        return self.created + self.queue_seconds + self.run_seconds

    @property
    def job_id(self) -> str | None:
        match = _JOB_IN_URL.search(self.callback_url or "")
        return match.group(1) if match else None

    def view(self, now: float) -> dict[str, Any]:
        elapsed = now - self.created
        files: list[dict[str, str]] = []
        error = None
        if elapsed < self.queue_seconds:
            status, progress = "not_started", 0
        elif elapsed < self.queue_seconds + self.run_seconds:
            status = "running"
            progress = min(
                99, int(100 * (elapsed - self.queue_seconds) / max(self.run_seconds, 1e-9))
            )
        elif self.fails:
            status, progress, error = "failed", 100, "simulated generation failure"
        else:
            status, progress, files = "finished", 100, self.files
        view: dict[str, Any] = {
            "task_id": self.task_id,
            "status": status,
            "progress": progress,
            "files": files,
            "created_time": self.created_wall.strftime("%Y-%m-%dT%H:%M:%S"),
            "error_message": error,
        }
        if status == "finished" and self.credits is not None:
            view["credits_amount"] = self.credits
        return view


@dataclass
class SimulatorState:
    faults: Faults
    api_key: str | None
    rng: random.Random
    catalog: PlayedCatalog
    tasks: dict[str, SimTask] = field(default_factory=dict)
    # Idempotency-Key → the first answer it got (naming the task it started).
    by_key: dict[str, dict[str, Any]] = field(default_factory=dict)
    injected: Counter[str] = field(default_factory=Counter)
    deliveries: Counter[str] = field(default_factory=Counter)
    pending: set[asyncio.Task[None]] = field(default_factory=set)
    http: httpx.AsyncClient | None = None
    # The account's balance (exact sums of the tasks' charges), and the tasks that may
    # still have to pay for themselves.
    balance: Decimal = Decimal(0)
    unsettled: list[SimTask] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.balance = _decimal(self.faults.balance_credits)

    def settle(self, now: float) -> Decimal:
        """Charge every task that has finished since the last settlement (once each; a
        failed one costs nothing); the balance after."""
        waiting = []
        for task in self.unsettled:
            if now < task.finished_at:
                waiting.append(task)
            elif not task.fails and task.credits is not None:
                self.balance -= _decimal(task.credits)
        self.unsettled = waiting
        return self.balance

    def roll(self, rate: float, name: str) -> bool:
        hit = rate > 0 and self.rng.random() < rate
        if hit:
            self.injected[name] += 1
        return hit

    def client(self) -> httpx.AsyncClient:
        if self.http is None:
            self.http = httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=5.0))
        return self.http

    async def aclose(self) -> None:
        for task in list(self.pending):
            task.cancel()
        for task in list(self.pending):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.http is not None:
            await self.http.aclose()
            self.http = None


def _decimal(credits: float) -> Decimal:
    return Decimal(repr(credits))


def _poyo_error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"code": status, "error": {"message": message, "type": kind}}, status)


class _Reset(Response):
    """Announces a body it never sends whole: the client sees the connection break
    mid-answer."""

    def __init__(
        self, start: bytes = b'{"code": 200, "da', size: int = 1000, kind: str = "application/json"
    ) -> None:
        super().__init__()
        self.start, self.size, self.kind = start, size, kind

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", self.kind.encode()), (b"content-length", b"%d" % self.size)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self.start, "more_body": False})


async def _file_fault(state: SimulatorState, content: bytes, kind: Kind) -> Response | None:
    faults = state.faults
    if state.roll(faults.file_slow_rate, "file.slow"):
        await asyncio.sleep(faults.slow_seconds)
    if state.roll(faults.file_error_rate, "file.server_error"):
        return _poyo_error(500, "internal error (simulated)", "server_error")
    if state.roll(faults.file_reset_rate, "file.reset"):
        return _Reset(content[: len(content) // 2], len(content), kind.media_type)
    if state.roll(faults.file_wrong_type_rate, "file.wrong_type"):
        return Response(b"<html>404 Not Found</html>", 200, media_type="text/html")
    if state.roll(faults.file_unsized_rate, "file.unsized"):

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(content), 4096):
                yield content[start : start + 4096]
                await asyncio.sleep(faults.file_chunk_delay_seconds)

        return StreamingResponse(chunks(), media_type=kind.media_type)
    return None


async def _fault_response(state: SimulatorState, endpoint: str) -> Response | None:
    faults = state.faults
    if state.roll(faults.slow_rate, f"{endpoint}.slow"):
        await asyncio.sleep(faults.slow_seconds)
    if state.roll(faults.rate_limit_rate, f"{endpoint}.rate_limited"):
        response = _poyo_error(429, "rate limit exceeded", "rate_limit_error")
        response.headers["Retry-After"] = str(faults.retry_after_seconds)
        return response
    error_rate = {
        "submit": faults.submit_error_rate,
        "status": faults.status_error_rate,
        "balance": faults.balance_error_rate,
    }[endpoint]
    if state.roll(error_rate, f"{endpoint}.server_error"):
        return _poyo_error(500, "internal error (simulated)", "server_error")
    if state.roll(faults.reset_rate, f"{endpoint}.reset"):
        return _Reset()
    if state.roll(faults.garbage_rate, f"{endpoint}.garbage"):
        return Response(b"<html>502 Bad Gateway</html>", 200, media_type="text/html")
    return None


def _authorized(state: SimulatorState, request: Request) -> bool:
    if not state.api_key:
        return True
    expected = f"Bearer {state.api_key}".encode()
    given = request.headers.get("authorization", "").encode()
    return secrets.compare_digest(expected, given)


async def _deliver(state: SimulatorState, task: SimTask) -> None:
    """Wait for the task to end, then POST its callback (or not, or twice, or out of order)."""
    faults = state.faults
    loop = asyncio.get_running_loop()
    ends_at = task.created + task.queue_seconds + task.run_seconds + faults.callback_delay_seconds
    await asyncio.sleep(max(0.0, ends_at - loop.time()))
    if state.roll(faults.drop_callback_rate, "callback.dropped"):
        return
    final = task.view(loop.time())
    copies = 2 if state.roll(faults.duplicate_callback_rate, "callback.duplicated") else 1
    for _ in range(copies):
        await _post_callback(state, task, final)
    if state.roll(faults.reorder_callback_rate, "callback.reordered"):
        stale = {**final, "status": "running", "progress": 50, "files": []}
        await _post_callback(state, task, stale)


async def _post_callback(state: SimulatorState, task: SimTask, view: dict[str, Any]) -> None:
    assert task.callback_url is not None
    body = view if state.faults.flat_callbacks else {"code": 200, "msg": "success", "data": view}
    headers = {"Content-Type": "application/json"}
    if state.faults.webhook_secret:
        timestamp = str(int(time.time()))
        headers["X-Webhook-Timestamp"] = timestamp
        headers["X-Webhook-Signature"] = signature.sign(
            state.faults.webhook_secret, task.task_id, timestamp
        )
    for attempt in range(3):
        try:
            response = await state.client().post(
                task.callback_url, content=orjson.dumps(body), headers=headers
            )
        except httpx.HTTPError:
            state.deliveries["error"] += 1
        else:
            state.deliveries[str(response.status_code)] += 1
            task.callbacks_sent += 1
            if response.status_code < 500:
                return
        await asyncio.sleep(0.5 * 2**attempt)


def _spoken(task_input: dict[str, Any]) -> str:
    """The words a TTS model would say: its `text` (else any `prompt`)."""
    for key in ("text", "prompt"):
        if isinstance(task_input.get(key), str):
            return str(task_input[key])
    return ""


@functools.cache
def played_snapshot() -> PlayedCatalog:
    """The snapshot's models, compiled once per process: simulators are made often (one
    per test) and FastAPI keeps their endpoints in a module-level cache."""
    return PlayedCatalog(load_snapshot())


def create_simulator(
    faults: Faults | None = None,
    *,
    api_key: str | None = None,
    public_url: str | None = None,
    catalog: Document | None = None,
) -> FastAPI:
    """The simulator as an ASGI app; mount it or serve it alone (`poyo-relay sandbox`).
    It plays the catalog given, else the snapshot poyo-relay ships."""
    initial = faults or Faults()
    state = SimulatorState(
        faults=initial,
        api_key=api_key,
        rng=random.Random(initial.seed),  # noqa: S311
        catalog=PlayedCatalog(catalog) if catalog else played_snapshot(),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await state.aclose()

    app = FastAPI(
        title="PoYo simulator",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.simulator = state

    def file_url(request: Request, task_id: str, index: int, kind: Kind) -> str:
        name = f"{index}.{kind.extension}"
        if public_url:
            return f"{public_url.rstrip('/')}/files/{task_id}/{name}"
        return str(request.url_for("files", task_id=task_id, name=name))

    @app.post("/api/generate/submit")
    async def submit(request: Request) -> Response:
        if not _authorized(state, request):
            return _poyo_error(401, "invalid API key", "authentication_error")
        fault = await _fault_response(state, "submit")
        if fault is not None:
            return fault
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _poyo_error(400, "body is not JSON")
        if not isinstance(body, dict):
            return _poyo_error(400, "body is not a JSON object")
        task_input = body.get("input")
        refusal = state.catalog.refusal(body.get("model"), task_input)
        if refusal is not None:
            return _poyo_error(400, refusal)
        assert isinstance(task_input, dict)
        text = orjson.dumps(task_input).decode()
        if "[reject]" in text:
            return _poyo_error(400, "input rejected by content policy (simulated)")
        key = request.headers.get("idempotency-key")
        if key and state.faults.honour_idempotency_keys and key in state.by_key:
            state.injected["submit.idempotent_replay"] += 1
            return JSONResponse(state.by_key[key])
        callback_url = body.get("callback_url")
        loop = asyncio.get_running_loop()
        task_id = f"task-unified-{int(time.time())}-{secrets.token_hex(6)}"
        kinds = state.catalog.outputs(body["model"], task_input)
        task = SimTask(
            task_id=task_id,
            model=body["model"],
            input=task_input,
            callback_url=callback_url if isinstance(callback_url, str) else None,
            files=[
                {"file_url": file_url(request, task_id, i, kind), "file_type": kind.file_type}
                for i, kind in enumerate(kinds)
            ],
            created=loop.time(),
            created_wall=datetime.now(UTC),
            queue_seconds=state.faults.queue_seconds,
            run_seconds=state.faults.run_seconds,
            fails="[fail]" in text or state.roll(state.faults.fail_rate, "task.failed"),
            credits=state.catalog.charge(body["model"], task_input),
        )
        state.tasks[task.task_id] = task
        state.unsettled.append(task)
        if task.callback_url:
            delivery = asyncio.create_task(_deliver(state, task))
            state.pending.add(delivery)
            delivery.add_done_callback(state.pending.discard)
        if state.roll(state.faults.slow_after_accept_rate, "submit.slow_after_accept"):
            await asyncio.sleep(state.faults.slow_seconds)
        if state.roll(state.faults.reset_after_accept_rate, "submit.reset_after_accept"):
            return _Reset()
        view = task.view(loop.time())
        answer = {"code": 200, "data": {k: view[k] for k in ("task_id", "status", "created_time")}}
        if key:
            state.by_key.setdefault(key, answer)
        return JSONResponse(answer)

    @app.get("/api/generate/status/{task_id}")
    async def status(task_id: str, request: Request) -> Response:
        if not _authorized(state, request):
            return _poyo_error(401, "invalid API key", "authentication_error")
        fault = await _fault_response(state, "status")
        if fault is not None:
            return fault
        task = state.tasks.get(task_id)
        if task is None:
            return _poyo_error(404, "task not found", "not_found_error")
        return JSONResponse({"code": 200, "data": task.view(asyncio.get_running_loop().time())})

    @app.get("/api/user/balance")
    async def balance(request: Request) -> Response:
        if not _authorized(state, request):
            return _poyo_error(401, "invalid API key", "authentication_error")
        fault = await _fault_response(state, "balance")
        if fault is not None:
            return fault
        credits = float(state.settle(asyncio.get_running_loop().time()))
        return JSONResponse({"code": 200, "msg": "success", "data": {"balance": credits}})

    @app.api_route("/files/{task_id}/{name}", methods=["GET", "HEAD"])
    async def files(request: Request, task_id: str, name: str) -> Response:
        task = state.tasks.get(task_id)
        index, _, extension = name.partition(".")
        kind = KINDS.get(extension)
        if task is None or kind is None or not index.isdigit() or int(index) >= len(task.files):
            return _poyo_error(404, "file not found", "not_found_error")
        ttl = state.faults.file_ttl_seconds
        if ttl is not None and asyncio.get_running_loop().time() > task.finished_at + ttl:
            return _poyo_error(404, "file expired", "not_found_error")
        seed = zlib.crc32(f"{task_id}/{index}".encode())
        content = media.render(kind, seed, _spoken(task.input))
        if request.method == "HEAD":
            # GET's headers without the body. The file faults are the download's: a HEAD
            # leaves them, and the seeded sequence of their rolls, alone.
            length = {"Content-Length": str(len(content))}
            return Response(headers=length, media_type=kind.media_type)
        fault = await _file_fault(state, content, kind)
        return fault or Response(content, media_type=kind.media_type)

    @app.get("/v1/catalog/models")
    async def catalog_models(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: str | None = None,
        category: str | None = None,
        q: str | None = None,
        service_type: str | None = None,
    ) -> Response:
        played = state.catalog
        if request.headers.get("if-none-match") == played.etag:
            return Response(status_code=304, headers={"ETag": played.etag})
        filters = {"category": category, "q": q, "service_type": service_type}
        page = played.page(limit=limit, cursor=cursor, filters=filters)
        if page is None:
            return _poyo_error(400, "invalid cursor")
        return JSONResponse({"code": 200, "data": page}, headers={"ETag": played.etag})

    @app.get("/v1/catalog/models/{model_id:path}")
    async def catalog_model(model_id: str) -> Response:
        entry = next((e for e in state.catalog.document.items if e.model_id == model_id), None)
        if entry is None:
            return _poyo_error(404, "model not found", "not_found_error")
        return JSONResponse({"code": 200, "data": entry.model_dump(mode="json")})

    @app.patch("/_sandbox/faults")
    async def set_faults(changes: Faults) -> Faults:
        """Change the given knobs; the others keep their values."""
        state.faults = state.faults.model_copy(update=changes.model_dump(exclude_unset=True))
        if changes.seed is not None:
            state.rng.seed(changes.seed)
        if "balance_credits" in changes.model_fields_set:
            state.settle(asyncio.get_running_loop().time())  # what finished paid the old one
            state.balance = _decimal(changes.balance_credits)
        return state.faults

    @app.get("/_sandbox/faults")
    async def get_faults() -> Faults:
        return state.faults

    @app.get("/_sandbox/stats")
    async def stats() -> dict[str, Any]:
        per_job = Counter(task.job_id for task in state.tasks.values() if task.job_id)
        repeated = sorted(job_id for job_id, n in per_job.items() if n > 1)
        return {
            "tasks": len(state.tasks),
            "jobs": len(per_job),
            "jobs_with_multiple_tasks": len(repeated),
            "multiple_task_job_ids": repeated[:100],
            "faults_injected": dict(state.injected),
            "callback_deliveries": dict(state.deliveries),
            "pending_callbacks": len(state.pending),
            "balance_credits": float(state.settle(asyncio.get_running_loop().time())),
        }

    @app.get("/_sandbox/tasks")
    async def tasks() -> list[dict[str, Any]]:
        now = asyncio.get_running_loop().time()
        return [
            {
                **task.view(now),
                "job_id": task.job_id,
                "model": task.model,
                "callbacks_sent": task.callbacks_sent,
            }
            for task in state.tasks.values()
        ]

    @app.post("/_sandbox/reset")
    async def reset() -> dict[str, bool]:
        for pending in list(state.pending):
            pending.cancel()
        state.tasks.clear()
        state.injected.clear()
        state.deliveries.clear()
        state.by_key.clear()  # its answers name tasks that are gone
        state.unsettled.clear()
        state.balance = _decimal(state.faults.balance_credits)
        return {"reset": True}

    return app
