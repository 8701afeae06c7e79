"""The dashboard driven in a real browser (Debian's Chromium through Playwright), at a
desktop width (1440x900) and a phone width (390x844): signing in and out, filtering,
live updates without a reload, playing an archived video, the generated new-job form with
a 422 at its field and the estimate, redelivering a webhook, tenancy, hostile text, the
keyboard. Screenshots of every page at both widths go to artifacts/screenshots/.

SQLite only: tests/test_ui.py covers the same pages over HTTP on both databases."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Dialog,
    Page,
    ViewportSize,
    async_playwright,
    expect,
)

from tests.conftest import Service, ServiceFactory, Simulator
from tests.support import IMAGE_JOB, TEXT_JOB, eventually

pytestmark = pytest.mark.parametrize("migrated_database", ["sqlite"], indirect=True)

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
VIEWPORTS: dict[str, ViewportSize] = {
    "1440": {"width": 1440, "height": 900},
    "390": {"width": 390, "height": 844},
}
XSS = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>']
WAIT_MS = 20_000  # the longest any expectation waits (a job's whole life in the simulator)
VIDEO_MODEL = IMAGE_JOB["model"]  # wan2.5-image-to-video: enums (duration), bounds (seed)

expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="module")
async def chromium() -> AsyncIterator[Browser]:
    """One Chromium for the module: Debian's, as CI installs it (.ci/run). Never skipped."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium", pytrace=False)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"],
        )
        yield browser
        await browser.close()


@pytest.fixture(params=list(VIEWPORTS), ids=[f"w{width}" for width in VIEWPORTS])
def width(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass
class Watched:
    """What every page of a test did that it should not: dialogs, script errors, CSP
    violations."""

    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.errors.append(message.text)  # CSP violations are reported here

    async def dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        await dialog.dismiss()


OpenPage = Callable[[Service], Awaitable[Page]]


@pytest.fixture
async def open_page(
    chromium: Browser, width: str, start_service: ServiceFactory
) -> AsyncIterator[tuple[OpenPage, Watched]]:
    """Pages in fresh browser contexts (own cookies) at the test's width. Set up after
    start_service, so the contexts (and their open event streams) close before it stops
    the services."""
    watched = Watched()
    contexts = []

    async def open_(service: Service) -> Page:
        context = await chromium.new_context(viewport=VIEWPORTS[width], base_url=service.url)
        context.set_default_timeout(WAIT_MS)
        contexts.append(context)
        page = await context.new_page()
        page.on("dialog", watched.dialog)
        page.on("console", watched.console)
        page.on("pageerror", lambda error: watched.errors.append(str(error)))
        return page

    yield open_, watched
    for context in contexts:
        await context.close()
    assert watched.dialogs == [], "a dialog opened"
    assert watched.errors == [], "script errors or CSP violations"


# ---- helpers ---------------------------------------------------------------------------------


async def sign_in(page: Page, key: str) -> None:
    await page.goto("/ui")
    await page.locator("#api_key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Jobs")


async def create(service: Service, body: dict[str, Any]) -> str:
    response = await service.client.create_job(body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def rows(page: Page) -> set[str]:
    ids = await page.locator("#jobs tbody tr[data-job]").evaluate_all(
        "trs => trs.map(tr => tr.dataset.job)"
    )
    return set(ids)


async def shoot(page: Page, name: str, width: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)


async def no_horizontal_scroll(page: Page) -> None:
    """The page itself never scrolls sideways (wide tables scroll inside their box)."""
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"{page.url} is {overflow}px wider than the viewport"


# ---- the tests ---------------------------------------------------------------------------------


async def test_sign_in_with_the_api_key(
    service: Service, open_page: tuple[OpenPage, Watched]
) -> None:
    page = await open_page[0](service)
    await page.goto("/ui")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    await expect(page.get_by_label("API key")).to_have_attribute("type", "password")

    await page.get_by_label("API key").fill("prk_not_a_key")
    async with page.expect_response(lambda r: r.url.endswith("/ui/login")) as refused:
        await page.get_by_role("button", name="Sign in").click()
    assert (await refused.value).status == 401
    await expect(page.get_by_role("alert")).to_have_text("That is not a valid API key.")
    assert await page.context.cookies() == []

    await sign_in(page, service.client.key)
    await expect(page.locator("header .who")).to_have_text("tenant-a")
    (cookie,) = await page.context.cookies()
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"
    assert service.client.key not in cookie["value"]


async def test_filters_change_the_url_and_the_rows_and_are_bookmarkable(
    service: Service, open_page: tuple[OpenPage, Watched]
) -> None:
    videos = {await create(service, IMAGE_JOB) for _ in range(2)}
    text = await create(service, TEXT_JOB)
    failing = {**IMAGE_JOB, "input": {**IMAGE_JOB["input"], "prompt": "a fox [fail]"}}
    failed = await create(service, failing)
    for job_id in (*videos, text):
        await service.client.wait_for_status(job_id, {"succeeded"})
    await service.client.wait_for_status(failed, {"failed"})

    page = await open_page[0](service)
    await sign_in(page, service.client.key)
    assert await rows(page) == {*videos, text, failed}

    await page.locator("#f-status").select_option("failed")
    await page.get_by_role("button", name="Filter").click()
    await expect(page).to_have_url(re.compile(r"[?&]status=failed(&|$)"))
    await expect(page.locator("#jobs tbody tr[data-job]")).to_have_count(1)
    assert await rows(page) == {failed}
    await expect(page.locator(f'tr[data-job="{failed}"] .status .badge')).to_have_text("failed")

    await page.locator("#f-status").select_option("succeeded")
    await page.locator("#f-model").fill(VIDEO_MODEL)
    await page.get_by_role("button", name="Filter").click()
    await expect(page).to_have_url(re.compile(r"[?&]model=wan2\.5-image-to-video(&|$)"))
    await expect(page.locator("#jobs tbody tr[data-job]")).to_have_count(2)
    assert await rows(page) == videos
    query = parse_qs(urlsplit(page.url).query)
    assert query["status"] == ["succeeded"]
    assert query["model"] == [VIDEO_MODEL]
    bookmark = page.url

    await page.locator("#f-status").select_option("failed")  # no text job failed
    await page.locator("#f-model").fill(TEXT_JOB["model"])
    await page.get_by_role("button", name="Filter").click()
    await expect(page.locator("#jobs tbody tr.empty")).to_have_text("No jobs match these filters.")

    later = await open_page[0](service)  # a new browser, from the bookmark
    await sign_in(later, service.client.key)
    await later.goto(bookmark)
    await expect(later.locator("#jobs tbody tr[data-job]")).to_have_count(2)
    assert await rows(later) == videos
    await expect(later.locator("#f-status")).to_have_value("succeeded")
    await expect(later.locator("#f-model")).to_have_value(VIDEO_MODEL)

    await later.get_by_role("link", name="Clear").click()
    await expect(later.locator("#jobs tbody tr[data-job]")).to_have_count(4)


async def test_a_new_job_appears_and_settles_without_a_reload(
    start_service: ServiceFactory, simulator: Simulator, open_page: tuple[OpenPage, Watched]
) -> None:
    await simulator.set_faults(queue_seconds=1.0, run_seconds=1.0)
    service = await start_service(progress_refresh_seconds=0.3)
    page = await open_page[0](service)
    await sign_in(page, service.client.key)
    await expect(page.locator("#jobs tbody tr.empty")).to_have_text("No jobs.")
    await expect(page.locator("#live-state")).to_have_text("Live: updates appear as they happen.")
    await page.evaluate("window.__marker = 1")
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))

    job_id = await create(service, IMAGE_JOB)
    row = page.locator(f'#jobs tbody tr[data-job="{job_id}"]')
    await expect(row).to_be_visible()
    await expect(page.locator("#jobs tbody tr.empty")).to_have_count(0)
    await expect(row.locator(".status .badge")).to_have_text("queued")
    await expect(row.locator(".status .badge")).to_have_text("succeeded")
    await expect(row.locator(".status .badge")).to_have_class(re.compile(r"\bstatus-succeeded\b"))
    await expect(row.locator(".pct")).to_have_text("100%")
    await expect(row.locator("progress")).to_have_js_property("value", 100)
    await expect(row.locator("td.id a")).to_have_attribute("href", f"/ui/jobs/{job_id}")

    assert await page.evaluate("window.__marker") == 1  # the same document all along
    assert navigations == []


async def test_the_job_page_plays_its_archived_video(
    start_service: ServiceFactory, tmp_path: Path, open_page: tuple[OpenPage, Watched]
) -> None:
    service = await start_service(
        archive_enabled=True,
        archive_allow_private=True,
        webhook_allow_private=True,
        archive_dir=str(tmp_path / "outputs"),
    )
    job_id = await create(service, IMAGE_JOB)
    await eventually(
        lambda: service.client.job(job_id),
        lambda job: (job["archive"] or {}).get("status") == "archived",
        seconds=20,
    )
    page = await open_page[0](service)
    await sign_in(page, service.client.key)
    await page.locator(f'tr[data-job="{job_id}"] td.id a').click()
    await expect(page).to_have_url(re.compile(rf"/ui/jobs/{job_id}$"))
    await expect(page.locator("#job-status")).to_have_text("succeeded")

    video = page.locator("figure.output video")
    await expect(video).to_have_count(1)
    src = await video.get_attribute("src")
    assert src is not None
    assert src.startswith(f"/v1/jobs/{job_id}/outputs/0?"), src  # our own, signed
    await video.evaluate("v => { v.muted = true; return v.play(); }")
    await page.wait_for_function(
        "() => document.querySelector('figure.output video').currentTime > 0.2",
        timeout=WAIT_MS,
    )
    playing = await video.evaluate(
        "v => ({duration: v.duration, error: v.error && v.error.code, width: v.videoWidth})"
    )
    assert playing["error"] is None
    assert playing["duration"] > 0
    assert playing["width"] > 0
    download = page.get_by_role("link", name="Download")
    await expect(download).to_have_attribute("href", src)


async def test_the_generated_form_shows_422_at_its_field_then_creates_the_job(
    service: Service, open_page: tuple[OpenPage, Watched]
) -> None:
    page = await open_page[0](service)
    await sign_in(page, service.client.key)
    await page.get_by_role("link", name="New job").click()
    await expect(page.locator("#job-form")).to_have_count(0)
    await page.locator("#pick-model").select_option(VIDEO_MODEL)  # submits itself
    await expect(page).to_have_url(re.compile(r"/ui/new\?model=wan2\.5-image-to-video$"))
    await expect(page.locator("#job-form")).to_be_visible()
    await expect(page.locator("#in-duration")).to_have_value("5")  # the default

    estimate = page.locator("#estimate")
    await expect(estimate).to_have_text("— (complete the required fields)")
    await page.locator("#in-prompt").fill("a fox in the snow")
    await page.locator("#in-image_urls").fill("https://example.com/fox.jpg")
    credits = re.compile(r"^(\d+(?:\.\d+)?) credits \(≈ US\$\d+\.\d\d\)$")
    await expect(estimate).to_have_text(credits)
    five = float(credits.fullmatch(await estimate.inner_text()).group(1))  # type: ignore[union-attr]
    await page.locator("#in-duration").select_option("10")
    await expect(estimate).not_to_have_text(await estimate.inner_text())
    await expect(estimate).to_have_text(credits)
    ten = float(credits.fullmatch(await estimate.inner_text()).group(1))  # type: ignore[union-attr]
    assert ten > five > 0

    await page.locator("#in-seed").fill("12.5")  # an integer field
    async with page.expect_response(lambda r: r.request.method == "POST") as answer:
        await page.get_by_role("button", name="Create the job").click()
    assert (await answer.value).status == 422
    await expect(page.locator("#form-errors")).to_be_visible()
    seed_error = page.locator("#in-seed-error")
    await expect(seed_error).to_be_visible()
    await expect(seed_error).to_contain_text("whole number")
    await expect(page.locator("#in-seed")).to_have_value("12.5")  # what was typed is kept
    await expect(page.locator("#in-prompt")).to_have_value("a fox in the snow")
    await expect(page.locator("#in-duration")).to_have_value("10")
    await expect(page.locator("#in-prompt-error")).to_be_hidden()
    described = await page.locator("#in-seed").get_attribute("aria-describedby")
    assert described is not None
    assert "in-seed-error" in described.split()

    await page.locator("#in-seed").fill("7")
    await page.get_by_role("button", name="Create the job").click()
    await expect(page).to_have_url(re.compile(r"/ui/jobs/job_[0-9a-z]+$"))
    job_id = page.url.rsplit("/", 1)[1]
    await expect(page.get_by_role("heading", level=1)).to_have_text(job_id)
    stored = await service.client.job(job_id)
    assert stored["input"]["seed"] == 7
    assert stored["input"]["duration"] == 10
    assert stored["input"]["image_urls"] == ["https://example.com/fox.jpg"]
    await expect(page.locator("#job-status")).to_have_text("succeeded")  # live, no reload


async def test_redeliver_a_webhook_from_the_job_page(
    start_service: ServiceFactory, receiver: Any, open_page: tuple[OpenPage, Watched]
) -> None:
    receiver.failures = 0
    service = await start_service(webhook_allow_private=True)
    job_id = await create(service, {**IMAGE_JOB, "webhook_url": receiver.url})
    await service.client.wait_for_status(job_id, {"succeeded"})
    first = await eventually(lambda: _calls(receiver), lambda calls: len(calls) >= 1)
    page = await open_page[0](service)
    await sign_in(page, service.client.key)
    await page.goto(f"/ui/jobs/{job_id}")
    message = page.locator("tr[data-message]").first
    message_id = await message.get_attribute("data-message")
    assert message_id is not None
    assert message_id.startswith("msg_")
    await expect(message.locator(".deliveries")).to_contain_text("HTTP 204")
    before = len(first)

    await message.get_by_role("button", name="Redeliver").click()
    await expect(page).to_have_url(re.compile(r"\?notice=redelivered$"))
    await expect(page.get_by_role("status").first).to_have_text(
        "The message is queued to be sent again."
    )
    calls = await eventually(lambda: _calls(receiver), lambda calls: len(calls) > before)
    assert calls[-1][0]["webhook-id"] == message_id


async def test_sign_out(service: Service, open_page: tuple[OpenPage, Watched]) -> None:
    page = await open_page[0](service)
    await sign_in(page, service.client.key)
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    assert await page.context.cookies() == []
    await expect(page.get_by_role("button", name="Sign out")).to_have_count(0)
    await page.goto("/ui/overview")  # the session is gone, not just the page
    await expect(page.locator("#api_key")).to_be_visible()


async def test_another_owners_job_is_not_found(
    service: Service, open_page: tuple[OpenPage, Watched]
) -> None:
    other = await service.new_client("tenant-b")
    response = await other.create_job(IMAGE_JOB)
    theirs = str(response.json()["id"])
    page = await open_page[0](service)
    await sign_in(page, service.client.key)
    assert theirs not in await rows(page)
    answer = await page.goto(f"/ui/jobs/{theirs}")
    assert answer is not None
    assert answer.status == 404
    await expect(page.get_by_role("heading", level=1)).to_have_text("Not found")
    await expect(page.get_by_role("alert")).to_have_text("No such job.")
    assert theirs not in await page.content()


async def test_hostile_text_renders_inert(
    service: Service, open_page: tuple[OpenPage, Watched]
) -> None:
    body = {**IMAGE_JOB, "input": {**IMAGE_JOB["input"], "prompt": " ".join(XSS)}}
    body["metadata"] = {"note": XSS[1]}
    job_id = await create(service, body)
    page, watched = await open_page[0](service), open_page[1]
    await sign_in(page, service.client.key)
    await page.goto(f"/ui/jobs/{job_id}")
    await page.wait_for_load_state("load")
    inputs = page.locator("pre.json").first
    await expect(inputs).to_contain_text(XSS[0])
    await expect(inputs).to_contain_text(XSS[1])
    await expect(page.get_by_text(XSS[1]).first).to_be_visible()
    assert await page.locator("main script, main img[src='x'], main [onerror]").count() == 0

    await page.goto(f"/ui?model={XSS[1]}")  # reflected in the filter form
    await page.wait_for_load_state("load")
    await expect(page.locator("#f-model")).to_have_value(XSS[1])
    assert await page.locator("img[src='x'], [onerror]").count() == 0
    assert watched.dialogs == []


async def test_the_keyboard_reaches_the_skip_link_and_signs_in_with_enter(
    service: Service, open_page: tuple[OpenPage, Watched]
) -> None:
    page = await open_page[0](service)
    await page.goto("/ui")
    await page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    await expect(skip).to_be_focused()
    box = await skip.bounding_box()
    assert box is not None
    assert box["x"] >= 0, "the skip link shows when focused"
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(re.compile(r"#main$"))
    await page.keyboard.press("Tab")
    await expect(page.locator("#api_key")).to_be_focused()
    await page.keyboard.type(service.client.key)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Jobs")


async def test_screenshots_of_every_page(
    start_service: ServiceFactory,
    tmp_path: Path,
    width: str,
    open_page: tuple[OpenPage, Watched],
) -> None:
    service = await start_service(
        archive_enabled=True,
        archive_allow_private=True,
        archive_dir=str(tmp_path / "outputs"),
    )
    job_id = await create(service, IMAGE_JOB)
    failing = {**TEXT_JOB, "input": {"prompt": "a lighthouse [fail]"}}
    failed = await create(service, failing)
    await eventually(
        lambda: service.client.job(job_id),
        lambda job: (job["archive"] or {}).get("status") == "archived",
        seconds=20,
    )
    await service.client.wait_for_status(failed, {"failed"})

    page = await open_page[0](service)
    await page.goto("/ui")
    await expect(page.locator("#api_key")).to_be_visible()
    await shoot(page, "login", width)
    await no_horizontal_scroll(page)

    await sign_in(page, service.client.key)
    await expect(page.locator("#live-state")).to_have_text("Live: updates appear as they happen.")
    await shoot(page, "jobs", width)
    await no_horizontal_scroll(page)

    await page.goto(f"/ui/jobs/{job_id}")
    await page.locator("video").evaluate(
        "v => v.readyState >= 1 || new Promise(r => v.onloadedmetadata = r)"
    )
    await shoot(page, "job", width)
    await no_horizontal_scroll(page)

    await page.goto(f"/ui/new?model={VIDEO_MODEL}")
    await page.locator("#in-prompt").fill("a fox in the snow")
    await page.locator("#in-image_urls").fill("https://example.com/fox.jpg")
    await expect(page.locator("#estimate")).to_contain_text("credits")
    await shoot(page, "new", width)
    await no_horizontal_scroll(page)

    await page.goto("/ui/overview")
    await expect(page.locator("main svg")).to_have_count(3)
    await shoot(page, "overview", width)
    await no_horizontal_scroll(page)


async def _calls(receiver: Any) -> list[tuple[dict[str, str], bytes]]:
    return list(receiver.calls)
