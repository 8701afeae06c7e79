"""`GET /v1/jobs` (newest first, filters, limits, cursor pagination) and a job's events.

Jobs are created through the API against a stand-in provider that answers according to
a marker in the prompt, so a few dozen jobs land in every status; expectations are
computed from what the API answered at creation, never written down in advance.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from starlette.responses import Response

from app.jobs.states import JobStatus, can_transition
from tests.conftest import Service, ServiceFactory, Simulator
from tests.stand_in import Call, ProviderStandIn, poyo_error
from tests.support import IMAGE_JOB, TEXT_JOB, eventually

STATUSES = ["pending", "queued", "running", "succeeded", "failed"]
DOCUMENTED_EVENTS = {
    "job.created",
    "provider.submitted",
    "callback.received",
    "callback.duplicate",
    "provider.polled",
    "job.status_changed",
}


@pytest.fixture
def provider(shared_provider: ProviderStandIn) -> Iterator[ProviderStandIn]:
    stand_in = shared_provider
    stand_in.reset()

    async def by_prompt(call: Call) -> Response:
        prompt = call.json()["input"]["prompt"]
        if "[reject]" in prompt:
            return poyo_error(400, "prompt rejected by content policy")
        if "[garbage]" in prompt:  # an unreadable answer: the job stays pending
            return Response(b"<html>502</html>", 200, media_type="text/html")
        if "[running]" in prompt:
            return stand_in.accept(call, status="running")
        return stand_in.accept(call)

    stand_in.submit_hook = by_prompt
    yield stand_in
    stand_in.release.set()


@pytest.fixture
async def relay(start_service: ServiceFactory, provider: ProviderStandIn) -> Service:
    return await start_service(poyo_base_url=provider.url, poyo_api_key=provider.api_key)


MARKERS = ["", "[reject]", "[running]", "", "[garbage]", ""]


async def create_jobs(relay: Service, count: int, offset: int = 0) -> list[dict[str, Any]]:
    """`count` jobs created at once, alternating models and provider outcomes."""

    def body(n: int) -> dict[str, Any]:
        template = IMAGE_JOB if n % 2 == 0 else TEXT_JOB
        return {
            "model": template["model"],
            "input": {**template["input"], "prompt": f"job {n} {MARKERS[n % len(MARKERS)]}"},
            "metadata": {"n": str(n)},
        }

    responses = await asyncio.gather(
        *(relay.client.create_job(body(n)) for n in range(offset, offset + count))
    )
    for response in responses:
        assert response.status_code == 201, response.text
    return [response.json() for response in responses]


async def finish(relay: Service, provider: ProviderStandIn, job: dict[str, Any]) -> dict[str, Any]:
    """Drive one queued job to succeeded the real way: provider finishes, calls back."""
    task_id = job["provider"]["task_id"]
    files = [{"file_url": "https://cdn.example.com/out.mp4", "file_type": "video"}]
    provider.set_task(task_id, "finished", files=files)
    url = relay.runtime.credentials.url(job["id"])
    answer = await relay.client.http.post(url, json={"code": 200, "data": provider.tasks[task_id]})
    assert answer.status_code == 200, answer.text
    done = await relay.client.wait_for_status(job["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded"
    return done


async def list_ids(relay: Service, **params: Any) -> list[str]:
    response = await relay.client.get("/v1/jobs", limit=100, **params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list"
    assert body["next_cursor"] is None, "fewer than 100 jobs fit one page"
    return [job["id"] for job in body["data"]]


def newest_first(jobs: list[dict[str, Any]]) -> list[str]:
    """Newest first; jobs created in the same millisecond in a stable (id) order."""
    ordered = sorted(jobs, key=lambda job: (job["created_at"], job["id"]), reverse=True)
    return [job["id"] for job in ordered]


def created_in(
    jobs: list[dict[str, Any]], after: str | None = None, before: str | None = None
) -> list[dict[str, Any]]:
    """The jobs created at or after `after` and strictly before `before` (API timestamps)."""
    return [
        job
        for job in jobs
        if (after is None or job["created_at"] >= after)
        and (before is None or job["created_at"] < before)
    ]


def iso(value: str, tz: timezone = UTC) -> str:
    moment = datetime.fromisoformat(value.removesuffix("Z") + "+00:00")
    return moment.astimezone(tz).isoformat()


async def assert_422(relay: Service, path: str, **params: Any) -> None:
    response = await relay.client.get(path, **params)
    assert response.status_code == 422, (params, response.text)
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["type"] == "invalid_request"
    assert body["error"]["message"]


# ---- listing and filters ----------------------------------------------------------------


async def test_list_is_newest_first_and_filters_work(
    relay: Service, provider: ProviderStandIn
) -> None:
    early = await create_jobs(relay, 12)
    late = await create_jobs(relay, 12, offset=12)
    last_queued = [job for job in late if job["status"] == "queued"][-1]
    succeeded = await finish(relay, provider, last_queued)
    jobs = [succeeded if job["id"] == succeeded["id"] else job for job in early + late]
    assert {job["status"] for job in jobs} == set(STATUSES), "every status is represented"

    everything = (await relay.client.get("/v1/jobs", limit=100)).json()
    assert [job["id"] for job in everything["data"]] == newest_first(jobs)
    stamps = [job["created_at"] for job in everything["data"]]
    assert stamps == sorted(stamps, reverse=True)
    # Listed jobs are the same objects GET /v1/jobs/{id} returns.
    for listed in (everything["data"][0], everything["data"][-1]):
        assert listed == await relay.client.job(listed["id"])

    for status in STATUSES:
        expected = newest_first([job for job in jobs if job["status"] == status])
        assert await list_ids(relay, status=status) == expected, status
    for model in ("wan2.5-image-to-video", "wan2.5-text-to-video"):
        expected = newest_first([job for job in jobs if job["model"] == model])
        assert await list_ids(relay, model=model) == expected, model
    expected = newest_first(
        [j for j in jobs if j["status"] == "queued" and j["model"] == "wan2.5-text-to-video"]
    )
    assert await list_ids(relay, status="queued", model="wan2.5-text-to-video") == expected
    assert await list_ids(relay, model="wan2.5-unknown") == []

    # created_after is inclusive and created_before exclusive, at the boundary job.
    boundary = min(job["created_at"] for job in late)
    after, before = created_in(jobs, after=boundary), created_in(jobs, before=boundary)
    assert {job["id"] for job in late} <= {job["id"] for job in after}
    assert {job["id"] for job in before} <= {job["id"] for job in early}
    assert await list_ids(relay, created_after=iso(boundary)) == newest_first(after)
    assert await list_ids(relay, created_before=iso(boundary)) == newest_first(before)
    assert await list_ids(relay, created_after=boundary) == newest_first(after)
    # The same instant written in another time zone means the same thing.
    plus_two = timezone(timedelta(hours=2))
    assert await list_ids(relay, created_after=iso(boundary, plus_two)) == newest_first(after)
    stamps = sorted({job["created_at"] for job in jobs})
    low, high = stamps[len(stamps) // 4], stamps[3 * len(stamps) // 4]
    window = await list_ids(relay, created_after=iso(low), created_before=iso(high))
    assert window == newest_first(created_in(jobs, after=low, before=high))
    assert 0 < len(window) < len(jobs)
    model = "wan2.5-image-to-video"
    assert await list_ids(relay, created_before=iso(boundary), model=model) == newest_first(
        [job for job in before if job["model"] == model]
    )
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert await list_ids(relay, created_after=future) == []

    await assert_422(relay, "/v1/jobs", status="done")
    await assert_422(relay, "/v1/jobs", status="QUEUED")
    await assert_422(relay, "/v1/jobs", created_after="yesterday")
    await assert_422(relay, "/v1/jobs", created_before="2025-13-45T00:00:00Z")


async def test_extreme_time_bounds_are_answered_not_crashed(relay: Service) -> None:
    jobs = await create_jobs(relay, 2)
    everything = newest_first(jobs)
    for params, expected in (
        ({"created_before": "9999-12-31T23:59:59.999999Z"}, everything),
        ({"created_after": "9999-12-31T23:59:59.999999+00:00"}, []),
        ({"created_after": "0001-01-01T00:00:00Z"}, everything),
        ({"created_before": "0001-01-01T00:00:00+14:00"}, []),
        ({"created_after": "1969-12-31T23:59:59Z"}, everything),
    ):
        response = await relay.client.get("/v1/jobs", **params)
        assert response.status_code == 200, (params, response.text)
        assert [job["id"] for job in response.json()["data"]] == expected, params


async def test_limit_bounds_and_default(relay: Service) -> None:
    await create_jobs(relay, 23)
    default = (await relay.client.get("/v1/jobs")).json()
    assert len(default["data"]) == 20
    assert default["next_cursor"] is not None
    one = (await relay.client.get("/v1/jobs", limit=1)).json()
    assert [job["id"] for job in one["data"]] == [default["data"][0]["id"]]
    hundred = (await relay.client.get("/v1/jobs", limit=100)).json()
    assert len(hundred["data"]) == 23
    assert hundred["next_cursor"] is None
    exact = (await relay.client.get("/v1/jobs", limit=23)).json()
    assert len(exact["data"]) == 23
    if exact["next_cursor"] is not None:  # a cursor to an empty page is allowed, no more
        rest = (await relay.client.get("/v1/jobs", cursor=exact["next_cursor"])).json()
        assert rest["data"] == []
    for bad in (0, 101, -1, "ten", 1.5):
        await assert_422(relay, "/v1/jobs", limit=bad)


async def walk(relay: Service, **params: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor = None
    while True:
        query = dict(params) if cursor is None else {**params, "cursor": cursor}
        response = await relay.client.get("/v1/jobs", **query)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([job["id"] for job in body["data"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100, "pagination does not end"


async def test_cursor_pagination_visits_every_job_once(relay: Service) -> None:
    jobs = await create_jobs(relay, 30)
    pages = await walk(relay, limit=7)
    assert [len(page) for page in pages[:-1]] == [7] * (len(pages) - 1)
    seen = [job_id for page in pages for job_id in page]
    assert seen == newest_first(jobs)
    assert len(set(seen)) == len(seen) == 30

    queued = newest_first([job for job in jobs if job["status"] == "queued"])
    pages = await walk(relay, limit=2, status="queued")
    assert [job_id for page in pages for job_id in page] == queued

    image = [job for job in jobs if job["model"] == "wan2.5-image-to-video"]
    stamps = sorted(job["created_at"] for job in jobs)
    boundary = stamps[len(stamps) // 3]
    pages = await walk(relay, limit=3, model="wan2.5-image-to-video", created_after=iso(boundary))
    assert [job_id for page in pages for job_id in page] == newest_first(
        created_in(image, after=boundary)
    )


async def test_pagination_is_stable_while_jobs_are_created(relay: Service) -> None:
    jobs = await create_jobs(relay, 15)
    first = (await relay.client.get("/v1/jobs", limit=5)).json()
    newcomers = await create_jobs(relay, 4, offset=100)
    seen = [job["id"] for job in first["data"]]
    cursor = first["next_cursor"]
    while cursor is not None:
        page = (await relay.client.get("/v1/jobs", limit=5, cursor=cursor)).json()
        seen += [job["id"] for job in page["data"]]
        cursor = page["next_cursor"]
    # New jobs are newer than the cursor: they belong on a fresh first page, not here.
    assert seen == newest_first(jobs)
    fresh = await list_ids(relay)
    assert fresh == newest_first(jobs + newcomers)


async def test_invalid_cursor_is_422(relay: Service) -> None:
    await create_jobs(relay, 3)

    def b64(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()

    for cursor in (
        "garbage!!",
        "",
        "%%%",
        b64("job_123"),
        b64("job_01JCZ3Q9M4B8X2V7K5N0R6T1YW"),  # upper case is not an id we issue
        b64("42"),
        b64("' OR 1=1 --"),
        "A" * 200,
    ):
        await assert_422(relay, "/v1/jobs", cursor=cursor)


async def test_tenants_only_see_their_own_jobs(relay: Service) -> None:
    mine = await create_jobs(relay, 3)
    other = await relay.new_client("tenant-b")
    theirs = (await other.create_job(TEXT_JOB)).json()
    assert await list_ids(relay) == newest_first(mine)
    listed = (await other.get("/v1/jobs")).json()
    assert [job["id"] for job in listed["data"]] == [theirs["id"]]
    assert (await other.get(f"/v1/jobs/{mine[0]['id']}")).status_code == 404
    assert (await other.get(f"/v1/jobs/{mine[0]['id']}/events")).status_code == 404


# ---- events ---------------------------------------------------------------------------------


async def test_events_are_the_audit_trail_oldest_first(
    service: Service, simulator: Simulator
) -> None:
    await simulator.set_faults(duplicate_callback_rate=1.0)
    job = (await service.client.create_job(IMAGE_JOB)).json()
    await service.client.wait_for_status(job["id"], {"succeeded", "failed"})
    # The duplicate may land after the job is done: wait until both copies are recorded.
    events = await eventually(
        lambda: service.client.events(job["id"]),
        lambda evs: any(e["type"] == "callback.duplicate" for e in evs),
    )
    body = (await service.client.get(f"/v1/jobs/{job['id']}/events")).json()
    assert body["object"] == "list"

    ids = [int(event["id"].removeprefix("evt_")) for event in events]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    stamps = [event["created_at"] for event in events]
    assert all(stamp.endswith("Z") for stamp in stamps)
    assert stamps == sorted(stamps)
    for event in events:
        assert set(event) == {"id", "type", "created_at", "data"}
        assert isinstance(event["data"], dict)

    types = [event["type"] for event in events]
    assert set(types) <= DOCUMENTED_EVENTS, types
    assert types[0] == "job.created"
    assert types[1] == "provider.submitted"
    assert types.count("callback.received") == 1
    assert types.count("callback.duplicate") >= 1
    assert types.index("callback.received") < types.index("provider.polled")

    # The status changes form one forward walk from pending to succeeded.
    changes = [e["data"] for e in events if e["type"] == "job.status_changed"]
    assert changes[0]["from"] == "pending"
    assert changes[-1]["to"] == "succeeded"
    for before, after in itertools.pairwise(changes):
        assert before["to"] == after["from"]
    for change in changes:
        assert can_transition(JobStatus(change["from"]), JobStatus(change["to"]))

    # Paging through the trail gives the same events in the same order.
    paged: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2} if cursor is None else {"limit": 2, "cursor": cursor}
        page = (await service.client.get(f"/v1/jobs/{job['id']}/events", **params)).json()
        paged += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert paged == events
    await assert_422(service, f"/v1/jobs/{job['id']}/events", cursor="nonsense")
    for number in ("9" * 19, str(2**63), "-1"):
        # Numbers beyond any event id are invalid cursors, not driver overflows.
        cursor = base64.urlsafe_b64encode(number.encode()).rstrip(b"=").decode()
        await assert_422(service, f"/v1/jobs/{job['id']}/events", cursor=cursor)
    await assert_422(service, f"/v1/jobs/{job['id']}/events", limit=0)
