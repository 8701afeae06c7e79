"""Issue 6 §3: end to end, through the API, to the simulator and back.

`poyo-relay sandbox` (the PoYo simulator, fast tasks) and `poyo-relay serve` (the API with
its embedded worker, default worker settings) run as their own processes; N jobs are
submitted over HTTP; the simulator POSTs each job's callback when its task ends; the
benchmark waits until every job is terminal and reads the timings from the database:
jobs/s, and the time from a job's `callback.received` event to its `completed_at`.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import sqlite3
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from app.auth.service import create_key
from app.config import load_settings
from app.db import Database
from bench import profile
from bench.common import (
    BenchDatabase,
    BenchFailure,
    MemorySampler,
    ServerProcess,
    Size,
    create_database,
    drop_database,
    fmt,
    free_port,
    percentile,
    print_table,
    say,
    service_env,
    venv_bin,
    workdir,
)

QUEUE_SECONDS = 0.05
RUN_SECONDS = 0.2
SUBMIT_CONCURRENCY = 16
P99_GOAL_S = 2.0
JOBS = (
    {
        "model": "wan2.5-image-to-video",
        "input": {
            "prompt": "a red fox running through snow",
            "image_urls": ["https://example.com/fox.jpg"],
        },
    },
    {"model": "wan2.5-text-to-video", "input": {"prompt": "a lighthouse at dusk"}},
)
_TIMINGS = """
SELECT j.id, j.status, j.created_at, j.completed_at,
       (SELECT min(e.created_at) FROM job_events e
         WHERE e.job_id = j.id AND e.type = 'callback.received') AS callback_at
FROM jobs j
"""


async def _terminal_count(db: BenchDatabase) -> int:
    query = "SELECT count(*) FROM jobs WHERE status IN ('succeeded', 'failed')"
    if db.is_sqlite:
        conn = sqlite3.connect(db.raw, timeout=30)
        try:
            return int(conn.execute(query).fetchone()[0])
        finally:
            conn.close()
    pg = await asyncpg.connect(db.raw)
    try:
        return int(await pg.fetchval(query))
    finally:
        await pg.close()


def _parse_time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    from datetime import UTC

    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


async def _timings(
    db: BenchDatabase,
) -> list[tuple[str, str, datetime, datetime | None, datetime | None]]:
    if db.is_sqlite:
        conn = sqlite3.connect(db.raw, timeout=30)
        try:
            rows = list(conn.execute(_TIMINGS))
        finally:
            conn.close()
    else:
        pg = await asyncpg.connect(db.raw)
        try:
            rows = [tuple(r) for r in await pg.fetch(_TIMINGS)]
        finally:
            await pg.close()
    out = []
    for job_id, status, created, completed, callback in rows:
        created_at = _parse_time(created)
        assert created_at is not None
        out.append((job_id, status, created_at, _parse_time(completed), _parse_time(callback)))
    return out


async def _simulator_stats(url: str) -> str:
    """What the simulator says of its callbacks (deliveries by HTTP status, or "error")."""
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            stats = (await http.get("/_sandbox/stats")).json()
    except (httpx.HTTPError, ValueError) as exc:
        return f"unreachable ({type(exc).__name__})"
    return (
        f"{stats.get('tasks')} tasks, callback deliveries {stats.get('callback_deliveries')}, "
        f"{stats.get('pending_callbacks')} pending"
    )


async def _submit_all(url: str, token: str, count: int) -> tuple[float, list[str]]:
    """Submit `count` jobs at SUBMIT_CONCURRENCY; the seconds it took and any problems."""
    problems: list[str] = []
    limit = asyncio.Semaphore(SUBMIT_CONCURRENCY)
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=SUBMIT_CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:

        async def one(i: int) -> None:
            async with limit:
                response = await http.post("/v1/jobs", json=JOBS[i % 2], headers=headers)
            if response.status_code != 201:
                problems.append(f"job {i}: HTTP {response.status_code} {response.text[:200]}")
            elif response.json()["status"] == "failed":
                problems.append(f"job {i}: failed at submission: {response.text[:200]}")

        began = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(count)))
        return time.monotonic() - began, problems


async def run_backend(
    backend: str, size: Size, sampler: MemorySampler, profile_dir: Path | None = None
) -> dict[str, Any]:
    """With `profile_dir`, py-spy records the service from the first submission to the end."""
    with workdir() as tmp:
        db = await create_database(backend, tmp)
        servers: list[ServerProcess] = []
        spy: subprocess.Popen[bytes] | None = None
        try:
            provider_key = "sim-" + secrets.token_urlsafe(16)
            sim_port, api_port = free_port(), free_port()
            simulator = ServerProcess(
                f"e2e-simulator-{backend}",
                [
                    str(venv_bin("poyo-relay")), "sandbox", "--port", str(sim_port),
                    "--queue-seconds", str(QUEUE_SECONDS), "--run-seconds", str(RUN_SECONDS),
                    "--api-key", provider_key,
                ],
                service_env({}), tmp, sim_port,
            ).start()  # fmt: skip
            servers.append(simulator)
            service = ServerProcess(
                f"e2e-service-{backend}",
                [str(venv_bin("poyo-relay")), "serve", "--port", str(api_port)],
                service_env(
                    {
                        "DATABASE_URL": db.url,
                        "POYO_API_KEY": provider_key,
                        "POYO_BASE_URL": simulator.url,
                        "PUBLIC_BASE_URL": f"http://127.0.0.1:{api_port}",
                        # 2,000 jobs from one key in a minute: the limit is not under test.
                        "RATE_LIMIT_JOBS_PER_MINUTE": "0",
                    }
                ),
                tmp,
                api_port,
            ).start()
            servers.append(service)
            simulator.wait_ready("/_sandbox/stats")
            service.wait_ready("/readyz")
            sampler.watch(f"e2e[{backend}] simulator", simulator)
            sampler.watch(f"e2e[{backend}] api+worker", service)
            database = Database(load_settings(database_url=db.url, _env_file=None))
            try:
                _, token = await create_key(database, name="bench")
            finally:
                await database.dispose()
            count = size.e2e_jobs
            say(
                f"e2e [{backend}]: submitting {count:,} jobs at concurrency "
                f"{SUBMIT_CONCURRENCY} (simulated tasks take {QUEUE_SECONDS + RUN_SECONDS:g}s)"
            )
            raw = (profile_dir or tmp) / f"pyspy-e2e-{backend}.txt"
            if profile_dir is not None and profile.available():
                spy = profile.start(service.worker_pids()[0], size.e2e_timeout + 60, raw)
                await asyncio.sleep(0.3)
            began = time.monotonic()
            submit_seconds, problems = await _submit_all(service.url, token, count)
            if problems:
                raise BenchFailure(f"{len(problems)} submissions failed; first: {problems[0]}")
            deadline = began + size.e2e_timeout
            done = 0
            while done < count:
                if time.monotonic() > deadline:
                    raise BenchFailure(
                        f"only {done} of {count} jobs terminal after {size.e2e_timeout:g}s; "
                        f"simulator: {await _simulator_stats(simulator.url)}"
                    )
                await asyncio.sleep(0.2)
                done = await _terminal_count(db)
            wall = time.monotonic() - began
            profiled: dict[str, Any] = {}
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes what it has on Ctrl-C
                await asyncio.to_thread(spy.wait, 30)
                spy = None
                if raw.exists():
                    summary = profile.summarise(raw)
                    profile.print_profile(
                        f"py-spy, e2e [{backend}], the API+worker process, {count:,} jobs",
                        summary,
                    )
                    profiled = profile.as_dict(summary) | {"raw_file": str(raw)}
            sampler.unwatch(f"e2e[{backend}] simulator")
            sampler.unwatch(f"e2e[{backend}] api+worker")
            errors = service.log_errors() + simulator.log_errors()
            rows = await _timings(db)
            return _report(backend, count, submit_seconds, wall, rows, errors) | {
                "profile": profiled
            }
        finally:
            if spy is not None and spy.poll() is None:
                spy.send_signal(signal.SIGINT)
                await asyncio.to_thread(spy.wait, 30)
            for server in reversed(servers):
                server.stop()
            await drop_database(db)


def _report(
    backend: str,
    count: int,
    submit_seconds: float,
    wall: float,
    rows: list[tuple[str, str, datetime, datetime | None, datetime | None]],
    errors: list[str],
) -> dict[str, Any]:
    statuses: dict[str, int] = {}
    to_terminal: list[float] = []
    lifetimes: list[float] = []
    without_callback = 0
    for _job_id, status, created, completed, callback in rows:
        statuses[status] = statuses.get(status, 0) + 1
        if completed is None:
            continue
        lifetimes.append((completed - created).total_seconds())
        if callback is None:
            without_callback += 1
        else:
            to_terminal.append((completed - callback).total_seconds())
    first = min(r[2] for r in rows)
    last = max(r[3] for r in rows if r[3] is not None)
    span = (last - first).total_seconds()
    p99 = percentile(to_terminal, 99)
    table = [
        ("jobs", f"{count:,}", ""),
        ("statuses", ", ".join(f"{k} {v:,}" for k, v in sorted(statuses.items())), ""),
        ("submission (POST /v1/jobs), jobs/s", fmt(count / submit_seconds, 1), ""),
        ("throughput: first created to last terminal, jobs/s", fmt(count / span, 1), ""),
        ("wall time until all terminal, s", fmt(wall, 1), ""),
        ("callback -> terminal p50, ms", fmt(percentile(to_terminal, 50) * 1000, 0), ""),
        (
            "callback -> terminal p99, ms",
            fmt(p99 * 1000, 0),
            "met" if p99 <= P99_GOAL_S else "MISSED",
        ),
        ("callback -> terminal max, ms", fmt(max(to_terminal, default=0) * 1000, 0), ""),
        ("created -> terminal p50, ms", fmt(percentile(lifetimes, 50) * 1000, 0), ""),
        ("created -> terminal p99, ms", fmt(percentile(lifetimes, 99) * 1000, 0), ""),
        ("terminal without a received callback", str(without_callback), ""),
        ("server log errors", str(len(errors)), "met" if not errors else "MISSED"),
    ]
    print_table(
        f"end to end [{backend}]: poyo-relay serve (embedded worker, default settings) + "
        f"poyo-relay sandbox; goal callback -> terminal p99 <= {P99_GOAL_S:g}s",
        ("what", "value", "goal"),
        table,
    )
    for line in errors:
        print(f"  log: {line}")
    failures = []
    if statuses.get("succeeded", 0) != count:
        failures.append(f"expected {count} succeeded jobs, got {statuses}")
    if errors:
        failures.append(f"server logged errors: {errors[0]}")
    return {
        "backend": backend,
        "jobs": count,
        "statuses": statuses,
        "submit_jobs_per_s": count / submit_seconds,
        "throughput_jobs_per_s": count / span,
        "wall_seconds": wall,
        "callback_to_terminal_ms": {
            "p50": percentile(to_terminal, 50) * 1000,
            "p99": p99 * 1000,
            "max": max(to_terminal, default=0) * 1000,
        },
        "created_to_terminal_ms": {
            "p50": percentile(lifetimes, 50) * 1000,
            "p99": percentile(lifetimes, 99) * 1000,
        },
        "terminal_without_callback": without_callback,
        "goal_p99_s": P99_GOAL_S,
        "failures": failures,
    }
