"""Logs as an aggregator sees them: `uvicorn app.main:app` as a real process, its stderr
read back line by line after a whole job lifecycle."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import select
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.auth.service import create_key
from app.db import Database
from tests.clirun import POYO_RELAY, UVICORN, clean_env
from tests.conftest import SIMULATOR_KEY, Simulator
from tests.support import IMAGE_JOB, eventually, free_socket, make_settings

CALLBACK_ROUTE = "/v1/callbacks/poyo/{job_id}/{token}"


@dataclass
class RunningService:
    url: str
    log_path: Path
    process: asyncio.subprocess.Process

    def lines(self) -> list[str]:
        return self.log_path.read_text().splitlines()

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.process.wait(), 30)


@pytest.fixture
async def uvicorn_service(
    database_url: str, simulator: Simulator, tmp_path: Path
) -> AsyncIterator[RunningService]:
    """`uvicorn app.main:app` on a loopback socket it inherits, configured by environment."""
    sock = free_socket()
    port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = clean_env(
        DATABASE_URL=database_url,
        POYO_API_KEY=SIMULATOR_KEY,
        POYO_BASE_URL=simulator.url,
        PUBLIC_BASE_URL=url,
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
        ACCESS_LOG="true",
        WORKER_POLL_SECONDS="0.05",
        RETRY_BASE_SECONDS="0.05",
        RATE_LIMIT_JOBS_PER_MINUTE="0",
    )
    log_path = tmp_path / "service.log"
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            UVICORN,
            "app.main:app",
            "--fd",
            str(sock.fileno()),
            env=env,
            cwd=tmp_path,
            pass_fds=[sock.fileno()],
            stdout=log_file,
            stderr=log_file,
        )
    running = RunningService(url, log_path, process)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=5) as http:

            async def health() -> int:
                try:
                    return (await http.get("/healthz")).status_code
                except httpx.TransportError:
                    assert process.returncode is None, log_path.read_text()
                    return 0

            await eventually(health, lambda status: status == 200, seconds=30)
        yield running
    finally:
        await running.stop()
        sock.close()


def parse(lines: list[str]) -> list[dict[str, Any]]:
    records = []
    for line in lines:
        record = json.loads(line)  # every line is one JSON object, nothing else
        assert isinstance(record, dict), line
        records.append(record)
    return records


async def test_json_logs_with_request_and_job_ids_and_no_credentials(
    uvicorn_service: RunningService, simulator: Simulator, database_url: str
) -> None:
    db = Database(make_settings(database_url=database_url))
    try:
        _, api_key = await create_key(db, name="tenant-a")
    finally:
        await db.dispose()
    auth = {"Authorization": f"Bearer {api_key}"}
    request_ids: dict[str, str] = {}
    async with httpx.AsyncClient(base_url=uvicorn_service.url, timeout=30) as http:
        created = await http.post(
            "/v1/jobs", json=IMAGE_JOB, headers=auth | {"X-Request-ID": "req-create-0001"}
        )
        assert created.status_code == 201, created.text
        assert created.headers["x-request-id"] == "req-create-0001"
        job_id = created.json()["id"]

        async def read() -> httpx.Response:
            return await http.get(f"/v1/jobs/{job_id}", headers=auth)

        done = await eventually(read, lambda r: r.json()["status"] in {"succeeded", "failed"})
        assert done.json()["status"] == "succeeded"
        generated = done.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", generated)
        request_ids["read"] = generated

        # a request id that is not a plain token is replaced, not echoed
        odd = await http.get("/healthz", headers={"X-Request-ID": "two words;drop"})
        assert odd.headers["x-request-id"] != "two words;drop"
        request_ids["odd"] = odd.headers["x-request-id"]

        forged = await http.post(
            f"/v1/callbacks/poyo/{job_id}/forged-token-0123456789",
            json={"task_id": "task-x", "status": "finished"},
        )
        assert forged.status_code == 401
        request_ids["forged"] = forged.headers["x-request-id"]
        lost = await http.get("/nowhere/private-path-segment-42")
        assert lost.status_code == 404
        request_ids["lost"] = lost.headers["x-request-id"]
    await uvicorn_service.stop()

    [task] = simulator.state.tasks.values()
    assert task.callback_url is not None
    token = task.callback_url.rsplit("/", 1)[1]
    text = uvicorn_service.log_path.read_text()
    secrets = {
        "callback credential": token,
        "forged credential": "forged-token-0123456789",
        "API key": api_key,
        "API key secret": api_key.split("_", 2)[2],
        "provider key": SIMULATOR_KEY,
        "unrouted path": "private-path-segment-42",
    }
    for name, secret in secrets.items():
        assert secret not in text, f"the {name} is in the logs"

    records = parse(uvicorn_service.lines())
    for record in records:
        assert {"event", "level", "timestamp", "logger"} <= record.keys(), record
        assert "color_message" not in record, record
    assert any(r["event"] == "service_started" for r in records)
    access = [r for r in records if r["logger"] == "poyo_relay.access"]
    by_id = {r["request_id"]: r for r in access}

    create_line = by_id["req-create-0001"]
    assert (create_line["method"], create_line["route"], create_line["status"]) == (
        "POST",
        "/v1/jobs",
        201,
    )
    read_line = by_id[request_ids["read"]]
    assert (read_line["route"], read_line["job_id"]) == ("/v1/jobs/{job_id}", job_id)
    assert by_id[request_ids["odd"]]["route"] == "/healthz"
    assert by_id[request_ids["lost"]]["route"] == "unmatched"
    forged_line = by_id[request_ids["forged"]]
    assert (forged_line["route"], forged_line["status"], forged_line["job_id"]) == (
        CALLBACK_ROUTE,
        401,
        job_id,
    )
    assert forged_line["callback_outcome"] == "rejected_credential"

    # the provider's real callback: logged by its route template, tied to job and task
    delivered = [r for r in access if r["route"] == CALLBACK_ROUTE and r["status"] == 200]
    assert len(delivered) == 1
    assert delivered[0]["job_id"] == job_id
    assert delivered[0]["task_id"] == task.task_id
    assert delivered[0]["callback_outcome"] == "received"

    changes = [r for r in records if r["event"] == "job_status_changed"]
    assert [r["status_to"] for r in changes] == ["queued", "succeeded"]
    assert {r["job_id"] for r in changes} == {job_id}


def test_pretty_logs_in_a_terminal_json_elsewhere(tmp_path: Path) -> None:
    """LOG_FORMAT=auto: a person at a terminal reads plain lines, a pipe gets JSON."""
    args = [POYO_RELAY, "sandbox", "--host", "127.0.0.1", "--port", "0"]
    env = clean_env(LOG_LEVEL="INFO")

    def first_lines(stderr: int, read_fd: int) -> str:
        process = subprocess.Popen(
            args, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr
        )
        output = b""
        try:
            deadline = time.monotonic() + 30
            while b"Uvicorn running" not in output and time.monotonic() < deadline:
                ready, _, _ = select.select([read_fd], [], [], 0.2)
                if ready:
                    try:
                        output += os.read(read_fd, 65536)
                    except OSError:
                        break
                if process.poll() is not None and not ready:
                    break
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        return output.decode(errors="replace")

    leader, follower = pty.openpty()
    try:
        in_terminal = first_lines(follower, leader)
    finally:
        os.close(follower)
        os.close(leader)
    piped_read, piped_write = os.pipe()
    try:
        in_pipe = first_lines(piped_write, piped_read)
    finally:
        os.close(piped_write)
        os.close(piped_read)

    terminal_line = next(line for line in in_terminal.splitlines() if "Uvicorn running" in line)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", terminal_line)
    assert not plain.lstrip().startswith("{")
    assert re.search(r"\[info\s*\] Uvicorn running on http://127\.0\.0\.1:\d+", plain), plain
    pipe_line = next(line for line in in_pipe.splitlines() if "Uvicorn running" in line)
    record = json.loads(pipe_line)
    assert record["level"] == "info"
    assert record["logger"] == "uvicorn.error"
