"""A database that fails: every endpoint answers `503` with Retry-After in the error
envelope (never a 500), nothing is lost, idempotency stays exact, and the service recovers
by itself.

On PostgreSQL the test kills every connection of the service again and again while
clients create and read jobs (as a failover or a connection pooler restart does); on both
databases, a service whose database cannot be reached at all is checked endpoint by
endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import func, select

from app.jobs.models import IdempotencyKey, Job
from app.main import create_app
from app.runtime import Runtime
from tests.conftest import ServiceFactory, Simulator
from tests.support import IMAGE_JOB, LiveServer, free_socket, make_settings

OUTAGE_SECONDS = 4.0
CLIENTS = 8


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["type"] == "unavailable", response.text
    assert int(response.headers["retry-after"]) >= 1


class Killer:
    """Terminates every other connection to the database, every `interval` seconds."""

    def __init__(self, database_url: str, interval: float = 0.05) -> None:
        self.url = database_url.replace("postgresql+asyncpg://", "postgresql://")
        self.interval = interval
        self.killed = 0

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Killer]:
        stop = asyncio.Event()
        conn = await asyncpg.connect(self.url)

        async def kill() -> None:
            while not stop.is_set():
                self.killed += await conn.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                await asyncio.sleep(self.interval)

        task = asyncio.create_task(kill())
        try:
            yield self
        finally:
            stop.set()
            await task
            await conn.close()


@pytest.mark.parametrize("migrated_database", ["postgresql"], indirect=True)
async def test_killed_connections_answer_503_and_lose_nothing(
    start_service: ServiceFactory, simulator: Simulator
) -> None:
    service = await start_service(
        reconcile_after_seconds=1, uncertain_submit_grace_seconds=1, worker_lease_seconds=5
    )
    client = service.client
    answers: list[tuple[str, httpx.Response]] = []
    last_answer: dict[str, httpx.Response] = {}
    created: list[str] = []

    async def create(key: str) -> None:
        response = await client.create_job(IMAGE_JOB, **{"Idempotency-Key": key})
        answers.append(("POST /v1/jobs", response))
        last_answer[key] = response
        if response.status_code in (200, 201):
            created.append(response.json()["id"])

    async def read(job_id: str) -> None:
        for path in (f"/v1/jobs/{job_id}", "/v1/jobs", f"/v1/jobs/{job_id}/events", "/readyz"):
            answers.append((path, await client.get(path)))

    async def callback(job_id: str) -> None:
        url = service.runtime.credentials.url(job_id)
        response = await client.http.post(url, json={"task_id": "task-x", "status": "running"})
        answers.append(("callback", response))

    async def hammer(worker: int, until: float) -> None:
        n = 0
        while time.monotonic() < until:
            key = f"outage-{worker}-{n}"
            n += 1
            await create(key)
            if created:
                await read(created[-1])
                await callback(created[-1])

    before = await client.create_job(IMAGE_JOB)
    assert before.status_code == 201
    created.append(before.json()["id"])
    async with Killer(service.settings.database_url).running() as killer:
        until = time.monotonic() + OUTAGE_SECONDS
        await asyncio.gather(*(hammer(worker, until) for worker in range(CLIENTS)))
    assert killer.killed > 0

    unavailable = [(path, r) for path, r in answers if r.status_code == 503]
    assert unavailable, "the outage never reached a request"
    for _path, response in unavailable:
        assert_unavailable(response)
    unexpected = [
        (path, r.status_code, r.text[:200])
        for path, r in answers
        if r.status_code not in (200, 201, 503) and path != "callback"
    ]
    assert unexpected == []
    callbacks = {r.status_code for path, r in answers if path == "callback"}
    assert callbacks <= {200, 400, 503}, callbacks  # 400: task-x is not the job's task

    # Recovered at once: the pooled connections the outage killed are replaced before use,
    # not handed to requests (the pool is larger than the requests here).
    for _ in range(3 * service.settings.database_pool_size):
        assert (await client.get("/v1/jobs")).status_code == 200

    # A client retries each 503 with its key and gets exactly one job.
    for key, response in list(last_answer.items()):
        if response.status_code == 503:
            await create(key)
            assert last_answer[key].status_code in (200, 201), last_answer[key].text
    async with service.runtime.db.read() as session:
        keys = await session.scalar(select(func.count()).select_from(IdempotencyKey))
        jobs = await session.scalar(select(func.count()).select_from(Job))
    assert keys == len(last_answer)
    assert jobs == len(last_answer) + 1, "one job per key, and the one made before"

    # Nothing is lost: every job finishes, and the service is ready again by itself.
    for job_id in set(created):
        done = await client.wait_for_status(job_id, {"succeeded", "failed"}, seconds=60)
        assert done["status"] == "succeeded", done
    assert (await client.get("/readyz")).status_code == 200


UNREACHABLE = {
    "postgresql": "postgresql+asyncpg://postgres@127.0.0.1:1/unreachable",
    "sqlite": "sqlite+aiosqlite:////nonexistent-directory/poyo_relay.db",
}


@pytest.mark.parametrize("backend", sorted(UNREACHABLE))
async def test_an_unreachable_database_is_503_on_every_endpoint(backend: str) -> None:
    sock = free_socket()
    settings = make_settings(
        database_url=UNREACHABLE[backend],
        public_base_url=f"http://127.0.0.1:{sock.getsockname()[1]}",
        callback_secret="a-configured-callback-secret",
        poyo_api_key="unused-provider-key",
        poyo_base_url="http://127.0.0.1:9",
    )
    app = create_app(settings)
    server = await LiveServer(sock).start(app)
    runtime: Runtime = app.state.runtime
    key = "prk_" + "0" * 26 + "_" + "a" * 43
    headers = {"Authorization": f"Bearer {key}"}
    job_id = "job_" + "0" * 26
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/v1/jobs", {"json": IMAGE_JOB, "headers": headers}),
        ("GET", "/v1/jobs", {"headers": headers}),
        ("GET", f"/v1/jobs/{job_id}", {"headers": headers}),
        ("GET", f"/v1/jobs/{job_id}/events", {"headers": headers}),
        ("GET", "/v1/models", {"headers": headers}),
        ("GET", "/v1/webhook_secret", {"headers": headers}),
        ("GET", "/readyz", {}),
    ]
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            for method, path, options in requests:
                assert_unavailable(await http.request(method, path, **options))
            callback = await http.post(
                runtime.credentials.url(job_id).removeprefix(server.url),
                json={"task_id": "task-1", "status": "finished"},
            )
            assert_unavailable(callback)
            assert (await http.get("/healthz")).status_code == 200
            # A request that never shows a key still learns nothing but 401.
            assert (await http.get("/v1/jobs")).status_code == 401
    finally:
        await server.stop()
