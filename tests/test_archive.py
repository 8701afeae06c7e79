"""Archiving outputs (app/archive): a succeeded job's files are downloaded from the
provider's URLs, stored in a local directory or a real S3-compatible server (moto, on
loopback), and served from poyo-relay's own URL with Range support, after the provider's
URL has expired and the provider has forgotten the file. On SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from app.archive.storage import SCRATCH_DIR_NAME
from app.jobs.models import Job
from tests.clirun import clean_env, run_cli
from tests.conftest import Service, ServiceFactory, Simulator
from tests.s3 import S3Server
from tests.support import IMAGE_JOB, eventually

IMAGES_JOB: dict[str, Any] = {"model": "flux-schnell", "input": {"prompt": "a fox", "n": 2}}


@dataclass
class Stored:
    """What the storage backend holds, read behind poyo-relay's back."""

    keys: Callable[[], list[str]]
    read: Callable[[str], bytes]
    write: Callable[[str, bytes], object]


def local_store(root: Path) -> Stored:
    def keys() -> list[str]:
        return sorted(
            str(path.relative_to(root))
            for path in root.rglob("*")
            if path.is_file() and SCRATCH_DIR_NAME not in path.parts
        )

    return Stored(
        keys=keys,
        read=lambda key: (root / key).read_bytes(),
        write=lambda key, data: (root / key).write_bytes(data),
    )


@pytest.fixture(params=["local", "s3"])
def storage_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass
class Archiving:
    start: Callable[..., Any]
    stored: Stored


@pytest.fixture
def archiving(
    start_service: ServiceFactory, tmp_path: Path, storage_kind: str, request: pytest.FixtureRequest
) -> Archiving:
    """Start services that archive into the chosen backend (shared by every service the
    test starts, like replicas)."""
    settings: dict[str, Any] = {
        "archive_enabled": True,
        "archive_allow_private": True,  # the simulator is on loopback
        "archive_dir": str(tmp_path / "outputs"),
    }
    if storage_kind == "s3":
        s3: S3Server = request.getfixturevalue("s3_server")
        bucket = s3.new_bucket()
        settings |= s3.settings(bucket)
        stored = Stored(
            keys=lambda: sorted(s3.keys(bucket)),
            read=lambda key: s3.get(bucket, key),
            write=lambda key, data: s3.put(bucket, key, data),
        )
    else:
        stored = local_store(tmp_path / "outputs")

    async def start(**overrides: Any) -> Service:
        return await start_service(**{**settings, **overrides})

    return Archiving(start, stored)


async def archived(service: Service, job_id: str, seconds: float = 20) -> dict[str, Any]:
    """The job once its archive is no longer pending."""
    return await eventually(
        lambda: service.client.job(job_id),
        lambda job: job["archive"] is not None and job["archive"]["status"] != "pending",
        seconds=seconds,
    )


async def create(service: Service, body: dict[str, Any]) -> str:
    response = await service.client.create_job(body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def fetch(service: Service, url: str, **headers: str) -> httpx.Response:
    return await service.client.http.get(url, headers=service.client.headers(headers))


async def test_outputs_are_archived_and_outlive_the_providers_url(
    archiving: Archiving, simulator: Simulator
) -> None:
    service = await archiving.start()
    job_id = await create(service, IMAGE_JOB)
    job = await archived(service, job_id)

    assert job["status"] == "succeeded"
    assert job["archive"] == {"status": "archived", "attempts": 1, "error": None}
    [output] = job["outputs"]
    original = (await simulator.http.get(output["provider_url"])).content
    assert output["url"] == f"{service.url}/v1/jobs/{job_id}/outputs/0"
    assert output["provider_url"].startswith(simulator.url + "/files/")
    assert output["type"] == "video"
    assert output["content_type"] == "video/mp4"
    assert output["size_bytes"] == len(original)
    assert output["sha256"] == hashlib.sha256(original).hexdigest()
    assert output["archived_at"] is not None
    assert output["duration_seconds"] == pytest.approx(2.023, abs=0.01)
    assert archiving.stored.keys() == [f"{job_id}/0"]
    assert archiving.stored.read(f"{job_id}/0") == original

    # The provider's URL expires, then the provider forgets the task altogether.
    await simulator.set_faults(file_ttl_seconds=0)
    assert (await simulator.http.get(output["provider_url"])).status_code == 404
    assert (await simulator.http.post("/_sandbox/reset")).status_code == 200

    whole = await fetch(service, output["url"])
    assert whole.status_code == 200
    assert whole.content == original
    assert whole.headers["content-type"] == "video/mp4"
    assert whole.headers["content-length"] == str(len(original))
    assert whole.headers["etag"] == f'"{output["sha256"]}"'
    assert whole.headers["accept-ranges"] == "bytes"

    part = await fetch(service, output["url"], Range="bytes=100-199")
    assert part.status_code == 206
    assert part.content == original[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(original)}"
    assert part.headers["content-length"] == "100"

    events = [event["type"] for event in await service.client.events(job_id)]
    assert events.count("output.archived") == 1
    assert "archive.failed" not in events


async def test_ranges_etags_and_head(archiving: Archiving) -> None:
    service = await archiving.start()
    job_id = await create(service, IMAGE_JOB)
    [output] = (await archived(service, job_id))["outputs"]
    original = (await fetch(service, output["url"])).content
    size = len(original)

    suffix = await fetch(service, output["url"], Range="bytes=-100")
    assert (suffix.status_code, suffix.content) == (206, original[-100:])
    open_ended = await fetch(service, output["url"], Range=f"bytes={size - 10}-")
    assert (open_ended.status_code, open_ended.content) == (206, original[-10:])
    clamped = await fetch(service, output["url"], Range=f"bytes=0-{size * 2}")
    assert (clamped.status_code, clamped.content) == (206, original)
    several = await fetch(service, output["url"], Range="bytes=0-1,5-9")
    assert (several.status_code, several.content) == (200, original)  # may be ignored

    past_the_end = await fetch(service, output["url"], Range=f"bytes={size}-")
    assert past_the_end.status_code == 416
    assert past_the_end.headers["content-range"] == f"bytes */{size}"
    assert past_the_end.json()["error"]["type"] == "range_not_satisfiable"

    etag = output["sha256"]
    unchanged = await fetch(service, output["url"], **{"If-None-Match": f'"{etag}"'})
    assert unchanged.status_code == 304
    assert unchanged.content == b""
    stale = await fetch(service, output["url"], Range="bytes=0-9", **{"If-Range": '"other"'})
    assert (stale.status_code, stale.content) == (200, original)

    head = await service.client.http.head(output["url"], headers=service.client.headers())
    assert head.status_code == 200
    assert head.headers["content-length"] == str(size)
    assert head.content == b""


async def test_every_output_of_a_job_is_archived_with_image_sizes(archiving: Archiving) -> None:
    service = await archiving.start()
    job_id = await create(service, IMAGES_JOB)
    job = await archived(service, job_id)
    assert [o["content_type"] for o in job["outputs"]] == ["image/png", "image/png"]
    assert [(o["width"], o["height"]) for o in job["outputs"]] == [(64, 64), (64, 64)]
    assert all(o["duration_seconds"] is None for o in job["outputs"])
    assert archiving.stored.keys() == [f"{job_id}/0", f"{job_id}/1"]
    for index, output in enumerate(job["outputs"]):
        served = await fetch(service, f"/v1/jobs/{job_id}/outputs/{index}")
        assert hashlib.sha256(served.content).hexdigest() == output["sha256"]
    missing = await fetch(service, f"/v1/jobs/{job_id}/outputs/2")
    assert missing.status_code == 404


@pytest.mark.parametrize("storage_kind", ["local"], indirect=True)
async def test_tenancy_and_signed_links(archiving: Archiving) -> None:
    service = await archiving.start()
    job_id = await create(service, IMAGE_JOB)
    [output] = (await archived(service, job_id))["outputs"]
    path = f"/v1/jobs/{job_id}/outputs/0"
    anonymous = httpx.AsyncClient(base_url=service.url)

    other = await service.new_client("tenant-b")
    assert (await other.get(path)).status_code == 404
    assert (await other.http.post(path + "/links", headers=other.headers())).status_code == 404
    assert (await anonymous.get(path)).status_code == 401

    made = await service.client.http.post(
        path + "/links", json={"expires_in": 600}, headers=service.client.headers()
    )
    assert made.status_code == 201, made.text
    link = made.json()["url"]
    assert link.startswith(f"{service.url}{path}?expires=")
    opened = await anonymous.get(link, headers={"Range": "bytes=0-9"})
    assert opened.status_code == 206
    assert len(opened.content) == 10

    tampered = link[:-1] + ("0" if link[-1] != "0" else "1")
    assert (await anonymous.get(tampered)).status_code == 403
    for_another_output = link.replace("/outputs/0?", "/outputs/1?")
    assert (await anonymous.get(for_another_output)).status_code == 403
    links = service.runtime.output_links
    expired = f"{path}?expires=1000&sig={links.signature(job_id, 0, 1000)}"
    answer = await anonymous.get(expired)
    assert answer.status_code == 403
    assert answer.json()["error"]["type"] == "forbidden"

    too_long = await service.client.http.post(
        path + "/links", json={"expires_in": 10**8}, headers=service.client.headers()
    )
    assert too_long.status_code == 422
    await anonymous.aclose()
    assert output["sha256"] is not None


@pytest.mark.parametrize("storage_kind", ["local"], indirect=True)
async def test_before_archiving_the_url_leads_to_the_providers_file(
    archiving: Archiving, simulator: Simulator
) -> None:
    """With archiving off (or not done yet), a job keeps PoYo's URL and poyo-relay's
    output URL redirects there; `archive backfill` later keeps the file."""
    service = await archiving.start(archive_enabled=False)
    job_id = await create(service, IMAGE_JOB)
    job = await service.client.wait_for_status(job_id, {"succeeded"})
    [output] = job["outputs"]
    assert job["archive"] is None
    assert "archive" not in service.runtime.worker("probe").loops  # off means off
    assert output["url"] == output["provider_url"]
    assert output["archived_at"] is None
    assert output["sha256"] is None
    redirect = await fetch(service, f"/v1/jobs/{job_id}/outputs/0")
    assert redirect.status_code == 307
    assert redirect.headers["location"] == output["provider_url"]

    replica = await archiving.start()
    assert await replica.runtime.archive.backfill(since=None) == 1
    job = await archived(replica, job_id)
    assert job["archive"]["status"] == "archived"
    assert archiving.stored.keys() == [f"{job_id}/0"]
    assert "archive.requested" in [e["type"] for e in await replica.client.events(job_id)]
    assert await replica.runtime.archive.backfill(since=None) == 0


# ---- operations: the `poyo-relay archive` commands, prune, old rows ---------------------------


def cli_env(service: Service, root: Path) -> dict[str, str]:
    return clean_env(
        DATABASE_URL=service.settings.database_url,
        ARCHIVE_DIR=str(root),
        POYO_API_KEY="unused-here",
        LOG_LEVEL="WARNING",
    )


@pytest.mark.parametrize("storage_kind", ["local"], indirect=True)
async def test_archive_cli_backfills_verifies_and_prune_deletes_the_files(
    archiving: Archiving, tmp_path: Path
) -> None:
    root = tmp_path / "outputs"
    service = await archiving.start(archive_enabled=False)
    job_id = await create(service, IMAGE_JOB)
    await service.client.wait_for_status(job_id, {"succeeded"})
    env = cli_env(service, root)

    backfill = await run_cli("archive", "backfill", "--since", "2000-01-01", env=env, cwd=tmp_path)
    assert backfill.code == 0, backfill
    assert "1 jobs due for archiving" in backfill.stdout
    worker = await archiving.start()  # the running service's worker archives them
    job = await archived(worker, job_id)
    assert job["archive"]["status"] == "archived"

    verified = await run_cli("archive", "verify", env=env, cwd=tmp_path)
    assert verified.code == 0, verified
    assert "1 files checked, 0 problems" in verified.stdout

    archiving.stored.write(f"{job_id}/0", b"not the video")
    damaged = await run_cli("archive", "verify", env=env, cwd=tmp_path)
    assert damaged.code == 1, damaged
    assert f"{job_id} output 0: 13 bytes stored" in damaged.stdout
    (root / job_id / "0").unlink()
    missing = await run_cli("archive", "verify", env=env, cwd=tmp_path)
    assert f"{job_id} output 0: missing from storage" in missing.stdout
    served = await fetch(worker, job["outputs"][0]["url"])
    assert served.status_code == 404
    assert "missing or damaged" in served.json()["error"]["message"]

    stale = root / ".incoming" / "stale.part"
    stale.write_bytes(b"half a video")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    archiving.stored.write(f"{job_id}/0", b"again")
    pruned = await run_cli("prune", "--older-than", "1s", "--jobs", env=env, cwd=tmp_path)
    assert pruned.code == 0, pruned
    assert "1 jobs (1 output files)" in pruned.stdout
    assert not (root / job_id).exists()
    assert not stale.exists()
    assert (await worker.client.get(f"/v1/jobs/{job_id}")).status_code == 404


@pytest.mark.parametrize("storage_kind", ["local"], indirect=True)
async def test_outputs_stored_before_archiving_existed_read_in_todays_shape(
    archiving: Archiving,
) -> None:
    service = await archiving.start(archive_enabled=False)
    job_id = await create(service, IMAGE_JOB)
    job = await service.client.wait_for_status(job_id, {"succeeded"})
    provider_url = job["outputs"][0]["provider_url"]
    async with service.runtime.db.write() as conn:  # the shape rows had before
        await conn.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(outputs=[{"url": provider_url, "type": "video"}])
        )
    [output] = (await service.client.job(job_id))["outputs"]
    assert output == {
        "url": provider_url,
        "type": "video",
        "provider_url": provider_url,
        "content_type": None,
        "size_bytes": None,
        "sha256": None,
        "archived_at": None,
        "width": None,
        "height": None,
        "duration_seconds": None,
    }
    replica = await archiving.start()
    assert await replica.runtime.archive.backfill(since=None) == 1
    job = await archived(replica, job_id)
    assert job["outputs"][0]["provider_url"] == provider_url
    assert job["outputs"][0]["sha256"] is not None
