"""The PoYo client against a hand-written provider on loopback (no database needed).

Each test scripts the stand-in's answers and then checks what the client made of them,
and exactly what (and how often) it sent.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from starlette.responses import JSONResponse, Response

from app.provider.client import (
    PoyoClient,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
)
from app.provider.schemas import ProviderStatus
from tests.stand_in import (
    STAND_IN_KEY,
    STATUS_PREFIX,
    SUBMIT_PATH,
    Call,
    Hook,
    ProviderStandIn,
    poyo_error,
    wrapped,
)

KEY = STAND_IN_KEY
CALLBACK = "http://127.0.0.1:9/v1/callbacks/poyo/job_01jcz3q9m4b8x2v7k5n0r6t1yw/credential"
INPUT = {"prompt": "a fox", "image_urls": ["https://example.com/fox.jpg"], "duration": 5}
TASK = {
    "task_id": "task-unified-1",
    "status": "running",
    "progress": 40,
    "files": [],
    "created_time": "2025-11-12T10:30:00",
    "error_message": None,
}


@pytest.fixture
async def client(provider: ProviderStandIn) -> AsyncIterator[PoyoClient]:
    poyo = PoyoClient(
        base_url=provider.url, api_key=KEY, timeout=0.3, connect_timeout=1, backoff_initial=0.01
    )
    yield poyo
    await poyo.aclose()


def script(*answers: Response | Callable[[], Response]) -> Hook:
    """A hook answering the n-th request with the n-th answer (the last one repeats)."""
    seen = 0

    async def hook(_call: Call) -> Response:
        nonlocal seen
        answer = answers[min(seen, len(answers) - 1)]
        seen += 1
        return answer() if callable(answer) and not isinstance(answer, Response) else answer

    return hook


def submitted(task_id: str = "task-unified-42") -> JSONResponse:
    return wrapped({"task_id": task_id, "status": "not_started", "created_time": "2025-11-12"})


def status_of(**changes: object) -> JSONResponse:
    return wrapped({**TASK, **changes})


async def submit(client: PoyoClient) -> object:
    return await client.submit(
        model="wan2.5-image-to-video",
        input=INPUT,
        callback_url=CALLBACK,
        idempotency_key="job_01jcz3q9m4b8x2v7k5n0r6t1yw",
    )


# ---- what is sent ----------------------------------------------------------------------


async def test_submit_sends_bearer_key_and_the_documented_body(
    client: PoyoClient, provider: ProviderStandIn
) -> None:
    task = await submit(client)
    [call] = provider.calls
    assert call.method == "POST"
    assert call.path == SUBMIT_PATH
    assert call.headers["authorization"] == f"Bearer {KEY}"
    assert call.headers["content-type"].startswith("application/json")
    assert call.headers["idempotency-key"] == "job_01jcz3q9m4b8x2v7k5n0r6t1yw"
    assert call.json() == {
        "model": "wan2.5-image-to-video",
        "callback_url": CALLBACK,
        "input": INPUT,
    }
    [task_id] = provider.tasks
    assert task.task_id == task_id  # type: ignore[attr-defined]
    assert task.status is ProviderStatus.NOT_STARTED  # type: ignore[attr-defined]


async def test_status_sends_bearer_key_and_quotes_the_task_id(
    client: PoyoClient, provider: ProviderStandIn
) -> None:
    provider.status_hook = script(status_of(task_id="task/../x?y"))
    status = await client.status("task/../x?y")
    [call] = provider.calls
    assert call.method == "GET"
    assert call.headers["authorization"] == f"Bearer {KEY}"
    # The id stays one path segment: it cannot walk to another endpoint or add a query.
    assert call.raw_path == STATUS_PREFIX + "task%2F..%2Fx%3Fy"
    assert status.task_id == "task/../x?y"


async def test_no_key_means_no_authorization_header(provider: ProviderStandIn) -> None:
    poyo = PoyoClient(base_url=provider.url, api_key="", attempts=1)
    try:
        with pytest.raises(ProviderRejected) as caught:
            await poyo.status("task-unified-1")
    finally:
        await poyo.aclose()
    assert "authorization" not in provider.calls[0].headers
    assert caught.value.http_status == 401
    assert caught.value.message == "invalid API key"


# ---- answers that are parsed -----------------------------------------------------------


async def test_wrapped_status_is_parsed(client: PoyoClient, provider: ProviderStandIn) -> None:
    files = [{"file_url": "https://cdn.example.com/out.mp4", "file_type": "video"}]
    provider.status_hook = script(status_of(status="finished", progress=100, files=files))
    status = await client.status("task-unified-1")
    assert status.status is ProviderStatus.FINISHED
    assert status.progress == 100
    assert [(f.file_url, f.file_type) for f in status.files or []] == [
        ("https://cdn.example.com/out.mp4", "video")
    ]


async def test_flat_status_is_parsed(client: PoyoClient, provider: ProviderStandIn) -> None:
    flat = {**TASK, "status": "failed", "error_message": "content policy"}
    provider.status_hook = script(JSONResponse(flat))
    status = await client.status("task-unified-1")
    assert status.status is ProviderStatus.FAILED
    assert status.error_message == "content policy"


async def test_unknown_extra_fields_are_tolerated(
    client: PoyoClient, provider: ProviderStandIn
) -> None:
    provider.status_hook = script(
        JSONResponse({"code": 200, "msg": "ok", "data": {**TASK, "credits": 12, "eta": None}})
    )
    assert (await client.status("task-unified-1")).progress == 40


async def test_nul_in_provider_text_is_replaced(
    client: PoyoClient, provider: ProviderStandIn
) -> None:
    # PostgreSQL text and JSONB cannot hold U+0000: what the provider says must be storable.
    provider.status_hook = script(status_of(status="failed", error_message="policy\u0000block"))
    status = await client.status("task-unified-1")
    assert status.error_message == "policy\ufffdblock"


@pytest.mark.parametrize(
    "file_url",
    [
        "javascript:alert(1)",
        "ftp://cdn.example.com/out.mp4",
        "/relative/out.mp4",
        "https://cdn.example.com/a\u0000.mp4",
        "https://cdn.example.com/a b.mp4",
        "",
    ],
)
async def test_output_urls_must_be_http(
    client: PoyoClient, provider: ProviderStandIn, file_url: str
) -> None:
    files = [{"file_url": file_url, "file_type": "video"}]
    provider.status_hook = script(status_of(status="finished", progress=100, files=files))
    with pytest.raises(ProviderUnavailable):
        await client.status("task-unified-1")


@pytest.mark.parametrize("task_id", ["task\u0000x", "task\nx", "   "])
async def test_unstorable_task_ids_are_refused(
    client: PoyoClient, provider: ProviderStandIn, task_id: str
) -> None:
    provider.submit_hook = script(submitted(task_id))
    with pytest.raises(ProviderUnavailable) as caught:
        await submit(client)
    assert caught.value.ambiguous is True


# ---- provider errors ---------------------------------------------------------------------


@pytest.mark.parametrize("http_status", [400, 401, 402, 403, 404, 422])
async def test_4xx_is_a_rejection_with_the_providers_message_and_no_retry(
    client: PoyoClient, provider: ProviderStandIn, http_status: int
) -> None:
    provider.submit_hook = script(poyo_error(http_status, f"nope {http_status}: bad prompt"))
    with pytest.raises(ProviderRejected) as caught:
        await submit(client)
    assert caught.value.message == f"nope {http_status}: bad prompt"
    assert caught.value.http_status == http_status
    assert len(provider.submits()) == 1


async def test_4xx_without_error_body_still_says_what_happened(
    client: PoyoClient, provider: ProviderStandIn
) -> None:
    provider.submit_hook = script(Response(b"<html>Bad Request</html>", 400))
    with pytest.raises(ProviderRejected) as caught:
        await submit(client)
    assert "400" in caught.value.message


async def test_overlong_provider_message_is_truncated(
    client: PoyoClient, provider: ProviderStandIn
) -> None:
    provider.submit_hook = script(poyo_error(400, "x" * 10_000))
    with pytest.raises(ProviderRejected) as caught:
        await submit(client)
    assert 0 < len(caught.value.message) <= 500


@pytest.mark.parametrize("http_status", [500, 502, 503, 504, 429, 408])
async def test_transient_errors_are_retried_until_success(
    client: PoyoClient, provider: ProviderStandIn, http_status: int
) -> None:
    provider.submit_hook = script(
        poyo_error(http_status, "busy"), poyo_error(http_status, "busy"), submitted()
    )
    task = await submit(client)
    assert task.task_id == "task-unified-42"  # type: ignore[attr-defined]
    assert len(provider.submits()) == 3


async def test_persistent_5xx_gives_up_after_the_attempt_budget(
    client: PoyoClient, provider: ProviderStandIn
) -> None:
    provider.status_hook = script(poyo_error(503, "maintenance window"))
    with pytest.raises(ProviderUnavailable) as caught:
        await client.status("task-unified-1")
    assert caught.value.message == "maintenance window"
    assert caught.value.http_status == 503
    assert not caught.value.ambiguous
    assert len(provider.status_calls()) == 3


async def test_retry_after_is_honoured(client: PoyoClient, provider: ProviderStandIn) -> None:
    limited = poyo_error(429, "slow down", "rate_limit_error")
    limited.headers["Retry-After"] = "1"
    provider.status_hook = script(limited, status_of())
    status = await client.status("task-unified-1")
    assert status.task_id == "task-unified-1"
    first, second = provider.status_calls()
    # Never sooner than the provider asked (the client's own backoff is 0.01 s here).
    assert second.at - first.at >= 0.95


async def test_long_retry_after_is_not_waited_inline(
    client: PoyoClient, provider: ProviderStandIn
) -> None:
    limited = poyo_error(429, "quota exhausted", "rate_limit_error")
    limited.headers["Retry-After"] = "120"
    provider.submit_hook = script(limited)
    with pytest.raises(ProviderUnavailable) as caught:
        await submit(client)
    assert caught.value.retry_after == 120
    assert caught.value.http_status == 429
    assert len(provider.submits()) == 1


@pytest.mark.parametrize("value", ["inf", "1e12", "nan", "-5", "soon", ""])
async def test_unusable_retry_after_is_bounded_or_ignored(
    client: PoyoClient, provider: ProviderStandIn, value: str
) -> None:
    limited = poyo_error(429, "slow down", "rate_limit_error")
    limited.headers["Retry-After"] = value
    provider.submit_hook = script(limited)
    with pytest.raises(ProviderUnavailable) as caught:
        await submit(client)
    retry_after = caught.value.retry_after
    # Whatever the header says, the delay is a finite, non-negative number of seconds
    # that a datetime can be moved by (or absent).
    assert retry_after is None or 0 <= retry_after <= 86_400, retry_after


async def test_retry_after_as_an_http_date(client: PoyoClient, provider: ProviderStandIn) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    limited = poyo_error(429, "slow down", "rate_limit_error")
    limited.headers["Retry-After"] = later
    provider.submit_hook = script(limited)
    with pytest.raises(ProviderUnavailable) as caught:
        await submit(client)
    assert caught.value.retry_after is not None
    assert 100 <= caught.value.retry_after <= 121
    assert len(provider.submits()) == 1  # two minutes is too long to wait inline


# ---- timeouts, garbage, no connection ----------------------------------------------------


async def test_submit_timeout_is_ambiguous_and_not_retried(
    client: PoyoClient, provider: ProviderStandIn
) -> None:
    async def stall(_call: Call) -> Response:
        return await provider.hang()

    provider.submit_hook = stall
    with pytest.raises(ProviderUnavailable) as caught:
        await submit(client)
    assert caught.value.ambiguous is True
    # The provider may have started a paid task: a second submit could start another.
    assert len(provider.submits()) == 1


async def test_status_timeout_is_retried(client: PoyoClient, provider: ProviderStandIn) -> None:
    calls = 0

    async def slow_then_ok(_call: Call) -> Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return await provider.hang()
        return status_of()

    provider.status_hook = slow_then_ok
    status = await client.status("task-unified-1")
    assert status.progress == 40
    assert len(provider.status_calls()) == 2


async def test_status_timeouts_exhaust_the_budget(
    client: PoyoClient, provider: ProviderStandIn
) -> None:
    async def stall(_call: Call) -> Response:
        return await provider.hang()

    provider.status_hook = stall
    with pytest.raises(ProviderUnavailable) as caught:
        await client.status("task-unified-1")
    assert caught.value.ambiguous is True
    assert len(provider.status_calls()) == 3


@pytest.mark.parametrize(
    "garbage",
    [
        Response(b"<html>502 Bad Gateway</html>", 200, media_type="text/html"),
        Response(b"", 200),
        JSONResponse([1, 2, 3]),
        JSONResponse({"code": 200, "data": {"status": "not_started"}}),  # no task_id
        JSONResponse({"code": 200, "data": {"task_id": "t", "status": "exploded"}}),
    ],
    ids=["html", "empty", "array", "no-task-id", "unknown-status"],
)
async def test_unreadable_200_is_unavailable_and_ambiguous(
    client: PoyoClient, provider: ProviderStandIn, garbage: Response
) -> None:
    provider.submit_hook = script(garbage)
    with pytest.raises(ProviderUnavailable) as caught:
        await submit(client)
    assert caught.value.ambiguous is True
    assert len(provider.submits()) == 1  # a submit that may have been acted on is not repeated


async def test_garbage_status_is_retried(client: PoyoClient, provider: ProviderStandIn) -> None:
    provider.status_hook = script(Response(b"<html>oops</html>", 200), status_of())
    assert (await client.status("task-unified-1")).status is ProviderStatus.RUNNING
    assert len(provider.status_calls()) == 2


@pytest.mark.parametrize("code", [400, 403, 404])
async def test_error_code_inside_a_200_is_a_rejection(
    client: PoyoClient, provider: ProviderStandIn, code: int
) -> None:
    body = {"code": code, "error": {"message": "invalid image url", "type": "invalid_request"}}
    provider.submit_hook = script(JSONResponse(body, 200))
    with pytest.raises(ProviderRejected) as caught:
        await submit(client)
    assert caught.value.message == "invalid image url"
    assert caught.value.http_status == code
    assert len(provider.submits()) == 1


async def test_server_error_code_inside_a_200_is_transient(
    client: PoyoClient, provider: ProviderStandIn
) -> None:
    body = {"code": 500, "error": {"message": "upstream busy", "type": "server_error"}}
    provider.status_hook = script(JSONResponse(body, 200), status_of())
    status = await client.status("task-unified-1")
    assert status.status is ProviderStatus.RUNNING
    assert len(provider.status_calls()) == 2


def closed_port() -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()  # bound, never listening, now released: connections are refused
    return port


@pytest.mark.parametrize("call", ["submit", "status"])
async def test_connection_refused_is_unavailable_and_not_ambiguous(call: str) -> None:
    poyo = PoyoClient(
        base_url=f"http://127.0.0.1:{closed_port()}", api_key=KEY, backoff_initial=0.01
    )
    attempt = submit(poyo) if call == "submit" else poyo.status("task-unified-1")
    try:
        with pytest.raises(ProviderUnavailable) as caught:
            await attempt
    finally:
        await poyo.aclose()
    assert caught.value.ambiguous is False
    assert caught.value.http_status is None


async def test_errors_are_provider_errors(client: PoyoClient, provider: ProviderStandIn) -> None:
    provider.submit_hook = script(poyo_error(400, "bad"))
    with pytest.raises(ProviderError):
        await submit(client)
