"""Operations endpoints (docs/API.md, Operations): liveness, readiness against a real
database, metrics.

Readiness is checked against databases that really cannot be reached: a PostgreSQL URL
on a loopback port nobody listens on, a SQLite file in a directory that does not exist,
and a PostgreSQL database dropped while the service is running. The callback secret is
configured so that start-up itself needs no database.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from tests.conftest import Service, Simulator
from tests.support import (
    IMAGE_JOB,
    TEXT_JOB,
    LiveServer,
    create_postgres_database,
    drop_postgres_database,
    make_settings,
    migrate,
)


def closed_port() -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


@pytest.fixture
async def start_without_db() -> AsyncIterator[object]:
    """Start the app on a given DATABASE_URL without touching the database at start-up."""
    servers: list[LiveServer] = []

    async def start(database_url: str) -> LiveServer:
        settings = make_settings(
            database_url=database_url,
            callback_secret="ops-test-callback-secret-0123456789abcdef",
            poyo_api_key="unused-provider-key",
            poyo_base_url=f"http://127.0.0.1:{closed_port()}",
            run_worker=False,
        )
        server = await LiveServer().start(create_app(settings))
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


def assert_not_ready(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["type"] == "unavailable"
    assert body["error"]["message"]
    assert "Traceback" not in response.text
    assert "127.0.0.1" not in response.text  # no connection details leak out


async def test_healthz_and_readyz(service: Service) -> None:
    async with httpx.AsyncClient(base_url=service.url) as http:  # no API key needed
        health = await http.get("/healthz")
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ok"}


async def test_readyz_503_when_postgres_is_unreachable(start_without_db: object) -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port()}/poyo_relay"
    server = await start_without_db(url)  # type: ignore[operator]
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        assert (await http.get("/healthz")).status_code == 200  # the process is up
        assert_not_ready(await http.get("/readyz"))


async def test_readyz_503_when_sqlite_cannot_be_opened(
    start_without_db: object, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'missing-dir' / 'relay.db'}"
    server = await start_without_db(url)  # type: ignore[operator]
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        assert (await http.get("/healthz")).status_code == 200
        assert_not_ready(await http.get("/readyz"))


async def test_readyz_follows_the_database_going_away(start_without_db: object) -> None:
    url = await create_postgres_database()
    try:
        await asyncio.to_thread(migrate, url)
        server = await start_without_db(url)  # type: ignore[operator]
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            assert (await http.get("/readyz")).status_code == 200
            await drop_postgres_database(url)  # WITH (FORCE): open connections are cut
            assert_not_ready(await http.get("/readyz"))
            assert (await http.get("/healthz")).status_code == 200
    finally:
        await drop_postgres_database(url)


# ---- metrics ------------------------------------------------------------------------------


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(service: Service) -> tuple[httpx.Response, Samples]:
    response = await service.client.http.get("/metrics")
    assert response.status_code == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return response, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_count_jobs_callbacks_and_provider_latency(
    service: Service, simulator: Simulator
) -> None:
    _, before = await scrape(service)
    job = (await service.client.create_job(IMAGE_JOB)).json()
    await service.client.create_job(TEXT_JOB)
    done = await service.client.wait_for_status(job["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded"
    url = service.runtime.credentials.url(job["id"])
    forged = url.rsplit("/", 1)[0] + "/forged-credential"
    assert (await service.client.http.post(forged, json={"task_id": "x"})).status_code == 401
    [task, _] = await simulator.tasks()
    assert task["callbacks_sent"] >= 1

    response, after = await scrape(service)
    assert response.headers["content-type"].startswith("text/plain")

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    created = "poyo_relay_jobs_created_total"
    assert delta(created, model="wan2.5-image-to-video") == 1
    assert delta(created, model="wan2.5-text-to-video") == 1
    callbacks = "poyo_relay_callbacks_total"
    assert delta(callbacks, outcome="received") >= 1
    assert delta(callbacks, outcome="rejected_credential") == 1
    latency = "poyo_relay_provider_request_duration_seconds"
    assert delta(f"{latency}_count", endpoint="submit") == 2
    assert delta(f"{latency}_count", endpoint="status") >= 1
    assert delta(f"{latency}_sum", endpoint="submit") > 0
    buckets = [
        key for key in after if key[0] == f"{latency}_bucket" and ("endpoint", "submit") in key[1]
    ]
    assert any(("le", "+Inf") in labels for _, labels in buckets)
    # No credential or key ever becomes a label value.
    assert url.rsplit("/", 1)[1] not in response.text
    assert service.client.key not in response.text
