"""Several `poyo-relay worker` processes on one PostgreSQL: each job submitted exactly once.

SQLite is one worker by design (its claims are not shared between processes), so this file
runs on PostgreSQL only. The workers are real child processes; the API (RUN_WORKER=false)
runs in the test to receive the provider's callbacks, and the simulator counts tasks.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select, update

from app.db import Database
from app.ids import job_id_time, new_job_id
from app.jobs.models import Job
from app.timeutil import utcnow
from bench.chaos import Child, relay_child
from tests.conftest import SIMULATOR_KEY, Service, ServiceFactory, Simulator

pytestmark = pytest.mark.parametrize("migrated_database", ["postgresql"], indirect=True)

JOBS = 300
TERMINAL = ("succeeded", "failed")


async def insert_pending_jobs(db: Database, count: int) -> list[str]:
    """Jobs stored `pending` and not yet due, as if their API attempt never happened."""
    now = utcnow()
    rows = []
    for index in range(count):
        job_id = new_job_id(now)
        created = job_id_time(job_id)
        rows.append(
            {
                "id": job_id,
                "owner": "tenant-a",
                "model": "wan2.5-text-to-video",
                "status": "pending",
                "input": {"prompt": f"multi {index}"},
                "metadata": {},
                "progress": 0,
                "created_at": created,
                "updated_at": created,
                "submit_attempts": 0,
                "poll_attempts": 0,
            }
        )
    async with db.write() as conn:
        await conn.execute(insert(Job), rows)
    return [str(row["id"]) for row in rows]


async def count_by_status(db: Database) -> dict[str, int]:
    async with db.read() as session:
        rows = await session.execute(select(Job.status, func.count()).group_by(Job.status))
        return {str(status): int(count) for status, count in rows}


@pytest.fixture
async def workers(tmp_path: Path) -> AsyncIterator[list[Child]]:
    children: list[Child] = []
    yield children
    for child in children:
        child.kill()


async def wait_started(child: Child, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while "worker_started" not in child.log_text():
        if not child.alive:
            raise AssertionError(f"{child.name} died:\n{child.log_tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{child.name} did not start:\n{child.log_tail()}")
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("processes", [2, 4])
async def test_worker_processes_submit_each_job_exactly_once(
    processes: int,
    start_service: ServiceFactory,
    simulator: Simulator,
    workers: list[Child],
    tmp_path: Path,
    backend: str,
) -> None:
    assert backend == "postgresql"
    # The API receives callbacks only; the workers do all the rest.
    api: Service = await start_service(run_worker=False)
    db = api.runtime.db
    await simulator.set_faults(
        queue_seconds=0.05,
        run_seconds=0.3,
        submit_error_rate=0.1,
        status_error_rate=0.1,
        rate_limit_rate=0.05,
        retry_after_seconds=1,
        reset_rate=0.03,  # before the provider acts: outcome unknown, nothing started
        drop_callback_rate=0.2,
        duplicate_callback_rate=0.2,
    )
    job_ids = await insert_pending_jobs(db, JOBS)

    settings: dict[str, Any] = {
        "worker_batch_size": 10,
        "worker_concurrency": 8,
        "worker_poll_seconds": 0.1,
        "worker_lease_seconds": 15,
        "retry_base_seconds": 0.2,
        "retry_max_seconds": 1,
        "reconcile_after_seconds": 2,
        "uncertain_submit_grace_seconds": 2,
        "log_level": "INFO",
    }
    for index in range(processes):
        child = relay_child(
            "worker",
            cwd=tmp_path,
            database_url=api.settings.database_url,
            provider_url=simulator.url,
            provider_key=SIMULATOR_KEY,
            public_url=api.url,
            name=f"worker-{index}",
            **settings,
        )
        workers.append(child.start())
    await asyncio.gather(*(wait_started(child) for child in workers))

    # Every worker is polling: make all the jobs due at the same moment.
    async with db.write() as conn:
        await conn.execute(update(Job).where(Job.id.in_(job_ids)).values(next_check_at=utcnow()))

    owners: set[str] = set()
    deadline = time.monotonic() + 120
    while True:
        async with db.read() as session:
            rows = await session.execute(
                select(Job.lease_owner).where(Job.lease_owner.is_not(None))
            )
            owners.update(owner for (owner,) in rows if owner is not None)
        statuses = await count_by_status(db)
        if sum(statuses.get(s, 0) for s in TERMINAL) == JOBS:
            break
        for child in workers:
            assert child.alive, f"{child.name} died:\n{child.log_tail()}"
        assert time.monotonic() < deadline, f"not all jobs ended: {statuses}"
        await asyncio.sleep(0.2)

    assert statuses == {"succeeded": JOBS}
    assert len({o for o in owners if o.startswith("worker:")}) >= 2, owners
    stats = await simulator.stats()
    assert stats["jobs"] == JOBS
    assert stats["tasks"] == JOBS
    assert stats["jobs_with_multiple_tasks"] == 0
    injected = stats["faults_injected"]
    assert injected.get("submit.server_error", 0) > 0
    assert injected.get("callback.dropped", 0) > 0

    # Every job's recorded task is its own, and no task is recorded twice.
    async with db.read() as session:
        recorded = dict((await session.execute(select(Job.id, Job.provider_task_id))).all())
    tasks = {task["task_id"]: task["job_id"] for task in await simulator.tasks()}
    assert all(tasks[task_id] == job_id for job_id, task_id in recorded.items())

    # SIGTERM: every worker stops promptly and leaves no lease behind.
    for child in workers:
        child.send(signal.SIGTERM)
    codes = await asyncio.gather(*(child.wait_exit(10) for child in workers))
    assert all(code is not None for code in codes), codes
    async with db.read() as session:
        held = (
            await session.execute(select(func.count()).where(Job.lease_owner.is_not(None)))
        ).scalar_one()
    assert held == 0
