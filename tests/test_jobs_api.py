"""`POST /v1/jobs` and `GET /v1/jobs/{id}` (docs/API.md, Jobs) against a stand-in provider.

The stand-in records what reached the provider and lets a test decide the answer, so
each outcome of a submission (accepted, rejected, unavailable, stalled) is checked for
the state it leaves the job in.
"""

from __future__ import annotations

import re
import socket
from datetime import datetime
from typing import Any

from starlette.responses import Response

from tests.conftest import Service, ServiceFactory
from tests.stand_in import (
    JOB_IN_CALLBACK,
    Call,
    ProviderStandIn,
    callback_job_id,
    poyo_error,
)
from tests.support import IMAGE_JOB, TEXT_JOB, eventually

JOB_ID = re.compile(r"^job_[0-9a-z]{26}$")
JOB_KEYS = {
    "id",
    "object",
    "model",
    "catalog_version",
    "status",
    "input",
    "metadata",
    "provider",
    "progress",
    "outputs",
    "error",
    "cost",
    "created_at",
    "updated_at",
    "submitted_at",
    "completed_at",
}
# The contract's keys, plus the optional client webhook and the outputs' archive state.
ALLOWED_EXTRA_KEYS = {"webhook_url", "archive"}


def parse_z(value: str) -> datetime:
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value.removesuffix("Z") + "+00:00")


def event_types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


# ---- the 201 ------------------------------------------------------------------------------


async def test_created_job_has_the_contract_shape(
    relay: Service, provider: ProviderStandIn
) -> None:
    body = {**IMAGE_JOB, "metadata": {"order": "42", "customer": "acme", "empty": ""}}
    response = await relay.client.create_job(body)
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("application/json")
    job = response.json()

    assert JOB_KEYS <= set(job) <= JOB_KEYS | ALLOWED_EXTRA_KEYS
    assert JOB_ID.match(job["id"])
    assert job["object"] == "job"
    assert job["model"] == "wan2.5-image-to-video"
    assert job["status"] == "queued"
    assert job["input"] == IMAGE_JOB["input"]  # as given: PoYo applies its defaults
    assert (
        job["catalog_version"] == (await relay.client.get("/v1/models")).json()["catalog_version"]
    )
    assert job["metadata"] == {"order": "42", "customer": "acme", "empty": ""}
    [submit] = provider.submits()
    task_id = next(iter(provider.tasks))
    assert job["provider"] == {"name": "poyo", "task_id": task_id, "status": "not_started"}
    assert job["progress"] == 0
    assert job["outputs"] == []
    assert job["error"] is None
    assert job["completed_at"] is None
    created = parse_z(job["created_at"])
    assert parse_z(job["updated_at"]) >= created
    assert parse_z(job["submitted_at"]) >= created

    # What was sent is that input, for the job's model, under the job's idempotency key.
    assert submit.headers["idempotency-key"] == job["id"]
    assert submit.json()["model"] == "wan2.5-image-to-video"
    assert submit.json()["input"] == job["input"]

    # Reading it back gives the same object.
    assert await relay.client.job(job["id"]) == job


async def test_text_job_without_metadata_and_unique_ids(
    relay: Service, provider: ProviderStandIn
) -> None:
    responses = [await relay.client.create_job(TEXT_JOB) for _ in range(4)]
    assert [r.status_code for r in responses] == [201] * 4
    job = responses[0].json()
    assert job["model"] == "wan2.5-text-to-video"
    assert job["metadata"] == {}
    assert job["input"]["prompt"] == "a lighthouse at dusk"
    assert provider.submits()[0].json()["model"] == "wan2.5-text-to-video"
    ids = [r.json()["id"] for r in responses]
    assert len(set(ids)) == 4
    assert len({r.json()["provider"]["task_id"] for r in responses}) == 4

    # A provider that starts the task at once: the job starts as running.
    async def running(call: Call) -> Response:
        return provider.accept(call, status="running")

    provider.submit_hook = running
    job = (await relay.client.create_job(IMAGE_JOB)).json()
    assert job["status"] == "running"
    assert job["provider"]["status"] == "running"


async def test_job_is_stored_pending_before_the_provider_is_called(
    relay: Service, provider: ProviderStandIn
) -> None:
    seen: list[tuple[str, list[str]]] = []

    async def look_then_accept(call: Call) -> Response:
        job_id = callback_job_id(call.json()["callback_url"])
        job = await relay.client.job(job_id)
        seen.append((job["status"], event_types(await relay.client.events(job_id))))
        return provider.accept(call)

    provider.submit_hook = look_then_accept
    response = await relay.client.create_job(IMAGE_JOB)
    assert response.status_code == 201, response.text
    assert seen == [("pending", ["job.created"])]
    assert response.json()["status"] == "queued"
    types = event_types(await relay.client.events(response.json()["id"]))
    assert types == ["job.created", "provider.submitted", "job.status_changed"]


# ---- what the provider's answer does to the job -------------------------------------------


async def test_provider_rejection_is_a_201_failed_job_with_its_message(
    relay: Service, provider: ProviderStandIn
) -> None:
    answers = iter([400, 402, 422])

    async def reject(_call: Call) -> Response:
        status = next(answers)
        return poyo_error(status, f"HTTP {status}: the image could not be downloaded")

    provider.submit_hook = reject
    for attempt, http_status in enumerate([400, 402, 422], start=1):
        response = await relay.client.create_job(IMAGE_JOB)
        assert response.status_code == 201, response.text
        job = response.json()
        assert job["status"] == "failed"
        assert job["error"]["message"] == f"HTTP {http_status}: the image could not be downloaded"
        assert isinstance(job["error"]["code"], str)
        assert job["error"]["code"]
        assert job["provider"]["task_id"] is None
        assert job["outputs"] == []
        assert job["completed_at"] is not None
        assert len(provider.submits()) == attempt  # a rejection is not retried inline
        assert await relay.client.job(job["id"]) == job
        types = event_types(await relay.client.events(job["id"]))
        assert types[0] == "job.created"
        assert types[-1] == "job.status_changed"
        assert "provider.submitted" not in types


async def test_provider_5xx_leaves_the_job_pending(
    start_service: ServiceFactory, provider: ProviderStandIn
) -> None:
    relay = await start_service(
        poyo_base_url=provider.url, poyo_api_key=provider.api_key, run_worker=False
    )

    async def broken(_call: Call) -> Response:
        return poyo_error(500, "internal error")

    provider.submit_hook = broken
    response = await relay.client.create_job(IMAGE_JOB)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["status"] == "pending"
    assert job["error"] is None
    assert job["provider"]["task_id"] is None
    assert job["completed_at"] is None
    # The client retried the transient error inline before leaving it to the worker.
    assert len(provider.submits()) >= 2
    stored = await relay.client.job(job["id"])
    assert stored["status"] == "pending"
    failed = [e for e in await relay.client.events(job["id"]) if e["type"].endswith("failed")]
    assert failed, "the failed attempt is on the audit trail"


async def test_pending_job_stays_pending_while_the_provider_is_down_then_is_submitted(
    start_service: ServiceFactory, provider: ProviderStandIn
) -> None:
    relay = await start_service(
        poyo_base_url=provider.url, poyo_api_key=provider.api_key, submit_max_attempts=100
    )
    down = True

    async def outage(call: Call) -> Response:
        return poyo_error(503, "down for maintenance") if down else provider.accept(call)

    provider.submit_hook = outage
    job = (await relay.client.create_job(IMAGE_JOB)).json()
    assert job["status"] == "pending"
    attempts_by_api = len(provider.submits())
    # The worker keeps trying; the job stays pending (never failed) meanwhile.
    await eventually(lambda: _count(provider), lambda n: n >= attempts_by_api + 3)
    assert (await relay.client.job(job["id"]))["status"] == "pending"
    down = False
    queued = await relay.client.wait_for_status(job["id"], {"queued", "failed"})
    assert queued["status"] == "queued"
    assert queued["provider"]["task_id"] in provider.tasks


async def _count(provider: ProviderStandIn) -> int:
    return len(provider.submits())


async def test_absurd_retry_after_leaves_the_job_pending(
    relay: Service, provider: ProviderStandIn
) -> None:
    for value in ("inf", "1e12"):

        async def limited(_call: Call, value: str = value) -> Response:
            response = poyo_error(429, "slow down", "rate_limit_error")
            response.headers["Retry-After"] = value
            return response

        provider.submit_hook = limited
        response = await relay.client.create_job(IMAGE_JOB)
        assert response.status_code == 201, (value, response.text)
        assert response.json()["status"] == "pending"


async def test_provider_timeout_leaves_the_job_pending_without_resubmitting(
    start_service: ServiceFactory, provider: ProviderStandIn
) -> None:
    relay = await start_service(
        poyo_base_url=provider.url, poyo_api_key=provider.api_key, provider_timeout_seconds=0.3
    )

    async def stall(_call: Call) -> Response:
        return await provider.hang()

    provider.submit_hook = stall
    response = await relay.client.create_job(IMAGE_JOB)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["status"] == "pending"
    assert job["error"] is None
    # The provider may have started a task: the request must not be sent twice at once.
    assert len(provider.submits()) == 1
    events = await relay.client.events(job["id"])
    [failure] = [e for e in events if e["type"] == "provider.submit_failed"]
    assert failure["data"]["outcome_unknown"] is True


async def test_provider_unreachable_leaves_the_job_pending(start_service: ServiceFactory) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    relay = await start_service(poyo_base_url=f"http://127.0.0.1:{port}", run_worker=False)
    response = await relay.client.create_job(IMAGE_JOB)
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "pending"


# ---- reading -------------------------------------------------------------------------------


async def test_client_errors_use_the_envelope(relay: Service) -> None:
    ids = ["job_01jcz3q9m4b8x2v7k5n0r6t1yw", "job_00000000000000000000000000", "nope", "job_"]
    for job_id in ids:
        for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/events"):
            response = await relay.client.get(path)
            assert response.status_code == 404, (path, response.text)
            body = response.json()
            assert set(body) == {"error"}
            assert body["error"]["type"] == "not_found"
            assert body["error"]["message"]

    for response in (
        await relay.client.http.post("/v1/jobs", json=IMAGE_JOB),
        await relay.client.http.get("/v1/jobs"),
        await relay.client.http.post(
            "/v1/jobs", json=IMAGE_JOB, headers={"Authorization": "Bearer prk_wrong"}
        ),
    ):
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"
    assert (await relay.client.get("/v1/jobs")).json()["data"] == []

    malformed = await relay.client.http.post(
        "/v1/jobs",
        content=b'{"model": "wan2.5-text-to-video", "input": {',
        headers=relay.client.headers({"Content-Type": "application/json"}),
    )
    assert 400 <= malformed.status_code < 500
    assert set(malformed.json()) == {"error"}
    assert (await relay.client.get("/v1/jobs")).json()["data"] == []


# ---- the callback URL the provider is given --------------------------------------------------


async def test_callback_url_names_the_job_and_carries_a_per_job_credential(
    relay: Service, provider: ProviderStandIn
) -> None:
    jobs = [(await relay.client.create_job(IMAGE_JOB)).json() for _ in range(3)]
    urls = [submit.json()["callback_url"] for submit in provider.submits()]
    credentials = []
    for job, url in zip(jobs, urls, strict=True):
        assert url.startswith(relay.settings.public_base_url + "/"), url
        match = JOB_IN_CALLBACK.search(url)
        assert match, url
        assert match.group(1) == job["id"]
        credential = match.group(2)
        assert len(credential) >= 32  # at least ~192 bits in URL-safe base64
        assert job["id"] not in credential
        credentials.append(credential)
        # The credential is never shown to API clients.
        assert credential not in str(await relay.client.job(job["id"]))
        assert credential not in str(await relay.client.events(job["id"]))
    assert len(set(credentials)) == len(credentials)


async def test_callback_url_is_built_from_public_base_url(
    start_service: ServiceFactory, provider: ProviderStandIn
) -> None:
    public = "https://relay.example.com/poyo"  # data only: nothing connects to it
    relay = await start_service(
        poyo_base_url=provider.url, poyo_api_key=provider.api_key, public_base_url=public
    )
    job = (await relay.client.create_job(IMAGE_JOB)).json()
    [submit] = provider.submits()
    url = submit.json()["callback_url"]
    assert url.startswith(public + "/v1/callbacks/poyo/" + job["id"] + "/"), url
    assert url == relay.runtime.credentials.url(job["id"])


async def test_credentials_survive_a_restart(
    start_service: ServiceFactory, provider: ProviderStandIn
) -> None:
    first = await start_service(poyo_base_url=provider.url, poyo_api_key=provider.api_key)
    job = (await first.client.create_job(IMAGE_JOB)).json()
    url = provider.submits()[0].json()["callback_url"]
    # A second process on the same database (a replica, or after a restart) accepts it.
    second = await start_service(
        poyo_base_url=provider.url,
        poyo_api_key=provider.api_key,
        public_base_url=first.settings.public_base_url,
    )
    assert second.runtime.credentials.url(job["id"]) == url
