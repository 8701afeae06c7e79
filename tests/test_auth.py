"""API keys: every client endpoint needs a live key; revocation is immediate; secrets are
shown once and stored only as a hash. On SQLite and PostgreSQL, over real HTTP."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import select

from app.auth.models import ApiKey
from app.auth.service import create_key, revoke
from tests.conftest import Service, ServiceFactory
from tests.support import REPO_ROOT, TEXT_JOB, ApiClient

# Routes whose own credential is in the URL: the provider's callbacks.
UNAUTHENTICATED_PREFIXES = ("/v1/callbacks/",)
KNOWN_CLIENT_OPERATIONS = {
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs"),
    ("GET", "/v1/jobs/{job_id}"),
    ("GET", "/v1/jobs/{job_id}/events"),
    ("GET", "/v1/models"),
    ("GET", "/v1/jobs/{job_id}/outputs/{index}"),
    ("HEAD", "/v1/jobs/{job_id}/outputs/{index}"),
    ("POST", "/v1/jobs/{job_id}/outputs/{index}/links"),
}
LINK_BODY = {"expires_in": 600}


async def _client_operations(service: Service) -> list[tuple[str, str]]:
    """Every /v1 operation of the live OpenAPI document except the provider callbacks."""
    document = (await service.client.http.get("/openapi.json")).json()
    operations = [
        (method.upper(), path)
        for path, item in document["paths"].items()
        if path.startswith("/v1/") and not path.startswith(UNAUTHENTICATED_PREFIXES)
        for method in item
    ]
    assert set(operations) >= KNOWN_CLIENT_OPERATIONS
    return operations


BUDGET_BODY = {"daily_credits": 100}
ADMIN_ONLY = {("PUT", "/v1/budgets/{owner}")}
WEBHOOK_QUERIES = {
    "/v1/webhook_endpoints/{endpoint_id}/recover": "?since=2026-01-01T00:00:00Z",
    "/v1/webhook_messages": "?job_id={job_id}",
}
WEBHOOK_BODIES = {
    "/v1/webhook_endpoints": {"url": "http://127.0.0.1:9/y"},
    "/v1/webhook_endpoints/{endpoint_id}": {"description": "patched"},
}


@dataclass(frozen=True)
class Ids:
    """What the operations' paths name: a job, and webhook objects of the same owner."""

    job: str
    endpoint: str = ""
    doomed_endpoint: str = ""  # the one a DELETE removes
    message: str = ""


async def _webhook_ids(client: ApiClient, job_id: str) -> Ids:
    made = []
    for _ in range(2):
        answer = await client.http.post(
            "/v1/webhook_endpoints", json={"url": "http://127.0.0.1:9/x"}, headers=client.headers()
        )
        made.append(answer.json()["id"])
    sent = await client.http.post(f"/v1/webhook_endpoints/{made[0]}/test", headers=client.headers())
    return Ids(job_id, made[0], made[1], sent.json()["message_ids"][0])


async def _call(
    http: httpx.AsyncClient,
    method: str,
    path: str,
    ids: Ids,
    headers: dict[str, str],
    body: Any = TEXT_JOB,
) -> httpx.Response:
    url = path.replace("{job_id}", ids.job).replace("{model_id}", "kling-3.0/pro")
    url = url.replace("{index}", "0").replace("{owner}", "tenant-a")
    endpoint = ids.doomed_endpoint if method == "DELETE" else ids.endpoint
    url = url.replace("{endpoint_id}", endpoint).replace("{message_id}", ids.message)
    url += WEBHOOK_QUERIES.get(path, "").replace("{job_id}", ids.job)
    if path in WEBHOOK_BODIES:
        return await http.request(method, url, json=WEBHOOK_BODIES[path], headers=headers)
    if method == "POST":
        return await http.post(url, json=LINK_BODY if "/links" in url else body, headers=headers)
    if method == "PUT":
        return await http.put(url, json=BUDGET_BODY, headers=headers)
    if url.endswith("/stream"):
        # An event stream of every job never ends: its head and the first message tell.
        async with http.stream(method, url, headers=headers) as response:
            if response.status_code != 200:
                await response.aread()
            return response
    return await http.request(method, url, headers=headers)


def _assert_unauthorized(response: httpx.Response, *, leaked: str = "") -> None:
    assert response.status_code == 401, (response.request.url, response.text)
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == "application/json"
    if response.request.method == "HEAD":
        return  # the same answer, without its body
    error = response.json()["error"]
    assert error["type"] == "authentication_error"
    assert error["message"]
    if leaked:
        assert leaked not in response.text


def _bad_authorizations(valid: str, revoked: str) -> dict[str, dict[str, str]]:
    key_id, secret = valid.removeprefix("prk_").split("_", 1)
    other_secret = secrets.token_urlsafe(32)
    unknown_id = "01" + "".join(
        secrets.choice("0123456789abcdefghjkmnpqrstvwxyz") for _ in range(24)
    )
    return {
        "missing": {},
        "empty": {"Authorization": ""},
        "scheme only": {"Authorization": "Bearer"},
        "scheme, spaces, junk": {"Authorization": "Bearer    x"},
        "basic scheme": {"Authorization": "Basic dXNlcjpwYXNzd29yZA=="},
        "key under another scheme": {"Authorization": f"Token {valid}"},
        "key without scheme": {"Authorization": valid},
        "malformed": {"Authorization": "Bearer not-a-key"},
        "no prefix": {"Authorization": f"Bearer {valid.removeprefix('prk_')}"},
        "upper-cased": {"Authorization": f"Bearer {valid.upper()}"},
        "wrong secret": {"Authorization": f"Bearer prk_{key_id}_{other_secret}"},
        "truncated secret": {"Authorization": f"Bearer {valid[:-1]}"},
        "extended secret": {"Authorization": f"Bearer {valid}A"},
        "unknown id": {"Authorization": f"Bearer prk_{unknown_id}_{secret}"},
        "over-long": {"Authorization": f"Bearer {valid}{'a' * 300}"},
        "revoked": {"Authorization": f"Bearer {revoked}"},
    }


async def test_every_client_endpoint_refuses_bad_credentials(
    start_service: ServiceFactory,
) -> None:
    service = await start_service(webhook_allow_private=True)
    client = service.client
    job = (await client.create_job(TEXT_JOB)).json()
    await client.wait_for_status(job["id"], {"succeeded"})  # it has an output to read
    ids = await _webhook_ids(client, job["id"])
    revoked_info, revoked = await create_key(service.runtime.db, name="tenant-a")
    assert await revoke(service.runtime.db, name_or_id=revoked_info.id) == 1
    operations = await _client_operations(service)
    refused = 0
    for method, path in operations:
        for case, headers in _bad_authorizations(client.key, revoked).items():
            response = await _call(client.http, method, path, ids, headers)
            _assert_unauthorized(response, leaked=client.key)
            assert job["id"] not in response.text, case
            refused += 1
        # The same request with the valid key gets through: the 401s were about the key
        # (an output not archived, here, is a redirect to PoYo's URL).
        ok = await _call(client.http, method, path, ids, client.headers())
        # Setting budgets is for admin keys: a tenant's valid key gets as far as a 403.
        allowed = (403,) if (method, path) in ADMIN_ONLY else (200, 201, 202, 204, 307)
        assert ok.status_code in allowed, (method, path, ok.text)
    assert refused == len(operations) * 16


async def test_unauthenticated_requests_learn_nothing_about_their_body(service: Service) -> None:
    """Authentication comes first: a bad body without a key is a 401, not a 400 or 422."""
    http = service.client.http
    bodies: list[dict[str, Any]] = [
        {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
        {"content": b"\xff\xfe\x00", "headers": {"Content-Type": "application/json"}},
        {"content": b"[1, 2]", "headers": {"Content-Type": "application/json"}},
        {"content": b"", "headers": {"Content-Type": "application/json"}},
        {"content": b'{"model": "nope", "input": 3}', "headers": {}},
    ]
    for auth in ({}, {"Authorization": "Bearer prk_bogus"}):
        for body in bodies:
            response = await http.post(
                "/v1/jobs", content=body["content"], headers={**body["headers"], **auth}
            )
            _assert_unauthorized(response)
    # With a key, the same bodies are judged on their merits.
    response = await http.post(
        "/v1/jobs",
        content=b"{not json",
        headers={"Content-Type": "application/json", **service.client.headers()},
    )
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_request"


async def test_revocation_takes_effect_at_once(service: Service) -> None:
    db = service.runtime.db
    info, key = await create_key(db, name="rotating")
    client = ApiClient(http=service.client.http, key=key)
    created = await client.create_job(TEXT_JOB)
    assert created.status_code == 201
    assert (await client.get("/v1/jobs")).status_code == 200

    assert await revoke(db, name_or_id=info.id) == 1
    # The very next request on the same keep-alive connection is refused: nothing cached.
    for _ in range(3):
        _assert_unauthorized(await client.get("/v1/jobs"))
        _assert_unauthorized(await client.get(f"/v1/jobs/{created.json()['id']}"))
        _assert_unauthorized(await client.create_job(TEXT_JOB))
    # Revoking again finds nothing live.
    assert await revoke(db, name_or_id=info.id) == 0


async def test_keys_sharing_a_name_share_jobs_and_revoke_by_name(service: Service) -> None:
    db = service.runtime.db
    old_info, old = await create_key(db, name="team")
    _, new = await create_key(db, name="team")
    old_client = ApiClient(http=service.client.http, key=old)
    new_client = ApiClient(http=service.client.http, key=new)
    job = (await old_client.create_job(TEXT_JOB)).json()
    # Rotation: the new key of the same owner sees the job, then the old key is revoked.
    assert (await new_client.job(job["id"]))["id"] == job["id"]
    assert await revoke(db, name_or_id=old_info.id) == 1
    _assert_unauthorized(await old_client.get(f"/v1/jobs/{job['id']}"))
    assert (await new_client.job(job["id"]))["id"] == job["id"]
    # Revoking by name revokes every key of the owner; other owners are untouched.
    _, spare = await create_key(db, name="team")
    assert await revoke(db, name_or_id="team") == 2
    for key in (new, spare):
        _assert_unauthorized(await ApiClient(http=service.client.http, key=key).get("/v1/jobs"))
    assert (await service.client.get("/v1/jobs")).status_code == 200


async def test_scheme_is_case_insensitive(service: Service) -> None:
    for scheme in ("Bearer", "bearer", "BEARER"):
        response = await service.client.http.get(
            "/v1/models", headers={"Authorization": f"{scheme} {service.client.key}"}
        )
        assert response.status_code == 200, scheme


async def test_only_a_hash_of_the_secret_is_stored(service: Service) -> None:
    db = service.runtime.db
    info, key = await create_key(db, name="hashing")
    assert key.startswith("prk_")
    secret = key.split("_", 2)[2]
    assert len(secret) >= 43  # 32 random bytes, URL-safe base64
    async with db.read() as session:
        rows = (await session.execute(select(ApiKey))).scalars().all()
    stored = [str(getattr(row, column.key)) for row in rows for column in ApiKey.__table__.columns]
    assert not any(secret in value or key in value for value in stored)
    [row] = [row for row in rows if row.id == info.id]
    assert len(row.secret_hash) == 64
    assert row.secret_hash != secret


async def _cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`poyo-relay ARGS` in its own process; the server keeps serving meanwhile."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("POYO_", "DATABASE_"))
    }
    env["DATABASE_URL"] = database_url
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        cwd=REPO_ROOT / "tests",  # no .env there
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_keys_cli_create_list_revoke(service: Service) -> None:
    database_url = service.settings.database_url
    created = await _cli(database_url, "keys", "create", "cli-owner")
    assert created.returncode == 0, created.stderr
    key = created.stdout.split()[-1]
    assert key.startswith("prk_")
    client = ApiClient(http=service.client.http, key=key)
    job = (await client.create_job(TEXT_JOB)).json()

    admin = await _cli(database_url, "keys", "create", "cli-admin", "--admin")
    assert admin.returncode == 0, admin.stderr
    admin_client = ApiClient(http=service.client.http, key=admin.stdout.split()[-1])
    assert (await admin_client.job(job["id"]))["id"] == job["id"]

    listed = await _cli(database_url, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    assert "cli-owner" in listed.stdout
    assert key.split("_", 2)[2] not in listed.stdout

    revoked = await _cli(database_url, "keys", "revoke", "cli-owner")
    assert revoked.returncode == 0, revoked.stderr
    _assert_unauthorized(await client.get(f"/v1/jobs/{job['id']}"))
    again = await _cli(database_url, "keys", "revoke", "cli-owner")
    assert again.returncode == 1
    bad_name = await _cli(database_url, "keys", "create", "no spaces allowed")
    assert bad_name.returncode == 2
