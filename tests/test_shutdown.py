"""Graceful shutdown: SIGTERM to `poyo-relay serve` and to `poyo-relay worker` with work in
flight. Within 10 s the process exits, in-flight requests are answered, the jobs it held
are finished or released (no lease left to the dead process), and nothing is lost.

The provider is the simulator with slow answers (`slow_rate`, `slow_seconds`), which is
what keeps requests and worker items in flight when the signal arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select

from app.auth.service import create_key
from app.db import Database
from app.ids import job_id_time, new_job_id
from app.jobs.models import Job
from app.runtime import Runtime
from app.timeutil import utcnow
from app.worker.runner import Worker
from bench.chaos import Child, relay_child
from bench.common import free_port
from tests.conftest import SIMULATOR_KEY, ServiceFactory, Simulator
from tests.support import IMAGE_JOB, eventually, make_settings

EXIT_SECONDS = 10.0
TERMINAL = ("succeeded", "failed")


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(make_settings(database_url=database_url))
    yield database
    await database.dispose()


@pytest.fixture
async def children() -> AsyncIterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:
        child.kill()


async def insert_pending_job(db: Database, prompt: str) -> str:
    """A job stored `pending` and due now, as the worker finds one after a failed attempt."""
    now = utcnow()
    job_id = new_job_id(now)
    async with db.write() as conn:
        await conn.execute(
            insert(Job).values(
                id=job_id,
                owner="tenant-a",
                model="wan2.5-text-to-video",
                status="pending",
                input={"prompt": prompt},
                metadata_={},
                progress=0,
                created_at=job_id_time(job_id),
                updated_at=job_id_time(job_id),
                submit_attempts=0,
                poll_attempts=0,
                next_check_at=now,
            )
        )
    return job_id


def ended(job: Job) -> bool:
    return job.status in TERMINAL


async def stored(db: Database, job_id: str) -> Job:
    async with db.read() as session:
        return (await session.execute(select(Job).where(Job.id == job_id))).scalar_one()


async def leased(db: Database) -> list[tuple[str, str | None]]:
    async with db.read() as session:
        rows = await session.execute(
            select(Job.id, Job.lease_owner).where(Job.lease_owner.is_not(None))
        )
        return [(job_id, owner) for job_id, owner in rows]


async def slow_submissions(simulator: Simulator, count: int) -> None:
    """Until `count` submissions are being held by the provider's slowness."""
    await eventually(
        simulator.stats,
        lambda stats: stats["faults_injected"].get("submit.slow", 0) >= count,
    )


async def serve(
    tmp_path: Path, database_url: str, simulator: Simulator, db: Database, **settings: Any
) -> tuple[Child, httpx.AsyncClient]:
    port = free_port()
    values: dict[str, Any] = {"worker_poll_seconds": 0.1, "reconcile_after_seconds": 1}
    values.update(settings)
    child = relay_child(
        "serve",
        cwd=tmp_path,
        database_url=database_url,
        provider_url=simulator.url,
        provider_key=SIMULATOR_KEY,
        public_url=f"http://127.0.0.1:{port}",
        port=port,
        name=f"serve-{port}",
        **values,
    )
    child.start()
    _, key = await create_key(db, name="tenant-a")
    http = httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}",
        timeout=60,
        headers={"Authorization": f"Bearer {key}"},
    )
    await child.wait_http(f"http://127.0.0.1:{port}/readyz")
    return child, http


async def sigterm(child: Child) -> float:
    child.send(signal.SIGTERM)
    return time.monotonic()


async def exit_within(child: Child, signalled_at: float, seconds: float = EXIT_SECONDS) -> int:
    remaining = signalled_at + seconds - time.monotonic()
    code = await child.wait_exit(max(remaining, 0.0))
    if code is None:
        # Measure how long it really takes, then fail.
        late = await child.wait_exit(30)
        took = time.monotonic() - signalled_at
        pytest.fail(f"still running {seconds}s after SIGTERM (exited {late} after {took:.1f}s)")
    return code


async def finish_with_worker(
    database_url: str, public_url: str, simulator: Simulator
) -> tuple[Runtime, Worker]:
    settings = make_settings(
        database_url=database_url,
        public_base_url=public_url,
        poyo_base_url=simulator.url,
        poyo_api_key=SIMULATOR_KEY,
        reconcile_after_seconds=0.5,
        uncertain_submit_grace_seconds=2,
    )
    runtime = await Runtime.start(settings)
    worker = runtime.worker()
    worker.start()
    return runtime, worker


# ---- poyo-relay serve --------------------------------------------------------------------


async def test_sigterm_to_serve_drains_requests_and_worker(
    tmp_path: Path,
    database_url: str,
    simulator: Simulator,
    db: Database,
    children: list[Child],
) -> None:
    await simulator.set_faults(slow_rate=1, slow_seconds=3)
    child, http = await serve(tmp_path, database_url, simulator, db)
    children.append(child)
    try:
        background = await insert_pending_job(db, "held by the embedded worker")
        await slow_submissions(simulator, 1)
        request = asyncio.create_task(http.post("/v1/jobs", json=IMAGE_JOB))
        await slow_submissions(simulator, 2)

        signalled = await sigterm(child)
        response = await request
        assert response.status_code == 201, response.text
        assert response.json()["status"] == "queued", "the in-flight request was completed"
        await exit_within(child, signalled)
        assert await leased(db) == []
        for job_id in (background, response.json()["id"]):
            job = await stored(db, job_id)
            assert job.status == "queued"
            assert job.provider_task_id is not None
    finally:
        await http.aclose()

    # Nothing lost: a new process finishes both.
    await simulator.set_faults(slow_rate=0)
    child.start()
    await child.wait_http(child.env["PUBLIC_BASE_URL"] + "/readyz")
    for job_id in (background, response.json()["id"]):
        done = await eventually(functools.partial(stored, db, job_id), ended)
        assert done.status == "succeeded"
    assert (await simulator.stats())["tasks"] == 2


async def test_serve_stops_claiming_as_soon_as_it_is_told_to_stop(
    tmp_path: Path,
    database_url: str,
    simulator: Simulator,
    db: Database,
    children: list[Child],
) -> None:
    await simulator.set_faults(slow_rate=1, slow_seconds=4)
    child, http = await serve(tmp_path, database_url, simulator, db)
    children.append(child)
    try:
        request = asyncio.create_task(http.post("/v1/jobs", json=IMAGE_JOB))
        await slow_submissions(simulator, 1)
        signalled = await sigterm(child)
        await asyncio.sleep(0.5)
        # Work that shows up while the process is shutting down is left for the others.
        late = await insert_pending_job(db, "due after SIGTERM")
        response = await request
        assert response.status_code == 201
        await exit_within(child, signalled)
    finally:
        await http.aclose()
    job = await stored(db, late)
    assert job.submit_attempts == 0, "claimed and submitted by a process told to stop"
    assert job.status == "pending"
    assert job.lease_owner is None


async def test_serve_answers_a_request_that_fits_the_shutdown_budget(
    tmp_path: Path,
    database_url: str,
    simulator: Simulator,
    db: Database,
    children: list[Child],
) -> None:
    child, http = await serve(tmp_path, database_url, simulator, db)
    children.append(child)
    try:
        # The worker's submission hangs at the provider for long; a client's takes 7 s.
        await simulator.set_faults(slow_rate=1, slow_seconds=25)
        background = await insert_pending_job(db, "a very slow provider answer")
        await slow_submissions(simulator, 1)
        await simulator.set_faults(slow_seconds=7)
        request = asyncio.create_task(http.post("/v1/jobs", json=IMAGE_JOB))
        await slow_submissions(simulator, 2)

        signalled = await sigterm(child)
        response = await request
        await exit_within(child, signalled)
    finally:
        await http.aclose()
    assert response.status_code == 201, response.text
    assert await leased(db) == []
    assert (await stored(db, background)).status == "pending"


async def test_serve_releases_the_lease_of_a_request_cut_off_by_the_drain(
    tmp_path: Path,
    database_url: str,
    simulator: Simulator,
    db: Database,
    children: list[Child],
) -> None:
    child, http = await serve(tmp_path, database_url, simulator, db)
    children.append(child)
    try:
        await simulator.set_faults(slow_rate=1, slow_seconds=20)
        request = asyncio.create_task(http.post("/v1/jobs", json=IMAGE_JOB))
        await slow_submissions(simulator, 1)
        signalled = await sigterm(child)
        with contextlib.suppress(httpx.TransportError):
            response = await request
            assert response.status_code >= 500, "a 20 s request cannot fit in 10 s"
        await exit_within(child, signalled)
    finally:
        await http.aclose()
    async with db.read() as session:
        [job] = (await session.execute(select(Job))).scalars()
    assert job.status == "pending", "the job is kept"
    assert job.lease_owner is None, f"still leased to the dead process: {job.lease_owner}"


# ---- poyo-relay worker -------------------------------------------------------------------


async def start_worker(
    tmp_path: Path, database_url: str, simulator: Simulator, public_url: str
) -> Child:
    child = relay_child(
        "worker",
        cwd=tmp_path,
        database_url=database_url,
        provider_url=simulator.url,
        provider_key=SIMULATOR_KEY,
        public_url=public_url,
        name="worker",
        worker_poll_seconds=0.1,
        log_level="INFO",
    )
    child.start()
    deadline = time.monotonic() + 30
    while "worker_started" not in child.log_text():
        assert child.alive, child.log_tail()
        assert time.monotonic() < deadline, child.log_tail()
        await asyncio.sleep(0.1)
    return child


@pytest.mark.parametrize(
    "provider_seconds", [1.5, 20], ids=["finishes-in-grace", "released-after-grace"]
)
async def test_sigterm_to_worker_finishes_or_releases_its_jobs(
    provider_seconds: float,
    tmp_path: Path,
    database_url: str,
    simulator: Simulator,
    db: Database,
    children: list[Child],
    start_service: ServiceFactory,
) -> None:
    api = await start_service(run_worker=False)  # receives the provider's callbacks
    child = await start_worker(tmp_path, database_url, simulator, api.url)
    children.append(child)
    await simulator.set_faults(slow_rate=1, slow_seconds=provider_seconds)
    job_ids = [await insert_pending_job(db, f"in flight {i}") for i in range(5)]
    await slow_submissions(simulator, len(job_ids))

    signalled = await sigterm(child)
    code = await exit_within(child, signalled)
    assert code in (0, -signal.SIGTERM), child.log_tail()
    assert await leased(db) == []
    for job_id in job_ids:
        job = await stored(db, job_id)
        if provider_seconds < 8:
            assert job.status == "queued", "finished within the grace"
        else:
            assert job.status == "pending", "given back, to be submitted again"
            assert job.submit_started_at is not None, "its outcome is unknown"

    # Nothing lost: another worker finishes them, each with a single provider task.
    await simulator.set_faults(slow_rate=0)
    runtime, worker = await finish_with_worker(database_url, api.url, simulator)
    try:
        for job_id in job_ids:
            done = await eventually(functools.partial(stored, db, job_id), ended, seconds=30)
            assert done.status == "succeeded"
    finally:
        await worker.stop()
        await runtime.close()
    stats = await simulator.stats()
    assert stats["jobs"] == len(job_ids)
    assert stats["jobs_with_multiple_tasks"] == 0
