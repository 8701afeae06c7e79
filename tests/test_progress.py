"""Progress moves for whoever watches: reading an in-flight job that has not been checked
for PROGRESS_REFRESH_SECONDS makes the worker ask the provider now."""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime, timedelta

import orjson

from tests.conftest import Receiver, ServiceFactory, Simulator
from tests.support import IMAGE_JOB, LiveServer


async def _watch(service: object, job_id: str) -> list[tuple[str, int]]:
    client = service.client  # type: ignore[attr-defined]
    seen: list[tuple[str, int]] = []
    for _ in range(200):
        job = await client.job(job_id)
        seen.append((job["status"], job["progress"]))
        if job["status"] in ("succeeded", "failed"):
            return seen
        await asyncio.sleep(0.05)
    raise AssertionError(f"job never finished: {seen[-5:]}")


async def test_a_watched_job_reports_progress(
    start_service: ServiceFactory, simulator: Simulator
) -> None:
    await simulator.set_faults(queue_seconds=0.1, run_seconds=3.0)
    service = await start_service(progress_refresh_seconds=0.3)
    job = (await service.client.create_job(IMAGE_JOB)).json()
    seen = await _watch(service, job["id"])
    assert seen[-1] == ("succeeded", 100)
    running = [progress for status, progress in seen if status == "running"]
    assert any(0 < progress < 100 for progress in running), seen
    assert running == sorted(running), "progress never goes back"
    events = await service.client.events(job["id"])
    types = [event["type"] for event in events]
    polls_before_callback = types[: types.index("callback.received")].count("provider.polled")
    assert polls_before_callback >= 2
    # Throttled: no more than one check per refresh period while it ran (about 3 s / 0.3 s).
    assert polls_before_callback <= 15


async def test_refresh_off_means_no_polls_before_the_callback(
    start_service: ServiceFactory, simulator: Simulator
) -> None:
    await simulator.set_faults(queue_seconds=0.1, run_seconds=1.0)
    service = await start_service(progress_refresh_seconds=0)
    job = (await service.client.create_job(IMAGE_JOB)).json()
    seen = await _watch(service, job["id"])
    assert {progress for _, progress in seen[:-1]} == {0}
    types = [event["type"] for event in await service.client.events(job["id"])]
    assert types[: types.index("callback.received")].count("provider.polled") == 0


async def test_job_progress_webhooks_are_throttled(
    start_service: ServiceFactory, simulator: Simulator
) -> None:
    await simulator.set_faults(queue_seconds=0.1, run_seconds=3.0)
    service = await start_service(
        progress_refresh_seconds=0.2, webhook_progress_seconds=1.0, webhook_allow_private=True
    )
    hook = Receiver(failures=0)
    server = await LiveServer().start(hook.app)
    try:
        client = service.client
        await client.http.post(
            "/v1/webhook_endpoints",
            json={"url": f"{server.url}/hook", "event_types": ["job.progress"]},
            headers=client.headers(),
        )
        job = (await client.create_job(IMAGE_JOB)).json()
        await _watch(service, job["id"])
        await asyncio.sleep(0.5)
    finally:
        await server.stop()
    sent = [orjson.loads(body) for _, body in hook.calls]
    assert sent, "no job.progress message"
    assert {message["type"] for message in sent} == {"job.progress"}
    progress = [message["data"]["progress"] for message in sent]
    assert progress == sorted(progress)
    moments = [datetime.fromisoformat(message["timestamp"]) for message in sent]
    assert all(b - a >= timedelta(seconds=1) for a, b in itertools.pairwise(moments))
    polled = {
        event["data"]["progress"]
        for event in await service.client.events(job["id"])
        if event["type"] == "provider.polled" and event["data"]["status"] == "running"
    }
    assert len(polled) > len(sent)  # progress moved more often than it was sent
