"""A client that hangs up mid-body is not an error of ours: no traceback, service unharmed."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import ServiceFactory
from tests.support import IMAGE_JOB


async def _hang_up_mid_body(port: int, path: str) -> None:
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        'Content-Length: 5000\r\n\r\n{"task_id": '.encode()
    )
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()
    await writer.wait_closed()


async def test_hang_up_mid_callback_body(
    start_service: ServiceFactory, capfd: pytest.CaptureFixture[str]
) -> None:
    service = await start_service(log_level="INFO")
    job = (await service.client.create_job(IMAGE_JOB)).json()
    path = service.runtime.credentials.url(job["id"]).removeprefix(service.url)
    await _hang_up_mid_body(service.server.port, path)
    await _hang_up_mid_body(service.server.port, "/v1/jobs")
    await asyncio.sleep(0.3)

    logs = capfd.readouterr().err
    assert "client_disconnected" in logs  # the hang-up was seen and reported calmly
    assert "Traceback" not in logs
    assert "unhandled_error" not in logs
    assert (await service.client.http.get("/readyz")).status_code == 200
    assert (await service.client.job(job["id"]))["id"] == job["id"]
