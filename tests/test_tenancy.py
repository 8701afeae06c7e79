"""Tenancy: a job belongs to its key's owner. Another owner's job is a 404 everywhere —
reads, listings under every filter, cursors, events, idempotency keys — never a 403 and
never a leak. Admin keys see everything. On SQLite and PostgreSQL, over real HTTP."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import httpx

from tests.conftest import Service
from tests.support import IMAGE_JOB, TEXT_JOB, ApiClient

STATUSES = [None, "pending", "queued", "running", "succeeded", "failed"]
MODELS = [None, "wan2.5-image-to-video", "wan2.5-text-to-video"]


def _job(prompt: str, model: str = "text") -> dict[str, Any]:
    base = TEXT_JOB if model == "text" else IMAGE_JOB
    return {**base, "input": {**base["input"], "prompt": prompt}}


async def _create(client: ApiClient, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    response = await client.create_job(body, **headers)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def _list_all(client: ApiClient, **params: Any) -> tuple[list[str], int]:
    """Every id a listing yields, following cursors; and how many pages it took."""
    ids: list[str] = []
    pages = 0
    cursor = None
    while True:
        query = {k: v for k, v in {**params, "cursor": cursor}.items() if v is not None}
        response = await client.get("/v1/jobs", **query)
        assert response.status_code == 200, response.text
        page = response.json()
        pages += 1
        ids += [job["id"] for job in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids, pages


async def _tenants(service: Service) -> tuple[ApiClient, ApiClient, ApiClient]:
    a = service.client  # owner "tenant-a"
    b = await service.new_client("tenant-b")
    admin = await service.new_client("operator", admin=True)
    return a, b, admin


async def _seed(a: ApiClient, b: ApiClient) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A has jobs of both models, succeeded, failed and rejected; B has fewer."""
    a_jobs = [
        await _create(a, _job("a fox", "image")),
        await _create(a, _job("a lighthouse")),
        await _create(a, _job("[fail] a storm")),
        await _create(a, _job("[reject] nope")),
        await _create(a, _job("a harbour", "image")),
    ]
    b_jobs = [await _create(b, _job("b garden")), await _create(b, _job("[fail] b", "image"))]
    for client, jobs in ((a, a_jobs), (b, b_jobs)):
        for job in jobs:
            await client.wait_for_status(job["id"], {"succeeded", "failed"})
    return a_jobs, b_jobs


def _assert_not_found(response: httpx.Response, job_id: str) -> None:
    assert response.status_code == 404, response.text
    assert response.json() == {
        "error": {"type": "not_found", "message": f"no job with id {job_id!r}"}
    }


async def test_another_owners_job_is_404_everywhere(service: Service) -> None:
    a, b, _admin = await _tenants(service)
    a_jobs, b_jobs = await _seed(a, b)
    a_ids = {job["id"] for job in a_jobs}
    b_ids = {job["id"] for job in b_jobs}
    outcomes: Counter[int] = Counter()

    # An unknown but well-formed id answers exactly like A's job does: nothing to tell apart.
    unknown = "job_" + "0" * 26
    _assert_not_found(await b.get(f"/v1/jobs/{unknown}"), unknown)

    a_event_cursor = (await a.get(f"/v1/jobs/{a_jobs[0]['id']}/events", limit=1)).json()[
        "next_cursor"
    ]
    assert a_event_cursor is not None
    for job_id in sorted(a_ids):
        attempts = [
            await b.get(f"/v1/jobs/{job_id}"),
            await b.get(f"/v1/jobs/{job_id}/events"),
            await b.get(f"/v1/jobs/{job_id}/events", limit=1),
            await b.get(f"/v1/jobs/{job_id}/events", cursor=a_event_cursor),
            # A trailing slash is redirected to the job's path, where it is a 404 as well.
            await b.http.get(f"/v1/jobs/{job_id}/", headers=b.headers(), follow_redirects=True),
        ]
        for response in attempts:
            outcomes[response.status_code] += 1
            if response.status_code == 404 and response.json()["error"]["message"].startswith(
                "no job"
            ):
                _assert_not_found(response, job_id)
            assert job_id not in response.text or response.status_code == 404
            for other in a_ids - {job_id}:
                assert other not in response.text
    for job_id in sorted(b_ids):
        attempts = [await a.get(f"/v1/jobs/{job_id}"), await a.get(f"/v1/jobs/{job_id}/events")]
        for response in attempts:
            outcomes[response.status_code] += 1
            _assert_not_found(response, job_id)
    tried = sum(outcomes.values())
    assert tried == len(a_ids) * 5 + len(b_ids) * 2
    assert outcomes == Counter({404: tried}), f"cross-tenant answers: {dict(outcomes)}"

    # Each owner still reads its own jobs.
    for job_id in a_ids:
        assert (await a.job(job_id))["id"] == job_id
    for job_id in b_ids:
        assert len(await b.events(job_id)) > 0


async def test_listings_never_show_another_owners_jobs(service: Service) -> None:
    a, b, _admin = await _tenants(service)
    a_jobs, b_jobs = await _seed(a, b)
    a_ids = {job["id"] for job in a_jobs}
    b_ids = {job["id"] for job in b_jobs}
    created = sorted(job["created_at"] for job in a_jobs + b_jobs)
    windows = [
        (None, None),
        (created[0], None),
        (None, created[-1]),
        (created[len(created) // 2], "2999-01-01T00:00:00Z"),
        ("2000-01-01T00:00:00Z", created[-1]),
    ]
    combinations = 0
    a_found: set[str] = set()
    for status, model, (after, before), limit in itertools.product(
        STATUSES, MODELS, windows, [1, 100]
    ):
        params = {
            "status": status,
            "model": model,
            "created_after": after,
            "created_before": before,
            "limit": limit,
        }
        b_seen, _ = await _list_all(b, **params)
        assert not set(b_seen) & a_ids, params
        assert set(b_seen) <= b_ids
        if limit == 100:  # the control: the same filters do find A's own jobs for A
            a_seen, _ = await _list_all(a, **params)
            assert set(a_seen) <= a_ids
            a_found |= set(a_seen)
        combinations += 1
    assert combinations == 6 * 3 * 5 * 2
    assert a_found == a_ids

    # Unfiltered, each owner sees exactly its own jobs, page by page.
    assert set((await _list_all(a, limit=1))[0]) == a_ids
    b_seen, pages = await _list_all(b, limit=1)
    assert set(b_seen) == b_ids
    assert pages == len(b_ids)


async def test_a_cursor_from_another_owner_does_not_leak(service: Service) -> None:
    a, b, _admin = await _tenants(service)
    a_jobs, b_jobs = await _seed(a, b)
    a_ids = {job["id"] for job in a_jobs}
    b_ids = {job["id"] for job in b_jobs}
    cursors = []
    cursor = None
    while True:
        page = (await a.get("/v1/jobs", limit=1, **({"cursor": cursor} if cursor else {}))).json()
        cursor = page["next_cursor"]
        if cursor is None:
            break
        cursors.append(cursor)
    assert len(cursors) == len(a_ids) - 1
    for cursor in cursors:
        for limit in (1, 100):
            response = await b.get("/v1/jobs", cursor=cursor, limit=limit)
            assert response.status_code == 200, response.text
            page = response.json()
            seen = {job["id"] for job in page["data"]}
            assert not seen & a_ids
            assert seen <= b_ids
            if page["next_cursor"]:
                rest, _ = await _list_all(b, cursor=page["next_cursor"], limit=limit)
                assert not set(rest) & a_ids


async def test_idempotency_keys_are_per_owner(service: Service) -> None:
    a, b, _admin = await _tenants(service)
    c = await service.new_client("tenant-c")
    body_x = _job("the same body")
    body_y = _job("another body")
    key = "order-1234"

    a_job = await _create(a, body_x, **{"Idempotency-Key": key})
    # B reusing A's key with another body is not a conflict: A's use of it is invisible.
    b_first = await b.create_job(body_y, **{"Idempotency-Key": key})
    assert b_first.status_code == 201, b_first.text
    b_job = b_first.json()
    assert b_job["id"] != a_job["id"]
    # B's own replay and B's own conflict.
    b_replay = await b.create_job(body_y, **{"Idempotency-Key": key})
    assert b_replay.status_code == 200
    assert b_replay.json()["id"] == b_job["id"]
    b_conflict = await b.create_job(body_x, **{"Idempotency-Key": key})
    assert b_conflict.status_code == 409
    assert a_job["id"] not in b_conflict.text
    # C reusing A's key with A's very body gets a job of its own, never A's.
    c_job = await _create(c, body_x, **{"Idempotency-Key": key})
    assert c_job["id"] not in (a_job["id"], b_job["id"])
    assert c_job["input"] == a_job["input"]
    # A's key still replays A's job; each job is its owner's alone.
    a_replay = await a.create_job(body_x, **{"Idempotency-Key": key})
    assert a_replay.status_code == 200
    assert a_replay.json()["id"] == a_job["id"]
    cross = [
        await b.get(f"/v1/jobs/{a_job['id']}"),
        await c.get(f"/v1/jobs/{a_job['id']}"),
        await a.get(f"/v1/jobs/{b_job['id']}"),
        await a.get(f"/v1/jobs/{c_job['id']}"),
    ]
    assert [response.status_code for response in cross] == [404] * 4
    for client, job in ((a, a_job), (b, b_job), (c, c_job)):
        assert (await _list_all(client))[0] == [job["id"]]


async def test_admin_keys_see_every_owner(service: Service) -> None:
    a, b, admin = await _tenants(service)
    a_jobs, b_jobs = await _seed(a, b)
    every = {job["id"] for job in a_jobs + b_jobs}
    assert set((await _list_all(admin, limit=2))[0]) == every
    for job_id in every:
        assert (await admin.job(job_id))["id"] == job_id
        assert next(event["type"] for event in await admin.events(job_id)) == "job.created"
    failed, _ = await _list_all(admin, status="failed")
    assert set(failed) == {
        job["id"] for job in a_jobs + b_jobs if "[fail]" in job["input"]["prompt"]
    } | {job["id"] for job in a_jobs if "[reject]" in job["input"]["prompt"]}
    images, _ = await _list_all(admin, model="wan2.5-image-to-video")
    assert set(images) == {
        job["id"] for job in a_jobs + b_jobs if job["model"] == "wan2.5-image-to-video"
    }
    # An admin's own jobs are the admin owner's: other tenants cannot see them.
    own = await _create(admin, _job("admin's own"))
    assert (await a.get(f"/v1/jobs/{own['id']}")).status_code == 404
    assert own["id"] in (await _list_all(admin))[0]
    assert own["id"] not in (await _list_all(a))[0] + (await _list_all(b))[0]
