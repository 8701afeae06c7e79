"""`poyo-relay webhooks`: endpoints, deliveries, redelivery and recovery, run as a real
process against a live service that sends to a loopback receiver."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from sqlalchemy import update
from standardwebhooks.webhooks import Webhook

from app.db import Database
from app.timeutil import utcnow
from app.webhooks import outbox
from app.webhooks.models import DeliveryState, WebhookDelivery, WebhookEventType
from tests.clirun import Result, clean_env, run_cli
from tests.conftest import Service, ServiceFactory
from tests.support import eventually, free_socket, make_settings

ENDPOINT_ID = re.compile(r"\bep_[0-9a-z]{26}\b")
MESSAGE_ID = re.compile(r"\bmsg_[0-9a-z]{26}\b")


class Cli:
    """`poyo-relay ARGS` as a user of the service runs it: its address and API key set."""

    def __init__(self, service: Service, cwd: Path, columns: int = 200) -> None:
        self.env = clean_env(
            PUBLIC_BASE_URL=service.url,
            POYO_RELAY_API_KEY=service.client.key,
            COLUMNS=str(columns),
        )
        self.cwd = cwd

    async def __call__(self, *args: str) -> Result:
        return await run_cli(*args, env=self.env, cwd=self.cwd)

    async def ok(self, *args: str) -> Result:
        result = await self(*args)
        assert result.code == 0, result
        return result

    async def json(self, *args: str) -> Any:
        return json.loads((await self.ok(*args, "--json")).stdout)


async def attempts(service: Service, endpoint_id: str) -> list[dict[str, Any]]:
    """The endpoint's attempts as the API lists them (waiting on them costs no process)."""
    response = await service.client.get(f"/v1/webhook_endpoints/{endpoint_id}/deliveries")
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


async def test_endpoints_test_send_deliveries_rotate_redeliver_and_delete(
    start_service: ServiceFactory, receiver: Any, tmp_path: Path
) -> None:
    service = await start_service(webhook_allow_private=True)
    cli = Cli(service, tmp_path)

    added = await cli.ok(
        "webhooks", "endpoints", "add", receiver.url, "--event", "job.succeeded",
        "--event", "job.failed", "--description", "the CI receiver",
    )  # fmt: skip
    secret = added.last_word
    assert secret.startswith("whsec_")
    match = ENDPOINT_ID.search(added.stdout)
    assert match is not None, added
    endpoint_id = match.group()
    stored = (await service.client.get(f"/v1/webhook_endpoints/{endpoint_id}")).json()
    assert stored["event_types"] == ["job.succeeded", "job.failed"]
    assert stored["description"] == "the CI receiver"
    assert stored["enabled"] is True

    # Bare `endpoints` lists them; at 80 columns the id, URL and `yes` stay whole.
    narrow = Cli(service, tmp_path, columns=80)
    listed = await narrow.ok("webhooks", "endpoints")
    row = next(line for line in listed.stdout.splitlines() if endpoint_id in line)
    assert re.search(rf"{endpoint_id}\s+yes\s+{re.escape(receiver.url)}", row), listed
    # Under the URL, its events and description (folded, whole, in the URL's column).
    assert "events: job.succeeded, job.failed · the CI receiver" in _words(listed.stdout)
    assert secret not in listed.output  # the list never shows a secret

    # A test message reaches the receiver (which fails its first two calls: the service
    # retries), signed with the secret `add` printed.
    sent = await cli.ok("webhooks", "endpoints", "test", endpoint_id)
    match = MESSAGE_ID.search(sent.stdout)
    assert match is not None, sent
    message_id = match.group()
    await eventually(lambda: _calls(receiver), lambda n: n >= 3)
    assert [h["webhook-id"] for h, _ in receiver.calls] == [message_id] * 3
    headers, body = receiver.calls[-1]
    assert Webhook(secret).verify(body, headers)["type"] == "webhook.test"

    log = await eventually(lambda: attempts(service, endpoint_id), lambda a: len(a) == 3)
    assert [(a["attempt"], a["http_status"]) for a in log] == [(3, 204), (2, 500), (1, 500)]
    assert {a["message_id"] for a in log} == {message_id}
    table = await narrow.ok("webhooks", "deliveries", endpoint_id, "--limit", "2")
    rows = [line for line in table.stdout.splitlines() if message_id in line]
    assert len(rows) == 2, table
    assert re.search(
        rf"\d\d:\d\d:\d\d {message_id}\s+webhook\.test\s+3\s+\d+\s+204\s*$", rows[0]
    ), table
    assert re.search(r"\s2\s+\d+\s+500\s*$", rows[1]), table
    assert "more: --cursor atmpt_" in table.stdout

    # A new secret; the old one still shows (and signs) during the overlap.
    rotated = await cli.ok("webhooks", "endpoints", "rotate", endpoint_id)
    new_secret = rotated.last_word
    assert new_secret.startswith("whsec_")
    assert new_secret != secret
    revealed = await cli.ok("webhooks", "endpoints", "secret", endpoint_id)
    assert revealed.last_word == new_secret
    assert "previous secret (also signs until 20" in revealed.stdout
    assert f": {secret}\n" in revealed.stdout

    # Redelivery: the same message, the same webhook-id, signed with the new secret too.
    again = await cli.ok("webhooks", "redeliver", message_id, "--endpoint", endpoint_id)
    assert f"queued {message_id} again: 1 delivery" in again.stdout
    await eventually(lambda: _calls(receiver), lambda n: n >= 4)
    headers, body = receiver.calls[3]
    assert headers["webhook-id"] == message_id
    Webhook(new_secret).verify(body, headers)
    log = await eventually(lambda: attempts(service, endpoint_id), lambda a: len(a) == 4)
    assert (log[0]["trigger"], log[0]["http_status"]) == ("manual", 204)
    table = await cli.ok("webhooks", "deliveries", endpoint_id)
    assert "204 (redelivery)" in table.stdout

    # Disabled: listed as such, and a test-send or redelivery is refused (409: exit 2).
    disabled = await cli.ok("webhooks", "endpoints", "disable", endpoint_id)
    assert f"endpoint {endpoint_id} is disabled" in disabled.stdout
    listed = await narrow.ok("webhooks", "endpoints")
    assert re.search(rf"{endpoint_id}\s+no\s", listed.stdout), listed
    assert "disabled: disabled by its owner" in _words(listed.stdout)
    refused = await cli("webhooks", "endpoints", "test", endpoint_id)
    assert refused.code == 2, refused
    assert "the endpoint is disabled: enable it first (HTTP 409)" in refused.stderr
    refused = await cli("webhooks", "redeliver", message_id)
    assert refused.code == 2, refused
    assert "no enabled endpoint" in refused.stderr
    enabled = await cli.ok("webhooks", "endpoints", "enable", endpoint_id)
    assert f"endpoint {endpoint_id} is enabled" in enabled.stdout
    shown = (await service.client.get(f"/v1/webhook_endpoints/{endpoint_id}")).json()
    assert (shown["enabled"], shown["disabled_reason"]) == (True, None)

    deleted = await cli.ok("webhooks", "endpoints", "delete", endpoint_id)
    assert f"deleted endpoint {endpoint_id}" in deleted.stdout
    gone = await cli("webhooks", "endpoints", "show", endpoint_id)
    assert gone.code == 1, gone
    assert f"error: no webhook endpoint {endpoint_id} (HTTP 404)" in gone.stderr
    listed = await cli.ok("webhooks", "endpoints", "list", "--json")
    assert json.loads(listed.stdout) == {"object": "list", "data": [], "next_cursor": None}
    assert len(receiver.calls) == 4  # nothing more was sent


async def test_recover_resends_what_failed_once(
    start_service: ServiceFactory, tmp_path: Path
) -> None:
    service = await start_service(webhook_allow_private=True)
    cli = Cli(service, tmp_path)
    with free_socket() as sock:  # a port nothing listens on once it is closed
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    endpoint = await cli.json("webhooks", "endpoints", "add", dead)
    endpoint_id = endpoint["id"]
    assert endpoint["secret"].startswith("whsec_")
    assert endpoint["event_types"] == []  # all job events

    await cli.ok("webhooks", "endpoints", "test", endpoint_id)
    # 1 + 7 retries (the tests' WEBHOOK_RETRY_SCHEDULE), then given up.
    log = await eventually(lambda: attempts(service, endpoint_id), lambda a: len(a) == 8)
    assert all(a["http_status"] is None and a["error"] for a in log)

    recovered = await cli.ok("webhooks", "recover", endpoint_id, "--since", "1h")
    assert f"queued 1 delivery to {endpoint_id} (failed since 20" in recovered.stdout
    log = await eventually(lambda: attempts(service, endpoint_id), lambda a: len(a) == 9)
    assert (log[0]["trigger"], log[0]["attempt"]) == ("manual", 9)
    table = await cli.ok("webhooks", "deliveries", endpoint_id, "--limit", "1")
    assert "connection failed (redelivery)" in table.stdout

    # Nothing failed after a time to come; a time without a zone is refused here.
    since = (utcnow() + timedelta(minutes=1)).isoformat()
    none = await cli.json("webhooks", "recover", endpoint_id, "--since", since)
    assert none == {"object": "webhook_resend", "message_ids": [], "deliveries": 0}
    naive = await cli("webhooks", "recover", endpoint_id, "--since", "2026-11-30T12:00:00")
    assert naive.code == 2, naive
    assert "has no time zone" in naive.stderr


async def test_api_errors_say_what_is_wrong_and_exit_non_zero(
    service: Service, tmp_path: Path
) -> None:
    cli = Cli(service, tmp_path)
    unknown = "ep_" + "0" * 26
    for args in (
        ("webhooks", "endpoints", "show", unknown),
        ("webhooks", "endpoints", "delete", unknown),
        ("webhooks", "deliveries", unknown),
    ):
        result = await cli(*args)
        assert result.code == 1, (args, result)
        assert f"error: no webhook endpoint {unknown} (HTTP 404)" in result.stderr, result
        assert result.stdout == ""
    no_message = await cli("webhooks", "redeliver", "msg_" + "0" * 26)
    assert no_message.code == 1, no_message
    assert f"no webhook message msg_{'0' * 26} (HTTP 404)" in no_message.stderr

    malformed = await cli("webhooks", "endpoints", "show", "ep_nope")
    assert malformed.code == 2, malformed
    assert "endpoint_id" in malformed.stderr
    # Loopback is refused unless WEBHOOK_ALLOW_PRIVATE; an unknown event type too.
    private = await cli("webhooks", "endpoints", "add", "http://127.0.0.1:9/hook")
    assert private.code == 2, private
    assert "WEBHOOK_ALLOW_PRIVATE" in private.stderr
    bad_event = await cli(
        "webhooks", "endpoints", "add", "https://example.com/hook", "--event", "job.exploded"
    )
    assert bad_event.code == 2, bad_event
    assert "event_types" in bad_event.stderr
    listed = await cli.ok("webhooks", "endpoints")
    assert "no webhook endpoints" in listed.stdout

    no_key = await run_cli(
        "webhooks", "endpoints", env=clean_env(PUBLIC_BASE_URL=service.url), cwd=tmp_path
    )
    assert no_key.code == 2, no_key
    assert "an API key is required" in no_key.stderr


async def test_status_counts_pending_webhook_deliveries(database_url: str, tmp_path: Path) -> None:
    db = Database(make_settings(database_url=database_url))
    now = utcnow()
    try:
        async with db.write() as conn:
            ids = [
                await outbox.add_message(
                    conn,
                    owner="tenant-a",
                    job_id=None,
                    event_type=WebhookEventType.TEST,
                    data={},
                    now=now - timedelta(minutes=minutes),
                    targets=[outbox.Target(None, "https://example.com/hook")],
                )
                for minutes in (3, 1, 0, 0)
            ]
            owed_later, delivered = ids[2], ids[3]
            later = now + timedelta(hours=1)
            await conn.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.message_id == owed_later)
                .values(next_attempt_at=later)
            )
            await conn.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.message_id == delivered)
                .values(state=DeliveryState.SUCCEEDED, next_attempt_at=None)
            )
    finally:
        await db.dispose()
    env = clean_env(DATABASE_URL=database_url)

    as_json = await run_cli("status", "--json", env=env, cwd=tmp_path)
    assert as_json.code == 0, as_json
    status = json.loads(as_json.stdout)
    owed = status["webhook_deliveries"]
    assert (owed["pending"], owed["due"]) == (3, 2)
    oldest = datetime.fromisoformat(owed["oldest_due_at"])
    assert abs((oldest - (now - timedelta(minutes=3))).total_seconds()) < 0.01
    assert "webhook" not in status["queues"]

    shown = await run_cli("status", env=env, cwd=tmp_path)
    assert shown.code == 0, shown
    assert re.search(r"Webhook deliveries\n\s+pending\s+3\s+owed", shown.stdout), shown
    assert re.search(r"due\s+2\s+oldest 3m\s+of them, due to send now", shown.stdout), shown
    assert "owing a webhook" not in shown.stdout


def test_since_is_a_zoned_time_or_an_age() -> None:
    from app.cli.webhooks import parse_since

    assert parse_since("2026-11-30T12:00:00Z") == datetime(2026, 11, 30, 12, tzinfo=UTC)
    assert parse_since("2026-11-30T13:00:00+01:00") == datetime(2026, 11, 30, 12, tzinfo=UTC)
    two_hours_ago = parse_since("2h")
    assert abs((utcnow() - timedelta(hours=2) - two_hours_ago).total_seconds()) < 5
    for bad in ("2026-11-30T12:00:00", "yesterday", "0h"):
        with pytest.raises(typer.BadParameter):
            parse_since(bad)


def _words(text: str) -> str:
    """`text` with every run of white space (a folded cell's line breaks) as one space."""
    return " ".join(text.split())


async def _calls(receiver: Any) -> int:
    return len(receiver.calls)
