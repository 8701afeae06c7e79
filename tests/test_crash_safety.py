"""Crash safety: `kill -9` of a real `poyo-relay serve` while a submission is in flight.

The service runs as a child process (the same command an operator runs) against the
simulator over loopback; the test kills it at a chosen moment, starts it again on the same
port, and reads the outcome from the API, the database and the simulator's task list.

What these tests pin down (and what was observed writing them):

- The job is committed before the provider hears of it, so a crash at any point leaves a
  `pending` job whose lease belongs to the dead process. The lease expires after
  WORKER_LEASE_SECONDS and the restarted process's worker takes the job over.
- Killed after the provider accepted the task but before its answer was recorded: the
  provider's callback names our job, is stored, and once the status endpoint confirms
  the task it is linked to the job. One task, no resubmission. A client retrying its POST
  with the same Idempotency-Key gets the same job (200).
- Killed before the provider acted: the outcome is unknown to us, so the job waits
  UNCERTAIN_SUBMIT_GRACE_SECONDS for a callback that never comes, then is submitted again:
  one task.
- Killed after the provider accepted, and the callback is lost as well: nothing can tell
  us about the first task, so after the grace the job is submitted again. That is the
  documented bound: at most one extra provider task per submission caught by a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.auth.service import create_key
from app.db import Database
from app.jobs.models import Job
from app.jobs.states import ArchiveStatus, JobStatus
from bench.chaos import Child, relay_child
from bench.common import free_port
from tests.conftest import SIMULATOR_KEY, ServiceFactory, Simulator
from tests.support import IMAGE_JOB, TEXT_JOB, eventually, make_settings


class Relay:
    """A `poyo-relay serve` child on a fixed port, restartable after a kill."""

    def __init__(self, child: Child, port: int, key: str) -> None:
        self.child = child
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.key = key
        self.http = httpx.AsyncClient(
            base_url=self.url, timeout=60, headers={"Authorization": f"Bearer {key}"}
        )

    async def start(self) -> None:
        self.child.start()
        await self.child.wait_http(self.url + "/readyz")

    def kill(self) -> None:
        self.child.kill()

    async def job(self, job_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    async def event_types(self, job_id: str) -> list[str]:
        response = await self.http.get(f"/v1/jobs/{job_id}/events")
        assert response.status_code == 200, response.text
        return [event["type"] for event in response.json()["data"]]

    async def wait_terminal(self, job_id: str, seconds: float = 30) -> dict[str, Any]:
        return await eventually(
            lambda: self.job(job_id),
            lambda job: job["status"] in ("succeeded", "failed"),
            seconds=seconds,
            interval=0.2,
        )


RelayFactory = Callable[..., Awaitable[Relay]]


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(make_settings(database_url=database_url))
    yield database
    await database.dispose()


@pytest.fixture
async def relay(
    tmp_path: Path, database_url: str, simulator: Simulator, db: Database
) -> AsyncIterator[RelayFactory]:
    relays: list[Relay] = []

    async def start(**settings: Any) -> Relay:
        port = free_port()
        values: dict[str, Any] = {
            "worker_lease_seconds": 5,
            "worker_poll_seconds": 0.1,
            "reconcile_after_seconds": 1,
            "retry_base_seconds": 0.1,
            "retry_max_seconds": 1,
            # Archiving has its own test below; elsewhere its lease would be in the way.
            "archive_enabled": False,
        }
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
        _, key = await create_key(db, name="tenant-a")
        relay = Relay(child, port, key)
        relays.append(relay)
        await relay.start()
        return relay

    yield start
    for relay in relays:
        relay.kill()
        await relay.http.aclose()


async def stored_job(db: Database, job_id: str) -> Job:
    async with db.read() as session:
        return (await session.execute(select(Job).where(Job.id == job_id))).scalar_one()


async def only_job(db: Database) -> Job:
    async def probe() -> list[Job]:
        async with db.read() as session:
            return list((await session.execute(select(Job))).scalars())

    [job] = await eventually(probe, lambda jobs: len(jobs) == 1)
    return job


async def tasks_of(simulator: Simulator, job_id: str) -> list[dict[str, Any]]:
    return [task for task in await simulator.tasks() if task["job_id"] == job_id]


async def post_until_killed(relay: Relay, body: dict[str, Any], key: str) -> asyncio.Task[Any]:
    return asyncio.create_task(
        relay.http.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
    )


async def assert_cut_off(request: asyncio.Task[Any]) -> None:
    """The client's request died with the server: it never got an answer."""
    with pytest.raises(httpx.TransportError):
        await asyncio.wait_for(request, 10)


async def test_kill_after_provider_accepted_links_the_task_via_its_callback(
    relay: RelayFactory, simulator: Simulator, db: Database
) -> None:
    # The provider starts the task at once but answers late: we die in between.
    # The task ends (and calls back) well after the restart, even on a busy machine.
    await simulator.set_faults(
        slow_after_accept_rate=1, slow_seconds=30, queue_seconds=0.5, run_seconds=8
    )
    service = await relay(uncertain_submit_grace_seconds=60)
    request = await post_until_killed(service, IMAGE_JOB, "crash-after-accept")
    [task] = await eventually(simulator.tasks, lambda tasks: len(tasks) == 1)
    job = await only_job(db)
    assert task["job_id"] == job.id
    assert job.status == "pending", "committed before the provider was called"
    assert job.lease_owner is not None
    assert job.lease_owner.startswith("api:")
    assert job.submit_started_at is not None
    assert job.provider_task_id is None

    service.kill()
    await assert_cut_off(request)
    await simulator.set_faults(slow_after_accept_rate=0)
    await service.start()

    # The client retries with its key: the same job, not a second one.
    retry = await service.http.post(
        "/v1/jobs", json=IMAGE_JOB, headers={"Idempotency-Key": "crash-after-accept"}
    )
    assert retry.status_code == 200, retry.text
    assert retry.json()["id"] == job.id

    done = await service.wait_terminal(job.id)
    assert done["status"] == "succeeded"
    assert done["provider"]["task_id"] == task["task_id"]
    assert len(await tasks_of(simulator, job.id)) == 1
    types = await service.event_types(job.id)
    assert "provider.submitted" not in types, "the provider's answer was never received"
    assert "provider.resubmitting" not in types
    linked = types.index("provider.task_linked")
    assert types.index("callback.received") < types.index("provider.polled") < linked
    assert (await stored_job(db, job.id)).lease_owner is None


async def test_kill_before_the_provider_acted_submits_once_after_the_grace(
    relay: RelayFactory, simulator: Simulator, db: Database
) -> None:
    # The provider sits on the request before doing anything; we die meanwhile, and the
    # provider drops a request whose client went away.
    await simulator.set_faults(slow_rate=1, slow_seconds=3)
    service = await relay(uncertain_submit_grace_seconds=6)
    request = await post_until_killed(service, TEXT_JOB, "crash-before-accept")
    await eventually(
        simulator.stats, lambda stats: stats["faults_injected"].get("submit.slow", 0) == 1
    )
    job = await only_job(db)
    assert job.status == "pending"
    service.kill()
    await assert_cut_off(request)
    await simulator.set_faults(slow_rate=0)
    await service.start()

    done = await service.wait_terminal(job.id)
    assert done["status"] == "succeeded"
    [task] = await tasks_of(simulator, job.id)
    assert done["provider"]["task_id"] == task["task_id"]
    types = await service.event_types(job.id)
    assert types.count("provider.resubmitting") == 1
    assert types.count("provider.submitted") == 1
    assert (await simulator.stats())["tasks"] == 1


async def test_kill_with_the_callback_lost_too_costs_at_most_one_extra_task(
    relay: RelayFactory, simulator: Simulator, db: Database
) -> None:
    await simulator.set_faults(
        slow_after_accept_rate=1, slow_seconds=30, drop_callback_rate=1, run_seconds=0.5
    )
    service = await relay(uncertain_submit_grace_seconds=6)
    request = await post_until_killed(service, IMAGE_JOB, "crash-and-silence")
    [first] = await eventually(simulator.tasks, lambda tasks: len(tasks) == 1)
    job = await only_job(db)
    service.kill()
    await assert_cut_off(request)
    await simulator.set_faults(slow_after_accept_rate=0)
    await service.start()

    done = await service.wait_terminal(job.id)
    assert done["status"] == "succeeded"
    tasks = await tasks_of(simulator, job.id)
    kills = 1
    assert len(tasks) == 1 + kills, "the documented bound: one extra task per crash"
    assert done["provider"]["task_id"] != first["task_id"]
    assert done["provider"]["task_id"] in {task["task_id"] for task in tasks}
    types = await service.event_types(job.id)
    assert types.count("provider.resubmitting") == 1
    # Nothing more happens: the job is final, and no third task appears.
    await asyncio.sleep(1.0)
    assert len(await tasks_of(simulator, job.id)) == 2


async def test_many_kills_lose_nothing(
    relay: RelayFactory, simulator: Simulator, db: Database
) -> None:
    """A dozen clients, three kills: every acknowledged job exists and succeeds, and every
    extra provider task is one a crash left in doubt (resubmitted after the grace)."""
    await simulator.set_faults(slow_after_accept_rate=0.5, slow_seconds=1.5, run_seconds=3)
    service = await relay(uncertain_submit_grace_seconds=8)
    bodies = [{**TEXT_JOB, "input": {"prompt": f"crash {i}"}} for i in range(12)]
    acked: dict[str, str] = {}

    async def submit(index: int) -> None:
        key = f"many-kills-{index}"
        for _ in range(200):
            with contextlib.suppress(httpx.TransportError):
                response = await service.http.post(
                    "/v1/jobs", json=bodies[index], headers={"Idempotency-Key": key}
                )
                if response.status_code in (200, 201):
                    acked.setdefault(key, response.json()["id"])
                    assert acked[key] == response.json()["id"]
                    return
            await asyncio.sleep(0.3)

    clients = asyncio.gather(*(submit(i) for i in range(len(bodies))))
    for _ in range(3):
        await asyncio.sleep(0.7)
        service.kill()
        await service.start()
    await asyncio.wait_for(clients, 60)
    assert len(acked) == len(bodies)
    assert len(set(acked.values())) == len(bodies)
    async with db.read() as session:
        assert len((await session.execute(select(Job.id))).all()) == len(bodies)

    finals = [await service.wait_terminal(job_id, seconds=60) for job_id in acked.values()]
    tasks = await simulator.tasks()
    for done in finals:
        job_id = done["id"]
        assert done["status"] == "succeeded"
        assert done["outputs"]
        mine = [task["task_id"] for task in tasks if task["job_id"] == job_id]
        assert done["provider"]["task_id"] in mine
        resubmissions = (await service.event_types(job_id)).count("provider.resubmitting")
        assert len(mine) <= 1 + resubmissions, (job_id, mine)


# ---- the same windows without a crash (in-process, both databases) -----------------------


async def test_unknown_outcome_is_linked_by_the_callback_not_resubmitted(
    start_service: ServiceFactory, simulator: Simulator
) -> None:
    """The provider accepted, the answer broke off: the callback links the task."""
    service = await start_service(uncertain_submit_grace_seconds=60)
    await simulator.set_faults(reset_after_accept_rate=1)
    created = await service.client.create_job(IMAGE_JOB)
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["status"] == "pending"
    await simulator.set_faults(reset_after_accept_rate=0)

    done = await service.client.wait_for_status(job["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded"
    [task] = await tasks_of(simulator, job["id"])
    assert done["provider"]["task_id"] == task["task_id"]
    events = await service.client.events(job["id"])
    types = [event["type"] for event in events]
    [failure] = [event for event in events if event["type"] == "provider.submit_failed"]
    assert failure["data"]["outcome_unknown"] is True
    assert "provider.resubmitting" not in types
    assert types.index("callback.received") < types.index("provider.task_linked")


async def test_a_provider_answer_that_outlives_the_lease_is_still_recorded(
    start_service: ServiceFactory, simulator: Simulator
) -> None:
    """The API's first attempt takes longer than WORKER_LEASE_SECONDS; the worker takes the
    lapsed lease (and, seeing an attempt in flight, waits). The provider's answer, when it
    comes, names the task that was started: it must be recorded, not thrown away."""
    service = await start_service(
        worker_lease_seconds=5, uncertain_submit_grace_seconds=9, reconcile_after_seconds=1
    )
    await simulator.set_faults(slow_after_accept_rate=1, slow_seconds=7, drop_callback_rate=1)
    request = asyncio.create_task(service.client.create_job(TEXT_JOB))
    [task] = await eventually(simulator.tasks, lambda tasks: len(tasks) == 1)
    await simulator.set_faults(slow_after_accept_rate=0)
    created = await asyncio.wait_for(request, 30)
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["provider"]["task_id"] == task["task_id"], "the accepted task was not recorded"

    done = await service.client.wait_for_status(job["id"], {"succeeded", "failed"}, seconds=30)
    assert done["status"] == "succeeded"
    assert len(await tasks_of(simulator, job["id"])) == 1, "submitted twice"
    assert done["provider"]["task_id"] == task["task_id"]


async def test_a_submit_answer_that_comes_after_a_resubmission_changes_nothing(
    start_service: ServiceFactory, simulator: Simulator
) -> None:
    """The first answer takes longer than the lease and the grace, so the job was submitted
    again and the second task recorded. The first answer, when it finally comes, is kept as
    an event; it neither replaces the recorded task nor moves the job."""
    service = await start_service(worker_lease_seconds=5, uncertain_submit_grace_seconds=1)
    await simulator.set_faults(slow_after_accept_rate=1, slow_seconds=9, drop_callback_rate=1)
    request = asyncio.create_task(service.client.create_job(TEXT_JOB))
    [first] = await eventually(simulator.tasks, lambda tasks: len(tasks) == 1)
    await simulator.set_faults(slow_after_accept_rate=0, drop_callback_rate=0)
    job_id = first["job_id"]
    tasks = await eventually(lambda: tasks_of(simulator, job_id), lambda tasks: len(tasks) == 2)
    second = next(task for task in tasks if task["task_id"] != first["task_id"])
    created = await asyncio.wait_for(request, 30)
    assert created.status_code == 201, created.text

    done = await service.client.wait_for_status(job_id, {"succeeded", "failed"})
    assert done["status"] == "succeeded"
    assert done["provider"]["task_id"] == second["task_id"]
    events = await service.client.events(job_id)
    [recorded] = [event for event in events if event["type"] == "provider.submitted"]
    assert recorded["data"]["task_id"] == second["task_id"]
    [late] = [event for event in events if event["type"] == "provider.duplicate_task"]
    assert late["data"]["task_id"] == first["task_id"]
    changes = [event["data"] for event in events if event["type"] == "job.status_changed"]
    assert [change["from"] for change in changes].count("pending") == 1
    assert changes[-1]["to"] == "succeeded"


async def test_a_late_submit_answer_saying_finished_is_confirmed_before_success(
    start_service: ServiceFactory, simulator: Simulator
) -> None:
    """The provider answers the submission only after the task has already ended (its
    answer carries the task's current status). The job must still end with its outputs,
    confirmed by the status endpoint, as docs/API.md requires of every terminal status."""
    service = await start_service()
    await simulator.set_faults(
        slow_after_accept_rate=1, slow_seconds=1, run_seconds=0.1, drop_callback_rate=1
    )
    created = await service.client.create_job(IMAGE_JOB)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    done = await service.client.wait_for_status(job_id, {"succeeded", "failed"})
    assert done["status"] == "succeeded"
    assert done["outputs"], "succeeded without outputs"
    types = [event["type"] for event in await service.client.events(job_id)]
    assert "provider.polled" in types
    assert types.index("provider.polled") < len(types) - 1


async def test_kill_while_archiving_leaves_no_half_written_file(
    relay: RelayFactory, simulator: Simulator, db: Database, tmp_path: Path
) -> None:
    """Killed mid-download: the partial download sits in the scratch directory only, the
    job stays `succeeded` with its archive pending, and the restarted service archives
    the whole file once the dead process's lease expires."""
    root = tmp_path / "outputs"
    archiving = {"archive_enabled": True, "archive_allow_private": True, "archive_dir": root}
    # The file trickles in: 4 KiB every 0.4 s, so the kill lands mid-body.
    await simulator.set_faults(file_unsized_rate=1, file_chunk_delay_seconds=0.4)
    server = await relay(**archiving)
    created = await server.http.post("/v1/jobs", json=IMAGE_JOB)
    job_id = created.json()["id"]
    scratch = root / ".incoming"

    def partial() -> list[Path]:
        return (
            [p for p in scratch.glob("*.part") if p.stat().st_size > 0] if scratch.exists() else []
        )

    async def file_requests() -> int:
        return int((await simulator.stats())["faults_injected"].get("file.unsized", 0))

    await eventually(file_requests, bool, seconds=30)
    await asyncio.sleep(1)  # a few pieces in, several to go
    server.kill()
    stored = await stored_job(db, job_id)
    assert stored.status is JobStatus.SUCCEEDED
    assert stored.archive_status is ArchiveStatus.PENDING
    assert [p for p in root.rglob("*") if p.is_file() and ".incoming" not in p.parts] == []
    # The partial download is left for `prune` to sweep; never under an output's key.
    assert list(scratch.glob("*.part"))

    await simulator.set_faults(file_unsized_rate=0, file_chunk_delay_seconds=0)
    await server.start()
    job = await eventually(
        lambda: server.job(job_id),
        lambda job: job["archive"]["status"] == "archived",
        seconds=40,
        interval=0.2,
    )
    [output] = job["outputs"]
    original = (await simulator.http.get(output["provider_url"])).content
    served = await server.http.get(f"/v1/jobs/{job_id}/outputs/0")
    assert served.content == original
    assert hashlib.sha256(original).hexdigest() == output["sha256"]
    assert (root / job_id / "0").read_bytes() == original
