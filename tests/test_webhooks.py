"""Outgoing webhooks, end to end on both databases: endpoints, every job event in order,
Standard Webhooks signatures checked by the `standardwebhooks` library, rotation, the
retry schedule, Retry-After, 410 Gone, disabling, the delivery log, redelivery, recovery,
test-sends, a job's own webhook_url, and per-endpoint isolation."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI, Request, Response
from sqlalchemy import text
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.conftest import Service, ServiceFactory
from tests.support import IMAGE_JOB, ApiClient, LiveServer, eventually

JOB_ORDER = [
    "job.created",
    "job.queued",
    "job.running",
    "job.progress",
    "job.succeeded",
    "job.failed",
    "job.archived",
]


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Behaviour:
    """What one path answers: scripted statuses first, then `status`."""

    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    status: int = 204
    delay: float = 0.0
    body: bytes = b""


class Hooks:
    """Webhook receivers on loopback, one per path, each answering as told."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.behaviour: dict[str, Behaviour] = {}
        self.app = FastAPI()
        self.server = LiveServer()

        @self.app.post("/{path}")
        async def hook(path: str, request: Request) -> Response:
            self.calls.append(Call(path, dict(request.headers), await request.body(), time.time()))
            behaviour = self.behaviour.setdefault(path, Behaviour())
            if behaviour.delay:
                await asyncio.sleep(behaviour.delay)
            if behaviour.script:
                status, headers = behaviour.script.pop(0)
                return Response(status_code=status, headers=headers)
            return Response(status_code=behaviour.status, content=behaviour.body)

    def url(self, path: str) -> str:
        return f"{self.server.url}/{path}"

    def at(self, path: str) -> list[Call]:
        return [call for call in self.calls if call.path == path]

    async def count(self, path: str) -> int:
        return len(self.at(path))


@pytest.fixture
async def hooks() -> Any:
    receivers = Hooks()
    await receivers.server.start(receivers.app)
    yield receivers
    await receivers.server.stop()


async def add_endpoint(client: ApiClient, url: str, **fields: Any) -> dict[str, Any]:
    response = await client.http.post(
        "/v1/webhook_endpoints", json={"url": url, **fields}, headers=client.headers()
    )
    assert response.status_code == 201, response.text
    endpoint: dict[str, Any] = response.json()
    assert endpoint["secret"].startswith("whsec_")
    return endpoint


async def call(client: ApiClient, method: str, path: str, **kwargs: Any) -> Any:
    return await client.http.request(method, path, headers=client.headers(), **kwargs)


def verified(secret: str, received: Call) -> dict[str, Any]:
    payload: dict[str, Any] = Webhook(secret).verify(received.body, received.headers)
    return payload


async def service_with_hooks(start_service: ServiceFactory, **settings: Any) -> Service:
    return await start_service(webhook_allow_private=True, **settings)


# ---- endpoints --------------------------------------------------------------------------


async def test_endpoints_are_managed_per_owner(start_service: ServiceFactory, hooks: Hooks) -> None:
    service = await service_with_hooks(start_service)
    client = service.client
    endpoint = await add_endpoint(
        client, hooks.url("a"), event_types=["job.succeeded", "job.created"], description="ops"
    )
    assert endpoint["event_types"] == ["job.created", "job.succeeded"]  # in lifecycle order
    assert endpoint["enabled"] is True
    assert endpoint["owner"] == "tenant-a"
    one = (await call(client, "GET", f"/v1/webhook_endpoints/{endpoint['id']}")).json()
    assert one["secret"] is None  # shown once, at creation
    revealed = (await call(client, "GET", f"/v1/webhook_endpoints/{endpoint['id']}/secret")).json()
    assert revealed["secret"] == endpoint["secret"]
    assert revealed["previous_secret"] is None

    listed = (await call(client, "GET", "/v1/webhook_endpoints")).json()
    assert listed["object"] == "list"
    assert [e["id"] for e in listed["data"]] == [endpoint["id"]]

    patched = await call(
        client,
        "PATCH",
        f"/v1/webhook_endpoints/{endpoint['id']}",
        json={"event_types": [], "description": "all"},
    )
    assert patched.status_code == 200
    assert patched.json()["event_types"] == []
    assert patched.json()["description"] == "all"

    other = await service.new_client("tenant-b")
    for method, suffix in [("GET", ""), ("PATCH", ""), ("DELETE", ""), ("GET", "/secret")]:
        path = f"/v1/webhook_endpoints/{endpoint['id']}{suffix}"
        answer = await call(other, method, path, **({"json": {}} if method == "PATCH" else {}))
        assert answer.status_code == 404, (method, suffix)
    assert (await call(other, "GET", "/v1/webhook_endpoints")).json()["data"] == []
    admin = await service.new_client("root", admin=True)
    assert len((await call(admin, "GET", "/v1/webhook_endpoints")).json()["data"]) == 1

    assert (
        await call(client, "DELETE", f"/v1/webhook_endpoints/{endpoint['id']}")
    ).status_code == 204
    gone = await call(client, "GET", f"/v1/webhook_endpoints/{endpoint['id']}")
    assert gone.status_code == 404


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"url": "ftp://example.com/x"}, ["body", "url"]),
        (
            {"url": "http://example.com", "event_types": ["job.exploded"]},
            ["body", "event_types", "0"],
        ),
        ({"url": "http://example.com", "event_types": ["webhook.test"]}, ["body", "event_types"]),
        ({"url": "http://example.com", "secret": "mine"}, ["body", "secret"]),
        ({"url": "http://example.com", "description": "x" * 501}, ["body", "description"]),
    ],
)
async def test_invalid_endpoints_are_refused_at_their_field(
    service: Service, body: dict[str, Any], where: list[Any]
) -> None:
    answer = await call(service.client, "POST", "/v1/webhook_endpoints", json=body)
    assert answer.status_code == 422, answer.text
    assert where in [detail["loc"] for detail in answer.json()["error"]["details"]]


async def test_a_private_target_is_refused_at_registration(service: Service) -> None:
    for url in ("http://127.0.0.1:9/x", "http://localhost/x", "http://[::1]/x", "http://10.1.2.3/"):
        answer = await call(service.client, "POST", "/v1/webhook_endpoints", json={"url": url})
        assert answer.status_code == 422, url
        (detail,) = answer.json()["error"]["details"]
        assert detail["loc"] == ["body", "url"]
        assert detail["type"] == "forbidden_target"
        assert "WEBHOOK_ALLOW_PRIVATE" in detail["msg"]
    assert (await call(service.client, "GET", "/v1/webhook_endpoints")).json()["data"] == []


# ---- job events ------------------------------------------------------------------------


async def test_every_job_event_reaches_its_endpoints_in_order_signed(
    start_service: ServiceFactory, hooks: Hooks
) -> None:
    service = await service_with_hooks(start_service)
    everything = await add_endpoint(service.client, hooks.url("all"))
    ends = await add_endpoint(service.client, hooks.url("ends"), event_types=["job.succeeded"])
    other_owner = await service.new_client("tenant-b")
    await add_endpoint(other_owner, hooks.url("other"))

    job = (await service.client.create_job(IMAGE_JOB)).json()
    await eventually(lambda: hooks.count("ends"), lambda n: n == 1)
    await eventually(
        lambda: hooks.count("all"),
        lambda n: (
            n >= 1
            and verified(everything["secret"], hooks.at("all")[-1])["type"] == "job.succeeded"
        ),
    )
    bodies = [verified(everything["secret"], received) for received in hooks.at("all")]
    types = [body["type"] for body in bodies]
    assert types[0] == "job.created"
    assert types[-1] == "job.succeeded"
    assert types == sorted(types, key=JOB_ORDER.index), types  # never out of order
    assert len({received.webhook_id for received in hooks.at("all")}) == len(types)
    assert all(body["data"]["id"] == job["id"] for body in bodies)
    assert bodies[0]["data"]["status"] == "pending"
    assert bodies[-1]["data"]["status"] == "succeeded"
    assert bodies[-1]["data"]["outputs"][0]["type"] == "video"

    (only,) = hooks.at("ends")
    assert verified(ends["secret"], only)["type"] == "job.succeeded"
    with pytest.raises(WebhookVerificationError):
        verified(everything["secret"], only)  # each endpoint has its own secret
    assert hooks.at("other") == []  # another owner's endpoint hears nothing of this job

    events = await eventually(
        lambda: service.client.events(job["id"]),
        lambda evs: sum(e["type"] == "webhook.delivered" for e in evs) == len(types) + 1,
    )
    delivered = [e["data"] for e in events if e["type"] == "webhook.delivered"]
    assert {d["endpoint_id"] for d in delivered} == {everything["id"], ends["id"]}
    assert all(d["http_status"] == 204 and d["attempt"] == 1 for d in delivered)
    messages = await call(
        service.client, "GET", "/v1/webhook_messages", params={"job_id": job["id"]}
    )
    listed = messages.json()["data"]
    assert [m["event_type"] for m in listed if len(m["deliveries"]) == 2] == ["job.succeeded"]
    assert all(d["state"] == "succeeded" for m in listed for d in m["deliveries"])
    assert (
        await call(other_owner, "GET", "/v1/webhook_messages", params={"job_id": job["id"]})
    ).json()["data"] == []


async def test_a_failing_endpoint_holds_back_later_events_of_the_same_job(
    start_service: ServiceFactory, hooks: Hooks
) -> None:
    service = await service_with_hooks(start_service)
    endpoint = await add_endpoint(service.client, hooks.url("flaky"))
    hooks.behaviour["flaky"] = Behaviour(script=[(500, {})] * 4)
    job = (await service.client.create_job(IMAGE_JOB)).json()
    await service.client.wait_for_status(job["id"], {"succeeded"})
    await eventually(
        lambda: hooks.count("flaky"),
        lambda n: (
            n >= 5
            and verified(endpoint["secret"], hooks.at("flaky")[-1])["type"] == "job.succeeded"
        ),
    )
    order = [JOB_ORDER.index(verified(endpoint["secret"], c)["type"]) for c in hooks.at("flaky")]
    assert order == sorted(order), order  # retries of an event come before any later event
    first_ids = [c.webhook_id for c in hooks.at("flaky")[:5]]
    assert len(set(first_ids)) == 1  # the first event, retried with the same webhook-id


# ---- a job's own webhook_url ------------------------------------------------------------


async def test_a_jobs_webhook_url_hears_its_end_signed_with_the_owner_secret(
    start_service: ServiceFactory, hooks: Hooks
) -> None:
    service = await service_with_hooks(start_service)
    hooks.behaviour["job"] = Behaviour(script=[(500, {}), (500, {})])
    job = (await service.client.create_job({**IMAGE_JOB, "webhook_url": hooks.url("job")})).json()
    await eventually(lambda: hooks.count("job"), lambda n: n >= 3)
    owner_secret = (await call(service.client, "GET", "/v1/webhook_secret")).json()["secret"]
    bodies = [verified(owner_secret, c) for c in hooks.at("job")]
    assert [b["type"] for b in bodies] == ["job.succeeded"] * 3  # only its end
    assert bodies[0]["data"]["id"] == job["id"]
    assert len({c.webhook_id for c in hooks.at("job")}) == 1  # retries keep the message id

    other_secret = (
        await call(await service.new_client("tenant-b"), "GET", "/v1/webhook_secret")
    ).json()["secret"]
    with pytest.raises(WebhookVerificationError):
        verified(other_secret, hooks.at("job")[0])
    events = await eventually(
        lambda: service.client.events(job["id"]),
        lambda evs: any(e["type"] == "webhook.delivered" for e in evs),
    )
    tried = [e for e in events if e["type"].startswith("webhook.")]
    assert [e["type"] for e in tried] == ["webhook.failed", "webhook.failed", "webhook.delivered"]
    assert [e["data"]["http_status"] for e in tried] == [500, 500, 204]
    assert tried[-1]["data"]["endpoint_id"] is None
    assert tried[-1]["data"]["attempt"] == 3


async def test_a_private_webhook_url_is_refused_at_every_delivery(
    start_service: ServiceFactory, hooks: Hooks
) -> None:
    # Creation refuses a private target too; this job was taken in while private targets
    # were allowed (by a replica without a worker), and is delivered after they no longer
    # are, as after an address changed between creation and delivery.
    allowing = await start_service(webhook_allow_private=True, run_worker=False)
    job = (await allowing.client.create_job({**IMAGE_JOB, "webhook_url": hooks.url("job")})).json()
    service = await start_service(webhook_retry_schedule="0.05,0.05")
    events = await eventually(
        lambda: service.client.events(job["id"]),
        lambda evs: any(e["type"] == "webhook.abandoned" for e in evs),
    )
    refused = [e["data"] for e in events if e["type"].startswith("webhook.")]
    assert len(refused) == 3
    assert all(data["error"].startswith("target refused: ") for data in refused)
    assert all("not public (127.0.0.1)" in data["error"] for data in refused)
    assert hooks.calls == []
    assert (await service.client.job(job["id"]))["status"] == "succeeded"


async def test_a_job_nobody_listens_to_sends_nothing(
    start_service: ServiceFactory, hooks: Hooks
) -> None:
    service = await service_with_hooks(start_service)
    job = (await service.client.create_job(IMAGE_JOB)).json()
    await service.client.wait_for_status(job["id"], {"succeeded"})
    types = {e["type"] for e in await service.client.events(job["id"])}
    assert not any(t.startswith("webhook.") for t in types)
    listed = await call(service.client, "GET", "/v1/webhook_messages", params={"job_id": job["id"]})
    assert listed.json()["data"] == []


# ---- secrets -------------------------------------------------------------------------


async def test_during_a_rotation_both_secrets_verify(
    start_service: ServiceFactory, hooks: Hooks
) -> None:
    service = await service_with_hooks(start_service)
    endpoint = await add_endpoint(service.client, hooks.url("r"))
    base = f"/v1/webhook_endpoints/{endpoint['id']}"
    await call(service.client, "POST", base + "/test")
    await eventually(lambda: hooks.count("r"), lambda n: n == 1)
    assert hooks.at("r")[0].headers["webhook-signature"].count("v1,") == 1

    rotated = (await call(service.client, "POST", base + "/rotate_secret")).json()
    assert rotated["secret"] != endpoint["secret"]
    assert rotated["previous_secret"] == endpoint["secret"]
    expires = datetime.fromisoformat(rotated["previous_secret_expires_at"])
    assert timedelta(hours=23) < expires - datetime.now(UTC) <= timedelta(hours=24)
    await call(service.client, "POST", base + "/test")
    await eventually(lambda: hooks.count("r"), lambda n: n == 2)
    during = hooks.at("r")[1]
    assert during.headers["webhook-signature"].count("v1,") == 2
    assert verified(endpoint["secret"], during)["type"] == "webhook.test"
    assert verified(rotated["secret"], during)["data"]["endpoint_id"] == endpoint["id"]
    tampered = Call(during.path, during.headers, during.body.replace(b"test", b"tset"), during.at)
    with pytest.raises(WebhookVerificationError):
        verified(rotated["secret"], tampered)


async def test_after_the_overlap_only_the_new_secret_signs(
    start_service: ServiceFactory, hooks: Hooks
) -> None:
    service = await service_with_hooks(start_service, webhook_secret_overlap_seconds=0)
    endpoint = await add_endpoint(service.client, hooks.url("r"))
    base = f"/v1/webhook_endpoints/{endpoint['id']}"
    rotated = (await call(service.client, "POST", base + "/rotate_secret")).json()
    assert rotated["previous_secret"] is None
    await call(service.client, "POST", base + "/test")
    await eventually(lambda: hooks.count("r"), lambda n: n == 1)
    (received,) = hooks.at("r")
    assert verified(rotated["secret"], received)["type"] == "webhook.test"
    with pytest.raises(WebhookVerificationError):
        verified(endpoint["secret"], received)


# ---- retries, Retry-After, 410, disabling ----------------------------------------------


async def test_retry_after_is_honoured_on_429(start_service: ServiceFactory, hooks: Hooks) -> None:
    service = await service_with_hooks(start_service)
    endpoint = await add_endpoint(service.client, hooks.url("busy"))
    hooks.behaviour["busy"] = Behaviour(script=[(429, {"Retry-After": "2"})])
    await call(service.client, "POST", f"/v1/webhook_endpoints/{endpoint['id']}/test")
    await eventually(lambda: hooks.count("busy"), lambda n: n == 2, seconds=10)
    first, second = hooks.at("busy")
    assert first.webhook_id == second.webhook_id
    assert second.at - first.at >= 1.9  # the schedule alone would retry after 0.1 s


async def test_410_gone_disables_the_endpoint(start_service: ServiceFactory, hooks: Hooks) -> None:
    service = await service_with_hooks(start_service)
    endpoint = await add_endpoint(service.client, hooks.url("gone"))
    hooks.behaviour["gone"] = Behaviour(status=410)
    base = f"/v1/webhook_endpoints/{endpoint['id']}"
    await call(service.client, "POST", base + "/test")
    disabled = await eventually(
        lambda: _endpoint(service.client, endpoint["id"]), lambda e: not e["enabled"]
    )
    assert disabled["disabled_reason"] == "the endpoint answered 410 Gone"
    assert await hooks.count("gone") == 1  # not retried
    job = (await service.client.create_job(IMAGE_JOB)).json()
    await service.client.wait_for_status(job["id"], {"succeeded"})
    await asyncio.sleep(0.5)
    assert await hooks.count("gone") == 1  # a disabled endpoint hears nothing
    refused = await call(service.client, "POST", base + "/test")
    assert refused.status_code == 409

    enabled = await call(service.client, "PATCH", base, json={"enabled": True})
    assert enabled.json()["enabled"] is True
    assert enabled.json()["disabled_reason"] is None


async def test_an_endpoint_failing_too_long_is_disabled_and_says_why(
    start_service: ServiceFactory, hooks: Hooks
) -> None:
    service = await service_with_hooks(
        start_service, webhook_disable_after_seconds=1, webhook_retry_schedule="0.3," * 19 + "0.3"
    )
    endpoint = await add_endpoint(service.client, hooks.url("down"))
    hooks.behaviour["down"] = Behaviour(status=503)
    await call(service.client, "POST", f"/v1/webhook_endpoints/{endpoint['id']}/test")
    disabled = await eventually(
        lambda: _endpoint(service.client, endpoint["id"]), lambda e: not e["enabled"], seconds=10
    )
    assert disabled["disabled_reason"].startswith("every attempt failed since ")
    assert disabled["failing_since"] is not None
    count = await hooks.count("down")
    assert 2 <= count <= 6  # about 1 s of attempts 0.3 s apart (fewer on a busy machine)
    await asyncio.sleep(0.8)
    assert await hooks.count("down") == count  # its pending delivery was given up


# ---- the delivery log, redelivery, recovery -------------------------------------------


async def test_delivery_log_redeliver_and_recover(
    start_service: ServiceFactory, hooks: Hooks
) -> None:
    service = await service_with_hooks(start_service, webhook_retry_schedule="0.05,0.05")
    endpoint = await add_endpoint(service.client, hooks.url("log"))
    hooks.behaviour["log"] = Behaviour(status=500, body=b"x" * 3000)
    base = f"/v1/webhook_endpoints/{endpoint['id']}"
    since = datetime.now(UTC).isoformat()
    sent = [(await call(service.client, "POST", base + "/test")).json() for _ in range(2)]
    assert all(s["deliveries"] == 1 for s in sent)
    message_ids = [s["message_ids"][0] for s in sent]
    await eventually(lambda: hooks.count("log"), lambda n: n == 6)  # 3 attempts each
    log = await eventually(
        lambda: _attempts(service.client, endpoint["id"]), lambda rows: len(rows) == 6
    )
    assert {row["message_id"] for row in log} == set(message_ids)
    assert all(row["http_status"] == 500 and row["latency_ms"] >= 0 for row in log)
    assert all(row["response"] == "x" * 1024 for row in log)  # the first 1 KiB
    assert sorted(row["attempt"] for row in log) == [1, 1, 2, 2, 3, 3]
    assert all(row["trigger"] == "scheduled" and row["event_type"] == "webhook.test" for row in log)
    page = (await call(service.client, "GET", base + "/deliveries", params={"limit": 4})).json()
    rest = (
        await call(
            service.client, "GET", base + "/deliveries", params={"cursor": page["next_cursor"]}
        )
    ).json()
    assert [r["id"] for r in page["data"] + rest["data"]] == [r["id"] for r in log]
    assert rest["next_cursor"] is None

    hooks.behaviour["log"] = Behaviour(status=200)
    again = await call(service.client, "POST", f"/v1/webhook_messages/{message_ids[0]}/redeliver")
    assert again.status_code == 202
    assert again.json()["deliveries"] == 1
    await eventually(lambda: hooks.count("log"), lambda n: n == 7)
    assert hooks.at("log")[-1].webhook_id == message_ids[0]

    recovered = await call(service.client, "POST", base + "/recover", params={"since": since})
    assert recovered.status_code == 202
    assert recovered.json()["message_ids"] == [message_ids[1]]  # the first one made it by now
    await eventually(lambda: hooks.count("log"), lambda n: n == 8)
    assert hooks.at("log")[-1].webhook_id == message_ids[1]
    newest = (await _attempts(service.client, endpoint["id"]))[0]
    assert newest["trigger"] == "manual"
    assert newest["http_status"] == 200
    await asyncio.sleep(0.3)
    assert await hooks.count("log") == 8  # each resent once

    other = await service.new_client("tenant-b")
    hidden = await call(other, "POST", f"/v1/webhook_messages/{message_ids[0]}/redeliver")
    assert hidden.status_code == 404
    bad = await call(service.client, "POST", base + "/recover", params={"since": "yesterday"})
    assert bad.status_code == 422

    assert (await call(service.client, "DELETE", base)).status_code == 204
    async with service.runtime.db.read_connection() as conn:
        for table in ("webhook_deliveries", "webhook_attempts"):
            left = await conn.scalar(text(f"SELECT count(*) FROM {table}"))
            assert left == 0, table  # gone with their endpoint


# ---- isolation -------------------------------------------------------------------------


async def test_a_slow_endpoint_does_not_hold_up_another(
    start_service: ServiceFactory, hooks: Hooks
) -> None:
    service = await service_with_hooks(
        start_service,
        webhook_concurrency=6,
        webhook_endpoint_concurrency=2,
        webhook_timeout_seconds=20,
    )
    slow = await add_endpoint(service.client, hooks.url("slow"))
    fast = await add_endpoint(service.client, hooks.url("fast"))
    hooks.behaviour["slow"] = Behaviour(delay=4)
    for _ in range(6):
        await call(service.client, "POST", f"/v1/webhook_endpoints/{slow['id']}/test")
    await eventually(lambda: hooks.count("slow"), lambda n: n == 2)
    started = time.monotonic()
    for _ in range(5):
        await call(service.client, "POST", f"/v1/webhook_endpoints/{fast['id']}/test")
    await eventually(lambda: hooks.count("fast"), lambda n: n == 5, seconds=3)
    assert time.monotonic() - started < 3  # the slow endpoint's answers take 4 s
    assert await hooks.count("slow") == 2  # never more than its limit at once


async def _endpoint(client: ApiClient, endpoint_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = (
        await call(client, "GET", f"/v1/webhook_endpoints/{endpoint_id}")
    ).json()
    return answer


async def _attempts(client: ApiClient, endpoint_id: str) -> list[dict[str, Any]]:
    page = await call(
        client, "GET", f"/v1/webhook_endpoints/{endpoint_id}/deliveries", params={"limit": 100}
    )
    rows: list[dict[str, Any]] = page.json()["data"]
    return rows
