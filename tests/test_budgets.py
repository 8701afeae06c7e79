"""Budgets and spend, on both databases: concurrent requests cannot overshoot a budget, a
failed job gives its reservation back, a new day or month starts afresh, another owner's
spend never counts; `GET /v1/usage` sums what the jobs cost."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert

from app.billing.models import UsageDay
from app.timeutil import utcnow
from tests.clirun import clean_env, run_cli
from tests.conftest import Service, ServiceFactory
from tests.stand_in import ProviderStandIn
from tests.support import IMAGE_JOB, ApiClient
from tests.test_callbacks import LEGIT, send, view, wrap


async def estimate_of(client: ApiClient, body: dict[str, Any]) -> float:
    response = await client.http.post("/v1/estimates", json=body, headers=client.headers())
    assert response.status_code == 200, response.text
    credits = response.json()["credits"]
    assert isinstance(credits, float | int)
    return float(credits)


async def set_budget(
    admin: ApiClient, owner: str, daily: float | None = None, monthly: float | None = None
) -> dict[str, Any]:
    response = await admin.http.put(
        f"/v1/budgets/{owner}",
        json={"daily_credits": daily, "monthly_credits": monthly},
        headers=admin.headers(),
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def assert_refused(response: httpx.Response, period: str) -> dict[str, Any]:
    assert response.status_code == 402, response.text
    error = response.json()["error"]
    assert error["type"] == "budget_exceeded"
    assert error["budget"]["period"] == period
    assert period in error["message"]
    return error["budget"]  # type: ignore[no-any-return]


async def test_fifty_concurrent_creates_against_a_budget_for_ten_make_ten_jobs(
    relay: Service, provider: ProviderStandIn
) -> None:
    admin = await relay.new_client("root", admin=True)
    price = await estimate_of(relay.client, IMAGE_JOB)
    await set_budget(admin, "tenant-a", daily=price * 10)
    answers = await asyncio.gather(*(relay.client.create_job(IMAGE_JOB) for _ in range(50)))
    statuses = sorted(response.status_code for response in answers)
    assert statuses == [201] * 10 + [402] * 40
    for refused in (r for r in answers if r.status_code == 402):
        budget = assert_refused(refused, "daily")
        assert budget["limit_credits"] == price * 10
        assert budget["estimate_credits"] == price
        assert budget["spent_credits"] == price * 10
    assert len(provider.submits()) == 10, "nothing refused reached PoYo"
    jobs = (await relay.client.get("/v1/jobs", limit=100)).json()["data"]
    assert len(jobs) == 10
    status = (await relay.client.get("/v1/budgets/tenant-a")).json()
    assert status["spent_today_credits"] == price * 10
    assert status["daily_credits"] == price * 10


@pytest.mark.parametrize("migrated_database", ["postgresql"], indirect=True)
async def test_a_budget_holds_across_api_replicas(
    relay: Service, start_service: ServiceFactory, provider: ProviderStandIn
) -> None:
    other = await start_service(
        poyo_base_url=provider.url, poyo_api_key=provider.api_key, run_worker=False
    )
    admin = await relay.new_client("root", admin=True)
    price = await estimate_of(relay.client, IMAGE_JOB)
    await set_budget(admin, "tenant-a", monthly=price * 10)
    # The same key, through either process.
    via_other = ApiClient(http=other.client.http, key=relay.client.key)
    answers = await asyncio.gather(
        *(client.create_job(IMAGE_JOB) for client in [relay.client, via_other] * 25)
    )
    assert sorted(r.status_code for r in answers) == [201] * 10 + [402] * 40
    assert len(provider.submits()) == 10


async def test_a_failed_job_gives_its_reservation_back(
    relay: Service, provider: ProviderStandIn
) -> None:
    admin = await relay.new_client("root", admin=True)
    price = await estimate_of(relay.client, IMAGE_JOB)
    await set_budget(admin, "tenant-a", monthly=price * 1.5)
    first = await relay.client.create_job(IMAGE_JOB)
    assert first.status_code == 201
    assert_refused(await relay.client.create_job(IMAGE_JOB), "monthly")
    job = first.json()
    task_id = job["provider"]["task_id"]
    provider.set_task(task_id, "failed", error_message="no")
    assert (await send(relay, job["id"], wrap(view(task_id, "failed")))).status_code == 200
    await relay.client.wait_for_status(job["id"], {"failed"})
    assert (await relay.client.get("/v1/budgets/tenant-a")).json()["spent_this_month_credits"] == 0
    second = await relay.client.create_job(IMAGE_JOB)
    assert second.status_code == 201, second.text


async def test_what_poyo_charged_replaces_the_reservation(
    relay: Service, provider: ProviderStandIn
) -> None:
    price = await estimate_of(relay.client, IMAGE_JOB)
    job = (await relay.client.create_job(IMAGE_JOB)).json()
    task_id = job["provider"]["task_id"]
    provider.set_task(task_id, "finished", files=LEGIT)
    provider.tasks[task_id]["credits_amount"] = price - 10
    assert (await send(relay, job["id"], wrap(view(task_id, "finished", LEGIT)))).status_code == 200
    await relay.client.wait_for_status(job["id"], {"succeeded"})
    usage = (await relay.client.get("/v1/usage", group_by="model")).json()
    assert usage["data"] == [
        {
            "model": IMAGE_JOB["model"],
            "jobs": 1,
            "unestimated_jobs": 0,
            "credits_estimated": price,
            "credits_charged": price - 10,
            "credits_spent": price - 10,
        }
    ]


async def _spent_before(service: Service, owner: str, days_ago: int, credits: float) -> None:
    """Spend recorded on an earlier day, as jobs created then would have left it."""
    async with service.runtime.db.write() as conn:
        await conn.execute(
            insert(UsageDay).values(
                owner=owner,
                day=utcnow().date() - timedelta(days=days_ago),
                model="seedream-4",
                jobs=1,
                unestimated_jobs=0,
                estimated_millicredits=round(credits * 1000),
                charged_millicredits=0,
                spent_millicredits=round(credits * 1000),
            )
        )


async def test_a_new_day_and_a_new_month_start_afresh(relay: Service) -> None:
    admin = await relay.new_client("root", admin=True)
    price = await estimate_of(relay.client, IMAGE_JOB)
    today = utcnow().date()
    # Yesterday's spend fills a daily budget, but not today's.
    await _spent_before(relay, "tenant-a", 1, price * 100)
    await set_budget(admin, "tenant-a", daily=price * 1.5)
    assert (await relay.client.create_job(IMAGE_JOB)).status_code == 201
    assert_refused(await relay.client.create_job(IMAGE_JOB), "daily")
    # The monthly budget counts every day of this month, and none of the last.
    await set_budget(admin, "tenant-a", monthly=price * 100 + price * 1.5)
    if today.day > 1:  # yesterday is this month: it counts
        assert_refused(await relay.client.create_job(IMAGE_JOB), "monthly")
    last_month_day = (today.replace(day=1) - timedelta(days=1)).day
    await _spent_before(relay, "tenant-a", today.day - 1 + last_month_day, price * 1000)
    await set_budget(admin, "tenant-a", monthly=price * 2.5 + (price * 100 if today.day > 1 else 0))
    assert (await relay.client.create_job(IMAGE_JOB)).status_code == 201


async def test_another_owners_spend_never_counts(relay: Service) -> None:
    admin = await relay.new_client("root", admin=True)
    other = await relay.new_client("other")
    price = await estimate_of(relay.client, IMAGE_JOB)
    await _spent_before(relay, "other", 0, price * 1000)
    await set_budget(admin, "tenant-a", daily=price, monthly=price)
    await set_budget(admin, "other", daily=price)
    assert (await relay.client.create_job(IMAGE_JOB)).status_code == 201
    assert_refused(await other.create_job(IMAGE_JOB), "daily")
    assert_refused(await relay.client.create_job(IMAGE_JOB), "daily")


async def test_a_job_that_cannot_be_estimated_passes_only_while_room_is_left(
    relay: Service,
) -> None:
    admin = await relay.new_client("root", admin=True)
    unpriced = {"model": "flux-dev", "input": {"prompt": "three foxes"}}
    price = await estimate_of(relay.client, IMAGE_JOB)
    await set_budget(admin, "tenant-a", daily=price)
    assert (await relay.client.create_job(unpriced)).status_code == 201
    assert (await relay.client.create_job(IMAGE_JOB)).status_code == 201
    budget = assert_refused(await relay.client.create_job(unpriced), "daily")
    assert budget["estimate_credits"] is None
    usage = (await relay.client.get("/v1/usage", group_by="model")).json()["data"]
    assert {row["model"]: row["unestimated_jobs"] for row in usage} == {
        "flux-dev": 1,
        IMAGE_JOB["model"]: 0,
    }


async def test_usage_is_per_owner_and_admins_see_every_owner(relay: Service) -> None:
    admin = await relay.new_client("root", admin=True)
    other = await relay.new_client("other")
    price = await estimate_of(relay.client, IMAGE_JOB)
    for client, count in ((relay.client, 2), (other, 1)):
        for _ in range(count):
            assert (await client.create_job(IMAGE_JOB)).status_code == 201
    today = utcnow().date().isoformat()
    mine = (await relay.client.get("/v1/usage")).json()
    assert mine["group_by"] == "day"
    assert mine["to"] == today
    assert mine["data"] == [
        {
            "day": today,
            "jobs": 2,
            "unestimated_jobs": 0,
            "credits_estimated": price * 2,
            "credits_charged": 0,
            "credits_spent": price * 2,
        }
    ]
    everyone = (await admin.get("/v1/usage")).json()["data"]
    assert {(row["owner"], row["jobs"]) for row in everyone} == {("tenant-a", 2), ("other", 1)}
    one = (await admin.get("/v1/usage", owner="other")).json()["data"]
    assert [(row.get("owner"), row["jobs"]) for row in one] == [(None, 1)]
    # A tenant's `owner` is ignored: it sees its own.
    assert (await other.get("/v1/usage", owner="tenant-a")).json()["data"][0]["jobs"] == 1
    empty = await relay.client.get("/v1/usage", to="2020-01-31", **{"from": "2020-01-01"})
    assert empty.json()["data"] == []


async def test_usage_and_budget_requests_are_checked(relay: Service) -> None:
    admin = await relay.new_client("root", admin=True)
    client = relay.client
    bad_range = await client.get("/v1/usage", to="2026-01-01", **{"from": "2026-02-01"})
    assert bad_range.status_code == 422
    assert bad_range.json()["error"]["details"][0]["loc"] == ["query", "to"]
    assert (await client.get("/v1/usage", group_by="hour")).status_code == 422
    assert (await client.get("/v1/budgets/other")).status_code == 404
    refused = await client.http.put(
        "/v1/budgets/tenant-a", json={"daily_credits": 5}, headers=client.headers()
    )
    assert refused.status_code == 403
    for body in ({"daily_credits": -1}, {"daily_credits": 0}, {"weekly_credits": 5}):
        response = await admin.http.put("/v1/budgets/tenant-a", json=body, headers=admin.headers())
        assert response.status_code == 422, body
    cleared = await set_budget(admin, "tenant-a")
    assert cleared["daily_credits"] is None
    assert cleared["monthly_credits"] is None


async def test_keys_budget_sets_shows_and_clears_an_owners_budget(
    service: Service, tmp_path: Path
) -> None:
    env = clean_env(DATABASE_URL=service.settings.database_url)
    price = await estimate_of(service.client, IMAGE_JOB)
    assert (await service.client.create_job(IMAGE_JOB)).status_code == 201
    shown = await run_cli(
        "keys", "budget", "tenant-a", "--daily", f"{price * 1.5:g}", "--monthly", "50000",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert shown.code == 0, shown
    assert f"tenant-a: today {price:g} spent of {price * 1.5:g}" in shown.stdout
    assert f"tenant-a: this month {price:g} spent of 50000" in shown.stdout
    assert_refused(await service.client.create_job(IMAGE_JOB), "daily")
    cleared = await run_cli("keys", "budget", "tenant-a", "--clear", env=env, cwd=tmp_path)
    assert cleared.code == 0, cleared
    assert "(no budget)" in cleared.stdout
    assert (await service.client.create_job(IMAGE_JOB)).status_code == 201
    both = await run_cli(
        "keys", "budget", "tenant-a", "--clear", "--daily", "5", env=env, cwd=tmp_path
    )
    assert both.code == 2
