"""Test helpers: real databases, real servers on loopback, and polling."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn
from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from app.config import Settings
from app.worker.loops import ClaimLoop
from app.worker.runner import Worker

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent
POSTGRES_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
TABLES = (
    "ui_sessions",
    "webhook_attempts",
    "webhook_deliveries",
    "webhook_messages",
    "webhook_endpoints",
    "job_events",
    "idempotency_keys",
    "jobs",
    "api_keys",
    "rate_limit_windows",
    "service_secrets",
    "catalog_versions",
    "usage_daily",
    "budgets",
    "provider_account",
)


def postgres_admin_url() -> str:
    """The server tests create their databases on (TEST_POSTGRES_URL overrides)."""
    return os.environ.get("TEST_POSTGRES_URL", POSTGRES_ADMIN_URL)


def alembic_config(database_url: str) -> Config:
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logger"] = False
    return config


def migrate(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


async def create_postgres_database() -> str:
    """A fresh, empty database on the test server; returns its URL."""
    admin = make_url(postgres_admin_url())
    name = f"poyo_relay_test_{uuid.uuid4().hex[:12]}"
    engine = create_async_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await engine.dispose()
    return admin.set(database=name).render_as_string(hide_password=False)


async def drop_postgres_database(url: str) -> None:
    name = make_url(url).database
    engine = create_async_engine(make_url(postgres_admin_url()), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await engine.dispose()


async def truncate_all(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            if database_url.startswith("postgresql"):
                await conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
            else:
                for table in TABLES:
                    await conn.execute(text(f"DELETE FROM {table}"))
    finally:
        await engine.dispose()


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Inherited by accepted connections: without it, Nagle's algorithm and delayed ACKs
    # add some 40 ms to every request on a kept-alive connection.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class LiveServer:
    """An ASGI app served by uvicorn on a loopback port, inside the test's event loop."""

    def __init__(self, sock: socket.socket | None = None) -> None:
        self.sock = sock or free_socket()
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, app: Any) -> LiveServer:
        # Keep-alive well past httpx's 5 s pool expiry: with both at 5 s, a loaded machine
        # lets the server close a connection just as the client reuses it (ReadError).
        config = uvicorn.Config(
            app,
            lifespan="on",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=5,
            timeout_keep_alive=30,
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self.sock]))
        deadline = time.monotonic() + 15
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("server exited during start-up")
            if time.monotonic() > deadline:
                raise TimeoutError("server did not start")
            await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.wait_for(self._task, 20)
        self.sock.close()


async def eventually(
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool],
    *,
    seconds: float = 15.0,
    interval: float = 0.05,
) -> T:
    """Poll `probe` until `accept` holds; fail with the last value after `seconds`."""
    deadline = time.monotonic() + seconds
    value = await probe()
    while not accept(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached in {seconds}s; last value: {value!r}")
        await asyncio.sleep(interval)
        value = await probe()
    return value


async def one_pass(loop: ClaimLoop) -> int:
    """One pass of a worker loop's production body, and the handling it started: how
    many jobs it leased."""
    leased = await loop.run_once()
    await loop.drain()
    return leased


async def worker_pass(worker: Worker) -> None:
    """One pass of each of the worker's loops in turn."""
    for loop in worker.loops.values():
        await one_pass(loop)


# Where a test that does not archive would keep outputs (created only if ever used).
UNUSED_ARCHIVE_DIR = Path(tempfile.gettempdir()) / f"poyo-relay-tests-{os.getpid()}" / "outputs"


def make_settings(**overrides: Any) -> Settings:
    """Settings for tests: never the developer's `.env`, quiet, fast simulator."""
    values: dict[str, Any] = {
        "log_format": "json",
        "log_level": "WARNING",
        "access_log": False,
        "sandbox_queue_seconds": 0.05,
        "sandbox_run_seconds": 0.1,
        "worker_poll_seconds": 0.05,
        "retry_base_seconds": 0.05,
        "retry_max_seconds": 0.5,
        "webhook_retry_schedule": "0.1,0.2,0.3,0.3,0.3,0.3,0.3",
        "rate_limit_jobs_per_minute": 0,
        # Archiving is tested on its own (tests/test_archive*.py): elsewhere outputs are
        # made-up URLs that must never be fetched.
        "archive_enabled": False,
        "archive_dir": str(UNUSED_ARCHIVE_DIR),
        # So is the balance check (tests/test_balance.py): elsewhere the provider hears
        # only what a test makes it hear.
        "balance_check_seconds": 0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@dataclass
class ApiClient:
    """An HTTP client for the service's API, authenticated as one key."""

    http: httpx.AsyncClient
    key: str

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", **(extra or {})}

    async def create_job(self, body: dict[str, Any], **headers: str) -> httpx.Response:
        return await self.http.post("/v1/jobs", json=body, headers=self.headers(headers))

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.http.get(path, params=params or None, headers=self.headers())

    async def job(self, job_id: str) -> dict[str, Any]:
        response = await self.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    async def events(self, job_id: str) -> list[dict[str, Any]]:
        response = await self.get(f"/v1/jobs/{job_id}/events")
        assert response.status_code == 200, response.text
        return response.json()["data"]  # type: ignore[no-any-return]

    async def wait_for_status(
        self, job_id: str, statuses: set[str], seconds: float = 15.0
    ) -> dict[str, Any]:
        return await eventually(
            lambda: self.job(job_id), lambda job: job["status"] in statuses, seconds=seconds
        )


@contextlib.asynccontextmanager
async def http_client(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        yield client


IMAGE_JOB: dict[str, Any] = {
    "model": "wan2.5-image-to-video",
    "input": {
        "prompt": "a red fox running through snow",
        "image_urls": ["https://example.com/fox.jpg"],
    },
}
TEXT_JOB: dict[str, Any] = {
    "model": "wan2.5-text-to-video",
    "input": {"prompt": "a lighthouse at dusk"},
}
