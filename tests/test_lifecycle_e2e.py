"""End to end over loopback HTTP: service + simulator, callback delivered, status confirmed."""

from __future__ import annotations

import httpx

from tests.conftest import Service, Simulator
from tests.support import IMAGE_JOB


async def test_job_succeeds_through_real_callback(service: Service, simulator: Simulator) -> None:
    client = service.client
    created = await client.create_job(IMAGE_JOB)
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["status"] == "queued"
    assert job["provider"]["task_id"].startswith("task-unified-")

    done = await client.wait_for_status(job["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded"
    assert done["progress"] == 100
    assert done["completed_at"] is not None
    [output] = done["outputs"]
    async with httpx.AsyncClient() as http:
        video = await http.get(output["url"])
    assert video.status_code == 200
    assert video.headers["content-type"] == "video/mp4"
    assert video.content[4:8] == b"ftyp"

    listed = (await client.get("/v1/jobs")).json()
    assert [item["id"] for item in listed["data"]] == [job["id"]]

    types = [event["type"] for event in await client.events(job["id"])]
    assert types[:3] == ["job.created", "provider.submitted", "job.status_changed"]
    assert "callback.received" in types
    assert types.index("callback.received") < types.index("provider.polled")
    assert types[-1] == "job.status_changed"
    [task] = await simulator.tasks()
    assert task["job_id"] == job["id"]
    assert task["callbacks_sent"] == 1
