"""Secrets stay secret: across a whole job lifecycle at log level DEBUG — creation, a signed
callback, confirmation, reads, failed authentication, a 422, a 413, forged callbacks — the
provider key, API keys, callback URL credentials, the callback secret and the webhook
secret appear in no log line, no response, no event and no metric. On SQLite and
PostgreSQL, over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from app.auth.service import create_key, revoke
from app.db import Database
from app.keyring.models import ServiceSecret
from tests.conftest import SIMULATOR_KEY, ServiceFactory, Simulator
from tests.support import IMAGE_JOB, TEXT_JOB, ApiClient, make_settings


class Capture(logging.Handler):
    """Every record the root logger handles, rendered by the service's own formatter."""

    def __init__(self, formatter: logging.Formatter | None) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _sign(secret: str, task_id: str, timestamp: str) -> str:
    digest = hmac.new(secret.encode(), f"{task_id}.{timestamp}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


@pytest.mark.parametrize("configured_callback_secret", [False, True], ids=["generated", "set"])
async def test_no_secret_in_logs_responses_events_or_metrics(
    start_service: ServiceFactory,
    simulator: Simulator,
    capfd: pytest.CaptureFixture[str],
    configured_callback_secret: bool,
) -> None:
    webhook_secret = "pws-" + secrets.token_urlsafe(24)
    overrides: dict[str, Any] = {
        "poyo_webhook_secret": webhook_secret,
        "log_level": "DEBUG",
        "access_log": True,
        # its job's webhook goes to a closed loopback port: the failures are logged too
        "webhook_allow_private": True,
    }
    if configured_callback_secret:
        overrides["callback_secret"] = "cbs-" + secrets.token_urlsafe(24)
    await simulator.set_faults(webhook_secret=webhook_secret)
    service = await start_service(**overrides)
    root = logging.getLogger()
    capture = Capture(root.handlers[0].formatter if root.handlers else None)
    root.addHandler(capture)

    responses: list[httpx.Response] = []

    async def keep(response: httpx.Response) -> None:
        await response.aread()
        responses.append(response)

    try:
        async with httpx.AsyncClient(
            base_url=service.url, timeout=30, event_hooks={"response": [keep]}
        ) as http:
            secret_values = await _lifecycle(service, simulator, http, webhook_secret)
    finally:
        root.removeHandler(capture)

    async with service.runtime.db.read() as session:
        callback_secret = (await session.execute(select(ServiceSecret.value))).scalar_one_or_none()
        events = [
            dict(row._mapping)
            for row in await session.execute(text("SELECT job_id, type, data FROM job_events"))
        ]
    if configured_callback_secret:
        callback_secret = service.settings.callback_secret.get_secret_value()
    assert callback_secret
    secret_values["callback secret"] = callback_secret

    out, err = capfd.readouterr()
    logs = out + err + "\n".join(capture.lines)
    metrics = next(r.text for r in reversed(responses) if r.request.url.path == "/metrics")

    # Positive controls: the capture really holds the lifecycle, at DEBUG, with ids.
    job_ids = [
        r.json()["id"]
        for r in responses
        if r.request.url.path == "/v1/jobs" and r.status_code == 201
    ]
    assert job_ids
    assert all(job_id in logs for job_id in job_ids)
    assert root.level == logging.DEBUG
    routes = {record.get("route") for record in _json_lines(logs)}
    assert "/v1/callbacks/poyo/{job_id}/{token}" in routes
    assert len(events) > 10
    assert "poyo_relay_http_requests_total" in metrics

    webhook_signing_key = secret_values.pop("owner webhook signing key", None)
    places = {
        "logs": logs,
        "events": orjson.dumps(events, default=str).decode(),
        "metrics": metrics,
    }
    bodies = "\n".join(f"{r.status_code} {dict(r.headers)} {r.text}" for r in responses)
    for name, value in secret_values.items():
        assert len(value) >= 16, name
        for place, content in {**places, "responses": bodies}.items():
            assert value not in content, f"the {name} appears in the {place}"
    if webhook_signing_key is not None:
        # The owner's webhook signing key is served to its owner on purpose, nowhere else.
        for place, content in places.items():
            assert webhook_signing_key not in content, f"the webhook signing key is in {place}"


async def _lifecycle(
    service: Any, simulator: Simulator, http: httpx.AsyncClient, webhook_secret: str
) -> dict[str, str]:
    """Drive a full lifecycle through `http`; return the secret values that were in play."""
    db = service.runtime.db
    _, key_a = await create_key(db, name="tenant-a")
    _, key_b = await create_key(db, name="tenant-b")
    revoked_info, key_revoked = await create_key(db, name="tenant-a")
    assert await revoke(db, name_or_id=revoked_info.id) == 1
    a = ApiClient(http=http, key=key_a)
    b = ApiClient(http=http, key=key_b)

    job = (
        await a.create_job(
            {**IMAGE_JOB, "metadata": {"order": "42"}, "webhook_url": "http://127.0.0.1:9/hook"},
            **{"Idempotency-Key": "lifecycle-1"},
        )
    ).json()
    other = (await b.create_job(TEXT_JOB)).json()
    assert (await a.create_job(IMAGE_JOB, **{"Idempotency-Key": "lifecycle-1"})).status_code == 409
    for created in (job, other):
        client = a if created is job else b
        done = await client.wait_for_status(created["id"], {"succeeded", "failed"})
        assert done["status"] == "succeeded"
    await a.get("/v1/jobs", limit=1)
    await a.get(f"/v1/jobs/{job['id']}")
    await a.get(f"/v1/jobs/{job['id']}/events")
    await a.get("/v1/models")
    owner_key = await a.get("/v1/webhook_secret")

    # Failed authentication, in every shape, with real secrets in the wrong places.
    secret_a = key_a.split("_", 2)[2]
    for headers in (
        {},
        {"Authorization": f"Bearer {key_revoked}"},
        {"Authorization": f"Bearer {key_a[:-3]}xyz"},
        {"Authorization": f"Basic {key_a}"},
        {"Authorization": key_a},
        {"Authorization": f"Bearer {secret_a}"},
        {"Authorization": f"Bearer {SIMULATOR_KEY}"},
    ):
        assert (await http.get("/v1/jobs", headers=headers)).status_code == 401
    assert (
        await http.post(
            "/v1/jobs", content=b"{oops", headers={"Authorization": f"Bearer {key_revoked}"}
        )
    ).status_code == 401
    assert (await b.get(f"/v1/jobs/{job['id']}")).status_code == 404
    # A 422 and a 413.
    assert (await a.create_job({**TEXT_JOB, "input": {"prompt": ""}})).status_code == 422
    bad_query = await http.get(
        "/v1/jobs", params={"limit": 0, "cursor": key_a}, headers=a.headers()
    )
    assert bad_query.status_code == 422
    big = await http.post("/v1/jobs", content=b"x" * 300_000, headers=a.headers())
    assert big.status_code == 413

    # Forged and misdirected callbacks.
    credentials = service.runtime.credentials
    token = credentials.token(job["id"])
    task_id = job["provider"]["task_id"]
    body = orjson.dumps({"task_id": task_id, "status": "finished"})
    url = credentials.url(job["id"])
    wrong_token = url.rsplit("/", 1)[0] + "/" + credentials.token(other["id"])
    now = str(int(time.time()))
    assert (await http.post(wrong_token, content=body)).status_code == 401
    unsigned = await http.post(url, content=body)
    assert unsigned.status_code == 401
    forged = await http.post(
        url,
        content=body,
        headers={
            "X-Webhook-Timestamp": now,
            "X-Webhook-Signature": _sign("guess", task_id, now),
        },
    )
    assert forged.status_code == 401
    late = await http.post(
        url,
        content=body,
        headers={
            "X-Webhook-Timestamp": now,
            "X-Webhook-Signature": _sign(webhook_secret, task_id, now),
        },
    )
    assert late.status_code == 200
    assert (await http.post(url, content=b"not json")).status_code in (400, 401)
    assert (await http.get("/metrics")).status_code == 200

    values = {
        "provider API key": SIMULATOR_KEY,
        "webhook secret": webhook_secret,
        "API key A": key_a,
        "API key A's secret": secret_a,
        "API key B": key_b,
        "revoked API key": key_revoked,
        "callback token": token,
        "other callback token": credentials.token(other["id"]),
    }
    if owner_key.status_code == 200:
        values["owner webhook signing key"] = owner_key.json()["secret"]
    return values


def _json_lines(text: str) -> list[dict[str, Any]]:
    records = []
    for line in text.splitlines():
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


async def test_database_errors_never_carry_the_values_of_their_statement(tmp_path: Any) -> None:
    """An error's message (what a CLI prints, what a log line holds) names the statement,
    never its values: a secret being stored into a database that is not migrated yet
    stays out of it."""
    db = Database(make_settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/empty.db"))
    secret = secrets.token_urlsafe(32)
    try:
        with pytest.raises(DBAPIError) as caught:
            async with db.write() as conn:
                await conn.execute(
                    text("INSERT INTO service_secrets (name, value) VALUES (:name, :value)"),
                    {"name": "callback_credential_key", "value": secret},
                )
    finally:
        await db.dispose()
    assert "service_secrets" in str(caught.value)
    assert secret not in str(caught.value)
    assert secret not in repr(caught.value)
