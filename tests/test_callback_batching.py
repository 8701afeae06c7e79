"""Group commit: callbacks that arrive together are stored in one transaction, and one bad
callback in a batch fails only itself."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from sqlalchemy import event, func, select

from app.jobs.models import JobEvent
from tests.conftest import ServiceFactory, Simulator
from tests.support import IMAGE_JOB


async def test_concurrent_callbacks_share_one_commit(
    start_service: ServiceFactory, simulator: Simulator
) -> None:
    await simulator.set_faults(run_seconds=120)  # only this test's callbacks arrive
    service = await start_service(run_worker=False)
    runtime = service.runtime
    jobs = [(await service.client.create_job(IMAGE_JOB)).json() for _ in range(20)]
    commits: list[int] = []
    listener = lambda _conn: commits.append(1)  # noqa: E731
    event.listen(runtime.db.engine.sync_engine, "commit", listener)
    try:
        calls: list[Any] = [
            runtime.callbacks.ingest(
                job_id=job["id"],
                token=runtime.credentials.token(job["id"]),
                body=orjson.dumps(
                    {
                        "code": 200,
                        "data": {"task_id": job["provider"]["task_id"], "status": "finished"},
                    }
                ),
                headers={},
            )
            for job in jobs
        ]
        unknown = "job_01m8a7tgbpdjzqkavavjmftpne"
        calls.append(
            runtime.callbacks.ingest(
                job_id=unknown,
                token=runtime.credentials.token(unknown),
                body=b'{"task_id": "task-x", "status": "finished"}',
                headers={},
            )
        )
        results = await asyncio.gather(*calls)
    finally:
        event.remove(runtime.db.engine.sync_engine, "commit", listener)

    assert [r.outcome for r in results[:-1]] == ["received"] * 20
    assert (results[-1].http_status, results[-1].outcome) == (404, "unknown_job")
    assert len(commits) == 1
    async with runtime.db.read() as session:
        stamps = await session.execute(
            select(func.count(), func.count(func.distinct(JobEvent.created_at))).where(
                JobEvent.type == "callback.received"
            )
        )
        assert tuple(stamps.one()) == (20, 1)
