"""Callbacks under fire: concurrent duplicates, stale and late callbacks, and callbacks for
jobs whose status cannot be read — on SQLite and PostgreSQL, over loopback HTTP.

The test plays the provider's callback itself (same URL, same body shape the simulator
sends), while the simulator is told to drop its own callbacks so the test decides what
arrives and when.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from app.runtime import Runtime
from tests.conftest import Service, ServiceFactory, Simulator
from tests.support import IMAGE_JOB, TEXT_JOB, eventually, worker_pass

TERMINAL = {"succeeded", "failed"}


async def finished_task(simulator: Simulator, job_id: str) -> dict[str, Any]:
    """The provider's view of the job's task, once it has ended there."""
    tasks = await eventually(
        simulator.tasks,
        lambda tasks: any(t["job_id"] == job_id and t["status"] == "finished" for t in tasks),
    )
    [task] = [t for t in tasks if t["job_id"] == job_id]
    return task


def callback_body(task: dict[str, Any], **changes: Any) -> dict[str, Any]:
    view = {
        key: task[key]
        for key in ("task_id", "status", "progress", "files", "created_time", "error_message")
    }
    return {"code": 200, "msg": "success", "data": {**view, **changes}}


async def post_callback(service: Service, job_id: str, body: dict[str, Any]) -> httpx.Response:
    url = service.runtime.credentials.url(job_id)
    return await service.client.http.post(url, json=body)


async def new_queued_job(service: Service, body: dict[str, Any] = IMAGE_JOB) -> str:
    created = await service.client.create_job(body)
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "queued"
    return str(created.json()["id"])


def of_type(events: list[dict[str, Any]], type: str) -> list[dict[str, Any]]:
    return [event for event in events if event["type"] == type]


def terminal_changes(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in of_type(events, "job.status_changed") if e["data"]["to"] in TERMINAL]


async def test_the_same_callback_five_times_at_once_changes_the_job_once(
    start_service: ServiceFactory, simulator: Simulator
) -> None:
    service = await start_service()
    await simulator.set_faults(drop_callback_rate=1)
    job_id = await new_queued_job(service)
    task = await finished_task(simulator, job_id)

    body = callback_body(task)
    responses = await asyncio.gather(*(post_callback(service, job_id, body) for _ in range(5)))
    assert [r.status_code for r in responses] == [200] * 5, [r.text for r in responses]
    outcomes = sorted(r.json()["outcome"] for r in responses)
    assert outcomes == ["duplicate"] * 4 + ["received"], outcomes

    done = await service.client.wait_for_status(job_id, TERMINAL)
    assert done["status"] == "succeeded"
    assert done["outputs"][0]["url"] == task["files"][0]["file_url"]
    # Late copies after the job ended are duplicates too.
    again = await post_callback(service, job_id, body)
    assert again.status_code == 200
    assert again.json()["outcome"] == "duplicate"

    events = await service.client.events(job_id)
    assert len(terminal_changes(events)) == 1
    assert len(of_type(events, "callback.received")) == 1
    duplicates = of_type(events, "callback.duplicate")
    assert len(duplicates) == 5
    assert all(d["data"]["task_id"] == task["task_id"] for d in duplicates)
    assert all(d["data"]["reason"] for d in duplicates)


async def test_many_jobs_each_hit_by_concurrent_duplicates(
    start_service: ServiceFactory, simulator: Simulator
) -> None:
    service = await start_service()
    await simulator.set_faults(drop_callback_rate=1)
    job_ids = [await new_queued_job(service, TEXT_JOB) for _ in range(8)]
    tasks = [await finished_task(simulator, job_id) for job_id in job_ids]
    calls = [
        post_callback(service, job_id, callback_body(task))
        for job_id, task in zip(job_ids, tasks, strict=True)
        for _ in range(5)
    ]
    responses = await asyncio.gather(*calls)
    assert all(r.status_code == 200 for r in responses)
    assert sum(r.json()["outcome"] == "received" for r in responses) == len(job_ids)
    for job_id in job_ids:
        await service.client.wait_for_status(job_id, TERMINAL)
        events = await service.client.events(job_id)
        assert len(terminal_changes(events)) == 1
        assert len(of_type(events, "callback.received")) == 1
        assert len(of_type(events, "callback.duplicate")) == 4


async def test_running_after_finished_is_ignored_and_recorded(
    start_service: ServiceFactory, simulator: Simulator
) -> None:
    # No worker in the API: the finished claim waits unconfirmed while the stale one comes.
    service = await start_service(run_worker=False)
    await simulator.set_faults(drop_callback_rate=1)
    job_id = await new_queued_job(service)
    task = await finished_task(simulator, job_id)

    finished = await post_callback(service, job_id, callback_body(task))
    assert finished.json()["outcome"] == "received"
    stale = callback_body(task, status="running", progress=50, files=[])
    before_confirmation = await post_callback(service, job_id, stale)
    assert before_confirmation.status_code == 200
    assert before_confirmation.json()["outcome"] == "ignored"
    assert (await service.client.job(job_id))["status"] == "queued"

    runtime = await Runtime.start(service.settings)
    try:
        worker = runtime.worker()

        async def pass_and_read() -> dict[str, Any]:
            await worker_pass(worker)
            return await service.client.job(job_id)

        done = await eventually(pass_and_read, lambda job: job["status"] in TERMINAL)
    finally:
        await runtime.close()
    assert done["status"] == "succeeded"

    after = await post_callback(service, job_id, stale)
    assert after.status_code == 200
    assert after.json()["outcome"] == "ignored"
    failed = await post_callback(service, job_id, callback_body(task, status="failed"))
    assert failed.json()["outcome"] == "ignored"
    job = await service.client.job(job_id)
    assert job["status"] == "succeeded", "a terminal status never changes"
    assert job["outputs"] == done["outputs"]

    events = await service.client.events(job_id)
    ignored = of_type(events, "callback.ignored")
    assert [e["data"]["status"] for e in ignored] == ["running", "running", "failed"]
    assert "stale" in ignored[0]["data"]["reason"]
    assert "late" in ignored[1]["data"]["reason"]
    assert len(terminal_changes(events)) == 1
    # Every ignored callback is kept raw, as evidence.
    assert all('"running"' in e["data"]["raw"] for e in ignored[:2])


async def test_callback_whose_status_check_fails_is_kept_until_reconcile_completes_it(
    start_service: ServiceFactory, simulator: Simulator
) -> None:
    service = await start_service(reconcile_after_seconds=0.5)
    await simulator.set_faults(status_error_rate=1)
    # The simulator's own callback arrives; every status read behind it fails.
    job_id = await new_queued_job(service)
    events = await eventually(
        lambda: service.client.events(job_id),
        lambda evs: (
            len(of_type(evs, "callback.received")) == 1
            and len(of_type(evs, "provider.poll_failed")) >= 2
        ),
    )
    assert of_type(events, "callback.received")[0]["data"]["status"] == "finished"
    job = await service.client.job(job_id)
    assert job["status"] not in TERMINAL, "the callback alone never ends a job"
    assert job["outputs"] == []

    await simulator.set_faults(status_error_rate=0)
    done = await service.client.wait_for_status(job_id, TERMINAL)
    assert done["status"] == "succeeded"
    assert done["outputs"]
    events = await service.client.events(job_id)
    types = [event["type"] for event in events]
    assert types.index("callback.received") < types.index("provider.poll_failed")
    assert types.index("provider.poll_failed") < types.index("provider.polled")
    assert len(terminal_changes(events)) == 1
    assert (await simulator.stats())["tasks"] == 1


async def test_duplicated_and_reordered_callbacks_from_the_provider(
    start_service: ServiceFactory, simulator: Simulator
) -> None:
    """The simulator itself sends each callback twice and then a stale `running`."""
    service = await start_service()
    await simulator.set_faults(duplicate_callback_rate=1, reorder_callback_rate=1)
    job_ids = [await new_queued_job(service, TEXT_JOB) for _ in range(5)]
    for job_id in job_ids:
        done = await service.client.wait_for_status(job_id, TERMINAL)
        assert done["status"] == "succeeded"
    await eventually(simulator.stats, lambda stats: stats["pending_callbacks"] == 0)
    for job_id in job_ids:
        events = await service.client.events(job_id)
        assert len(terminal_changes(events)) == 1
        callbacks = [e for e in events if e["type"].startswith("callback.")]
        assert len(callbacks) == 3
        assert len(of_type(events, "callback.received")) == 1
        assert (await service.client.job(job_id))["status"] == "succeeded"
    assert (await simulator.stats())["jobs_with_multiple_tasks"] == 0
