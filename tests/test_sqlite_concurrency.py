"""SQLite under concurrent load: no 5xx, no "database is locked", every job stored.

Many clients create jobs at once while the simulator's callbacks, the test's own
duplicate callbacks, reads and the embedded worker all hit the same SQLite file.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import Service, Simulator
from tests.support import IMAGE_JOB, TEXT_JOB, eventually

# Only SQLite: its single writer is what this test is about.
pytestmark = pytest.mark.parametrize("migrated_database", ["sqlite"], indirect=True)

JOBS = 60
LOCKED = "database is locked"


def assert_clean(responses: list[httpx.Response], expected: set[int]) -> None:
    codes = [response.status_code for response in responses]
    assert all(code < 500 for code in codes), codes
    assert set(codes) <= expected, codes
    for response in responses:
        assert LOCKED not in response.text


async def all_jobs(service: Service) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 100}
        if cursor:
            params["cursor"] = cursor
        page = (await service.client.get("/v1/jobs", **params)).json()
        jobs += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            return jobs


async def test_concurrent_creates_and_callbacks_on_sqlite(
    capfd: pytest.CaptureFixture[str], service: Service, simulator: Simulator, backend: str
) -> None:
    # capfd comes first so it is capturing before the service sets up its log handler.
    assert backend == "sqlite"
    logging.getLogger("poyo_relay.test").error("capture-probe")  # logs are being captured
    client = service.client
    await simulator.set_faults(duplicate_callback_rate=0.5, reorder_callback_rate=0.3)

    bodies = [
        {**(IMAGE_JOB if n % 2 else TEXT_JOB), "metadata": {"n": str(n)}} for n in range(JOBS)
    ]
    creates = [client.create_job(body) for body in bodies]
    reads = [client.get("/v1/jobs", limit=50) for _ in range(20)]
    responses = await asyncio.gather(*creates, *reads)
    created, listed = responses[:JOBS], responses[JOBS:]
    assert_clean(created, {201})
    assert_clean(listed, {200})
    jobs = [response.json() for response in created]
    ids = {job["id"] for job in jobs}
    assert len(ids) == JOBS
    assert all(job["status"] == "queued" for job in jobs), [j["status"] for j in jobs]

    # Our own copies of each job's callback, all at once, racing the simulator's.
    tasks = {task["job_id"]: task for task in await simulator.tasks()}
    assert set(tasks) == ids

    def callback(job: dict[str, Any]) -> Any:
        task = tasks[job["id"]]
        body = {"task_id": task["task_id"], "status": "finished", "files": []}
        return client.http.post(
            service.runtime.credentials.url(job["id"]),
            content=orjson.dumps(body),
            headers={"Content-Type": "application/json"},
        )

    callbacks = await asyncio.gather(*(callback(job) for job in jobs for _ in range(2)))
    assert_clean(callbacks, {200})
    events = await asyncio.gather(*(client.get(f"/v1/jobs/{job_id}/events") for job_id in ids))
    assert_clean(events, {200})

    async def statuses() -> list[str]:
        return [job["status"] for job in await all_jobs(service)]

    final = await eventually(
        statuses, lambda s: len(s) == JOBS and set(s) == {"succeeded"}, seconds=30
    )
    assert len(final) == JOBS
    stored = await all_jobs(service)
    assert {job["id"] for job in stored} == ids
    assert sorted(job["metadata"]["n"] for job in stored) == sorted(str(n) for n in range(JOBS))
    for job in stored:
        assert job["outputs"], job["id"]

    stats = await simulator.stats()
    deliveries = stats["callback_deliveries"]
    assert "error" not in deliveries, deliveries
    assert all(int(code) < 500 for code in deliveries), deliveries
    assert stats["jobs_with_multiple_tasks"] == 0

    # Each job reached succeeded exactly once, however many callbacks it received.
    for job_id in ids:
        trail = await client.events(job_id)
        done = [
            e for e in trail if e["type"] == "job.status_changed" and e["data"]["to"] == "succeeded"
        ]
        assert len(done) == 1, job_id

    out, err = capfd.readouterr()
    logs = out + err
    assert "capture-probe" in logs
    assert LOCKED not in logs
    assert "unhandled_error" not in logs
    assert "worker_item_failed" not in logs
    assert "worker_loop_failed" not in logs
