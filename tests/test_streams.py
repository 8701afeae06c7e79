"""Results without polling: long-poll waits and server-sent event streams, on both
databases, over real HTTP; across API processes on PostgreSQL (LISTEN/NOTIFY)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.streams.sse import prefer_wait
from tests.conftest import Service, ServiceFactory, Simulator
from tests.sse import Message, messages, open_stream
from tests.stand_in import ProviderStandIn
from tests.support import IMAGE_JOB, TEXT_JOB, eventually
from tests.test_callbacks import LEGIT, queued_job, send, view, wrap

TERMINAL = {"succeeded", "failed"}


async def finish(relay: Service, provider: ProviderStandIn, job_id: str, task_id: str) -> float:
    """Let the provider finish the task and send its callback; when it was answered."""
    provider.set_task(task_id, "finished", files=LEGIT)
    response = await send(relay, job_id, wrap(view(task_id, "finished", LEGIT)))
    assert response.status_code == 200, response.text
    return time.monotonic()


async def timed_get(http: httpx.AsyncClient, path: str, key: str, **kw: Any) -> tuple[Any, float]:
    response = await http.get(path, headers={"Authorization": f"Bearer {key}"}, **kw)
    return response, time.monotonic()


# ---- long-poll ---------------------------------------------------------------------------


async def test_a_waiter_answers_within_a_second_of_the_callback(
    relay: Service, provider: ProviderStandIn
) -> None:
    job, task_id = await queued_job(relay)
    http, key = relay.client.http, relay.client.key
    waiter = asyncio.create_task(
        timed_get(http, f"/v1/jobs/{job['id']}", key, params={"wait": 30}, timeout=40)
    )
    await asyncio.sleep(0.3)
    assert not waiter.done(), "a job that has not ended must not be answered yet"
    called_back = await finish(relay, provider, job["id"], task_id)
    response, answered = await waiter
    assert response.status_code == 200
    assert response.json()["status"] == "succeeded"
    assert response.json()["outputs"][0]["url"] == LEGIT[0]["file_url"]
    assert answered - called_back < 1.0


async def test_wait_answers_with_the_current_state_after_n_seconds(
    relay: Service, provider: ProviderStandIn
) -> None:
    job, _ = await queued_job(relay)
    started = time.monotonic()
    response = await relay.client.get(f"/v1/jobs/{job['id']}", wait=1.5)
    waited = time.monotonic() - started
    assert response.status_code == 200
    assert response.json()["status"] == "queued"
    assert 1.5 <= waited < 3.0
    assert "Preference-Applied" not in response.headers

    started = time.monotonic()
    response = await relay.client.http.get(
        f"/v1/jobs/{job['id']}", headers=relay.client.headers({"Prefer": "respond-async, wait=1"})
    )
    assert response.status_code == 200
    assert 1.0 <= time.monotonic() - started < 2.5
    assert response.headers["Preference-Applied"] == "wait=1"


async def test_waiting_requests_and_streams_show_in_the_metrics(
    relay: Service, provider: ProviderStandIn
) -> None:
    job, task_id = await queued_job(relay)
    http, key = relay.client.http, relay.client.key
    waiter = asyncio.create_task(
        timed_get(http, f"/v1/jobs/{job['id']}", key, params={"wait": 30}, timeout=40)
    )
    async with open_stream(http, f"/v1/jobs/{job['id']}/stream", key) as stream:
        await eventually(
            lambda: http.get("/metrics"),
            lambda r: (
                "poyo_relay_waiters 1.0" in r.text
                and 'poyo_relay_open_streams{scope="job"} 1.0' in r.text
            ),
        )
        await finish(relay, provider, job["id"], task_id)
        seen = [message async for message in messages(stream)]
    await waiter
    assert seen[-1].event == "end"
    text = (await http.get("/metrics")).text
    assert "poyo_relay_waiters 0.0" in text
    assert 'poyo_relay_open_streams{scope="job"} 0.0' in text


async def test_a_short_job_is_created_and_returned_finished_in_one_request(
    service: Service,
) -> None:
    response = await service.client.http.post(
        "/v1/jobs", json=IMAGE_JOB, params={"wait": 20}, headers=service.client.headers()
    )
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["status"] == "succeeded"
    assert job["outputs"]
    # Prefer asks the same; more than 60 s is 60 s.
    response = await service.client.create_job(TEXT_JOB, Prefer="wait=600")
    assert response.status_code == 201
    assert response.json()["status"] == "succeeded"
    assert response.headers["Preference-Applied"] == "wait=60"


@pytest.mark.parametrize("wait", ["0", "-1", "61", "soon", "nan"])
async def test_an_invalid_wait_is_a_422_naming_it(service: Service, wait: str) -> None:
    job = (await service.client.create_job(IMAGE_JOB)).json()
    for response in (
        await service.client.get(f"/v1/jobs/{job['id']}", wait=wait),
        await service.client.http.post(
            "/v1/jobs", json=IMAGE_JOB, params={"wait": wait}, headers=service.client.headers()
        ),
    ):
        assert response.status_code == 422, response.text
        assert response.json()["error"]["details"][0]["loc"] == ["query", "wait"]


def test_prefer_wait_is_read_as_rfc_7240_says() -> None:
    assert prefer_wait("wait=5") == 5
    assert prefer_wait("respond-async, wait=10") == 10
    assert prefer_wait('wait="2.5"') == 2.5
    assert prefer_wait("Wait = 7") == 7
    assert prefer_wait("wait=3600") == 60
    assert prefer_wait("wait=0") is None
    assert prefer_wait("wait=soon") is None
    assert prefer_wait("handling=lenient") is None
    assert prefer_wait("nowait=5") is None
    assert prefer_wait(None) is None


# ---- streams -----------------------------------------------------------------------------


async def _read_until(
    stream: httpx.Response | AsyncIterator[Message], count: int | None = None, end: bool = True
) -> list[Message]:
    """Messages until `count` of them, or the end; from a response, or go on with an
    iterator of its messages."""
    seen: list[Message] = []
    source = messages(stream) if isinstance(stream, httpx.Response) else stream
    async for message in source:
        seen.append(message)
        if (count is not None and len(seen) == count) or (end and message.event == "end"):
            break
    return seen


async def test_a_job_stream_resumes_with_last_event_id_without_gap_or_duplicate(
    start_service: ServiceFactory, simulator: Simulator
) -> None:
    await simulator.set_faults(queue_seconds=0.2, run_seconds=2.0)
    service = await start_service(progress_refresh_seconds=0.2)
    job = (await service.client.create_job(IMAGE_JOB)).json()
    http, key, path = service.client.http, service.client.key, f"/v1/jobs/{job['id']}/stream"
    async with open_stream(http, path, key) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        first = await _read_until(stream, count=2)
    await asyncio.sleep(0.6)  # changes happen while no one listens
    last_id = first[-1].id
    assert last_id is not None
    async with open_stream(http, path, key, last_event_id=last_id) as stream:
        rest = await _read_until(stream)
    assert rest[-1].event == "end"
    streamed = list(first + rest[:-1])
    assert all(m.data["job"]["id"] == job["id"] for m in streamed)
    assert streamed[-1].data["job"]["status"] == "succeeded"
    # The status poll and the status change it caused are written together: both come,
    # the change last, before the end.
    assert [m.data["event"]["type"] for m in streamed[-2:]] == [
        "provider.polled",
        "job.status_changed",
    ]
    assert streamed[-1].data["event"]["data"]["to"] == "succeeded"
    ids = [m.id or 0 for m in streamed]
    trail = {int(e["id"].removeprefix("evt_")): e for e in await service.client.events(job["id"])}
    assert ids == [i for i in trail if ids[0] <= i <= ids[-1]], "no gap, no duplicate"
    assert [m.data["event"] for m in streamed] == [trail[i] for i in ids]
    assert len(rest) > 2, "the job changed while the client was away: those come first"
    progress = [m.data["job"]["progress"] for m in streamed]
    assert progress == sorted(progress)


async def test_the_stream_of_an_ended_job_sends_it_once_and_ends(service: Service) -> None:
    job = (await service.client.create_job(IMAGE_JOB)).json()
    await service.client.wait_for_status(job["id"], TERMINAL)
    path = f"/v1/jobs/{job['id']}/stream"
    async with open_stream(service.client.http, path, service.client.key) as s:
        seen = [message async for message in messages(s)]
    assert [m.event for m in seen] == [None, "end"]
    assert seen[0].data["job"]["status"] == "succeeded"
    events = await service.client.events(job["id"])
    assert seen[0].data["event"] == events[-1]
    # Resuming from its last id: nothing more happened, so only the end.
    async with open_stream(service.client.http, path, service.client.key, seen[0].id) as s:
        assert [m.event for m in [message async for message in messages(s)]] == ["end"]


async def test_streams_keep_tenancy(service: Service) -> None:
    job = (await service.client.create_job(IMAGE_JOB)).json()
    other = await service.new_client("other")
    http = service.client.http
    async with open_stream(http, f"/v1/jobs/{job['id']}/stream", other.key) as stream:
        assert stream.status_code == 404
        await stream.aread()
        assert stream.json()["error"]["type"] == "not_found"
    async with open_stream(http, "/v1/stream", "not-a-key") as stream:
        assert stream.status_code == 401
    async with open_stream(http, "/v1/jobs/job_nope/stream", service.client.key) as stream:
        assert stream.status_code == 404


async def test_the_all_jobs_stream_filters_and_resumes(
    start_service: ServiceFactory, simulator: Simulator
) -> None:
    await simulator.set_faults(queue_seconds=0.1, run_seconds=0.5)
    service = await start_service()
    other = await service.new_client("other")
    admin = await service.new_client("root", admin=True)
    http, key = service.client.http, service.client.key
    model = IMAGE_JOB["model"]
    async with (
        open_stream(http, f"/v1/stream?model={model}", key) as mine,
        open_stream(http, "/v1/stream", admin.key) as everything,
    ):
        await asyncio.sleep(0.2)
        own = (await service.client.create_job(IMAGE_JOB)).json()
        await service.client.create_job(TEXT_JOB)  # another model
        theirs = (await other.create_job(IMAGE_JOB)).json()
        seen: list[Message] = []
        async with asyncio.timeout(20):
            async for message in messages(mine):
                seen.append(message)
                if message.data["job"]["status"] == "succeeded":
                    break
        admin_jobs: set[str] = set()
        async with asyncio.timeout(20):
            async for message in messages(everything):
                admin_jobs.add(message.data["job"]["id"])
                if theirs["id"] in admin_jobs and own["id"] in admin_jobs:
                    break
    assert {m.data["job"]["id"] for m in seen} == {own["id"]}
    assert {m.data["job"]["model"] for m in seen} == {model}
    assert {own["id"], theirs["id"]} <= admin_jobs
    ids = [m.id or 0 for m in seen]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    # Resuming after the first message replays the rest, then goes on live.
    assert ids[0] is not None
    async with open_stream(http, f"/v1/stream?model={model}", key, ids[0]) as again:
        replayed = await _read_until(again, count=len(seen) - 1, end=False)
    assert [m.id for m in replayed] == ids[1:]


async def test_shutting_down_ends_streams_and_answers_waiters(relay: Service) -> None:
    job, _ = await queued_job(relay)
    http, key = relay.client.http, relay.client.key
    waiter = asyncio.create_task(timed_get(http, f"/v1/jobs/{job['id']}", key, params={"wait": 30}))
    async with open_stream(http, f"/v1/jobs/{job['id']}/stream", key) as stream:
        received = messages(stream)
        first = await _read_until(received, count=1)
        async with asyncio.timeout(10):
            while relay.runtime.feed.subscribers < 2:  # the waiter is waiting too
                await asyncio.sleep(0.01)
        started = time.monotonic()
        relay.runtime.feed.request_close()
        rest = [message async for message in received]
    response, _ = await waiter
    assert time.monotonic() - started < 2
    assert first[0].data["job"]["status"] == "queued"
    assert rest == []
    assert response.json()["status"] == "queued"
    refused = await relay.client.get(f"/v1/jobs/{job['id']}", wait=5)
    assert refused.status_code == 503


async def test_stream_parameters_are_checked(service: Service) -> None:
    http, key = service.client.http, service.client.key
    for path in ("/v1/stream?status=done", "/v1/stream?last_event_id=-1"):
        async with open_stream(http, path, key) as stream:
            assert stream.status_code == 422
            await stream.aread()
            assert stream.json()["error"]["type"] == "invalid_request"
    # A Last-Event-ID we never sent starts the stream afresh (as a browser's would).
    job = (await service.client.create_job(IMAGE_JOB)).json()
    await service.client.wait_for_status(job["id"], TERMINAL)
    path = f"/v1/jobs/{job['id']}/stream"
    async with http.stream(
        "GET", path, headers=service.client.headers({"Last-Event-ID": "evt_x"})
    ) as stream:
        seen = [message async for message in messages(stream)]
    assert [m.event for m in seen] == [None, "end"]
