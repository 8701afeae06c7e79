"""poyo_relay.client against the live service (both backends), with its embedded worker and
the PoYo simulator, over real HTTP; network failures come from a loopback proxy of ours and
answers the service would not give (429s, 5xx) from a small stand-in server.

The service runs on the test's event loop, so the sync `Client` is driven from a thread.
"""

from __future__ import annotations

import asyncio
import functools
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.jobs.schemas import JOB_EXAMPLE
from poyo_relay.client import (
    ApiError,
    AsyncClient,
    AuthenticationError,
    Client,
    Conflict,
    ConnectionFailed,
    InvalidRequest,
    InvalidResponse,
    Job,
    JobStatus,
    JobUpdate,
    NotFound,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    verify_webhook,
)
from tests.conftest import Service, ServiceFactory, Simulator
from tests.support import TEXT_JOB, LiveServer, eventually, free_socket
from tests.tcp_proxy import after_first_message, proxy

TEXT_MODEL = TEXT_JOB["model"]


def text_input(prompt: str = "a lighthouse at dusk") -> dict[str, Any]:
    return {"prompt": prompt}


@pytest.fixture
async def api(service: Service) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(service.url, service.client.key) as client:
        yield client


# ---- packaging --------------------------------------------------------------------------


def test_the_client_imports_without_any_of_the_servers_packages() -> None:
    probe = (
        "import json, sys; import poyo_relay.client; "
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))"
    )
    # -I: neither the working directory nor PYTHONPATH; the installed package alone.
    result = subprocess.run(
        [sys.executable, "-I", "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout))
    assert "httpx" in loaded
    assert loaded & {"app", "fastapi", "sqlalchemy", "pydantic"} == set()
    # and verify_webhook's library only once it is called
    assert "standardwebhooks" not in loaded


# ---- jobs: create, get, wait ----------------------------------------------------------------


async def test_async_create_get_and_wait_until_succeeded(
    api: AsyncClient, simulator: Simulator
) -> None:
    created = await api.jobs.create(model=TEXT_MODEL, input=text_input(), metadata={"order": "42"})
    assert created.model == TEXT_MODEL
    assert created.metadata == {"order": "42"}
    assert created.input == text_input()
    assert created.created_at.tzinfo is not None
    assert created.raw["id"] == created.id

    read = await api.jobs.get(created.id)
    assert read.id == created.id
    assert read.created_at == created.created_at

    done = await api.jobs.wait(created.id, timeout=30)
    assert done.status is JobStatus.SUCCEEDED
    assert done.is_terminal
    assert done.progress == 100
    assert done.error is None
    assert done.outputs
    assert done.outputs[0].url.startswith("http")
    assert done.outputs[0].type == "video"
    assert done.completed_at is not None
    assert done.completed_at >= done.created_at
    assert done.provider.task_id is not None
    assert [task["task_id"] for task in await simulator.tasks()] == [done.provider.task_id]


async def test_sync_create_get_and_wait_until_succeeded(service: Service) -> None:
    def run() -> tuple[Job, Job, Job]:
        with Client(service.url, service.client.key) as client:
            created = client.jobs.create(model=TEXT_MODEL, input=text_input("a quiet lake"))
            read = client.jobs.get(created.id)
            return created, read, client.jobs.wait(created.id, timeout=30)

    created, read, done = await asyncio.to_thread(run)
    assert read.id == created.id == done.id
    assert done.status == "succeeded"
    assert done.input == {"prompt": "a quiet lake"}
    assert done.outputs


async def test_a_failed_job_is_returned_by_wait_with_its_error(api: AsyncClient) -> None:
    job = await api.jobs.create(model=TEXT_MODEL, input=text_input("a fox [fail]"))
    done = await asyncio.wait_for(api.jobs.wait(job.id), 30)  # no timeout of its own
    assert done.status is JobStatus.FAILED
    assert done.error is not None
    assert done.error.code == "provider_failed"
    assert done.outputs == ()


async def test_long_polls_answer_when_the_job_ends(api: AsyncClient, simulator: Simulator) -> None:
    await simulator.set_faults(queue_seconds=0.2, run_seconds=0.8)
    started = time.monotonic()
    created = await api.jobs.create(model=TEXT_MODEL, input=text_input(), wait=20)
    assert created.status is JobStatus.SUCCEEDED
    assert time.monotonic() - started < 15

    other = await api.jobs.create(model=TEXT_MODEL, input=text_input("another"))
    assert not other.is_terminal
    ended = await api.jobs.get(other.id, wait=20)
    assert ended.status is JobStatus.SUCCEEDED


async def test_wait_returns_the_latest_state_when_the_timeout_passes(
    api: AsyncClient, simulator: Simulator
) -> None:
    await simulator.set_faults(queue_seconds=0.1, run_seconds=60)
    job = await api.jobs.create(model=TEXT_MODEL, input=text_input())
    started = time.monotonic()
    latest = await api.jobs.wait(job.id, timeout=2)
    waited = time.monotonic() - started
    assert not latest.is_terminal
    assert latest.id == job.id
    assert 1.5 <= waited < 6, waited
    # a timeout of 0 is one plain read
    assert not (await api.jobs.wait(job.id, timeout=0)).is_terminal


def test_wait_and_page_size_are_checked_before_anything_is_sent() -> None:
    client = Client("http://127.0.0.1:9", "prk_unused")
    with pytest.raises(ValueError, match="wait"):
        client.jobs.get("job_x", wait=61)
    with pytest.raises(ValueError, match="wait"):
        client.jobs.create(model="m", input={}, wait=0)
    with pytest.raises(ValueError, match="page_size"):
        next(client.jobs.list(page_size=101))
    with pytest.raises(ValueError, match="base_url"):
        Client("127.0.0.1:8000", "prk_x")
    client.close()


# ---- a retried create makes one job ----------------------------------------------------------


async def test_a_create_whose_answer_was_lost_is_retried_into_the_same_job(
    service: Service, simulator: Simulator
) -> None:
    # The first connection reaches the service, which creates the job and answers; the
    # proxy drops the answer and the connection. The client's retry, with the same
    # Idempotency-Key, gets the same job back.
    def lose_first_answer(connection: int, _answered: bytes) -> int | None:
        return 0 if connection == 0 else None

    async with (
        proxy(service.server.port, lose_first_answer) as cutting,
        AsyncClient(cutting.url, service.client.key) as client,
    ):
        job = await client.jobs.create(model=TEXT_MODEL, input=text_input("only once"))
        listed = [listed async for listed in client.jobs.list()]
    assert cutting.cuts == 1
    assert cutting.connections == 2
    keys = cutting.idempotency_keys()
    assert len(keys) == 2
    assert keys[0] == keys[1]
    assert [j.id for j in listed] == [job.id]
    await eventually(simulator.tasks, lambda tasks: len(tasks) >= 1)
    tasks = await simulator.tasks()
    assert len(tasks) == 1
    assert tasks[0]["task_id"] == (await service.client.job(job.id))["provider"]["task_id"]


# ---- pagination ----------------------------------------------------------------------------


async def test_list_yields_every_job_once_newest_first_across_pages(
    service: Service, api: AsyncClient
) -> None:
    gate = asyncio.Semaphore(16)

    async def create(n: int) -> str:
        async with gate:
            job = await api.jobs.create(model=TEXT_MODEL, input=text_input(f"job {n}"))
            return job.id

    created = set(await asyncio.gather(*(create(n) for n in range(250))))
    assert len(created) == 250

    listed = [job.id async for job in api.jobs.list(page_size=100)]
    assert len(listed) == 250
    assert set(listed) == created
    assert listed == sorted(listed, reverse=True)  # ids are time-ordered: newest first

    def sync_list() -> list[Job]:
        with Client(service.url, service.client.key) as client:
            return list(client.jobs.list(page_size=33))

    jobs = await asyncio.to_thread(sync_list)
    assert [job.id for job in jobs] == listed
    stamps = [job.created_at for job in jobs]
    assert stamps == sorted(stamps, reverse=True)

    # filters go with every page
    none_yet = [j async for j in api.jobs.list(created_after=datetime.now(UTC).replace(year=2999))]
    assert none_yet == []
    only_model = [j async for j in api.jobs.list(model="wan2.5-image-to-video")]
    assert only_model == []


async def test_events_are_the_whole_audit_trail(api: AsyncClient) -> None:
    job = await api.jobs.create(model=TEXT_MODEL, input=text_input())
    await eventually(lambda: api.jobs.get(job.id), lambda j: j.is_terminal)
    events = await api.jobs.events(job.id)
    types = [event.type for event in events]
    assert types[0] == "job.created"
    assert "job.status_changed" in types
    numbers = [event.sequence for event in events]
    assert numbers == sorted(numbers)  # type: ignore[type-var]
    assert all(event.id.startswith("evt_") for event in events)


# ---- errors ----------------------------------------------------------------------------------


async def test_api_errors_carry_the_envelope(service: Service, api: AsyncClient) -> None:
    with pytest.raises(NotFound) as missing:
        await api.jobs.get("job_00000000000000000000000000")
    assert missing.value.status_code == 404
    assert missing.value.type == "not_found"
    assert "job_00000000000000000000000000" in missing.value.message
    assert missing.value.request_id
    assert missing.value.body == {"error": {"type": "not_found", "message": missing.value.message}}

    with pytest.raises(InvalidRequest) as invalid:
        await api.jobs.create(model=TEXT_MODEL, input={"prompt": "x", "duration": "5"})
    assert invalid.value.status_code == 422
    assert invalid.value.type == "invalid_request"
    assert any(detail.loc[-1] == "duration" for detail in invalid.value.details), invalid.value
    assert all(detail.msg for detail in invalid.value.details)

    with pytest.raises(NotFound):
        await api.models.get("wan9-nothing")

    async with AsyncClient(service.url, "prk_not_a_real_key") as stranger:
        with pytest.raises(AuthenticationError) as refused:
            await stranger.models.list()
    assert refused.value.status_code == 401
    assert refused.value.type == "authentication_error"

    await api.jobs.create(model=TEXT_MODEL, input=text_input(), idempotency_key="order-7")
    with pytest.raises(Conflict) as conflict:
        await api.jobs.create(
            model=TEXT_MODEL, input=text_input("other"), idempotency_key="order-7"
        )
    assert conflict.value.type == "conflict"

    def sync_missing() -> ApiError:
        with Client(service.url, service.client.key) as client:
            try:
                client.jobs.events("job_00000000000000000000000000")
            except ApiError as exc:
                return exc
        raise AssertionError("no error")

    assert isinstance(await asyncio.to_thread(sync_missing), NotFound)


async def test_an_unreachable_service_is_connection_failed_after_the_retries() -> None:
    closed = free_socket()  # bound, never listening: connections are refused
    try:
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        async with AsyncClient(url, "prk_x", max_retries=2) as client:
            started = time.monotonic()
            with pytest.raises(ConnectionFailed) as failed:
                await client.models.list()
        assert isinstance(failed.value.__cause__, httpx.ConnectError)
        assert time.monotonic() - started >= 0.25 + 0.5  # two backoffs (half of each is jitter)
    finally:
        closed.close()


# ---- retries, against a stand-in -------------------------------------------------------------


@dataclass
class Seen:
    at: float
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class StandIn:
    """Answers with `answers`, one per request, then with `otherwise`; records every request."""

    answers: list[Callable[[], Response]] = field(default_factory=list)
    otherwise: Callable[[], Response] = lambda: JSONResponse(
        {"object": "list", "catalog_version": "v1", "data": []}
    )
    seen: list[Seen] = field(default_factory=list)

    async def handle(self, request: Request) -> Response:
        self.seen.append(
            Seen(time.monotonic(), request.method, request.url.path, dict(request.headers))
        )
        return self.answers.pop(0)() if self.answers else self.otherwise()

    def gaps(self) -> list[float]:
        return [b.at - a.at for a, b in zip(self.seen, self.seen[1:], strict=False)]


def envelope(status: int, kind: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(
        {"error": {"type": kind, "message": f"a {kind} answer"}}, status, headers=headers
    )


@pytest.fixture
async def stand_in() -> AsyncIterator[tuple[StandIn, str]]:
    state = StandIn()
    app = Starlette(
        routes=[Route("/{path:path}", state.handle, methods=["GET", "POST"])],
    )
    server = await LiveServer().start(app)
    yield state, server.url
    await server.stop()


async def test_429_waits_for_retry_after_then_succeeds(stand_in: tuple[StandIn, str]) -> None:
    state, url = stand_in
    state.answers = [lambda: envelope(429, "rate_limited", {"Retry-After": "1"})]

    def run() -> list[Any]:
        with Client(url, "prk_test") as client:
            return client.models.list()

    assert await asyncio.to_thread(run) == []
    assert len(state.seen) == 2
    assert state.gaps()[0] >= 0.95
    assert state.seen[0].headers["authorization"] == "Bearer prk_test"


async def test_429_gives_up_after_max_retries_with_retry_after(
    stand_in: tuple[StandIn, str],
) -> None:
    state, url = stand_in
    state.otherwise = lambda: envelope(429, "rate_limited", {"Retry-After": "1"})
    async with AsyncClient(url, "prk_test", max_retries=2) as client:
        with pytest.raises(RateLimited) as limited:
            await client.jobs.create(model=TEXT_MODEL, input=text_input())
    assert limited.value.retry_after == 1.0
    assert limited.value.type == "rate_limited"
    assert limited.value.message == "a rate_limited answer"
    assert len(state.seen) == 3
    assert all(gap >= 0.95 for gap in state.gaps())
    # every attempt of one create carries the same Idempotency-Key
    assert len({seen.headers["idempotency-key"] for seen in state.seen}) == 1


async def test_what_is_retried_and_what_is_not(stand_in: tuple[StandIn, str]) -> None:
    state, url = stand_in
    async with AsyncClient(url, "prk_test", max_retries=3) as client:
        # 503 and 502 without Retry-After: backoff; the same key on each attempt of a create
        state.answers = [lambda: envelope(503, "unavailable"), lambda: Response(status_code=502)]
        state.otherwise = lambda: JSONResponse(JOB_EXAMPLE, 201)
        job = await client.jobs.create(model=TEXT_MODEL, input=text_input())
        assert job.id == JOB_EXAMPLE["id"]
        assert len(state.seen) == 3
        assert len({seen.headers["idempotency-key"] for seen in state.seen}) == 1
        await client.jobs.create(model=TEXT_MODEL, input=text_input())
        assert state.seen[3].headers["idempotency-key"] != state.seen[0].headers["idempotency-key"]

        # never retried: other 4xx, and 500
        for status, kind, error in [
            (404, "not_found", NotFound),
            (400, "bad_request", ApiError),
            (409, "conflict", Conflict),
            (500, "internal_error", ServerError),
        ]:
            state.seen.clear()
            state.answers = [functools.partial(envelope, status, kind)]
            with pytest.raises(error) as raised:
                await client.jobs.get("job_x")
            assert raised.value.status_code == status
            assert len(state.seen) == 1

        # a Retry-After longer than the client waits is raised at once
        state.seen.clear()
        state.answers = [lambda: envelope(503, "unavailable", {"Retry-After": "3600"})]
        with pytest.raises(ServiceUnavailable) as unavailable:
            await client.jobs.get("job_x")
        assert unavailable.value.retry_after == 3600
        assert len(state.seen) == 1

        # an answer that is not the API's
        state.answers = [lambda: Response("<html>hello</html>", 200)]
        with pytest.raises(InvalidResponse):
            await client.jobs.get("job_x")
        state.answers = [lambda: Response("<html>oops</html>", 418)]
        with pytest.raises(ApiError) as teapot:
            await client.jobs.get("job_x")
        assert teapot.value.type is None
        assert teapot.value.body == "<html>oops</html>"


# ---- models ----------------------------------------------------------------------------------


async def test_models_list_and_get(service: Service, api: AsyncClient) -> None:
    models = await api.models.list()
    assert len(models) > 100
    by_id = {model.id: model for model in models}
    text = by_id[TEXT_MODEL]
    assert text.input_schema["type"] == "object"
    assert "prompt" in text.input_schema["properties"]
    assert text.catalog_version

    kling = await api.models.get("kling-3.0/pro")  # an id with a slash
    assert kling.id == "kling-3.0/pro"
    assert kling.raw["object"] == "model"

    images = await api.models.list(category="image")
    assert images
    assert all(model.category == "image" for model in images)

    def sync_get() -> str:
        with Client(service.url, service.client.key) as client:
            return client.models.get(TEXT_MODEL).title

    assert await asyncio.to_thread(sync_get) == text.title


# ---- webhooks --------------------------------------------------------------------------------


async def test_verify_webhook_accepts_the_services_webhook(
    start_service: ServiceFactory, receiver: Any
) -> None:
    service = await start_service(webhook_allow_private=True)
    receiver.failures = 0
    async with AsyncClient(service.url, service.client.key) as client:
        job = await client.jobs.create(
            model=TEXT_MODEL, input=text_input(), webhook_url=receiver.url
        )
        await eventually(lambda: _calls(receiver), lambda n: n >= 1)
        secret = await client.webhook_secret()
    headers, body = receiver.calls[0]
    payload = verify_webhook(headers, body, secret)
    assert payload["type"] == "job.succeeded"
    assert Job.from_dict(payload["data"]).id == job.id
    assert Job.from_dict(payload["data"]).status is JobStatus.SUCCEEDED


async def _calls(receiver: Any) -> int:
    return len(receiver.calls)


# ---- streams ---------------------------------------------------------------------------------


def _numbers(updates: list[JobUpdate]) -> list[int]:
    return [int(u.id) for u in updates if u.event is not None and u.id is not None]


async def test_stream_follows_a_job_until_it_is_settled(
    api: AsyncClient, simulator: Simulator
) -> None:
    await simulator.set_faults(queue_seconds=0.3, run_seconds=0.8)
    job = await api.jobs.create(model=TEXT_MODEL, input=text_input())

    async def follow() -> list[JobUpdate]:
        return [update async for update in api.jobs.stream(job.id)]

    updates = await asyncio.wait_for(follow(), 30)  # ends by itself, after `end`
    assert updates
    assert all(update.job.id == job.id for update in updates)
    assert updates[-1].job.status is JobStatus.SUCCEEDED
    numbers = _numbers(updates)
    assert numbers == sorted(set(numbers))  # in order, each once
    for update in updates:
        if update.event is not None:
            assert update.event.sequence == int(update.id or -1)
    statuses = [update.job.status for update in updates]
    ranks = [list(JobStatus).index(status) for status in statuses]
    assert ranks == sorted(ranks), "a status never goes back"
    # The change that ended it is among the last messages (events written with it, or
    # a late callback read in the same pass, may come alongside), then the stream ends.
    ended = [
        update
        for update in updates
        if update.event is not None
        and update.event.type == "job.status_changed"
        and update.event.data.get("to") == "succeeded"
    ]
    assert len(ended) == 1


async def test_a_stream_resumes_after_dropped_connections_without_loss_or_repeat(
    service: Service, api: AsyncClient, simulator: Simulator
) -> None:
    # Each of the first two stream connections is cut right after its first message: the
    # client reconnects with Last-Event-ID and the server replays what came after.
    await simulator.set_faults(queue_seconds=0.5, run_seconds=1.5)

    def cut_twice(connection: int, answered: bytes) -> int | None:
        return after_first_message(answered) if connection < 2 else None

    job = await api.jobs.create(model=TEXT_MODEL, input=text_input())
    async with (
        proxy(service.server.port, cut_twice) as cutting,
        AsyncClient(cutting.url, service.client.key) as client,
    ):
        updates = await asyncio.wait_for(_collect(client.jobs.stream(job.id)), 40)
    assert cutting.cuts == 2
    assert cutting.connections >= 3
    assert updates[-1].job.is_terminal

    # Everything the audit trail holds after the first message, in order, once.
    trail = await api.jobs.events(job.id)
    first = int(updates[0].id or 0)
    expected = [event.id for event in trail if (event.sequence or 0) > first]
    got = [update.event.id for update in updates[1:] if update.event is not None]
    assert got == expected


async def test_sync_stream_resumes_after_a_dropped_connection(
    service: Service, api: AsyncClient, simulator: Simulator
) -> None:
    await simulator.set_faults(queue_seconds=0.3, run_seconds=1.0)

    def cut_once(connection: int, answered: bytes) -> int | None:
        return after_first_message(answered) if connection == 0 else None

    job = await api.jobs.create(model=TEXT_MODEL, input=text_input())
    async with proxy(service.server.port, cut_once) as cutting:

        def run() -> list[JobUpdate]:
            with Client(cutting.url, service.client.key) as client:
                return list(client.jobs.stream(job.id, timeout=30))

        updates = await asyncio.to_thread(run)
    assert cutting.cuts == 1
    assert updates[-1].job.is_terminal
    numbers = _numbers(updates)
    assert numbers == sorted(set(numbers))


async def test_the_stream_of_every_job_sees_each_change_and_resumes(
    service: Service, api: AsyncClient, simulator: Simulator
) -> None:
    await simulator.set_faults(queue_seconds=0.2, run_seconds=0.5)

    def cut_once(connection: int, answered: bytes) -> int | None:
        return after_first_message(answered) if connection == 0 else None

    async with (
        proxy(service.server.port, cut_once) as cutting,
        AsyncClient(cutting.url, service.client.key) as client,
    ):
        seen: list[JobUpdate] = []
        ended: set[str] = set()

        async def listen() -> None:
            async with aclosing(client.stream(model=TEXT_MODEL)) as updates:
                async for update in updates:
                    seen.append(update)
                    if update.job.is_terminal:
                        ended.add(update.job.id)
                    if len(ended) == 2:
                        return

        listener = asyncio.create_task(listen())
        # The stream delivers what happens once it is open: when its first line (`retry:`,
        # after its subscription) has come.
        await eventually(lambda: _answered(cutting.answers), lambda answered: b"retry:" in answered)
        first = await api.jobs.create(model=TEXT_MODEL, input=text_input("one"))
        second = await api.jobs.create(model=TEXT_MODEL, input=text_input("two"))
        other = await api.jobs.create(
            model="wan2.5-image-to-video",
            input={"prompt": "not this one", "image_urls": ["https://example.com/a.jpg"]},
        )
        await asyncio.wait_for(listener, 30)
    assert ended == {first.id, second.id}
    assert other.id not in {update.job.id for update in seen}
    assert cutting.cuts == 1
    numbers = _numbers(seen)
    assert numbers == sorted(set(numbers))


async def _answered(answers: list[bytearray]) -> bytes:
    return bytes(answers[0]) if answers else b""


async def _collect(updates: AsyncIterator[JobUpdate]) -> list[JobUpdate]:
    return [update async for update in updates]
