"""The dashboard over HTTP, both databases: sign-in and sessions, CSRF, tenancy, escaping,
the security headers, each page, the new-job form's 422 at its field, the estimate,
redelivery. (tests/test_ui_browser.py drives the same pages in Chromium.)"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from app.auth.models import UiSession
from app.auth.service import create_key, revoke
from app.timeutil import utcnow
from tests.conftest import Service, ServiceFactory
from tests.support import IMAGE_JOB, eventually

XSS = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>']


class Browser:
    """A cookie-keeping client that behaves like a browser posting our forms."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.http = httpx.AsyncClient(base_url=service.url, timeout=30, follow_redirects=False)
        self.origin = {"Origin": service.url}

    async def sign_in(self, key: str) -> httpx.Response:
        return await self.http.post("/ui/login", data={"api_key": key}, headers=self.origin)

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.http.get(path, **kwargs)

    async def post(self, path: str, data: dict[str, str], **headers: str) -> httpx.Response:
        return await self.http.post(path, data=data, headers={**self.origin, **headers})

    async def csrf(self) -> str:
        page = await self.get("/ui")
        match = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
        assert match, page.text
        return match.group(1)


@pytest.fixture
async def browser(service: Service) -> Any:
    client = Browser(service)
    yield client
    await client.http.aclose()


async def test_sign_in_sets_a_strict_http_only_cookie(service: Service, browser: Browser) -> None:
    page = await browser.get("/ui")
    assert page.status_code == 200
    assert 'type="password"' in page.text
    assert 'name="api_key"' in page.text
    assert 'for="api_key"' in page.text  # labelled

    refused = await browser.sign_in("prk_not_a_key")
    assert refused.status_code == 401
    assert "not a valid API key" in refused.text
    assert "set-cookie" not in refused.headers

    signed = await browser.sign_in(service.client.key)
    assert signed.status_code == 303
    assert signed.headers["location"] == "/ui"
    cookie = signed.headers["set-cookie"]
    assert "poyo_relay_session=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/ui" in cookie
    assert "Secure" not in cookie  # plain http on loopback; https gets Secure
    assert service.client.key not in cookie  # the cookie is not the key

    jobs = await browser.get("/ui")
    assert "<h1>Jobs</h1>" in jobs.text
    assert "tenant-a" in jobs.text


async def test_pages_carry_a_strict_content_security_policy(
    service: Service, browser: Browser
) -> None:
    await browser.sign_in(service.client.key)
    for path in ("/ui", "/ui/new", "/ui/overview", "/ui/static/ui.js", "/ui/static/ui.css"):
        answer = await browser.get(path)
        assert answer.status_code == 200, path
        csp = answer.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "default-src 'none'" in csp
        assert "unsafe-inline" not in csp
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["x-content-type-options"] == "nosniff"
    for path in ("/ui", "/ui/new?model=wan2.5-image-to-video", "/ui/overview"):
        html = (await browser.get(path)).text
        assert "<script>" not in html
        assert " style=" not in html
        assert "<style" not in html
        assert not re.search(r"\son[a-z]+=", html)  # no inline handlers
        assert not re.search(
            r'(?:src|href|action)="(?:https?:)?//', html
        )  # nothing fetched off-site


async def test_forms_need_the_session_csrf_token_and_our_origin(
    service: Service, browser: Browser
) -> None:
    await browser.sign_in(service.client.key)
    token = await browser.csrf()
    body = {"model": "nano-banana", "csrf_token": token, "prompt": "a cat"}
    foreign = await browser.http.post("/ui/new", data=body, headers={"Origin": "http://evil.test"})
    assert foreign.status_code == 403
    forged = await browser.post("/ui/new", {**body, "csrf_token": "guess"})
    assert forged.status_code == 403
    missing = await browser.post("/ui/new", {k: v for k, v in body.items() if k != "csrf_token"})
    assert missing.status_code == 403
    login_elsewhere = await browser.http.post(
        "/ui/login", data={"api_key": service.client.key}, headers={"Origin": "http://evil.test"}
    )
    assert login_elsewhere.status_code == 403
    jobs = (await service.client.http.get("/v1/jobs", headers=service.client.headers())).json()
    assert jobs["data"] == []  # nothing was created by the refused posts

    made = await browser.post("/ui/new", body)
    assert made.status_code == 303
    assert made.headers["location"].startswith("/ui/jobs/job_")


async def test_a_user_sees_only_their_owners_jobs(service: Service, browser: Browser) -> None:
    mine = (await service.client.create_job(IMAGE_JOB)).json()
    other = await service.new_client("tenant-b")
    theirs = (await other.create_job(IMAGE_JOB)).json()
    await browser.sign_in(service.client.key)
    listed = (await browser.get("/ui")).text
    assert mine["id"] in listed
    assert theirs["id"] not in listed
    hidden = await browser.get(f"/ui/jobs/{theirs['id']}")
    assert hidden.status_code == 404
    assert theirs["id"] not in hidden.text

    admin = await service.new_client("root", admin=True)
    overseer = Browser(service)
    try:
        await overseer.sign_in(admin.key)
        everything = (await overseer.get("/ui")).text
        assert mine["id"] in everything
        assert theirs["id"] in everything
        assert (await overseer.get(f"/ui/jobs/{theirs['id']}")).status_code == 200
    finally:
        await overseer.http.aclose()


async def test_a_revoked_key_or_sign_out_ends_the_session(
    service: Service, browser: Browser
) -> None:
    info, key = await create_key(service.runtime.db, name="tenant-a")
    await browser.sign_in(key)
    assert "<h1>Jobs</h1>" in (await browser.get("/ui")).text
    token = await browser.csrf()
    out = await browser.post("/ui/logout", {"csrf_token": token})
    assert out.status_code == 303
    assert 'name="api_key"' in (await browser.get("/ui")).text

    await browser.sign_in(key)
    assert "<h1>Jobs</h1>" in (await browser.get("/ui")).text
    await revoke(service.runtime.db, name_or_id=info.id)
    assert 'name="api_key"' in (await browser.get("/ui")).text


async def test_hostile_text_renders_as_text(start_service: ServiceFactory) -> None:
    service = await start_service(webhook_allow_private=True)
    body = {**IMAGE_JOB, "input": {**IMAGE_JOB["input"], "prompt": " ".join(XSS)}}
    body["metadata"] = {"note": XSS[1]}
    job = (await service.client.create_job(body)).json()
    browser = Browser(service)
    try:
        await browser.sign_in(service.client.key)
        page = (await browser.get(f"/ui/jobs/{job['id']}")).text
        assert "<script>alert" not in page
        assert "<img src=x" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
        listing = (await browser.get("/ui", params={"model": XSS[1]})).text
        assert "<img src=x" not in listing
    finally:
        await browser.http.aclose()


async def test_the_new_job_form_is_generated_and_shows_422_at_its_field(
    service: Service, browser: Browser
) -> None:
    await browser.sign_in(service.client.key)
    form = (await browser.get("/ui/new", params={"model": "wan2.5-image-to-video"})).text
    assert '<select id="in-duration" name="duration"' in form
    assert re.search(r'<option value="5"\s+selected>5</option>', form)  # default pre-filled
    assert '<textarea id="in-image_urls"' in form
    assert re.search(r'<label for="in-prompt">Prompt', form)
    for field in re.findall(r'<(?:input|select|textarea) id="(in-[a-z_0-9]+)"', form):
        assert f'for="{field}"' in form  # every field has a label

    token = await browser.csrf()
    sent = {
        "csrf_token": token,
        "model": "wan2.5-image-to-video",
        "prompt": "a fox",
        "image_urls": "ftp://not-http.example/fox.jpg",
        "duration": "5",
        "seed": "12.5",
    }
    refused = await browser.post("/ui/new", sent)
    assert refused.status_code == 422
    page = refused.text
    seed_error = re.search(r'id="in-seed-error"\s*>([^<]+)<', page)
    assert seed_error
    assert "whole number" in seed_error.group(1)
    assert 'value="12.5"' in page  # what was typed is kept

    sent["seed"] = "7"
    refused = await browser.post("/ui/new", sent)
    assert refused.status_code == 422
    urls_error = re.search(r'id="in-image_urls-error"\s*>([^<]+)<', refused.text)
    assert urls_error, refused.text
    jobs = (await service.client.http.get("/v1/jobs", headers=service.client.headers())).json()
    assert jobs["data"] == []

    sent["image_urls"] = "https://example.com/fox.jpg"
    made = await browser.post("/ui/new", sent)
    assert made.status_code == 303
    job_id = made.headers["location"].rsplit("/", 1)[1]
    stored = await service.client.job(job_id)
    assert stored["input"]["seed"] == 7
    assert stored["input"]["duration"] == 5
    assert stored["input"]["image_urls"] == ["https://example.com/fox.jpg"]


async def test_the_estimate_follows_the_form(service: Service, browser: Browser) -> None:
    await browser.sign_in(service.client.key)
    token = await browser.csrf()
    base = {"csrf_token": token, "model": "wan2.5-image-to-video", "prompt": "a fox"}
    base["image_urls"] = "https://example.com/fox.jpg"
    five = (await browser.post("/ui/estimate", {**base, "duration": "5"})).json()
    ten = (await browser.post("/ui/estimate", {**base, "duration": "10"})).json()
    api = await service.client.http.post(
        "/v1/estimates",
        json={
            "model": "wan2.5-image-to-video",
            "input": {
                "prompt": "a fox",
                "duration": 10,
                "image_urls": ["https://example.com/fox.jpg"],
            },
        },
        headers=service.client.headers(),
    )
    assert ten["credits"] == api.json()["credits"]
    assert ten["credits"] > five["credits"] > 0
    incomplete = (
        await browser.post("/ui/estimate", {"csrf_token": token, "model": base["model"]})
    ).json()
    assert incomplete["credits"] is None
    assert "prompt" in incomplete["errors"]
    forged = await browser.post("/ui/estimate", {**base, "csrf_token": "x"})
    assert forged.status_code == 403


async def test_job_page_overview_and_redelivery(
    start_service: ServiceFactory, receiver: Any
) -> None:
    receiver.failures = 0
    service = await start_service(webhook_allow_private=True)
    job = (await service.client.create_job({**IMAGE_JOB, "webhook_url": receiver.url})).json()
    await eventually(lambda: _count(receiver), lambda n: n == 1)
    browser = Browser(service)
    try:
        await browser.sign_in(service.client.key)
        page = (await browser.get(f"/ui/jobs/{job['id']}")).text
        for text in ("job.created", "callback.received", "Raw callbacks", "job.succeeded"):
            assert text in page, text
        message_id = re.search(r'data-message="(msg_[0-9a-z]+)"', page)
        assert message_id
        token = await browser.csrf()
        action = f"/ui/jobs/{job['id']}/webhooks/{message_id.group(1)}/redeliver"
        again = await browser.post(action, {"csrf_token": token})
        assert again.status_code == 303
        assert again.headers["location"].endswith("notice=redelivered")
        await eventually(lambda: _count(receiver), lambda n: n == 2)
        assert receiver.calls[1][0]["webhook-id"] == message_id.group(1)

        overview = await browser.get("/ui/overview")
        assert overview.status_code == 200
        assert overview.text.count("<svg") == 3
        today = job["created_at"][:10]  # the day its usage is counted on
        assert f"{today} · succeeded: 1 job" in overview.text  # counted when it ended
        assert f"{today} · failed: 0 jobs" in overview.text
        assert "wan2.5-image-to-video" in overview.text  # its duration row
    finally:
        await browser.http.aclose()


async def _count(receiver: Any) -> int:
    return len(receiver.calls)


async def test_a_session_expires_on_the_server(service: Service, browser: Browser) -> None:
    signed = await browser.sign_in(service.client.key)
    assert "Max-Age=43200" in signed.headers["set-cookie"]
    assert "<h1>Jobs</h1>" in (await browser.get("/ui")).text
    async with service.runtime.db.write() as conn:
        await conn.execute(update(UiSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    # The browser still sends its cookie; the server no longer honours it.
    assert 'name="api_key"' in (await browser.get("/ui")).text
    answer = await browser.get("/ui/stream")
    assert answer.status_code == 401
