"""Provider callback signatures (POYO_WEBHOOK_SECRET): X-Webhook-Timestamp within 300 s and
X-Webhook-Signature = base64(HMAC-SHA256(secret, task_id + "." + timestamp)), on top of the
per-job URL credential. Refusals are 401 and kept on the job's trail. Over real HTTP, on
SQLite and PostgreSQL, with the PoYo simulator signing (or not) as the provider would."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import httpx
import orjson

from tests.conftest import Service, ServiceFactory, Simulator
from tests.support import TEXT_JOB, eventually

SECRET = "whsec-test-0f9e8d7c6b5a4938"


def sign(secret: str, task_id: str, timestamp: str) -> str:
    """Written out here rather than imported: the test states the documented scheme."""
    digest = hmac.new(secret.encode(), f"{task_id}.{timestamp}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def callback_body(task_id: str, status: str = "finished") -> bytes:
    return orjson.dumps(
        {
            "code": 200,
            "msg": "success",
            "data": {"task_id": task_id, "status": status, "progress": 100, "files": []},
        }
    )


async def _quiet_job(service: Service, simulator: Simulator) -> dict[str, Any]:
    """A submitted job whose provider will not call back by itself."""
    await simulator.set_faults(drop_callback_rate=1.0)
    created = await service.client.create_job(TEXT_JOB)
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["provider"]["task_id"]
    return job  # type: ignore[no-any-return]


async def _post(
    http: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str]
) -> httpx.Response:
    return await http.post(
        url, content=body, headers={"Content-Type": "application/json", **headers}
    )


def _rejections(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event for event in events if event["type"] == "callback.rejected"]


async def test_bad_signatures_are_refused_and_recorded(
    start_service: ServiceFactory, simulator: Simulator
) -> None:
    service = await start_service(poyo_webhook_secret=SECRET)
    job = await _quiet_job(service, simulator)
    task_id = job["provider"]["task_id"]
    url = service.runtime.credentials.url(job["id"])
    body = callback_body(task_id)
    now = int(time.time())
    fresh = str(now)
    good = sign(SECRET, task_id, fresh)
    stale, future = str(now - 3600), str(now + 3600)
    tampered = good[:-2] + ("A" if good[-2] != "A" else "B") + good[-1]
    cases: dict[str, dict[str, str]] = {
        "no headers": {},
        "no signature": {"X-Webhook-Timestamp": fresh},
        "no timestamp": {"X-Webhook-Signature": good},
        "empty signature": {"X-Webhook-Timestamp": fresh, "X-Webhook-Signature": ""},
        "tampered": {"X-Webhook-Timestamp": fresh, "X-Webhook-Signature": tampered},
        "other secret": {
            "X-Webhook-Timestamp": fresh,
            "X-Webhook-Signature": sign("another-secret", task_id, fresh),
        },
        "stale": {
            "X-Webhook-Timestamp": stale,
            "X-Webhook-Signature": sign(SECRET, task_id, stale),
        },
        "stale, 400 s": {
            "X-Webhook-Timestamp": str(now - 400),
            "X-Webhook-Signature": sign(SECRET, task_id, str(now - 400)),
        },
        "future": {
            "X-Webhook-Timestamp": future,
            "X-Webhook-Signature": sign(SECRET, task_id, future),
        },
        "another task": {
            "X-Webhook-Timestamp": fresh,
            "X-Webhook-Signature": sign(SECRET, "task-unified-1-someoneelse", fresh),
        },
        "signature of another timestamp": {
            "X-Webhook-Timestamp": fresh,
            "X-Webhook-Signature": sign(SECRET, task_id, str(now - 1)),
        },
        "malformed timestamp": {
            "X-Webhook-Timestamp": "yesterday",
            "X-Webhook-Signature": sign(SECRET, task_id, "yesterday"),
        },
        "hex instead of base64": {
            "X-Webhook-Timestamp": fresh,
            "X-Webhook-Signature": hmac.new(
                SECRET.encode(), f"{task_id}.{fresh}".encode(), hashlib.sha256
            ).hexdigest(),
        },
    }
    http = service.client.http
    for case, headers in cases.items():
        response = await _post(http, url, body, headers)
        assert response.status_code == 401, (case, response.text)
        error = response.json()["error"]
        assert error["type"] == "authentication_error", case
        assert "signature" in error["message"], case
        # No oracle: the expected signature is never echoed.
        assert good not in response.text
        assert SECRET not in response.text

    events = await service.client.events(job["id"])
    rejected = _rejections(events)
    assert len(rejected) == len(cases)
    for event in rejected:
        assert event["data"]["reason"].startswith("invalid signature"), event
        assert event["data"]["task_id"] == task_id
        assert SECRET not in orjson.dumps(event).decode()
    assert not [e for e in events if e["type"] in ("callback.received", "callback.duplicate")]
    assert (await service.client.job(job["id"]))["status"] in ("queued", "running")

    # The correctly signed callback is accepted, and the job is confirmed and completes.
    accepted = await _post(
        http, url, body, {"X-Webhook-Timestamp": fresh, "X-Webhook-Signature": good}
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json() == {"received": True, "outcome": "received"}
    done = await service.client.wait_for_status(job["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded"
    [received] = [
        e for e in await service.client.events(job["id"]) if e["type"] == "callback.received"
    ]
    assert received["data"]["signed"] is True


async def test_timestamps_inside_the_window_are_accepted(
    start_service: ServiceFactory, simulator: Simulator
) -> None:
    """Clock skew either way is tolerated up to 300 s (the margins here are 50 s)."""
    service = await start_service(poyo_webhook_secret=SECRET)
    http = service.client.http
    for offset, status in ((-250, "running"), (250, "finished")):
        job = await _quiet_job(service, simulator)
        task_id = job["provider"]["task_id"]
        timestamp = str(int(time.time()) + offset)
        response = await _post(
            http,
            service.runtime.credentials.url(job["id"]),
            callback_body(task_id, status),
            {
                "X-Webhook-Timestamp": timestamp,
                "X-Webhook-Signature": sign(SECRET, task_id, timestamp),
            },
        )
        assert response.status_code == 200, (offset, response.text)
        assert response.json()["outcome"] == "received"


async def test_the_url_credential_still_applies(
    start_service: ServiceFactory, simulator: Simulator
) -> None:
    service = await start_service(poyo_webhook_secret=SECRET)
    job = await _quiet_job(service, simulator)
    other = await _quiet_job(service, simulator)
    task_id = job["provider"]["task_id"]
    timestamp = str(int(time.time()))
    signed = {
        "X-Webhook-Timestamp": timestamp,
        "X-Webhook-Signature": sign(SECRET, task_id, timestamp),
    }
    body = callback_body(task_id)
    url = service.runtime.credentials.url(job["id"])
    base, token = url.rsplit("/", 1)
    flipped = ("A" if token[0] != "A" else "B") + token[1:]
    wrong_urls = {
        "flipped token": f"{base}/{flipped}",
        "another job's token": f"{base}/{service.runtime.credentials.token(other['id'])}",
        "no token": f"{base}/",
        "token of the task id": f"{base}/{task_id}",
    }
    http = service.client.http
    for case, wrong in wrong_urls.items():
        response = await _post(http, wrong, body, signed)
        assert response.status_code in (401, 404), (case, response.text)
        if response.status_code == 401:
            assert response.json()["error"]["type"] == "authentication_error"
            assert token not in response.text
    # Refusals of an unauthenticated URL are not written to the job: anyone could send them.
    assert _rejections(await service.client.events(job["id"])) == []
    assert (await service.client.job(job["id"]))["status"] in ("queued", "running")
    # The signature does not authorise another job's URL either: that job's task is not it.
    other_url = service.runtime.credentials.url(other["id"])
    response = await _post(http, other_url, body, signed)
    assert response.status_code == 400
    assert _rejections(await service.client.events(other["id"]))[0]["data"]["reason"] == (
        "callback names another task"
    )
    # The right URL with the same headers is accepted.
    assert (await _post(http, url, body, signed)).status_code == 200


async def test_a_body_naming_another_task_is_refused_even_when_signed_for_it(
    start_service: ServiceFactory, simulator: Simulator
) -> None:
    service = await start_service(poyo_webhook_secret=SECRET)
    job = await _quiet_job(service, simulator)
    timestamp = str(int(time.time()))
    forged_task = "task-unified-1700000000-forged"
    response = await _post(
        service.client.http,
        service.runtime.credentials.url(job["id"]),
        callback_body(forged_task),
        {
            "X-Webhook-Timestamp": timestamp,
            "X-Webhook-Signature": sign(SECRET, forged_task, timestamp),
        },
    )
    assert response.status_code == 400
    [event] = _rejections(await service.client.events(job["id"]))
    assert event["data"]["reason"] == "callback names another task"


async def test_signed_callbacks_from_the_simulator_complete_jobs(
    start_service: ServiceFactory, simulator: Simulator
) -> None:
    await simulator.set_faults(webhook_secret=SECRET)
    service = await start_service(poyo_webhook_secret=SECRET)
    jobs = [(await service.client.create_job(TEXT_JOB)).json() for _ in range(3)]
    for job in jobs:
        done = await service.client.wait_for_status(job["id"], {"succeeded", "failed"})
        assert done["status"] == "succeeded"
        events = await service.client.events(job["id"])
        received = [e for e in events if e["type"] == "callback.received"]
        assert received
        assert all(e["data"]["signed"] is True for e in received)
        assert _rejections(events) == []
    stats = await simulator.stats()
    assert stats["callback_deliveries"] == {"200": 3}


async def test_callbacks_signed_with_another_secret_never_move_a_job(
    start_service: ServiceFactory, simulator: Simulator
) -> None:
    """A provider (or forger) with the wrong secret is refused; the job still completes,
    through the worker's own status checks, never through the refused callback."""
    await simulator.set_faults(webhook_secret="not-the-configured-secret")
    service = await start_service(poyo_webhook_secret=SECRET, reconcile_after_seconds=1.0)
    job = (await service.client.create_job(TEXT_JOB)).json()
    await eventually(simulator.stats, lambda stats: stats["callback_deliveries"].get("401", 0) >= 1)
    events = await service.client.events(job["id"])
    [rejected, *_] = _rejections(events)
    assert rejected["data"]["reason"] == "invalid signature: signature mismatch"
    assert not [e for e in events if e["type"] == "callback.received"]
    done = await service.client.wait_for_status(job["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded"
    events = await service.client.events(job["id"])
    assert "provider.polled" in [e["type"] for e in events]
    assert not [e for e in events if e["type"] == "callback.received"]


async def test_without_a_secret_signature_headers_are_not_required(
    service: Service, simulator: Simulator
) -> None:
    job = await _quiet_job(service, simulator)
    task_id = job["provider"]["task_id"]
    response = await _post(
        service.client.http,
        service.runtime.credentials.url(job["id"]),
        callback_body(task_id),
        {"X-Webhook-Timestamp": "garbage", "X-Webhook-Signature": "garbage"},
    )
    assert response.status_code == 200, response.text
    [received] = [
        e for e in await service.client.events(job["id"]) if e["type"] == "callback.received"
    ]
    assert received["data"]["signed"] is False
