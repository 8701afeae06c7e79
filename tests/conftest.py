"""Fixtures: every database test runs on SQLite and on PostgreSQL; servers are real.

PostgreSQL is required. Each session creates its own database on the server at
TEST_POSTGRES_URL (default postgres@127.0.0.1:5432) and drops it afterwards. Set
POYO_TEST_SKIP_POSTGRES=1 to run without it on a machine that has none; the skip is
reported, and CI never sets it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from app.auth.service import create_key
from app.config import Settings
from app.main import create_app
from app.runtime import Runtime
from app.sandbox.simulator import Faults, SimulatorState, create_simulator
from tests.s3 import S3Server, running_s3_server
from tests.stand_in import ProviderStandIn, serve_stand_in
from tests.support import (
    ApiClient,
    LiveServer,
    create_postgres_database,
    drop_postgres_database,
    free_socket,
    make_settings,
    migrate,
    truncate_all,
)

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session", params=BACKENDS)
async def migrated_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    """A migrated database of each backend, shared by the session."""
    if request.param == "sqlite":
        path = Path(tmp_path_factory.mktemp("sqlite")) / "relay.db"
        url = f"sqlite+aiosqlite:///{path}"
        await asyncio.to_thread(migrate, url)
        yield url
        return
    try:
        url = await create_postgres_database()
    except (OSError, Exception) as exc:
        if os.environ.get("POYO_TEST_SKIP_POSTGRES") == "1" and os.environ.get("CI") != "true":
            pytest.skip(f"PostgreSQL unreachable and POYO_TEST_SKIP_POSTGRES=1: {exc}")
        pytest.fail(
            f"PostgreSQL is required for the test suite and is unreachable: {exc!r}. "
            "Start it, point TEST_POSTGRES_URL at one, or (outside CI) set "
            "POYO_TEST_SKIP_POSTGRES=1.",
            pytrace=False,
        )
    await asyncio.to_thread(migrate, url)
    yield url
    await drop_postgres_database(url)


@pytest.fixture
async def database_url(migrated_database: str) -> str:
    """The backend's database, emptied before the test."""
    await truncate_all(migrated_database)
    return migrated_database


@pytest.fixture
def backend(database_url: str) -> str:
    return "postgresql" if database_url.startswith("postgresql") else "sqlite"


@dataclass
class Simulator:
    server: LiveServer
    state: SimulatorState
    http: httpx.AsyncClient

    @property
    def url(self) -> str:
        return self.server.url

    async def set_faults(self, **knobs: Any) -> None:
        response = await self.http.patch("/_sandbox/faults", json=knobs)
        assert response.status_code == 200, response.text

    async def stats(self) -> dict[str, Any]:
        return (await self.http.get("/_sandbox/stats")).json()  # type: ignore[no-any-return]

    async def tasks(self) -> list[dict[str, Any]]:
        return (await self.http.get("/_sandbox/tasks")).json()  # type: ignore[no-any-return]


SIMULATOR_KEY = "sim-provider-key-0123456789"


@pytest.fixture
async def simulator() -> AsyncIterator[Simulator]:
    """The PoYo simulator on a loopback port, fast tasks, requiring a provider key."""
    app = create_simulator(
        Faults(queue_seconds=0.05, run_seconds=0.1, seed=7), api_key=SIMULATOR_KEY
    )
    server = await LiveServer().start(app)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        yield Simulator(server=server, state=app.state.simulator, http=http)
    await server.stop()


@dataclass
class Service:
    server: LiveServer
    settings: Settings
    runtime: Runtime
    client: ApiClient

    @property
    def url(self) -> str:
        return self.server.url

    async def new_client(self, name: str = "other", admin: bool = False) -> ApiClient:
        _, key = await create_key(self.runtime.db, name=name, is_admin=admin)
        return ApiClient(http=self.client.http, key=key)


ServiceFactory = Callable[..., Awaitable[Service]]


@pytest.fixture
async def start_service(database_url: str, simulator: Simulator) -> AsyncIterator[ServiceFactory]:
    """Start the real service on a loopback port, talking to the simulator over HTTP."""
    started: list[tuple[LiveServer, httpx.AsyncClient]] = []

    async def start(**overrides: Any) -> Service:
        sock = free_socket()
        port = sock.getsockname()[1]
        values: dict[str, Any] = {
            "database_url": database_url,
            "public_base_url": f"http://127.0.0.1:{port}",
            "poyo_base_url": simulator.url,
            "poyo_api_key": SIMULATOR_KEY,
        }
        values.update(overrides)
        settings = make_settings(**values)
        app = create_app(settings)
        server = await LiveServer(sock).start(app)
        http = httpx.AsyncClient(base_url=server.url, timeout=30)
        started.append((server, http))
        runtime: Runtime = app.state.runtime
        _, key = await create_key(runtime.db, name="tenant-a")
        return Service(server, settings, runtime, ApiClient(http=http, key=key))

    yield start
    for server, http in reversed(started):
        await http.aclose()
        await server.stop()


# ---- a provider stand-in the test controls (tests/stand_in.py) --------------------------


@pytest.fixture(scope="module")
async def shared_provider() -> AsyncIterator[ProviderStandIn]:
    async with serve_stand_in() as stand_in:
        yield stand_in


@pytest.fixture
def provider(shared_provider: ProviderStandIn) -> Iterator[ProviderStandIn]:
    shared_provider.reset()
    yield shared_provider
    shared_provider.release.set()  # let stalled answers go before the service stops


@pytest.fixture
async def relay(start_service: ServiceFactory, provider: ProviderStandIn) -> Service:
    """The service, talking to the stand-in provider, which records every request."""
    return await start_service(poyo_base_url=provider.url, poyo_api_key=provider.api_key)


@pytest.fixture
async def service(start_service: ServiceFactory) -> Service:
    """The service with its embedded worker."""
    return await start_service()


# ---- a real S3-compatible server (moto) for the archive (tests/s3.py) --------------------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    with running_s3_server() as server:
        yield server


# ---- a client's webhook endpoint -------------------------------------------------------------


class Receiver:
    """A client's webhook endpoint on loopback that fails its first `failures` calls."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.app = FastAPI()

        @self.app.post("/hook")
        async def hook(request: Request) -> Response:
            self.calls.append((dict(request.headers), await request.body()))
            if len(self.calls) <= self.failures:
                return Response(status_code=500)
            return Response(status_code=204)


@pytest.fixture
async def receiver() -> Any:
    hook = Receiver(failures=2)
    server = await LiveServer().start(hook.app)
    hook.url = f"{server.url}/hook"  # type: ignore[attr-defined]
    yield hook
    await server.stop()
