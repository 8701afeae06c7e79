"""poyo_relay.client's pure parts, shared by the sync and async clients: the SSE parser,
resuming a stream, parsing the API's objects (forward compatible), errors, retry decisions,
and webhook verification against a signature made as the service makes it."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from app.jobs.schemas import JOB_EXAMPLE
from app.keyring.models import ServerKey
from app.webhooks.signing import owner_secret
from poyo_relay.client import (
    ArchiveStatus,
    ConnectionFailed,
    InvalidRequest,
    InvalidResponse,
    Job,
    JobStatus,
    JobUpdate,
    Model,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    WebhookVerificationError,
    verify_webhook,
)
from poyo_relay.client._requests import time_param, wait_param
from poyo_relay.client._retry import Retrying, RetryPolicy
from poyo_relay.client._stream import Deadline, StreamSession
from poyo_relay.client.errors import error_from_response, parse_retry_after
from poyo_relay.client.sse import ServerSentEvent, SSEDecoder

# ---- the SSE parser ---------------------------------------------------------------------------

STREAM = (
    b"\xef\xbb\xbfretry: 2000\n\n"
    b": keep-alive\n\n"
    b'id: 1\ndata: {"a": 1}\n\n'
    b"id: 2\r\ndata: first line\r\ndata: second line\r\n\r\n"
    b"data:no space\rdata:  two spaces\r\r"
    b"event: custom\ndata\nunknown: field\n\n"
    b"id: 3\n\n"
    b"event: end\ndata: {}\n\n"
    b"id: 9\ndata: cut off mid-way"
)
EXPECTED = [
    ServerSentEvent("message", '{"a": 1}', "1", 2000),
    ServerSentEvent("message", "first line\nsecond line", "2", 2000),
    ServerSentEvent("message", "no space\n two spaces", "2", 2000),
    ServerSentEvent("custom", "", "2", 2000),
    ServerSentEvent("end", "{}", "3", 2000),
]


def decode(chunks: list[bytes]) -> tuple[list[ServerSentEvent], SSEDecoder]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events, decoder


def test_sse_fields_comments_and_line_endings() -> None:
    events, decoder = decode([STREAM])
    assert events == EXPECTED
    # `id: 3` without data moves the resume point; the cut-off message does not count
    assert decoder.last_event_id == "3"
    assert decoder.retry == 2000


@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_sse_chunks_split_anywhere(size: int) -> None:
    # every split point: inside CRLF, inside a multi-byte character, inside the BOM
    stream = STREAM.replace(b"first line", "première ligne".encode())
    chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
    events, _ = decode(chunks)
    expected = [
        ServerSentEvent(e.event, e.data.replace("first line", "première ligne"), e.id, e.retry)
        for e in EXPECTED
    ]
    assert events == expected


def test_sse_resumes_with_the_id_it_was_given() -> None:
    decoder = SSEDecoder("41")
    [event] = decoder.feed(b"data: x\n\n")
    assert event.id == "41"  # no new id: the last one stays in effect
    assert decoder.feed(b"id: bad\x00id\ndata: y\n\n")[0].id == "41"  # NUL: ignored


# ---- following a stream ----------------------------------------------------------------------


def job_json(status: str = "running", **extra: Any) -> dict[str, Any]:
    return {**JOB_EXAMPLE, "status": status, **extra}


def message(event_id: int, status: str) -> bytes:
    event = {"id": f"evt_{event_id}", "type": "job.status_changed", "created_at":
             "2025-11-12T10:30:00.000Z", "data": {"to": status}}  # fmt: skip
    data = orjson.dumps({"event": event, "job": job_json(status)})
    return b"id: %d\ndata: %s\n\n" % (event_id, data)


def event_stream_response() -> httpx.Response:
    return httpx.Response(
        200,
        headers={"content-type": "text/event-stream; charset=utf-8"},
        request=httpx.Request("GET", "http://relay/v1/jobs/job_x/stream"),
    )


def test_a_session_resumes_after_the_last_complete_message() -> None:
    session = StreamSession(RetryPolicy(max_retries=2))
    assert "Last-Event-ID" not in session.headers()
    assert session.headers()["Accept"] == "text/event-stream"
    session.connected(event_stream_response())
    first = message(5, "queued")
    updates = session.feed(b"retry: 1500\n\n" + first + message(6, "running")[:30])
    assert [u.id for u in updates] == ["5"]
    assert updates[0].event is not None
    assert updates[0].event.sequence == 5
    assert updates[0].job.status is JobStatus.QUEUED
    # dropped mid-message: the next connection resumes after 5, after the server's delay
    assert session.dropped(httpx.RemoteProtocolError("cut")) == 1.5
    assert session.headers()["Last-Event-ID"] == "5"

    session.connected(event_stream_response())  # the half message is gone with its connection
    updates = session.feed(message(6, "running") + message(7, "succeeded"))
    assert [u.job.status for u in updates] == [JobStatus.RUNNING, JobStatus.SUCCEEDED]
    assert session.feed(b"event: end\ndata: {}\n\n" + message(8, "succeeded")) == []
    assert session.ended
    assert session.done


def test_connections_that_deliver_nothing_fail_after_max_retries() -> None:
    session = StreamSession(RetryPolicy(max_retries=2, base=0.1))
    for _ in range(2):
        session.connected(event_stream_response())
        assert 0 < session.dropped(httpx.ReadTimeout("silent")) <= 0.2
    session.connected(event_stream_response())
    with pytest.raises(ConnectionFailed):
        session.dropped(httpx.ReadTimeout("silent"))


def test_a_session_refuses_what_is_not_an_event_stream() -> None:
    session = StreamSession(RetryPolicy())
    html = httpx.Response(
        200, headers={"content-type": "text/html"}, request=httpx.Request("GET", "http://r/x")
    )
    with pytest.raises(InvalidResponse, match="event stream"):
        session.connected(html)
    session.connected(event_stream_response())
    with pytest.raises(InvalidResponse):
        session.feed(b"id: 1\ndata: {not json\n\n")


def test_deadlines() -> None:
    now = [100.0]
    deadline = Deadline(90, clock=lambda: now[0])
    assert deadline.long_poll(60) == 60
    assert deadline.read_timeout(30) == 30
    now[0] += 89.5
    assert deadline.long_poll(60) == 1
    assert deadline.read_timeout(30) == pytest.approx(0.5)
    now[0] += 1
    assert deadline.expired
    assert deadline.long_poll(60) is None
    assert not Deadline(None).expired
    assert Deadline(None).long_poll(60) == 60
    assert Deadline(None).read_timeout(30) == 30
    with pytest.raises(ValueError, match="timeout"):
        Deadline(-1)


# ---- parsing ---------------------------------------------------------------------------------


def test_a_job_parses_and_tolerates_what_a_newer_server_adds() -> None:
    job = Job.from_dict(JOB_EXAMPLE)
    assert job.id == JOB_EXAMPLE["id"]
    assert job.status is JobStatus.SUCCEEDED
    assert job.is_terminal
    assert job.created_at == datetime(2025, 11, 12, 10, 30, tzinfo=UTC)
    assert job.outputs[0].size_bytes == 1843200
    assert job.outputs[0].archived_at is not None
    assert job.archive is not None
    assert job.archive.status is ArchiveStatus.ARCHIVED
    assert job.raw is JOB_EXAMPLE

    newer = job_json(
        "paused",  # a status this version does not know
        cost={"credits": 3},
        outputs=[{"url": "https://x/0", "type": "video", "thumbnail": "https://x/t"}],
        archive={"status": "mirrored", "attempts": 2, "error": None, "region": "eu"},
        provider={"name": "poyo", "task_id": "t", "status": "finished", "queue": 3},
    )
    parsed = Job.from_dict(newer)
    assert parsed.status == "paused"
    assert not parsed.is_terminal
    assert parsed.outputs[0].provider_url is None
    assert parsed.archive is not None
    assert parsed.archive.status == "mirrored"
    assert parsed.raw["cost"] == {"credits": 3}


def test_an_update_and_a_model_parse() -> None:
    update = JobUpdate.from_dict({"event": None, "job": JOB_EXAMPLE, "extra": 1}, id="12")
    assert update.event is None
    assert update.id == "12"
    numbered = JobUpdate.from_dict(
        {"event": {"id": 12, "type": "t", "created_at": "2025-11-12T10:30:00Z", "data": {}},
         "job": JOB_EXAMPLE},
    )  # fmt: skip
    assert numbered.event is not None
    assert numbered.event.id == "evt_12"
    model = Model.from_dict(
        {"id": "a/b", "object": "model", "category": "video", "title": "A", "description": "",
         "tags": ["x"], "input_schema": {"type": "object"}, "example": None, "billing": None,
         "catalog_version": "v1", "new_field": True}
    )  # fmt: skip
    assert model.tags == ("x",)
    assert model.example is None


# ---- errors and retries ------------------------------------------------------------------


def answer(status: int, body: Any, **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.Response(
        status,
        content=content,
        headers={"x-request-id": "req-1", **headers},
        request=httpx.Request("POST", "http://relay/v1/jobs"),
    )


def test_errors_from_the_envelope() -> None:
    body = {
        "error": {
            "type": "invalid_request",
            "message": "the request is invalid",
            "details": [{"loc": ["body", "input", "image_urls", 0], "msg": "bad", "type": "x"}],
            "added_later": True,
        }
    }
    error = error_from_response(answer(422, body))
    assert isinstance(error, InvalidRequest)
    assert error.type == "invalid_request"
    assert error.message == "the request is invalid"
    assert error.details[0].loc == ("body", "input", "image_urls", 0)
    assert error.request_id == "req-1"
    assert error.body == body
    assert "input.image_urls.0: bad" in str(error)

    limited = error_from_response(answer(429, {"error": {}}, **{"retry-after": "7"}))
    assert isinstance(limited, RateLimited)
    assert limited.retry_after == 7
    assert isinstance(error_from_response(answer(503, b"")), ServiceUnavailable)
    gateway = error_from_response(answer(504, b"<html>"))
    assert isinstance(gateway, ServerError)
    assert gateway.message == "the service answered HTTP 504"


def test_retry_after_as_seconds_or_a_date() -> None:
    assert parse_retry_after("3") == 3
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-4") == 0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480) == 10


def test_retry_decisions() -> None:
    retrying = Retrying(RetryPolicy(max_retries=2, base=0.5, cap=8))
    assert retrying.after_error_response(answer(429, {}, **{"retry-after": "2"})) == 2
    assert 0.5 <= retrying.after_transport_error(httpx.ConnectError("refused")) <= 1.0
    with pytest.raises(ServiceUnavailable):  # retries spent: the last error is raised
        retrying.after_error_response(answer(503, {}))
    with pytest.raises(InvalidRequest):
        Retrying(RetryPolicy()).after_error_response(answer(422, {}))
    with pytest.raises(ConnectionFailed):  # not worth retrying
        Retrying(RetryPolicy()).after_transport_error(httpx.UnsupportedProtocol("ftp"))
    policy = RetryPolicy(base=0.5, cap=8)
    for retry, ceiling in [(1, 0.5), (2, 1), (3, 2), (4, 4), (5, 8), (9, 8)]:
        assert ceiling / 2 <= policy.backoff(retry) <= ceiling


def test_query_values() -> None:
    assert wait_param(None) == {}
    assert wait_param(60) == {"wait": "60"}
    assert wait_param(2.5) == {"wait": "2.5"}
    aware = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC) + timedelta(microseconds=7)
    assert time_param(aware) == "2025-01-02T03:04:05.000007Z"
    assert time_param(datetime(2025, 1, 2)) == "2025-01-02T00:00:00.000000Z"
    assert time_param("2025-01-02") == "2025-01-02"


# ---- webhooks, signed as the service signs them -----------------------------------------------


def signed(secret: str, body: str, *, at: datetime | None = None) -> dict[str, str]:
    """The headers app/webhooks/service.py sends."""
    at = at or datetime.now(UTC)
    message_id = "msg_job_01jcz3q9m4b8x2v7k5n0r6t1yw_succeeded"
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, at, body),
    }


def test_verify_webhook() -> None:
    secret = owner_secret(ServerKey(b"k" * 32), "tenant-a")
    body = orjson.dumps(
        {"type": "job.succeeded", "timestamp": datetime.now(UTC).isoformat(), "data": JOB_EXAMPLE}
    ).decode()
    headers = signed(secret, body)

    payload = verify_webhook(headers, body.encode(), secret)
    assert payload["type"] == "job.succeeded"
    assert Job.from_dict(payload["data"]).id == JOB_EXAMPLE["id"]
    # any header case, any mapping (httpx's, Starlette's…), str or bytes
    assert verify_webhook(httpx.Headers({k.upper(): v for k, v in headers.items()}), body, secret)

    with pytest.raises(WebhookVerificationError):
        verify_webhook(headers, body.replace("succeeded", "failed", 1), secret)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(headers, body, owner_secret(ServerKey(b"k" * 32), "tenant-b"))
    stale = signed(secret, body, at=datetime.now(UTC) - timedelta(minutes=10))
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify_webhook(stale, body, secret)
    with pytest.raises(WebhookVerificationError, match="headers"):
        verify_webhook({k: v for k, v in headers.items() if k != "webhook-id"}, body, secret)
    for garbage in ["nonsense", "v1,***", "v1"]:
        with pytest.raises(WebhookVerificationError):
            verify_webhook({**headers, "webhook-signature": garbage}, body, secret)
    with pytest.raises(ValueError, match="secret"):
        verify_webhook(headers, body, "")
    not_an_object = "[1, 2]"
    with pytest.raises(WebhookVerificationError, match="object"):
        verify_webhook(signed(secret, not_an_object), not_an_object, secret)
    assert base64.b64decode(secret.removeprefix("whsec_"))  # the service's secret format
