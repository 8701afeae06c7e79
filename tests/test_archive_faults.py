"""The archive under faults: the provider's file server answering 500, cutting the body
off, serving an HTML page for the file, hanging, sending more than ARCHIVE_MAX_BYTES; the
SSRF guard; S3 failing mid-upload. Whatever happens the job stays `succeeded`, no partial
file is ever stored or served, and the archive completes once the fault clears."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from app.config import DEFAULT_POYO_BASE_URL
from app.metrics import REGISTRY
from tests.conftest import Service, ServiceFactory, Simulator
from tests.s3 import CuttingProxy, S3Server
from tests.support import IMAGE_JOB, eventually
from tests.test_archive import archived, create, fetch, local_store


async def failed_attempts(service: Service, job_id: str, at_least: int) -> dict[str, Any]:
    return await eventually(
        lambda: service.client.job(job_id),
        lambda job: job["archive"] is not None and job["archive"]["attempts"] >= at_least,
        seconds=20,
    )


FAULTS = {
    "server_error": ({"file_error_rate": 1}, "HTTP 500"),
    "reset_mid_body": ({"file_reset_rate": 1}, "transfer failed"),
    "wrong_content_type": ({"file_wrong_type_rate": 1}, "wrong content type"),
    "hanging": ({"file_slow_rate": 1, "slow_seconds": 5}, "timed out"),
    "more_than_the_cap": ({"file_unsized_rate": 1}, "more than ARCHIVE_MAX_BYTES"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_a_file_server_fault_is_retried_until_it_clears(
    fault: str, start_service: ServiceFactory, simulator: Simulator, tmp_path: Path
) -> None:
    knobs, expected_error = FAULTS[fault]
    root = tmp_path / "outputs"
    service = await start_service(
        archive_enabled=True,
        archive_allow_private=True,
        archive_dir=str(root),
        archive_read_timeout_seconds=0.5,
        # Under the sample video's size: a body that keeps coming is cut off (the other
        # faults' files are announced with their Content-Length and fit).
        archive_max_bytes=20_000 if fault == "more_than_the_cap" else 2**31,
        archive_max_attempts=100,
    )
    await simulator.set_faults(**knobs)
    job_id = await create(service, IMAGE_JOB)

    job = await failed_attempts(service, job_id, at_least=2)
    assert job["status"] == "succeeded"
    assert job["archive"]["status"] == "pending"
    assert expected_error in job["archive"]["error"]
    [output] = job["outputs"]
    assert output["archived_at"] is None
    assert output["url"] == output["provider_url"]
    # Nothing stored, nothing partial in place, nothing served but a redirect.
    assert local_store(root).keys() == []
    assert list((root / ".incoming").glob("*")) == []
    served = await fetch(service, f"/v1/jobs/{job_id}/outputs/0")
    assert served.status_code == 307
    failed = [e for e in await service.client.events(job_id) if e["type"] == "archive.failed"]
    assert failed
    assert expected_error in failed[0]["data"]["error"]
    assert REGISTRY.get_sample_value("poyo_relay_archive_outputs_total", {"outcome": "failed"})

    await simulator.set_faults(
        file_error_rate=0,
        file_reset_rate=0,
        file_wrong_type_rate=0,
        file_slow_rate=0,
        file_unsized_rate=0,
    )
    if fault == "more_than_the_cap":
        return  # the file stays too large: see the next test
    job = await archived(service, job_id)
    assert job["archive"]["status"] == "archived"
    assert job["status"] == "succeeded"
    assert local_store(root).keys() == [f"{job_id}/0"]
    assert (await fetch(service, job["outputs"][0]["url"])).status_code == 200


async def test_an_archive_that_keeps_failing_is_given_up_visibly(
    start_service: ServiceFactory, simulator: Simulator, tmp_path: Path
) -> None:
    service = await start_service(
        archive_enabled=True,
        archive_allow_private=True,
        archive_dir=str(tmp_path / "outputs"),
        archive_max_bytes=1024,  # the sample video announces more
        archive_max_attempts=2,
    )
    job_id = await create(service, IMAGE_JOB)
    job = await archived(service, job_id)
    assert job["status"] == "succeeded"
    assert job["archive"]["status"] == "failed"
    assert job["archive"]["attempts"] == 2
    assert "over ARCHIVE_MAX_BYTES" in job["archive"]["error"]
    types = [e["type"] for e in await service.client.events(job_id)]
    assert types.count("archive.failed") == 1
    assert types.count("archive.abandoned") == 1
    assert REGISTRY.get_sample_value("poyo_relay_archive_jobs_total", {"result": "abandoned"})


async def test_private_addresses_are_refused_unless_allowed_or_the_sandboxs_own(
    start_service: ServiceFactory, tmp_path: Path
) -> None:
    guarded = await start_service(
        archive_enabled=True, archive_dir=str(tmp_path / "a"), archive_max_attempts=1
    )
    job_id = await create(guarded, IMAGE_JOB)
    job = await archived(guarded, job_id)
    assert job["archive"]["status"] == "failed"
    assert "target refused" in job["archive"]["error"]
    assert local_store(tmp_path / "a").keys() == []
    await guarded.server.stop()  # its worker would take the next service's jobs too

    # Sandbox mode (no provider key): the simulator mounted in the service is trusted.
    sandbox = await start_service(
        archive_enabled=True,
        archive_dir=str(tmp_path / "b"),
        poyo_api_key="",
        poyo_base_url=DEFAULT_POYO_BASE_URL,
    )
    assert not sandbox.settings.archive_allow_private
    job_id = await create(sandbox, IMAGE_JOB)
    job = await archived(sandbox, job_id)
    assert job["archive"]["status"] == "archived"
    assert job["outputs"][0]["provider_url"].startswith(sandbox.url + "/sandbox/files/")


async def test_s3_failing_mid_upload_leaves_no_object_and_recovers(
    start_service: ServiceFactory, s3_server: S3Server, tmp_path: Path
) -> None:
    port = int(s3_server.endpoint.rsplit(":", 1)[1])
    proxy = await CuttingProxy(port, cut_after=8_000).start()
    bucket = s3_server.new_bucket()
    try:
        service = await start_service(
            archive_enabled=True,
            archive_allow_private=True,
            archive_dir=str(tmp_path / "scratch"),
            archive_max_attempts=100,
            **s3_server.settings(bucket, endpoint=proxy.url),
        )
        job_id = await create(service, IMAGE_JOB)
        job = await failed_attempts(service, job_id, at_least=2)
        assert job["status"] == "succeeded"
        assert "cannot store" in job["archive"]["error"]
        assert proxy.cuts >= 2
        assert s3_server.keys(bucket) == []
        assert (await fetch(service, f"/v1/jobs/{job_id}/outputs/0")).status_code == 307

        proxy.cut_after = None
        job = await archived(service, job_id)
        assert job["archive"]["status"] == "archived"
        assert s3_server.keys(bucket) == [f"{job_id}/0"]
        served = await fetch(service, job["outputs"][0]["url"])
        assert served.content == s3_server.get(bucket, f"{job_id}/0")
        assert list((tmp_path / "scratch" / ".incoming").glob("*")) == []
    finally:
        await proxy.stop()


async def test_the_webhook_waits_for_the_first_archive_attempt(
    start_service: ServiceFactory, tmp_path: Path, receiver: Any
) -> None:
    service = await start_service(
        archive_enabled=True,
        archive_allow_private=True,
        webhook_allow_private=True,
        archive_dir=str(tmp_path / "outputs"),
    )
    job_id = await create(service, {**IMAGE_JOB, "webhook_url": receiver.url})
    await eventually(lambda: _delivered(service, job_id), bool)
    _, body = receiver.calls[-1]

    payload = orjson.loads(body)
    [output] = payload["data"]["outputs"]
    assert output["url"] == f"{service.url}/v1/jobs/{job_id}/outputs/0"
    assert output["sha256"] is not None
    assert payload["data"]["archive"]["status"] == "archived"


async def _delivered(service: Service, job_id: str) -> bool:
    events = await service.client.events(job_id)
    return any(event["type"] == "webhook.delivered" for event in events)


async def test_endpoints_hear_the_end_then_the_archive(
    start_service: ServiceFactory, tmp_path: Path, receiver: Any
) -> None:
    receiver.failures = 0
    service = await start_service(
        archive_enabled=True,
        archive_allow_private=True,
        webhook_allow_private=True,
        archive_dir=str(tmp_path / "outputs"),
    )
    registered = await service.client.http.post(
        "/v1/webhook_endpoints",
        json={"url": receiver.url, "event_types": ["job.succeeded", "job.archived"]},
        headers=service.client.headers(),
    )
    secret = registered.json()["secret"]
    job_id = await create(service, IMAGE_JOB)
    await eventually(lambda: _received(receiver), lambda n: n == 2)
    ended, kept = (Webhook(secret).verify(body, headers) for headers, body in receiver.calls)
    assert ended["type"] == "job.succeeded"
    assert ended["data"]["archive"]["status"] == "pending"
    assert not ended["data"]["outputs"][0]["url"].startswith(service.url)  # PoYo's
    assert kept["type"] == "job.archived"
    assert kept["data"]["id"] == job_id
    assert kept["data"]["archive"]["status"] == "archived"
    assert kept["data"]["outputs"][0]["url"] == f"{service.url}/v1/jobs/{job_id}/outputs/0"


async def _received(receiver: Any) -> int:
    return len(receiver.calls)
