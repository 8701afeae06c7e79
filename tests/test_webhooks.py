"""Client webhooks: signed with Standard Webhooks, retried, recorded, SSRF-guarded."""

from __future__ import annotations

from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from tests.conftest import Service, ServiceFactory
from tests.support import IMAGE_JOB, eventually


async def secret_of(service: Service) -> str:
    response = await service.client.get("/v1/webhook_secret")
    assert response.status_code == 200
    secret = response.json()["secret"]
    assert secret.startswith("whsec_")
    return str(secret)


async def test_webhook_is_signed_retried_and_recorded(
    start_service: ServiceFactory, receiver: Any
) -> None:
    service = await start_service(webhook_allow_private=True)
    body = {**IMAGE_JOB, "webhook_url": receiver.url}
    job = (await service.client.create_job(body)).json()

    await eventually(lambda: _count(receiver), lambda n: n >= 3)
    headers, payload = receiver.calls[-1]
    verified = Webhook(await secret_of(service)).verify(payload, headers)
    assert verified["type"] == "job.succeeded"
    assert verified["data"]["id"] == job["id"]
    assert verified["data"]["outputs"][0]["type"] == "video"
    assert headers["webhook-id"] == f"msg_{job['id']}_succeeded"
    # Retries carry the same message id, so the receiver can deduplicate.
    assert {h["webhook-id"] for h, _ in receiver.calls} == {headers["webhook-id"]}

    events = await eventually(
        lambda: service.client.events(job["id"]),
        lambda evs: any(e["type"] == "webhook.delivered" for e in evs),
    )
    failures = [e for e in events if e["type"] == "webhook.failed"]
    assert [e["data"]["http_status"] for e in failures] == [500, 500]
    delivered = next(e for e in events if e["type"] == "webhook.delivered")
    assert delivered["data"] == {"attempt": 3, "http_status": 204}


async def test_another_owners_secret_does_not_verify(
    start_service: ServiceFactory, receiver: Any
) -> None:
    service = await start_service(webhook_allow_private=True)
    receiver.failures = 0
    await service.client.create_job({**IMAGE_JOB, "webhook_url": receiver.url})
    await eventually(lambda: _count(receiver), lambda n: n >= 1)
    other = await service.new_client("tenant-b")
    other_secret = (await other.get("/v1/webhook_secret")).json()["secret"]
    assert other_secret != await secret_of(service)
    headers, payload = receiver.calls[0]
    with pytest.raises(Exception, match="signature"):
        Webhook(other_secret).verify(payload, headers)


async def test_private_targets_are_refused_by_default(
    start_service: ServiceFactory, receiver: Any
) -> None:
    service = await start_service(webhook_max_attempts=2)
    job = (await service.client.create_job({**IMAGE_JOB, "webhook_url": receiver.url})).json()
    events = await eventually(
        lambda: service.client.events(job["id"]),
        lambda evs: any(e["type"] == "webhook.abandoned" for e in evs),
    )
    assert receiver.calls == []
    refused = [e for e in events if e["type"] in ("webhook.failed", "webhook.abandoned")]
    assert len(refused) == 2
    assert all("non-public address" in e["data"]["error"] for e in refused)
    finished = await service.client.job(job["id"])
    assert finished["status"] == "succeeded"


async def test_job_without_webhook_sends_nothing(
    start_service: ServiceFactory, receiver: Any
) -> None:
    service = await start_service(webhook_allow_private=True)
    job = (await service.client.create_job(IMAGE_JOB)).json()
    await service.client.wait_for_status(job["id"], {"succeeded"})
    types = {e["type"] for e in await service.client.events(job["id"])}
    assert not any(t.startswith("webhook.") for t in types)
    assert receiver.calls == []


async def _count(receiver: Any) -> int:
    return len(receiver.calls)
