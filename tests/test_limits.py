"""Limits: body sizes (413), input sizes (422), page sizes, Idempotency-Key, and the per-key
job-creation rate limit (429 with Retry-After). Over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from tests.conftest import Service, ServiceFactory
from tests.support import IMAGE_JOB, TEXT_JOB

API_LIMIT = 256 * 1024
CALLBACK_LIMIT = 1024 * 1024


def _padded_job(size: int) -> bytes:
    """A valid-looking job body of exactly `size` bytes (the padding is a metadata value)."""
    body = {**TEXT_JOB, "metadata": {"pad": ""}}
    overhead = len(orjson.dumps(body))
    body["metadata"] = {"pad": "x" * (size - overhead)}
    encoded = orjson.dumps(body)
    assert len(encoded) == size
    return encoded


async def _chunks(payload: bytes, chunk: int = 16 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(payload), chunk):
        yield payload[start : start + chunk]


async def _raw(
    service: Service, method: str, path: str, headers: dict[str, str], chunks: list[bytes]
) -> tuple[int, bytes]:
    """One request on a fresh loopback connection, written by hand; the status and body.

    Only what is given is sent: a declared Content-Length with no body, or chunks without
    the final empty chunk. So the server's answer is read before anything more is sent,
    and a reset of the connection can't hide it.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", service.server.port)
    try:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in headers.items()
        )
        writer.write(head.encode() + b"\r\n")
        for chunk in chunks:
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        await writer.drain()
        status_line = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        if method == "HEAD":
            return int(status_line.split()[1]), b""  # the answer's headers only
        return int(status_line.split()[1]), await reader.readexactly(length)
    finally:
        writer.close()


def _assert_too_large(status: int, body: bytes, limit: int, *, head: bool = False) -> None:
    assert status == 413, body[:300]
    if head:
        return  # the same answer, without its body
    assert orjson.loads(body) == {
        "error": {"type": "payload_too_large", "message": f"request body exceeds {limit} bytes"}
    }


async def _operations(service: Service, job_id: str) -> list[tuple[str, str]]:
    """Every operation of the live OpenAPI document, with its path parameters filled in."""
    document = (await service.client.http.get("/openapi.json")).json()
    token = service.runtime.credentials.token(job_id)
    return [
        (method.upper(), path.replace("{job_id}", job_id).replace("{token}", token))
        for path, item in document["paths"].items()
        for method in item
    ]


async def test_announced_oversized_bodies_are_413_on_every_endpoint(service: Service) -> None:
    """A Content-Length over the limit is refused before the body is read or the key checked."""
    client = service.client
    job = (await client.create_job(TEXT_JOB)).json()
    operations = await _operations(service, job["id"])
    assert len(operations) >= 9
    for method, path in operations:
        limit = CALLBACK_LIMIT if path.startswith("/v1/callbacks/") else API_LIMIT
        for auth in (client.headers(), {}):
            headers = {**auth, "Content-Type": "application/json", "Content-Length": str(limit + 1)}
            status, body = await _raw(service, method, path, headers, [])
            _assert_too_large(status, body, limit, head=method == "HEAD")


async def test_streamed_bodies_are_cut_off_at_the_limit(service: Service) -> None:
    """Chunked bodies, with no Content-Length to go by, are counted as they arrive."""
    client = service.client
    job = (await client.create_job(TEXT_JOB)).json()
    headers = {
        **client.headers(),
        "Content-Type": "application/json",
        "Transfer-Encoding": "chunked",
    }
    payload = _padded_job(API_LIMIT + 1)
    chunks = [payload[i : i + 16 * 1024] for i in range(0, len(payload), 16 * 1024)]
    _assert_too_large(*await _raw(service, "POST", "/v1/jobs", headers, chunks), API_LIMIT)

    callback_path = "/" + service.runtime.credentials.url(job["id"]).split("/", 3)[3]
    padding = "x" * (CALLBACK_LIMIT + 1)
    oversized = orjson.dumps({"task_id": job["provider"]["task_id"], "pad": padding})
    chunks = [oversized[i : i + 64 * 1024] for i in range(0, len(oversized), 64 * 1024)]
    _assert_too_large(*await _raw(service, "POST", callback_path, headers, chunks), CALLBACK_LIMIT)
    # Nothing of an oversized callback is stored.
    events = await client.events(job["id"])
    assert not [e for e in events if padding[:1000] in orjson.dumps(e).decode()]


async def test_bodies_at_the_limit_are_accepted(service: Service) -> None:
    client = service.client
    headers = {**client.headers(), "Content-Type": "application/json"}
    # A body of exactly the limit is within it; its 512-character metadata rule still applies.
    at_limit = await client.http.post("/v1/jobs", content=_padded_job(API_LIMIT), headers=headers)
    assert at_limit.status_code == 422, at_limit.text
    streamed = await client.http.post(
        "/v1/jobs", content=_chunks(_padded_job(API_LIMIT)), headers=headers
    )
    assert streamed.status_code == 422, streamed.text
    job = (await client.create_job(TEXT_JOB)).json()
    body = orjson.dumps({"task_id": job["provider"]["task_id"], "status": "running"})
    body = body[:-1] + b', "pad": "' + b"x" * (CALLBACK_LIMIT - len(body) - 11) + b'"}'
    assert len(body) == CALLBACK_LIMIT
    response = await client.http.post(
        service.runtime.credentials.url(job["id"]),
        content=_chunks(body),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text


def _with_input(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**base, "input": {**base["input"], **changes}}


def _url(length: int) -> str:
    prefix = "https://example.com/"
    return prefix + "a" * (length - len(prefix))


async def test_input_limits(start_service: ServiceFactory) -> None:
    # Only lengths are under test: with private targets allowed, the webhook URL's host is
    # not resolved (which would leave loopback).
    client = (await start_service(webhook_allow_private=True)).client
    fits: dict[str, dict[str, Any]] = {
        "16 metadata pairs": {**TEXT_JOB, "metadata": {f"k{i}": "v" for i in range(16)}},
        "64-character key": {**TEXT_JOB, "metadata": {"k" * 64: "v"}},
        "512-character value": {**TEXT_JOB, "metadata": {"k": "v" * 512}},
        "1500-character prompt": _with_input(TEXT_JOB, prompt="p" * 1500),
        # No maxLength in PoYo's schema: the body limit bounds it.
        "50,000-character negative prompt": _with_input(TEXT_JOB, negative_prompt="n" * 50_000),
        "2048-character image URL": _with_input(IMAGE_JOB, image_urls=[_url(2048)]),
        "4000-character audio setting": _with_input(TEXT_JOB, audio="a" * 4000),
        "2048-character webhook URL": {**TEXT_JOB, "webhook_url": _url(2048)},
    }
    too_big: dict[str, tuple[dict[str, Any], list[str]]] = {
        "17 metadata pairs": (
            {**TEXT_JOB, "metadata": {f"k{i}": "v" for i in range(17)}},
            ["body", "metadata"],
        ),
        "65-character key": ({**TEXT_JOB, "metadata": {"k" * 65: "v"}}, ["body", "metadata"]),
        "empty key": ({**TEXT_JOB, "metadata": {"": "v"}}, ["body", "metadata"]),
        "513-character value": (
            {**TEXT_JOB, "metadata": {"k": "v" * 513}},
            ["body", "metadata", "k"],
        ),
        "non-string value": ({**TEXT_JOB, "metadata": {"k": 1}}, ["body", "metadata", "k"]),
        "1501-character prompt": (
            _with_input(TEXT_JOB, prompt="p" * 1501),
            ["body", "input", "prompt"],
        ),
        "2049-character image URL": (
            _with_input(IMAGE_JOB, image_urls=[_url(2049)]),
            ["body", "input", "image_urls", "0"],
        ),
        "2049-character webhook URL": (
            {**TEXT_JOB, "webhook_url": _url(2049)},
            ["body", "webhook_url"],
        ),
        "two image URLs": (
            _with_input(IMAGE_JOB, image_urls=[_url(30), _url(30)]),
            ["body", "input", "image_urls"],
        ),
    }
    before = (await client.get("/v1/jobs", limit=100)).json()["data"]
    for case, (body, loc) in too_big.items():
        response = await client.create_job(body)
        assert response.status_code == 422, (case, response.text[:300])
        error = response.json()["error"]
        assert error["type"] == "invalid_request"
        locs = [detail["loc"][: len(loc)] for detail in error["details"]]
        assert loc in locs, (case, error["details"])
        # The offending value is not echoed back.
        assert "a" * 2000 not in response.text
        assert "p" * 1501 not in response.text
    # Nothing was stored for the refused requests.
    assert (await client.get("/v1/jobs", limit=100)).json()["data"] == before
    for case, body in fits.items():
        response = await client.create_job(body)
        assert response.status_code == 201, (case, response.text[:300])


async def test_page_sizes(service: Service) -> None:
    client = service.client
    job = (await client.create_job(TEXT_JOB)).json()
    for limit in ("0", "101", "-1", "1000", "ten", "1.5"):
        response = await client.get("/v1/jobs", limit=limit)
        assert response.status_code == 422, (limit, response.text)
        assert response.json()["error"]["details"][0]["loc"] == ["query", "limit"]
    for good in (1, 100):
        assert (await client.get("/v1/jobs", limit=good)).status_code == 200
    for limit in ("0", "1001"):
        response = await client.get(f"/v1/jobs/{job['id']}/events", limit=limit)
        assert response.status_code == 422, (limit, response.text)
    for cursor in ("!!!", "x" * 129, "am9iX25vdGFqb2I"):  # the last: base64 of a non-id
        response = await client.get("/v1/jobs", cursor=cursor)
        assert response.status_code == 422, (cursor, response.text)


async def test_idempotency_key_limits(service: Service) -> None:
    client = service.client
    for key in ("", "k" * 256, "has space", "tab\tinside", "caf\u00e9"):
        response = await client.http.post(
            "/v1/jobs",
            json=TEXT_JOB,
            headers=[
                *((name.encode(), value.encode()) for name, value in client.headers().items()),
                (b"Idempotency-Key", key.encode()),
            ],
        )
        assert response.status_code == 422, (key, response.text)
        assert response.json()["error"]["type"] == "invalid_request"
    for key in ("k", "k" * 255, "order:42/retry-1~"):
        response = await client.create_job(TEXT_JOB, **{"Idempotency-Key": key})
        assert response.status_code == 201, (key, response.text)


async def _start_of_a_window() -> None:
    """The limiter counts per calendar minute; start well inside one so that the few
    requests below cannot straddle two windows."""
    remaining = 60 - time.time() % 60
    if remaining < 15:
        await asyncio.sleep(remaining + 0.5)


async def test_job_creation_rate_limit_per_key(start_service: ServiceFactory) -> None:
    service = await start_service(rate_limit_jobs_per_minute=3)
    a = service.client
    other = await service.new_client("tenant-b")
    same_owner = await service.new_client("tenant-a")
    await _start_of_a_window()
    # Refused input costs nothing.
    for _ in range(5):
        assert (await a.create_job({**TEXT_JOB, "input": {}})).status_code == 422
    created = [await a.create_job(TEXT_JOB, **{"Idempotency-Key": f"k{i}"}) for i in range(3)]
    assert [response.status_code for response in created] == [201, 201, 201]
    refused = await a.create_job(TEXT_JOB)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"] == {
        "type": "rate_limited",
        "message": "rate limit of 3 jobs per minute exceeded",
    }
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 60
    # A replay is not a new job: it is answered, not refused.
    replay = await a.create_job(TEXT_JOB, **{"Idempotency-Key": "k0"})
    assert replay.status_code == 200
    assert replay.json()["id"] == created[0].json()["id"]
    # Reads are not limited.
    assert (await a.get("/v1/jobs")).status_code == 200
    # Other keys have their own budget, even a key of the same owner.
    for client in (other, same_owner):
        responses = [await client.create_job(TEXT_JOB) for _ in range(3)]
        assert [r.status_code for r in responses] == [201, 201, 201]
        assert (await client.create_job(TEXT_JOB)).status_code == 429
    # Still refused for the first key, and only the three jobs exist.
    assert (await a.create_job(TEXT_JOB)).status_code == 429
    listed = (await a.get("/v1/jobs", limit=100)).json()["data"]
    mine = {r.json()["id"] for r in created}
    assert mine <= {job["id"] for job in listed}


# ---- strange input is refused, never a server error -----------------------------------


async def test_nul_characters_are_refused_on_every_backend(service: Service) -> None:
    """PostgreSQL cannot store U+0000 in text or jsonb; the API refuses it everywhere alike."""
    client = service.client
    bodies = {
        "prompt": _with_input(TEXT_JOB, prompt="a\x00b"),
        "negative prompt": _with_input(TEXT_JOB, negative_prompt="\x00"),
        "image URL": _with_input(IMAGE_JOB, image_urls=["https://example.com/\x00.jpg"]),
        "audio URL": _with_input(TEXT_JOB, audio="https://example.com/a\x00.mp3"),
        "webhook URL": {**TEXT_JOB, "webhook_url": "https://example.com/\x00"},
        "metadata value": {**TEXT_JOB, "metadata": {"k": "\x00"}},
        "metadata key": {**TEXT_JOB, "metadata": {"k\x00": "v"}},
    }
    for case, body in bodies.items():
        response = await client.create_job(body)
        assert response.status_code == 422, (case, response.text[:300])
        assert response.json()["error"]["type"] == "invalid_request"
    assert (await client.get("/v1/jobs")).json()["data"] == []
    response = await client.get("/v1/jobs", model="a\x00b")
    assert response.status_code == 422, response.text


async def test_extreme_created_bounds_are_not_server_errors(service: Service) -> None:
    client = service.client
    for name in ("created_after", "created_before"):
        response = await client.get("/v1/jobs", **{name: "9999-12-31T23:59:59.999999Z"})
        assert response.status_code in (200, 422), (name, response.text)


async def test_out_of_range_event_cursor_is_422(service: Service) -> None:
    client = service.client
    job = (await client.create_job(TEXT_JOB)).json()
    cursor = base64.urlsafe_b64encode(b"9" * 19).decode().rstrip("=")
    response = await client.get(f"/v1/jobs/{job['id']}/events", cursor=cursor)
    assert response.status_code == 422, response.text


async def test_callbacks_with_nul_characters_are_400(service: Service) -> None:
    job = (await service.client.create_job(TEXT_JOB)).json()
    url = service.runtime.credentials.url(job["id"])
    for body in (b'{"task_id": "task\\u0000x", "status": "finished"}', b'{"task_id": "t"}\x00'):
        response = await service.client.http.post(url, content=body)
        assert response.status_code == 400, (body, response.text)
