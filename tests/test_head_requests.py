"""HEAD, as file servers answer it: the sandbox's file URLs (app/sandbox/simulator.py) and
poyo-relay's own output URLs (app/archive/router.py) answer it with GET's status and
headers (Content-Type, Content-Length, ETag, Accept-Ranges…) and no body, 404 included.
The output tests run on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.conftest import SIMULATOR_KEY, Service, ServiceFactory, Simulator
from tests.support import IMAGE_JOB, eventually

AUTH = {"Authorization": f"Bearer {SIMULATOR_KEY}"}
IMAGES_JOB: dict[str, Any] = {"model": "flux-schnell", "input": {"prompt": "a fox", "n": 2}}
# Headers that differ between any two answers.
PER_RESPONSE = {"date", "x-request-id"}


def same_headers(get: httpx.Response, head: httpx.Response) -> None:
    assert head.status_code == get.status_code, (head.request.url, get.text)
    assert head.content == b""
    got = {k: v for k, v in get.headers.items() if k not in PER_RESPONSE}
    headed = {k: v for k, v in head.headers.items() if k not in PER_RESPONSE}
    assert headed == got, head.request.url


async def both(http: httpx.AsyncClient, url: str, **headers: str) -> httpx.Response:
    """GET and HEAD of the same URL answer alike; the GET's answer."""
    get = await http.get(url, headers=headers)
    same_headers(get, await http.head(url, headers=headers))
    return get


# ---- the sandbox's file server ----------------------------------------------------------


async def finished_files(simulator: Simulator, body: dict[str, Any]) -> list[dict[str, str]]:
    submitted = await simulator.http.post("/api/generate/submit", json=body, headers=AUTH)
    assert submitted.status_code == 200, submitted.text
    task_id = submitted.json()["data"]["task_id"]
    task = await eventually(
        lambda: simulator.http.get(f"/api/generate/status/{task_id}", headers=AUTH),
        lambda response: response.json()["data"]["status"] == "finished",
    )
    files: list[dict[str, str]] = task.json()["data"]["files"]
    return files


async def test_sandbox_files_answer_head_like_get(simulator: Simulator) -> None:
    http = simulator.http
    files = await finished_files(simulator, IMAGE_JOB) + await finished_files(simulator, IMAGES_JOB)
    assert [f["file_type"] for f in files] == ["video", "image", "image"]
    for file in files:
        get = await both(http, file["file_url"])
        assert get.status_code == 200
        assert get.headers["content-type"] in {"video/mp4", "image/png"}
        assert get.headers["content-length"] == str(len(get.content)) != "0"

    video = files[0]["file_url"]
    task_url, name = video.rsplit("/", 1)
    for unknown in (
        f"{task_url}/9.{name.split('.')[1]}",  # past its last file
        f"{task_url}/0.exe",  # no such kind
        video.replace("/files/task-", "/files/no-such-task-"),
    ):
        assert (await both(http, unknown)).status_code == 404

    # The file faults play downloads; a HEAD answers what a healthy server would.
    await simulator.set_faults(file_error_rate=1.0)
    assert (await http.get(video)).status_code == 500
    assert (await http.head(video)).status_code == 200
    await simulator.set_faults(file_error_rate=0.0, file_ttl_seconds=0)
    assert (await both(http, video)).status_code == 404  # expired


# ---- poyo-relay's output URLs -------------------------------------------------------------


async def archived_job(service: Service, body: dict[str, Any]) -> dict[str, Any]:
    created = await service.client.create_job(body)
    assert created.status_code == 201, created.text
    return await eventually(
        lambda: service.client.job(created.json()["id"]),
        lambda job: job["archive"] is not None and job["archive"]["status"] != "pending",
        seconds=20,
    )


async def test_archived_outputs_answer_head_like_get(
    start_service: ServiceFactory, tmp_path: Path
) -> None:
    service = await start_service(
        archive_enabled=True, archive_allow_private=True, archive_dir=str(tmp_path / "outputs")
    )
    job = await archived_job(service, IMAGE_JOB)
    assert job["archive"]["status"] == "archived", job
    [output] = job["outputs"]
    http, key = service.client.http, service.client.headers()
    size = output["size_bytes"]

    whole = await both(http, output["url"], **key)
    assert whole.status_code == 200
    assert whole.headers["content-type"] == "video/mp4"
    assert whole.headers["content-length"] == str(size)
    assert whole.headers["etag"] == f'"{output["sha256"]}"'
    assert whole.headers["accept-ranges"] == "bytes"

    part = await both(http, output["url"], Range="bytes=10-19", **key)
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 10-19/{size}"
    assert part.headers["content-length"] == "10"
    etag = whole.headers["etag"]
    assert (await both(http, output["url"], **{"If-None-Match": etag}, **key)).status_code == 304
    past_the_end = await both(http, output["url"], Range=f"bytes={size}-", **key)
    assert past_the_end.status_code == 416

    # Errors: another output, another tenant's key, no key; a signed link opens it.
    missing = await both(http, f"/v1/jobs/{job['id']}/outputs/1", **key)
    assert missing.status_code == 404
    other = await service.new_client("tenant-b")
    assert (await both(http, output["url"], **other.headers())).status_code == 404
    assert (await both(http, output["url"])).status_code == 401
    made = await http.post(output["url"] + "/links", json={"expires_in": 600}, headers=key)
    assert made.status_code == 201, made.text
    signed = await both(http, made.json()["url"])
    assert signed.status_code == 200
    assert signed.headers["content-length"] == str(size)


async def test_unarchived_outputs_redirect_head_to_the_providers_file(
    service: Service, simulator: Simulator
) -> None:
    """Archiving off: HEAD follows the same redirect as GET, to a file URL that answers it."""
    created = await service.client.create_job(IMAGES_JOB)
    assert created.status_code == 201, created.text
    job = await service.client.wait_for_status(created.json()["id"], {"succeeded"})
    http, key = service.client.http, service.client.headers()
    for index, output in enumerate(job["outputs"]):
        url = f"/v1/jobs/{job['id']}/outputs/{index}"
        redirect = await both(http, url, **key)
        assert redirect.status_code == 307
        assert redirect.headers["location"] == output["provider_url"]
        assert output["provider_url"].startswith(simulator.url + "/files/")
        followed = await both(simulator.http, redirect.headers["location"])
        assert followed.status_code == 200
        assert followed.headers["content-type"] == "image/png"
