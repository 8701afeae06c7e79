"""The background worker, one pass at a time, on SQLite and PostgreSQL.

The API runs with RUN_WORKER=false so that nothing happens behind the test's back; the
worker is a `Runtime` of its own whose loops the test drives with their production body,
`run_once()` (tests.support.one_pass). The provider is the simulator over loopback HTTP,
with its fault knobs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from app.config import Settings
from app.jobs.models import Job, JobEvent
from app.runtime import Runtime
from app.timeutil import utcnow
from app.worker.loops import ClaimLoop
from app.worker.runner import Worker
from tests.conftest import Service, ServiceFactory, Simulator
from tests.support import IMAGE_JOB, TEXT_JOB, eventually, one_pass, worker_pass

RuntimeFactory = Callable[[Settings], Awaitable[Runtime]]


@pytest.fixture
async def runtimes() -> AsyncIterator[RuntimeFactory]:
    """Worker runtimes of their own (as a `poyo-relay worker` process builds one)."""
    started: list[Runtime] = []

    async def start(settings: Settings) -> Runtime:
        runtime = await Runtime.start(settings)
        started.append(runtime)
        return runtime

    yield start
    for runtime in reversed(started):
        await runtime.close()


def loops_of(runtime: Runtime, owner: str) -> dict[str, ClaimLoop]:
    return runtime.worker(owner).loops


async def row(runtime: Runtime, job_id: str) -> Job:
    async with runtime.db.read() as session:
        job = (await session.execute(select(Job).where(Job.id == job_id))).scalar_one()
    return job


async def events(runtime: Runtime, job_id: str, type: str | None = None) -> list[JobEvent]:
    query = select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
    if type is not None:
        query = query.where(JobEvent.type == type)
    async with runtime.db.read() as session:
        return list((await session.execute(query)).scalars())


async def make_due(runtime: Runtime, job_id: str) -> None:
    """Skip the wait the worker scheduled: the job is due now."""
    async with runtime.db.write() as conn:
        await conn.execute(update(Job).where(Job.id == job_id).values(next_check_at=utcnow()))


async def drive(
    worker: Worker, runtime: Runtime, job_id: str, accept: Callable[[Job], bool], seconds: float
) -> Job:
    """Run worker passes until the job satisfies `accept` (bounded)."""

    async def step() -> Job:
        await worker_pass(worker)
        return await row(runtime, job_id)

    return await eventually(step, accept, seconds=seconds, interval=0.05)


def delay_after(event: JobEvent, job: Job) -> float:
    """Seconds between a failure being recorded and the next attempt it scheduled."""
    assert job.next_check_at is not None
    return (job.next_check_at - event.created_at).total_seconds()


async def tasks_of(simulator: Simulator, job_id: str) -> list[dict[str, Any]]:
    return [task for task in await simulator.tasks() if task["job_id"] == job_id]


async def api_without_worker(start_service: ServiceFactory, **overrides: Any) -> Service:
    return await start_service(run_worker=False, **overrides)


# ---- submission ------------------------------------------------------------------------


async def test_rate_limited_submission_waits_for_retry_after(
    start_service: ServiceFactory, simulator: Simulator, runtimes: RuntimeFactory
) -> None:
    service = await api_without_worker(start_service)
    # A Retry-After this long is not waited out inside the request: the worker owns it.
    await simulator.set_faults(rate_limit_rate=1, retry_after_seconds=120)
    created = await service.client.create_job(IMAGE_JOB)
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["status"] == "pending"
    assert job["provider"]["task_id"] is None

    runtime = await runtimes(service.settings)
    loops = loops_of(runtime, "worker:test")
    stored = await row(runtime, job["id"])
    [failure] = await events(runtime, job["id"], "provider.submit_failed")
    assert failure.data["http_status"] == 429
    assert failure.data["retry_after"] == 120
    assert failure.data["outcome_unknown"] is False
    assert delay_after(failure, stored) >= 120
    assert stored.lease_owner is None, "the API released its lease"

    # Not due yet: a pass of the submit loop leaves it alone even with the fault gone.
    await simulator.set_faults(rate_limit_rate=0)
    assert await one_pass(loops["submit"]) == 0
    assert (await simulator.stats())["tasks"] == 0

    await make_due(runtime, job["id"])
    assert await one_pass(loops["submit"]) == 1
    submitted = await row(runtime, job["id"])
    assert submitted.status == "queued"
    assert submitted.submit_attempts == 2
    assert len(await tasks_of(simulator, job["id"])) == 1
    done = await service.client.wait_for_status(job["id"], {"queued", "running", "succeeded"})
    assert done["provider"]["task_id"] == submitted.provider_task_id


async def test_transient_500s_then_success(
    start_service: ServiceFactory, simulator: Simulator, runtimes: RuntimeFactory
) -> None:
    service = await api_without_worker(start_service)
    await simulator.set_faults(submit_error_rate=1)
    created = await service.client.create_job(TEXT_JOB)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    assert created.json()["status"] == "pending"

    runtime = await runtimes(service.settings)
    worker = runtime.worker()
    # Still failing: the worker tries again and the job stays pending, not failed.
    await make_due(runtime, job_id)
    assert await one_pass(worker.loops["submit"]) == 1
    job = await row(runtime, job_id)
    assert job.status == "pending"
    assert job.submit_attempts == 2
    assert job.lease_owner is None

    await simulator.set_faults(submit_error_rate=0)
    await make_due(runtime, job_id)
    done = await drive(worker, runtime, job_id, lambda j: j.status == "succeeded", 15)
    assert done.submit_attempts == 3
    assert done.outputs
    types = [event.type for event in await events(runtime, job_id)]
    assert types.count("provider.submit_failed") == 2
    assert types.count("provider.submitted") == 1
    assert "provider.resubmitting" not in types, "a 500 is a known failure, not an unknown one"
    assert len(await tasks_of(simulator, job_id)) == 1
    injected = (await simulator.stats())["faults_injected"]
    assert injected["submit.server_error"] >= 2


async def test_backoff_is_exponential_with_jitter_then_submit_failed(
    start_service: ServiceFactory, simulator: Simulator, runtimes: RuntimeFactory
) -> None:
    base, attempts = 10.0, 4
    service = await api_without_worker(
        start_service, retry_base_seconds=base, retry_max_seconds=10_000, submit_max_attempts=4
    )
    await simulator.set_faults(submit_error_rate=1)
    job_ids = []
    for _ in range(3):
        created = await service.client.create_job(IMAGE_JOB)
        assert created.status_code == 201, created.text
        job_ids.append(created.json()["id"])

    runtime = await runtimes(service.settings)
    submit = loops_of(runtime, "worker:test")["submit"]
    for attempt in range(1, attempts):
        delays = []
        for job_id in job_ids:
            job = await row(runtime, job_id)
            assert job.status == "pending"
            assert job.submit_attempts == attempt
            failures = await events(runtime, job_id, "provider.submit_failed")
            assert [f.data["attempt"] for f in failures] == list(range(1, attempt + 1))
            delays.append(delay_after(failures[-1], job))
        ceiling = base * 2 ** (attempt - 1)
        for delay in delays:
            assert ceiling / 2 <= delay <= ceiling, (attempt, delays)
        assert len(set(delays)) == len(delays), f"no jitter at attempt {attempt}: {delays}"
        for job_id in job_ids:
            await make_due(runtime, job_id)
        assert await one_pass(submit) == len(job_ids)

    for job_id in job_ids:
        job = await row(runtime, job_id)
        assert job.status == "failed"
        assert job.error is not None
        assert job.error["code"] == "submit_failed"
        assert job.completed_at is not None
        assert job.next_check_at is None or job.webhook_url is not None
        public = await service.client.job(job_id)
        assert public["status"] == "failed"
        assert public["error"]["code"] == "submit_failed"
        assert len(await events(runtime, job_id, "provider.submit_failed")) == attempts
    # Nothing more to do for the worker, and nothing was ever started at the provider.
    await make_due(runtime, job_ids[0])
    assert await one_pass(submit) == 0
    assert (await simulator.stats())["tasks"] == 0


async def test_provider_rejection_fails_at_once(
    start_service: ServiceFactory, simulator: Simulator, runtimes: RuntimeFactory
) -> None:
    service = await api_without_worker(start_service)
    body = {"model": "wan2.5-text-to-video", "input": {"prompt": "[reject] something"}}
    created = await service.client.create_job(body)
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["status"] == "failed"
    assert job["error"]["code"] == "provider_rejected"
    assert "content policy" in job["error"]["message"]

    runtime = await runtimes(service.settings)
    worker = runtime.worker()
    await make_due(runtime, job["id"])
    await worker_pass(worker)
    stored = await row(runtime, job["id"])
    assert stored.status == "failed"
    assert stored.submit_attempts == 1
    assert (await simulator.stats())["tasks"] == 0
    types = [event.type for event in await events(runtime, job["id"])]
    assert types == ["job.created", "provider.rejected", "job.status_changed"]


# ---- reconciliation --------------------------------------------------------------------


async def test_reconcile_completes_job_whose_callback_was_dropped(
    start_service: ServiceFactory, simulator: Simulator, runtimes: RuntimeFactory
) -> None:
    service = await api_without_worker(start_service, reconcile_after_seconds=0.5)
    await simulator.set_faults(drop_callback_rate=1)
    created = await service.client.create_job(IMAGE_JOB)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    assert created.json()["status"] == "queued"

    # The task ends at the provider, and no callback ever comes.
    await eventually(
        lambda: tasks_of(simulator, job_id), lambda tasks: tasks[0]["status"] == "finished"
    )
    runtime = await runtimes(service.settings)
    worker = runtime.worker()
    done = await drive(worker, runtime, job_id, lambda j: j.status == "succeeded", 15)
    assert done.outputs
    assert done.outputs[0]["type"] == "video"
    assert done.progress == 100
    types = [event.type for event in await events(runtime, job_id)]
    assert not any(t.startswith("callback.") for t in types)
    assert "provider.polled" in types
    assert types[-1] == "job.status_changed"
    assert (await simulator.stats())["callback_deliveries"] == {}
    assert len(await tasks_of(simulator, job_id)) == 1


async def test_repeated_poll_failures_back_off(
    start_service: ServiceFactory, simulator: Simulator, runtimes: RuntimeFactory
) -> None:
    base = 10.0
    service = await api_without_worker(
        start_service, retry_base_seconds=base, retry_max_seconds=10_000
    )
    await simulator.set_faults(drop_callback_rate=1)
    created = await service.client.create_job(TEXT_JOB)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]

    await simulator.set_faults(status_error_rate=1)
    runtime = await runtimes(service.settings)
    reconcile = loops_of(runtime, "worker:test")["reconcile"]
    for attempt in (1, 2, 3):
        await make_due(runtime, job_id)
        assert await one_pass(reconcile) == 1
        job = await row(runtime, job_id)
        assert job.status == "queued", "a failed status read changes nothing"
        assert job.poll_attempts == attempt
        assert job.lease_owner is None
        failures = await events(runtime, job_id, "provider.poll_failed")
        assert [f.data["attempt"] for f in failures] == list(range(1, attempt + 1))
        ceiling = base * 2 ** (attempt - 1)
        assert ceiling / 2 <= delay_after(failures[-1], job) <= ceiling
        # Not due again before the backoff is over.
        assert await one_pass(reconcile) == 0

    await simulator.set_faults(status_error_rate=0)
    await make_due(runtime, job_id)
    worker = runtime.worker()
    done = await drive(worker, runtime, job_id, lambda j: j.status == "succeeded", 15)
    assert done.poll_attempts == 0
    assert done.outputs


async def test_expire_fails_job_not_terminal_by_its_deadline(
    start_service: ServiceFactory, simulator: Simulator, runtimes: RuntimeFactory
) -> None:
    deadline = 2.0
    service = await api_without_worker(start_service, job_deadline_seconds=deadline)
    await simulator.set_faults(run_seconds=600, drop_callback_rate=1)
    created = await service.client.create_job(IMAGE_JOB)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]

    runtime = await runtimes(service.settings)
    worker = runtime.worker()
    # Before its deadline the job is checked but left alone.
    first = await row(runtime, job_id)
    assert first.submitted_at is not None
    expires_at = first.submitted_at + timedelta(seconds=deadline)
    await make_due(runtime, job_id)
    await worker_pass(worker)
    if utcnow() < expires_at:
        job = await row(runtime, job_id)
        assert job.status in ("queued", "running")
        assert job.error is None

    done = await drive(worker, runtime, job_id, lambda j: j.status == "failed", 15)
    assert done.error is not None
    assert done.error["code"] == "deadline_exceeded"
    assert done.completed_at is not None
    assert done.completed_at >= expires_at
    public = await service.client.job(job_id)
    assert public["status"] == "failed"
    assert public["error"]["code"] == "deadline_exceeded"
    [task] = await tasks_of(simulator, job_id)
    assert task["status"] == "running", "the provider was still working on it"


# ---- leases ----------------------------------------------------------------------------


async def _pending_jobs(service: Service, simulator: Simulator, count: int) -> list[str]:
    """Jobs whose first submission was refused with 429 and a long Retry-After, made due."""
    await simulator.set_faults(rate_limit_rate=1, retry_after_seconds=60)
    job_ids = []
    for _ in range(count):
        created = await service.client.create_job(TEXT_JOB)
        assert created.status_code == 201, created.text
        assert created.json()["status"] == "pending"
        job_ids.append(created.json()["id"])
    await simulator.set_faults(rate_limit_rate=0)
    async with service.runtime.db.write() as conn:
        await conn.execute(update(Job).where(Job.id.in_(job_ids)).values(next_check_at=utcnow()))
    return job_ids


async def test_crashed_workers_lease_expires_and_another_takes_over(
    start_service: ServiceFactory, simulator: Simulator, runtimes: RuntimeFactory
) -> None:
    service = await api_without_worker(start_service, worker_lease_seconds=5)
    job_ids = await _pending_jobs(service, simulator, 3)

    crashed_runtime = await runtimes(service.settings)
    survivor_runtime = await runtimes(service.settings)
    crashed = loops_of(crashed_runtime, "worker:crashed")["submit"]
    survivor = loops_of(survivor_runtime, "worker:survivor")["submit"]

    await eventually(
        lambda: crashed.claim(crashed.slots), lambda claimed: sorted(claimed) == sorted(job_ids)
    )
    # The crashed worker never gets to handle them (it "died" right after claiming).
    leases = {job_id: (await row(survivor_runtime, job_id)) for job_id in job_ids}
    for job in leases.values():
        assert job.lease_owner == "worker:crashed"
        assert job.lease_expires_at is not None
    lease_ends = max(job.lease_expires_at or utcnow() for job in leases.values())

    taken: list[str] = []
    deadline = time.monotonic() + 20
    while len(taken) < len(job_ids):
        claimed = await survivor.claim(survivor.slots)
        if claimed:
            assert utcnow() > lease_ends, "a live lease was taken over before it expired"
        for job_id in claimed:
            await survivor_runtime.jobs.submit_due(job_id=job_id, lease_owner="worker:survivor")
        taken.extend(claimed)
        assert time.monotonic() < deadline, "the lease was never taken over"
        await asyncio.sleep(0.1)
    assert sorted(taken) == sorted(job_ids)

    for job_id in job_ids:
        job = await row(survivor_runtime, job_id)
        assert job.status == "queued"
        assert job.lease_owner is None
        assert len(await tasks_of(simulator, job_id)) == 1


async def test_two_claimers_never_hold_the_same_job(
    start_service: ServiceFactory, simulator: Simulator, runtimes: RuntimeFactory
) -> None:
    service = await api_without_worker(start_service, worker_batch_size=7)
    job_ids = await _pending_jobs(service, simulator, 20)

    claimers = [
        loops_of(await runtimes(service.settings), f"worker:{name}")["submit"]
        for name in ("a", "b", "c")
    ]
    claimed: list[str] = []
    for _ in range(3):
        batches = await asyncio.gather(*(claimer.claim(claimer.slots) for claimer in claimers))
        for batch in batches:
            claimed.extend(batch)
    assert sorted(claimed) == sorted(job_ids), "each job claimed exactly once"


async def test_run_worker_false_leaves_the_work_to_a_worker(
    start_service: ServiceFactory, simulator: Simulator, runtimes: RuntimeFactory
) -> None:
    service = await api_without_worker(start_service, worker_poll_seconds=0.05)
    [pending_id] = await _pending_jobs(service, simulator, 1)
    created = await service.client.create_job(IMAGE_JOB)
    queued_id = created.json()["id"]
    # The queued job's callback arrives and is stored, but nobody confirms it.
    await eventually(
        lambda: service.client.events(queued_id),
        lambda evs: any(e["type"] == "callback.received" for e in evs),
    )
    await asyncio.sleep(1.0)  # twenty poll intervals of a worker that must not exist
    assert (await service.client.job(pending_id))["status"] == "pending"
    assert (await service.client.job(queued_id))["status"] == "queued"
    runtime = await runtimes(service.settings)
    assert (await row(runtime, pending_id)).submit_attempts == 1

    worker = runtime.worker()
    task = worker.start()
    try:
        for job_id in (pending_id, queued_id):
            done = await service.client.wait_for_status(job_id, {"succeeded", "failed"})
            assert done["status"] == "succeeded"
    finally:
        await worker.stop()
    assert task.done()


async def test_embedded_worker_runs_by_default(
    start_service: ServiceFactory, simulator: Simulator
) -> None:
    service = await start_service()
    assert service.settings.run_worker is True
    [pending_id] = await _pending_jobs(service, simulator, 1)
    done = await service.client.wait_for_status(pending_id, {"succeeded", "failed"})
    assert done["status"] == "succeeded"
