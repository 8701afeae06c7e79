"""A receiver that is down for a while, then slow, while the delivering worker is killed
with SIGKILL mid-delivery: after deduplication by `webhook-id` it gets every message exactly
once, in order per job. The worker is a real `poyo-relay worker` child process; the API
runs in the test, the provider is the simulator, both databases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request, Response
from standardwebhooks.webhooks import Webhook

from bench.chaos import Child, relay_child
from tests.conftest import SIMULATOR_KEY, Service, ServiceFactory, Simulator
from tests.support import IMAGE_JOB, LiveServer, eventually

JOBS = 4
LIFECYCLE = ["job.created", "job.queued", "job.running", "job.succeeded"]


class Receiver:
    """Down (503) until told otherwise, then answering 204 after `delay`."""

    def __init__(self) -> None:
        self.up = False
        self.delay = 0.0
        self.in_flight = 0
        self.accepted: list[tuple[str, bytes, dict[str, str]]] = []
        self.refused = 0
        self.app = FastAPI()
        self.server = LiveServer()

        @self.app.post("/hook")
        async def hook(request: Request) -> Response:
            body = await request.body()
            if not self.up:
                self.refused += 1
                return Response(status_code=503)
            self.in_flight += 1
            try:
                await asyncio.sleep(self.delay)
            finally:
                self.in_flight -= 1
            self.accepted.append((request.headers["webhook-id"], body, dict(request.headers)))
            return Response(status_code=204)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver()
    await hook.server.start(hook.app)
    yield hook
    await hook.server.stop()


def worker(
    tmp_path: Path, database_url: str, simulator: Simulator, service: Service, n: int
) -> Child:
    return relay_child(
        "worker",
        cwd=tmp_path,
        database_url=database_url,
        provider_url=simulator.url,
        provider_key=SIMULATOR_KEY,
        public_url=service.url,
        name=f"worker-{n}",
        worker_poll_seconds=0.05,
        worker_lease_seconds=5,
        reconcile_after_seconds=1,
        webhook_allow_private=True,
        webhook_timeout_seconds=1,
        webhook_retry_schedule=",".join(["0.3"] * 20),
        archive_enabled=False,
        balance_check_seconds=0,
    )


async def test_every_message_once_in_order_across_an_outage_and_a_kill(
    tmp_path: Path,
    database_url: str,
    simulator: Simulator,
    start_service: ServiceFactory,
    receiver: Receiver,
) -> None:
    service = await start_service(run_worker=False, webhook_allow_private=True)
    answer = await service.client.http.post(
        "/v1/webhook_endpoints",
        json={"url": f"{receiver.server.url}/hook"},
        headers=service.client.headers(),
    )
    secret = answer.json()["secret"]
    first = worker(tmp_path, database_url, simulator, service, 1).start()
    assert first.alive
    try:
        jobs = [(await service.client.create_job(IMAGE_JOB)).json()["id"] for _ in range(JOBS)]
        for job_id in jobs:
            await service.client.wait_for_status(job_id, {"succeeded"}, seconds=30)
        await eventually(lambda: _value(receiver.refused), lambda n: n >= 2 * JOBS)

        receiver.up, receiver.delay = True, 0.4  # back, and slow: deliveries are in flight
        await eventually(lambda: _value(len(receiver.accepted)), lambda n: n >= 2, seconds=20)
        await eventually(lambda: _value(receiver.in_flight), lambda n: n >= 1, interval=0.01)
        first.kill()  # SIGKILL, mid-delivery
    finally:
        first.kill()
    receiver.delay = 0.05
    second = worker(tmp_path, database_url, simulator, service, 2).start()
    try:
        messages = await eventually(
            lambda: _all_messages(service, jobs),
            lambda found: all(d["state"] == "succeeded" for m in found for d in m["deliveries"]),
            seconds=60,
        )
    finally:
        second.kill()

    expected = {m["id"]: m for m in messages}
    firsts: dict[str, dict[str, Any]] = {}
    for webhook_id, body, headers in receiver.accepted:
        payload = Webhook(secret).verify(body, headers)  # every delivery is signed
        firsts.setdefault(webhook_id, payload)
    assert set(firsts) == set(expected)  # every message, and nothing else
    # The delivery cut by the kill went out again: the receiver deduplicated it.
    assert len(receiver.accepted) > len(firsts)
    for job_id in jobs:
        received = [p["type"] for p in firsts.values() if p["data"]["id"] == job_id]
        assert received == sorted(received, key=LIFECYCLE.index), received  # in order
        assert received[0] == "job.created"
        assert received[-1] == "job.succeeded"
        stored = [m["event_type"] for m in messages if m["job_id"] == job_id]
        assert received == stored


async def _all_messages(service: Service, jobs: list[str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for job_id in jobs:
        answer = await service.client.http.get(
            "/v1/webhook_messages", params={"job_id": job_id}, headers=service.client.headers()
        )
        found += answer.json()["data"]
    return found


async def _value(value: int) -> int:
    return value
