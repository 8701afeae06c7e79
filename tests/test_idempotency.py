"""Idempotent creation (docs/API.md, Jobs): `Idempotency-Key`, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from app.config import SettingsError, load_settings
from app.jobs.models import IdempotencyKey, Job
from app.timeutil import utcnow
from tests.conftest import Service, Simulator
from tests.support import IMAGE_JOB, TEXT_JOB, ApiClient

OTHER_IMAGE_JOB = {
    "model": "wan2.5-image-to-video",
    "input": {"prompt": "a grey wolf in the rain", "image_urls": ["https://example.com/w.jpg"]},
}


async def job_count(service: Service) -> int:
    async with service.runtime.db.read() as session:
        return len((await session.execute(select(Job.id))).all())


async def provider_tasks(simulator: Simulator) -> int:
    return int((await simulator.stats())["tasks"])


async def test_same_key_and_body_returns_the_original_job(
    service: Service, simulator: Simulator
) -> None:
    client = service.client
    first = await client.create_job(IMAGE_JOB, **{"Idempotency-Key": "order-1"})
    assert first.status_code == 201, first.text
    original = first.json()

    # Same body, keys in another order: the same request.
    image_input: dict[str, Any] = dict(IMAGE_JOB["input"])
    reordered = {"input": dict(reversed(image_input.items())), "model": IMAGE_JOB["model"]}
    for body in (IMAGE_JOB, reordered):
        again = await client.create_job(body, **{"Idempotency-Key": "order-1"})
        assert again.status_code == 200, again.text
        assert again.json()["id"] == original["id"]
        assert again.json()["created_at"] == original["created_at"]

    assert await job_count(service) == 1
    assert await provider_tasks(simulator) == 1
    types = [event["type"] for event in await client.events(original["id"])]
    assert types.count("job.created") == 1
    assert types.count("provider.submitted") == 1

    # The replay shows the job as it is now, not as it was.
    done = await client.wait_for_status(original["id"], {"succeeded", "failed"})
    replay = await client.create_job(IMAGE_JOB, **{"Idempotency-Key": "order-1"})
    assert replay.status_code == 200
    assert replay.json()["status"] == done["status"] == "succeeded"


async def test_same_key_with_another_body_is_a_conflict(
    service: Service, simulator: Simulator
) -> None:
    client = service.client
    first = await client.create_job(IMAGE_JOB, **{"Idempotency-Key": "order-2"})
    assert first.status_code == 201, first.text

    for body in (
        OTHER_IMAGE_JOB,
        TEXT_JOB,
        {**IMAGE_JOB, "metadata": {"order": "2"}},
    ):
        conflict = await client.create_job(body, **{"Idempotency-Key": "order-2"})
        assert conflict.status_code == 409, conflict.text
        error = conflict.json()["error"]
        assert error["type"] == "conflict"
        assert "Idempotency-Key" in error["message"]
        assert set(conflict.json()) == {"error"}

    assert await job_count(service) == 1
    assert await provider_tasks(simulator) == 1
    # The original is untouched and still replayable.
    again = await client.create_job(IMAGE_JOB, **{"Idempotency-Key": "order-2"})
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]


async def test_keys_belong_to_their_owner(service: Service, simulator: Simulator) -> None:
    mine = await service.client.create_job(IMAGE_JOB, **{"Idempotency-Key": "shared-key"})
    other = await service.new_client("tenant-b")
    theirs = await other.create_job(IMAGE_JOB, **{"Idempotency-Key": "shared-key"})
    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"]
    # A different body under another owner's key is no conflict of ours.
    third = await service.new_client("tenant-c")
    other_body = await third.create_job(TEXT_JOB, **{"Idempotency-Key": "shared-key"})
    assert other_body.status_code == 201
    assert await provider_tasks(simulator) == 3


async def _age_key(service: Service, key: str, age: timedelta) -> None:
    async with service.runtime.db.write() as conn:
        await conn.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.key == key)
            .values(created_at=utcnow() - age)
        )


async def test_keys_are_kept_for_the_ttl_and_reusable_after(
    service: Service, simulator: Simulator
) -> None:
    assert service.settings.idempotency_ttl_seconds == 86_400
    client = service.client
    first = await client.create_job(IMAGE_JOB, **{"Idempotency-Key": "daily"})
    assert first.status_code == 201
    first_id = first.json()["id"]

    # A key a few minutes short of 24 h still holds, for the same body and against another.
    await _age_key(service, "daily", timedelta(hours=23, minutes=55))
    replay = await client.create_job(IMAGE_JOB, **{"Idempotency-Key": "daily"})
    assert replay.status_code == 200
    assert replay.json()["id"] == first_id
    conflict = await client.create_job(TEXT_JOB, **{"Idempotency-Key": "daily"})
    assert conflict.status_code == 409

    # Older than the TTL: the key may be used again, and now names the new job.
    await _age_key(service, "daily", timedelta(seconds=86_400 + 60))
    reused = await client.create_job(TEXT_JOB, **{"Idempotency-Key": "daily"})
    assert reused.status_code == 201, reused.text
    assert reused.json()["id"] != first_id
    again = await client.create_job(TEXT_JOB, **{"Idempotency-Key": "daily"})
    assert again.status_code == 200
    assert again.json()["id"] == reused.json()["id"]
    assert (await client.create_job(IMAGE_JOB, **{"Idempotency-Key": "daily"})).status_code == 409
    # The first job is still there, reachable by id.
    assert (await client.job(first_id))["id"] == first_id
    assert await provider_tasks(simulator) == 2


def test_idempotency_ttl_cannot_be_set_below_24_hours() -> None:
    with pytest.raises(SettingsError, match="IDEMPOTENCY_TTL_SECONDS"):
        load_settings(_env_file=None, idempotency_ttl_seconds=3600)
    assert load_settings(_env_file=None, idempotency_ttl_seconds=172_800).idempotency_ttl_seconds


async def _burst(client: ApiClient, bodies: list[dict[str, Any]], key: str) -> list[httpx.Response]:
    return list(
        await asyncio.gather(
            *(client.create_job(body, **{"Idempotency-Key": key}) for body in bodies)
        )
    )


@pytest.mark.parametrize("slow_provider", [False, True], ids=["fast", "slow-provider"])
async def test_concurrent_requests_with_one_key_make_one_job_and_one_submission(
    service: Service, simulator: Simulator, slow_provider: bool
) -> None:
    if slow_provider:
        # Every request arrives while the first one's submission is still in flight.
        await simulator.set_faults(slow_rate=1, slow_seconds=1.0)
    responses = await _burst(service.client, [IMAGE_JOB] * 20, "burst-key")
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 19 + [201], [r.text for r in responses if r.status_code >= 300]
    assert len({r.json()["id"] for r in responses}) == 1
    job_id = responses[0].json()["id"]
    await simulator.set_faults(slow_rate=0)

    assert await job_count(service) == 1
    done = await service.client.wait_for_status(job_id, {"succeeded", "failed"})
    assert done["status"] == "succeeded"
    stats = await simulator.stats()
    assert stats["tasks"] == 1
    assert stats["jobs_with_multiple_tasks"] == 0


async def test_concurrent_requests_with_one_key_and_two_bodies(
    service: Service, simulator: Simulator
) -> None:
    bodies = [IMAGE_JOB, OTHER_IMAGE_JOB] * 10
    responses = await _burst(service.client, bodies, "race-key")
    winners = [r for r in responses if r.status_code in (200, 201)]
    losers = [r for r in responses if r.status_code == 409]
    assert len(winners) + len(losers) == 20, [r.status_code for r in responses]
    assert [r.status_code for r in winners].count(201) == 1
    assert len({r.json()["id"] for r in winners}) == 1
    winning_prompt = winners[0].json()["input"]["prompt"]
    # Every request with the winner's body got the job; every other body a conflict.
    for body, response in zip(bodies, responses, strict=True):
        expected = 409 if body["input"]["prompt"] != winning_prompt else (200, 201)
        if expected == 409:
            assert response.status_code == 409
            assert response.json()["error"]["type"] == "conflict"
        else:
            assert response.status_code in expected  # type: ignore[operator]
    assert await job_count(service) == 1
    assert await provider_tasks(simulator) == 1


async def test_a_rejected_request_does_not_burn_the_key(
    service: Service, simulator: Simulator
) -> None:
    bad = {"model": "wan2.5-text-to-video", "input": {"prompt": ""}}
    invalid = await service.client.create_job(bad, **{"Idempotency-Key": "fix-and-retry"})
    assert invalid.status_code == 422
    fixed = await service.client.create_job(TEXT_JOB, **{"Idempotency-Key": "fix-and-retry"})
    assert fixed.status_code == 201, fixed.text
    assert await provider_tasks(simulator) == 1
