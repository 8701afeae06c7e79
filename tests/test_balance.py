"""PoYo's account balance: the simulator's (tasks consume it), the client's reading of it,
the worker's check (kept, exported, warned about, failures survived) and `poyo-relay
status`, on SQLite and PostgreSQL, over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.billing.balance import StoredBalance, last_balance, store_balance
from app.billing.models import ProviderAccount
from app.config import SettingsError, load_settings
from app.db import Database
from app.ids import new_job_id
from app.jobs.models import Job
from app.jobs.states import ArchiveStatus
from app.provider.client import PoyoClient, ProviderRejected, ProviderUnavailable
from app.runtime import Runtime
from app.timeutil import utcnow
from app.worker.runner import Periodic
from tests.clirun import clean_env, run_cli
from tests.conftest import SIMULATOR_KEY, Service, ServiceFactory, Simulator
from tests.support import IMAGE_JOB, eventually, make_settings

AUTH = {"Authorization": f"Bearer {SIMULATOR_KEY}"}
IMAGE_URL = "https://example.com/fox.jpg"
# (model, input, what a finished task costs: None when the catalog cannot tell)
TASKS: list[tuple[str, dict[str, Any], float | None]] = [
    ("nano-banana", {"prompt": "a cat"}, 5.0),
    ("seedream-4", {"prompt": "three foxes", "n": 3}, 15.0),
    ("wan2.5-image-to-video", {"prompt": "a fox", "image_urls": [IMAGE_URL]}, 60.0),
    ("wan2.5-text-to-video", {"prompt": "a lighthouse"}, None),
    ("nano-banana", {"prompt": "a cat [fail]"}, None),  # failed: costs nothing
]


# ---- the simulator ---------------------------------------------------------------------


async def sim_balance(simulator: Simulator) -> Decimal:
    response = await simulator.http.get("/api/user/balance", headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["code"], body["msg"]) == (200, "success")
    return Decimal(repr(body["data"]["balance"]))


async def sim_submit(simulator: Simulator, model: str, task_input: dict[str, Any]) -> str:
    response = await simulator.http.post(
        "/api/generate/submit", json={"model": model, "input": task_input}, headers=AUTH
    )
    assert response.status_code == 200, response.text
    return str(response.json()["data"]["task_id"])


async def sim_status(simulator: Simulator, task_id: str) -> dict[str, Any]:
    response = await simulator.http.get(f"/api/generate/status/{task_id}", headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


async def test_the_simulator_balance_goes_down_by_what_finished_tasks_cost(
    simulator: Simulator,
) -> None:
    start = await sim_balance(simulator)
    assert start == 100_000  # the default

    # a task still running has not paid yet
    await simulator.set_faults(run_seconds=600)
    slow = await sim_submit(simulator, "nano-banana", {"prompt": "a slow cat"})
    await simulator.set_faults(run_seconds=0.1)
    ids = [await sim_submit(simulator, model, task_input) for model, task_input, _ in TASKS]

    async def statuses() -> list[dict[str, Any]]:
        return [await sim_status(simulator, task_id) for task_id in ids]

    ended = await eventually(
        statuses, lambda views: all(v["status"] in ("finished", "failed") for v in views)
    )
    assert [v["status"] for v in ended] == ["finished"] * 4 + ["failed"]
    assert [v.get("credits_amount") for v in ended] == [cost for *_, cost in TASKS]
    charged = sum(Decimal(repr(v["credits_amount"])) for v in ended if "credits_amount" in v)
    assert charged == 80

    assert await sim_balance(simulator) == start - charged
    # once per task: reading the balance or the tasks again charges nothing more
    await statuses()
    assert await sim_balance(simulator) == start - charged
    assert (await simulator.stats())["balance_credits"] == float(start - charged)
    assert (await sim_status(simulator, slow))["status"] == "running"

    # an operator sets the balance; tasks finishing afterwards consume the new one
    await simulator.set_faults(balance_credits=42.5)
    assert await sim_balance(simulator) == Decimal("42.5")
    assert (await simulator.http.get("/_sandbox/faults")).json()["balance_credits"] == 42.5
    cheap = await sim_submit(simulator, "nano-banana", {"prompt": "one more cat"})
    await eventually(
        lambda: sim_status(simulator, cheap), lambda view: view["status"] == "finished"
    )
    assert await sim_balance(simulator) == Decimal("37.5")

    # a reset forgets the tasks and restores the balance set
    assert (await simulator.http.post("/_sandbox/reset")).status_code == 200
    assert await sim_balance(simulator) == Decimal("42.5")


async def test_the_simulator_balance_needs_the_key_and_can_fail(simulator: Simulator) -> None:
    refused = await simulator.http.get("/api/user/balance")
    assert refused.status_code == 401
    assert refused.json()["error"]["type"] == "authentication_error"
    wrong = await simulator.http.get("/api/user/balance", headers={"Authorization": "Bearer x"})
    assert wrong.status_code == 401

    await simulator.set_faults(balance_error_rate=1.0)
    failing = await simulator.http.get("/api/user/balance", headers=AUTH)
    assert failing.status_code == 500
    assert (await simulator.stats())["faults_injected"]["balance.server_error"] == 1

    bad = await simulator.http.patch("/_sandbox/faults", json={"balance_credits": -1})
    assert bad.status_code == 422


# ---- the client's reading of PoYo's answer ----------------------------------------------


@contextlib.asynccontextmanager
async def answering(status: int, body: bytes) -> Any:
    """A PoyoClient whose every balance request gets this answer; yields it and the
    requests it sent."""
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(status, content=body)

    client = PoyoClient(
        base_url="https://poyo.test",
        api_key="key-0123456789",
        backoff_initial=0.001,
        transport=httpx.MockTransport(answer),
    )
    try:
        yield client, sent
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("body", "credits"),
    [
        ({"code": 200, "msg": "success", "data": {"balance": 1234.5}}, 1234.5),
        ({"code": 200, "data": {"credits": "980"}}, 980.0),
        ({"code": 200, "data": {"credits_balance": " 12.125 "}}, 12.125),
        ({"code": 200, "data": {"remaining_credits": 7, "currency": "credits"}}, 7.0),
        ({"balance": 3}, 3.0),  # flat
        ({"code": 200, "data": {"balance": "n/a", "credits": 55}}, 55.0),  # the first readable
        ({"code": 200, "data": {"balance": -12.5}}, -12.5),  # overdrawn
    ],
)
async def test_the_client_reads_the_balance_leniently(body: dict[str, Any], credits: float) -> None:
    async with answering(200, orjson.dumps(body)) as (client, sent):
        assert await client.balance() == credits
    [request] = sent
    assert (request.method, request.url.path) == ("GET", "/api/user/balance")
    assert request.headers["authorization"] == "Bearer key-0123456789"


@pytest.mark.parametrize(
    "body",
    [
        b'{"code": 200, "data": {}}',
        b'{"code": 200, "data": {"balance": "lots"}}',
        b'{"code": 200, "data": {"balance": true}}',
        b'{"code": 200, "data": {"balance": [1]}}',
        b'{"code": 200, "data": {"balance": {"credits": 5}}}',
        b'{"code": 200, "data": {"balance": 1e300}}',
        b'{"code": 200, "data": {"balance": "NaN"}}',
        b"[1, 2]",
        b"<html>502</html>",
    ],
)
async def test_an_answer_without_a_readable_balance_is_a_provider_error(body: bytes) -> None:
    async with answering(200, body) as (client, sent):
        with pytest.raises(ProviderUnavailable):
            await client.balance()
    assert len(sent) == 3  # retried inline, like any unreadable answer to a read


async def test_a_refused_balance_request_is_a_rejection() -> None:
    body = b'{"code": 401, "error": {"message": "invalid API key", "type": "auth"}}'
    async with answering(401, body) as (client, sent):
        with pytest.raises(ProviderRejected, match="invalid API key"):
            await client.balance()
    assert len(sent) == 1


# ---- the worker's check -----------------------------------------------------------------


class Capture(logging.Handler):
    """Log records as the service renders them (JSON lines), parsed."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        root = logging.getLogger()
        self.setFormatter(root.handlers[0].formatter if root.handlers else None)
        self.records: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(json.loads(self.format(record)))

    def events(self, name: str) -> list[dict[str, Any]]:
        return [record for record in self.records if record["event"] == name]


@contextlib.contextmanager
def captured_logs() -> Iterator[Capture]:
    capture = Capture()
    root = logging.getLogger()
    root.addHandler(capture)
    try:
        yield capture
    finally:
        root.removeHandler(capture)


Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(service: Service) -> Series:
    from prometheus_client.parser import text_string_to_metric_families

    response = await service.client.http.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


BALANCE_GAUGE: tuple[str, frozenset[tuple[str, str]]] = (
    "poyo_relay_provider_balance_credits",
    frozenset(),
)


def balance_errors(series: Series) -> float:
    labels = frozenset({("endpoint", "balance"), ("kind", "unavailable")})
    return series.get(("poyo_relay_provider_errors_total", labels), 0.0)


async def balance_check(start_service: ServiceFactory, **overrides: Any) -> tuple[Service, Any]:
    """An API without a worker, and the balance check of a worker built on its runtime."""
    service = await start_service(run_worker=False, balance_check_seconds=300, **overrides)
    check = service.runtime.worker("test-worker").background["balance"]
    assert isinstance(check, Periodic)
    assert (check.seconds, check.first_delay) == (300, 5.0)
    return service, check


async def account_rows(db: Database) -> int:
    async with db.read() as session:
        count = await session.execute(select(func.count()).select_from(ProviderAccount))
        return int(count.scalar_one())


async def test_the_worker_keeps_exports_and_warns_about_the_balance(
    start_service: ServiceFactory, simulator: Simulator
) -> None:
    service, check = await balance_check(start_service, balance_warn_credits=1000)
    db = service.runtime.db
    assert await last_balance(db) is None

    await simulator.set_faults(balance_credits=123_456.789)
    before = utcnow()
    with captured_logs() as logs:
        await check.run_once()
    stored = await last_balance(db)
    assert stored is not None
    assert stored.millicredits == 123_456_789
    assert before <= stored.checked_at <= utcnow()
    assert (await scrape(service))[BALANCE_GAUGE] == 123_456.789
    assert logs.events("provider_balance_low") == []

    await simulator.set_faults(balance_credits=250.5)
    with captured_logs() as logs:
        await check.run_once()
    stored_again = await last_balance(db)
    assert stored_again is not None
    assert stored_again.millicredits == 250_500
    assert stored_again.checked_at >= stored.checked_at
    assert await account_rows(db) == 1  # one row, replaced
    assert (await scrape(service))[BALANCE_GAUGE] == 250.5
    [warning] = logs.events("provider_balance_low")
    assert warning["level"] == "warning"
    assert (warning["balance_credits"], warning["threshold_credits"]) == (250.5, 1000.0)
    assert warning["logger"] == "app.billing.balance"


async def test_a_failed_read_is_logged_counted_and_changes_nothing(
    start_service: ServiceFactory, simulator: Simulator
) -> None:
    service, check = await balance_check(start_service)
    db = service.runtime.db
    await simulator.set_faults(balance_credits=5000)
    await check.run_once()
    first = await last_balance(db)
    assert first is not None
    assert first.credits == 5000

    before = await scrape(service)
    await simulator.set_faults(balance_error_rate=1.0)
    with captured_logs() as logs:
        await check.run_once()  # no exception: the next check tries again
    await simulator.set_faults(balance_error_rate=0.0, garbage_rate=1.0)
    with captured_logs() as garbage_logs:
        await check.run_once()
    after = await scrape(service)

    # three attempts each (retried inline), each counted like any provider error
    assert balance_errors(after) - balance_errors(before) == 6
    [failure] = logs.events("provider_balance_check_failed")
    assert failure["level"] == "warning"
    assert failure["error"] == "internal error (simulated)"
    assert (failure["error_kind"], failure["http_status"]) == ("unavailable", 500)
    [unreadable] = garbage_logs.events("provider_balance_check_failed")
    assert "not JSON" in unreadable["error"]
    assert await last_balance(db) == first
    assert after[BALANCE_GAUGE] == 5000


async def test_a_running_worker_survives_failing_reads_and_recovers(
    start_service: ServiceFactory, simulator: Simulator
) -> None:
    await simulator.set_faults(balance_error_rate=1.0, balance_credits=777)
    service = await start_service(balance_check_seconds=0.2)
    db = service.runtime.db

    async def errors() -> float:
        return balance_errors(await scrape(service))

    start = await errors()
    await eventually(errors, lambda count: count >= start + 6)  # two failed checks at least
    # the worker goes on: jobs still get done, and the next good read is kept
    job = (await service.client.create_job(IMAGE_JOB)).json()
    assert (await service.client.wait_for_status(job["id"], {"succeeded"}))["status"]
    await simulator.set_faults(balance_error_rate=0.0)
    stored = await eventually(lambda: last_balance(db), lambda found: found is not None)
    assert stored is not None
    assert stored.credits == 777 - 60  # what the job's task cost
    assert stored.credits == await sim_balance(simulator)


async def test_a_periodic_task_outlives_its_failures_and_stops_when_asked() -> None:
    runs: list[float] = []

    async def body() -> None:
        runs.append(asyncio.get_running_loop().time())
        if len(runs) == 1:
            raise RuntimeError("the database is away")

    stopping = asyncio.Event()
    task = Periodic("test", body, seconds=0.01, first_delay=0.05)
    started = asyncio.get_running_loop().time()
    serving = asyncio.create_task(task.serve(stopping))

    async def count() -> int:
        return len(runs)

    await eventually(count, lambda n: n >= 3)
    assert runs[0] - started >= 0.05
    stopping.set()
    await asyncio.wait_for(serving, 1)


async def test_no_balance_check_when_it_is_off(database_url: str) -> None:
    runtime = await Runtime.start(make_settings(database_url=database_url))
    try:
        assert runtime.settings.balance_check_seconds == 0  # the tests' default
        assert set(runtime.worker("probe").background) == {"webhooks"}
    finally:
        await runtime.close()


def test_balance_settings_are_validated() -> None:
    defaults = load_settings(_env_file=None)
    assert (defaults.balance_check_seconds, defaults.balance_warn_credits) == (300, 1000)
    off = load_settings(_env_file=None, balance_check_seconds=0, balance_warn_credits=0)
    assert (off.balance_check_seconds, off.balance_warn_credits) == (0, 0)
    with pytest.raises(SettingsError) as negative:
        load_settings(_env_file=None, balance_check_seconds=-1, balance_warn_credits=-5)
    problems = "\n".join(negative.value.problems)
    assert "invalid setting BALANCE_CHECK_SECONDS" in problems
    assert "invalid setting BALANCE_WARN_CREDITS" in problems


# ---- `poyo-relay status` ------------------------------------------------------------------


async def seed_jobs(db: Database, now: datetime) -> None:
    """Jobs in every status, some due for the worker's queues, some not."""
    minute = timedelta(minutes=1)
    # status, next check, submitted, archive due
    jobs: list[tuple[str, datetime | None, datetime | None, datetime | None]] = [
        ("pending", now - 10 * minute, None, None),  # due to submit, for 10 minutes
        ("pending", now + 60 * minute, None, None),  # backing off: not due
        ("queued", now - minute, now - 5 * minute, None),  # due for a check
        ("running", now - 2 * minute, now - 7 * 60 * minute, None),  # and past the deadline
        ("succeeded", None, now - 9 * minute, now - 3 * minute),  # to archive
        ("failed", None, now - 9 * minute, None),
    ]
    async with db.write() as conn:
        session = AsyncSession(bind=conn)
        for status, next_check, submitted, archive_due in jobs:
            session.add(
                Job(
                    id=new_job_id(now - 10 * minute),
                    owner="tenant-a",
                    model="nano-banana",
                    status=status,
                    input={"prompt": status},
                    metadata_={},
                    progress=0,
                    created_at=now - 10 * minute,
                    updated_at=now - 10 * minute,
                    submitted_at=submitted,
                    next_check_at=next_check,
                    submit_attempts=1,
                    poll_attempts=0,
                    archive_status=ArchiveStatus.PENDING if archive_due else None,
                    archive_due_at=archive_due,
                )
            )
        await session.flush()


async def test_status_shows_jobs_queues_and_the_balance(database_url: str, tmp_path: Path) -> None:
    db = Database(make_settings(database_url=database_url))
    try:
        now = utcnow()
        await seed_jobs(db, now)
        await store_balance(db, StoredBalance(250_500, now - timedelta(seconds=90)))
    finally:
        await db.dispose()
    env = clean_env(DATABASE_URL=database_url, ARCHIVE_ENABLED="false")

    as_json = await run_cli("status", "--json", env=env, cwd=tmp_path)
    assert as_json.code == 0, as_json
    status = json.loads(as_json.stdout)
    assert status["jobs"] == {
        "pending": 2,
        "queued": 1,
        "running": 1,
        "succeeded": 1,
        "failed": 1,
        "total": 6,
    }
    due = {name: queue["due"] for name, queue in status["queues"].items()}
    assert due == {"submit": 1, "reconcile": 2, "expire": 1, "archive": 1}
    assert status["queues"]["archive"]["enabled"] is False
    assert status["queues"]["submit"]["enabled"] is True
    oldest = datetime.fromisoformat(status["queues"]["submit"]["oldest_due_at"])
    assert abs((oldest - (now - timedelta(minutes=10))).total_seconds()) < 0.01
    assert status["queues"]["reconcile"]["oldest_due_at"] is not None
    balance = status["balance"]
    assert (balance["credits"], balance["usd"]) == (250.5, 1.2525)
    assert datetime.fromisoformat(balance["checked_at"]) <= datetime.fromisoformat(status["at"])
    assert 90 <= balance["age_seconds"] < 90 + 60
    assert (balance["low"], balance["stale"]) == (True, False)
    assert (balance["warn_below_credits"], balance["check_every_seconds"]) == (1000, 300)

    shown = await run_cli("status", env=env, cwd=tmp_path)
    assert shown.code == 0, shown
    text = shown.stdout
    for line in (
        r"pending\s+2",
        r"queued\s+1",
        r"failed\s+1",
        r"total\s+6",
        r"submit\s+1\s+oldest 10m\s+pending, to submit",
        r"reconcile\s+2\s+oldest \dm\s+in flight, due for a status check",
        r"expire\s+1\s+oldest 2m\s+past the job deadline, due for a last check",
        r"archive\s+1\s+oldest 3m\s+succeeded, outputs to archive \(archiving is off\)",
        r"250\.5 credits \(≈ US\$1\.25\), read 1m ago",
        r"low: below BALANCE_WARN_CREDITS \(1,000\)",
    ):
        assert re.search(line, text), (line, text)
    assert "stale" not in text
    assert len(text.splitlines()) < 30  # one screen


async def test_status_of_an_empty_service(database_url: str, tmp_path: Path) -> None:
    env = clean_env(DATABASE_URL=database_url)
    shown = await run_cli("status", env=env, cwd=tmp_path)
    assert shown.code == 0, shown
    assert re.search(r"total\s+0", shown.stdout)
    assert "never read (a worker reads it every 300s)" in shown.stdout

    as_json = json.loads((await run_cli("status", "--json", env=env, cwd=tmp_path)).stdout)
    assert as_json["jobs"]["total"] == 0
    assert all(queue["due"] == 0 for queue in as_json["queues"].values())
    assert as_json["balance"]["credits"] is None
    assert as_json["balance"]["checked_at"] is None

    off = await run_cli("status", env=env | {"BALANCE_CHECK_SECONDS": "0"}, cwd=tmp_path)
    assert "never read (BALANCE_CHECK_SECONDS=0: no worker reads it)" in off.stdout

    db = Database(make_settings(database_url=database_url))
    try:
        await store_balance(db, StoredBalance(5_000_000, utcnow() - timedelta(hours=1)))
        # an older read (another worker's, late) never replaces a newer one
        await store_balance(db, StoredBalance(1, utcnow() - timedelta(hours=2)))
    finally:
        await db.dispose()
    stale = await run_cli("status", env=env, cwd=tmp_path)
    assert re.search(r"5,000 credits \(≈ US\$25\.00\), read 1h 0m ago", stale.stdout), stale
    assert "stale: not read for over 10m" in stale.stdout
    assert "low:" not in stale.stdout

    bad = await run_cli("status", env=env | {"BALANCE_CHECK_SECONDS": "-1"}, cwd=tmp_path)
    assert bad.code == 2, bad
    assert "invalid setting BALANCE_CHECK_SECONDS" in bad.stderr
