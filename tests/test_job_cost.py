"""What a job costs: estimated from the catalog's billing rule when it is created (and by
`POST /v1/estimates` without creating one), charged as PoYo reports it, 0 when it fails."""

from __future__ import annotations

from typing import Any

from app.catalog.document import load_snapshot
from tests.conftest import Service
from tests.stand_in import ProviderStandIn
from tests.test_callbacks import LEGIT, queued_job, send, view, wrap

CATALOG = {entry.model_id: entry for entry in load_snapshot().items}
WAN_I2V: dict[str, Any] = CATALOG["wan2.5-image-to-video"].billing or {}


def job_body(resolution: str, duration: int, prompt: str = "a fox") -> dict[str, Any]:
    return {
        "model": "wan2.5-image-to-video",
        "input": {
            "prompt": prompt,
            "image_urls": ["https://example.com/fox.jpg"],
            "resolution": resolution,
            "duration": duration,
        },
    }


async def test_a_job_is_estimated_from_its_models_price_table_then_charged(
    service: Service,
) -> None:
    for resolution, duration in (("480p", 5), ("1080p", 10)):
        credits = WAN_I2V["price_table"][resolution][str(duration)]
        body = job_body(resolution, duration)
        estimate = await service.client.http.post(
            "/v1/estimates", json=body, headers=service.client.headers()
        )
        assert estimate.status_code == 200, estimate.text
        assert estimate.json()["credits"] == credits
        assert estimate.json()["currency_estimate_usd"] == credits * 0.005
        assert estimate.json()["reason"] is None
        job = (await service.client.create_job(body)).json()
        assert job["cost"] == {
            "credits_estimated": credits,
            "credits_charged": None,
            "currency_estimate_usd": credits * 0.005,
            "estimate_reason": None,
        }
        # The sandbox charges what the catalog says, and reports it as PoYo does.
        done = await service.client.wait_for_status(job["id"], {"succeeded"})
        assert done["cost"]["credits_charged"] == credits
    assert (await service.client.get("/v1/jobs")).json()["data"][0]["cost"]["credits_estimated"]


async def test_the_1080p_10s_wan_video_of_the_issue_is_180_credits(service: Service) -> None:
    response = await service.client.http.post(
        "/v1/estimates", json=job_body("1080p", 10), headers=service.client.headers()
    )
    assert response.json()["credits"] == 180
    assert response.json()["currency_estimate_usd"] == 0.9


async def test_a_rule_that_cannot_tell_beforehand_gives_null_with_a_reason(
    service: Service,
) -> None:
    body = {"model": "flux-dev", "input": {"prompt": "three foxes"}}
    estimate = (
        await service.client.http.post("/v1/estimates", json=body, headers=service.client.headers())
    ).json()
    assert estimate["credits"] is None
    assert estimate["currency_estimate_usd"] is None
    assert "megapixel" in estimate["reason"]
    job = (await service.client.create_job(body)).json()
    assert job["cost"]["credits_estimated"] is None
    assert job["cost"]["estimate_reason"] == estimate["reason"]


async def test_an_estimate_checks_the_input_as_a_job_would_and_stores_nothing(
    service: Service,
) -> None:
    bad = job_body("1080p", 7)
    response = await service.client.http.post(
        "/v1/estimates", json=bad, headers=service.client.headers()
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["loc"] == ["body", "input", "duration"]
    unknown = await service.client.http.post(
        "/v1/estimates", json={"model": "nope", "input": {}}, headers=service.client.headers()
    )
    assert unknown.status_code == 422
    assert (await service.client.get("/v1/jobs")).json()["data"] == []
    anonymous = await service.client.http.post("/v1/estimates", json=job_body("480p", 5))
    assert anonymous.status_code == 401


async def test_what_poyo_reports_is_recorded_as_charged(
    relay: Service, provider: ProviderStandIn
) -> None:
    job, task_id = await queued_job(relay)
    provider.set_task(task_id, "finished", files=LEGIT)
    provider.tasks[task_id]["credits_amount"] = 87.5
    body = view(task_id, "finished", LEGIT)
    assert (await send(relay, job["id"], wrap(body))).status_code == 200
    done = await relay.client.wait_for_status(job["id"], {"succeeded"})
    assert done["cost"]["credits_charged"] == 87.5
    assert done["cost"]["currency_estimate_usd"] == 0.4375  # of the charge, once known


async def test_a_failed_job_is_charged_nothing(relay: Service, provider: ProviderStandIn) -> None:
    job, task_id = await queued_job(relay)
    provider.set_task(task_id, "failed", error_message="no")
    provider.tasks[task_id]["credits_amount"] = 50  # even if PoYo said otherwise
    assert (await send(relay, job["id"], wrap(view(task_id, "failed")))).status_code == 200
    done = await relay.client.wait_for_status(job["id"], {"failed"})
    assert done["cost"]["credits_charged"] == 0
    assert done["cost"]["credits_estimated"] == job["cost"]["credits_estimated"] > 0
    assert done["cost"]["currency_estimate_usd"] == 0


async def test_an_unreadable_charge_does_not_spoil_the_status(
    relay: Service, provider: ProviderStandIn
) -> None:
    job, task_id = await queued_job(relay)
    provider.set_task(task_id, "finished", files=LEGIT)
    provider.tasks[task_id]["credits_amount"] = "lots"
    assert (await send(relay, job["id"], wrap(view(task_id, "finished", LEGIT)))).status_code == 200
    done = await relay.client.wait_for_status(job["id"], {"succeeded"})
    assert done["cost"]["credits_charged"] is None
    assert done["outputs"][0]["url"] == LEGIT[0]["file_url"]
