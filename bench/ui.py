"""Issue 17: the dashboard's pages with 10,000 and 1,000,000 jobs.

Each size has its own database, bulk-loaded (bench/costs.py's priced jobs over the last 30
days, 90% of them one owner's), `usage_daily` built from the jobs in one INSERT ... SELECT
(with the jobs per outcome the overview charts), a short trail for one job and 1,000 events
for another; and its own `poyo-relay serve`. Two dashboard sessions (the owner's key and an
admin key) are made by signing in at `POST /ui/login`, as a browser does. Every page is
then fetched one request at a time on a kept-alive connection (so the latency measured on
loopback is the server's time plus a little), the sizes taking turns, each answer checked;
the same first page of the JSON API (`GET /v1/jobs?limit=50`) is timed alongside as the
baseline. Goal: p95 <= 100 ms for every page at the large size.
"""

from __future__ import annotations

import asyncio
import bisect
import http.client
import re
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from app.auth.service import create_key
from app.config import load_settings
from app.db import Database
from app.jobs.queries import encode_cursor
from app.ui.overview import FAILURE_DAYS, FAILURE_SAMPLE
from app.ui.router import COOKIE, EVENTS_PAGE, PAGE_SIZE
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
from bench.costs import _SUMS, _day_sql, load_priced_jobs
from bench.dataset import MODELS, OWNER, JobSpec, _sqlite_time, generate_jobs
from bench.reads import Client

GOAL_P95_MS = 100.0
LONG_TRAIL = 1_000
HISTORY_DAYS = 30
ADMIN = "bench-admin"
ROUNDS = 5  # the sizes are timed alternately, a fifth of the samples at a time
NEW_MODEL = "wan2.5-image-to-video"


@dataclass(frozen=True)
class Plan:
    sizes: tuple[int, ...]
    samples: int  # timed requests per page and size
    warmup: int


# Smoke (run in CI) stays well under a minute: the small size only, few requests.
PLANS = {
    "smoke": Plan(sizes=(10_000,), samples=20, warmup=3),
    "full": Plan(sizes=(10_000, 1_000_000), samples=200, warmup=20),
}

Check = Callable[[bytes], str | None]  # a problem with an answer's body, or None


@dataclass(frozen=True)
class Page:
    name: str
    path: str
    check: Check
    who: str = OWNER  # whose session (or key, for the API) asks


@dataclass
class Target:
    """One history size: its database, server, sessions and the jobs it holds."""

    size: int
    db: BenchDatabase
    jobs: list[JobSpec]
    now: datetime
    server: ServerProcess | None = None
    sessions: dict[str, str] = field(default_factory=dict)  # who -> cookie token
    tokens: dict[str, str] = field(default_factory=dict)  # who -> API key
    pages: list[Page] = field(default_factory=list)
    ui: PageClient | None = None
    api: Client | None = None

    def newest_first(self) -> list[JobSpec]:
        return [job for job in reversed(self.jobs) if job.owner == OWNER]


class PageClient:
    """Sequential GETs of dashboard pages on one kept-alive connection, a session cookie
    per caller; each timed end to end."""

    def __init__(self, port: int, sessions: dict[str, str]) -> None:
        self.port = port
        self.sessions = sessions
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def get(self, path: str, who: str) -> tuple[float, int, str | None, bytes]:
        headers = {"Cookie": f"{COOKIE}={self.sessions[who]}"}
        started = time.perf_counter()
        try:
            self.conn.request("GET", path, headers=headers)
            response = self.conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            raise
        elapsed = time.perf_counter() - started
        return elapsed, response.status, response.getheader("Server-Timing"), body

    def close(self) -> None:
        self.conn.close()


def sign_in(port: int, api_key: str) -> str:
    """A session cookie, from the sign-in form as a browser posts it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(
            "POST",
            "/ui/login",
            body=urllib.parse.urlencode({"api_key": api_key}),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Origin": f"http://127.0.0.1:{port}",
            },
        )
        response = conn.getresponse()
        response.read()
        cookie = response.getheader("Set-Cookie") or ""
    finally:
        conn.close()
    found = re.match(rf"{COOKIE}=([^;]+)", cookie)
    if response.status != 303 or found is None:
        raise BenchFailure(f"POST /ui/login answered {response.status}, cookie {cookie!r}")
    return found.group(1)


# ---- the data: usage_daily and the trails --------------------------------------------------


def _usage_sql(backend: str) -> str:
    """usage_daily per (owner, day, model) from the jobs, with the jobs per outcome."""
    day = _day_sql(backend)
    return (
        "INSERT INTO usage_daily (owner, day, model, jobs, unestimated_jobs, "
        "estimated_millicredits, charged_millicredits, spent_millicredits, "
        "succeeded_jobs, failed_jobs) "
        f"SELECT owner, {day}, model, {_SUMS}, "
        "sum(CASE WHEN status = 'succeeded' THEN 1 ELSE 0 END), "
        "sum(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) "
        f"FROM jobs GROUP BY owner, {day}, model"
    )


def marker(n: int) -> str:
    """What event n (1-based) of a bench trail carries, to find it on a page."""
    return f"ev-{n:04d}"


def trail(job: JobSpec, count: int) -> list[tuple[str, str, datetime, str]]:
    """(job_id, type, created_at, data) of a job's events: created, submitted, running, then
    callbacks (their raw bodies as stored) and, for a short trail, its end."""
    rows = []
    for n in range(1, count + 1):
        data: dict[str, Any]
        if n == 1:
            kind, data = "job.created", {"model": job.model}
        elif n == 2:
            kind, data = "provider.submitted", {"task_id": job.task_id}
        elif n == 3:
            kind, data = "job.status_changed", {"from": "queued", "to": "running"}
        elif n == count and count < 10:
            kind, data = "job.status_changed", {"from": "running", "to": job.status}
        else:
            progress = min(99, n * 100 // count)
            body = {
                "code": 200,
                "msg": "success",
                "data": {"task_id": job.task_id, "status": "running", "progress": progress},
            }
            kind = "callback.received"
            data = {
                "task_id": job.task_id,
                "status": "running",
                "signed": True,
                "raw": orjson.dumps(body).decode(),
            }
        data["bench"] = marker(n)
        moment = job.created_at + timedelta(seconds=n)
        rows.append((job.id, kind, moment, orjson.dumps(data).decode()))
    return rows


async def fill(db: BenchDatabase, events: Sequence[tuple[str, str, datetime, str]]) -> int:
    """usage_daily from the jobs and the events given; then fresh statistics. The number of
    usage rows."""
    usage = _usage_sql(db.backend)
    if db.is_sqlite:
        conn = sqlite3.connect(db.raw, isolation_level=None)
        try:
            conn.execute("BEGIN")
            conn.execute(usage)
            conn.executemany(
                "INSERT INTO job_events (job_id, type, created_at, data) VALUES (?, ?, ?, ?)",
                [(j, k, _sqlite_time(t), d) for j, k, t, d in events],
            )
            conn.execute("COMMIT")
            conn.execute("ANALYZE")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return int(conn.execute("SELECT count(*) FROM usage_daily").fetchone()[0])
        finally:
            conn.close()
    pg = await asyncpg.connect(db.raw, timeout=30)
    try:
        async with pg.transaction():
            await pg.execute(usage)
            await pg.executemany(
                "INSERT INTO job_events (job_id, type, created_at, data) "
                "VALUES ($1, $2, $3, $4::jsonb)",
                events,
            )
        await pg.execute("VACUUM ANALYZE")
        return int(await pg.fetchval("SELECT count(*) FROM usage_daily"))
    finally:
        await pg.close()


async def _keys(db: BenchDatabase) -> dict[str, str]:
    database = Database(load_settings(database_url=db.url, _env_file=None))
    try:
        return {
            OWNER: (await create_key(database, name=OWNER))[1],
            ADMIN: (await create_key(database, name=ADMIN, is_admin=True))[1],
        }
    finally:
        await database.dispose()


# ---- the pages and what each must show ----------------------------------------------------


def _rows(expected: Sequence[JobSpec], more: bool = True) -> Check:
    """A job list page: exactly these jobs, in this order, and a link further when due."""
    ids = [job.id for job in expected]

    def check(body: bytes) -> str | None:
        found = re.findall(rb'<tr data-job="([^"]+)"', body)
        if [f.decode() for f in found] != ids:
            shown = [f.decode() for f in found[:3]]
            return f"{len(found)} rows starting {shown}, expected {len(ids)} from {ids[:3]}"
        if more and b"Older jobs" not in body:
            return "no link to older jobs"
        return None

    return check


def _contains(*needles: str, absent: Sequence[str] = ()) -> Check:
    def check(body: bytes) -> str | None:
        for needle in needles:
            if needle.encode() not in body:
                return f"{needle!r} missing"
        for needle in absent:
            if needle.encode() in body:
                return f"{needle!r} present"
        return None

    return check


def _overview(failed_at: Sequence[datetime], durations: bool) -> Check:
    """The overview: three charts, the failed jobs of the last 7 days (`failed_at`: when
    each failed job was created, in order), durations if jobs ended in the last 24 h."""

    def check(body: bytes) -> str | None:
        charts = body.count(b"<svg")
        if charts != 3:
            return f"{charts} charts, expected 3"
        found = re.search(rb"<p>(\d+) failed jobs? in the last", body)
        if found is None:
            return "no count of failed jobs"
        # The 7-day window moved during the request: a job or two may have left it.
        since = datetime.now(UTC) - timedelta(days=FAILURE_DAYS)
        in_window = len(failed_at) - bisect.bisect_left(failed_at, since)
        expected = min(in_window, FAILURE_SAMPLE)  # the page reads the most recent ones
        if abs(int(found.group(1)) - expected) > 2:
            return f"{int(found.group(1))} failed jobs shown, expected {expected}"
        if durations and b'class="durations"' not in body:
            return "no durations table"
        return None

    return check


def _api_rows(expected: Sequence[JobSpec]) -> Check:
    ids = [job.id for job in expected]

    def check(body: bytes) -> str | None:
        found = [job["id"] for job in orjson.loads(body)["data"]]
        return None if found == ids else f"API listed {found[:3]}..., expected {ids[:3]}..."

    return check


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def pages(target: Target, long_job: JobSpec, normal_job: JobSpec, later: str) -> list[Page]:
    """What is timed, with what each answer must hold (`later`: the long job's link to its
    second page of events, read from its first page)."""
    mine = target.newest_first()
    today = target.now.date()
    after = today - timedelta(days=3)
    span = (today - timedelta(days=10), today - timedelta(days=4))
    model = MODELS[1]
    failed = [j for j in mine if j.status == "failed"]
    of_model = [j for j in mine if j.model == model and j.created_at >= _midnight(after)]
    in_span = [
        j
        for j in mine
        if j.model == model
        and _midnight(span[0]) <= j.created_at < _midnight(span[1] + timedelta(days=1))
    ]
    all_failed = [j.created_at for j in target.jobs if j.status == "failed"]
    ended_today = any(
        j.status in ("succeeded", "failed") and j.created_at >= target.now - timedelta(hours=20)
        for j in mine
    )
    cursor = encode_cursor(mine[PAGE_SIZE - 1].id)
    long_page = f"/ui/jobs/{long_job.id}"
    return [
        Page(
            "/ui (first page)",
            "/ui",
            _both(_rows(mine[:PAGE_SIZE]), _contains(f"cursor={cursor}")),
        ),
        Page("/ui?status=failed", "/ui?status=failed", _rows(failed[:PAGE_SIZE])),
        Page("/ui?category=video", "/ui?category=video", _rows(mine[:PAGE_SIZE])),
        Page(
            "/ui?model=…&created_after=(3 days ago)",
            f"/ui?model={model}&created_after={after.isoformat()}",
            _rows(of_model[:PAGE_SIZE]),
        ),
        Page(
            "/ui?model=…&created_after&created_before (10 to 4 days ago)",
            f"/ui?model={model}&created_after={span[0].isoformat()}"
            f"&created_before={span[1].isoformat()}",
            _rows(in_span[:PAGE_SIZE]),
        ),
        Page(
            "/ui?cursor=… (second page)",
            f"/ui?cursor={cursor}",
            _rows(mine[PAGE_SIZE : 2 * PAGE_SIZE]),
        ),
        Page(
            "/ui/jobs/{id} (5 events)",
            f"/ui/jobs/{normal_job.id}",
            _contains(
                f'data-job="{normal_job.id}"', marker(1), marker(5), absent=("Later events",)
            ),
        ),
        Page(
            f"/ui/jobs/{{id}} ({LONG_TRAIL:,} events, 1st page)",
            long_page,
            _contains(
                f'data-job="{long_job.id}"',
                marker(1),
                marker(EVENTS_PAGE),
                "Later events",
                absent=(marker(EVENTS_PAGE + 1),),
            ),
        ),
        Page(
            f"/ui/jobs/{{id}}?events=… ({LONG_TRAIL:,} events, 2nd page)",
            later,
            _contains(
                f'data-job="{long_job.id}"',
                marker(EVENTS_PAGE + 1),
                marker(2 * EVENTS_PAGE),
                "Later events",
                absent=(marker(EVENTS_PAGE), marker(2 * EVENTS_PAGE + 1)),
            ),
        ),
        Page(
            f"/ui/new?model={NEW_MODEL}",
            f"/ui/new?model={NEW_MODEL}",
            _contains('id="job-form"', 'name="prompt"', f'value="{NEW_MODEL}"'),
        ),
        Page(
            "/ui/overview (owner)",
            "/ui/overview",
            _overview([j.created_at for j in reversed(failed)], ended_today),
        ),
        Page(
            "/ui/overview (admin: every owner)",
            "/ui/overview",
            _overview(all_failed, ended_today),
            who=ADMIN,
        ),
    ]


BASELINE = "baseline: GET /v1/jobs?limit=50 (JSON API)"


def _both(first: Check, second: Check) -> Check:
    def check(body: bytes) -> str | None:
        return first(body) or second(body)

    return check


# ---- timing -------------------------------------------------------------------------------


def _fetch(target: Target, page: Page) -> tuple[float, str | None, bytes]:
    """One timed request of a page (the baseline through the API); its answer checked.

    uvicorn closes a kept-alive connection idle for 5 s (while the other size is timed, or
    loaded): such a request is sent again, once, on the fresh connection the client opens.
    """
    for attempt in (1, 2):
        try:
            if page.name == BASELINE:
                assert target.api is not None
                elapsed, status, body = target.api.get(page.path, page.who)
                server_timing = None
            else:
                assert target.ui is not None
                elapsed, status, server_timing, body = target.ui.get(page.path, page.who)
            break
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            if attempt == 2:
                raise
    if status != 200:
        raise BenchFailure(f"GET {page.path} at {target.size:,} answered {status}: {body[:300]!r}")
    problem = page.check(body)
    if problem is not None:
        raise BenchFailure(f"{page.name} at {target.size:,} jobs: {problem}")
    return elapsed * 1000, server_timing, body


def later_events_link(target: Target, long_job: JobSpec) -> str:
    """The long job's first page's link to its next page of events."""
    assert target.ui is not None
    _, status, _, body = target.ui.get(f"/ui/jobs/{long_job.id}", OWNER)
    found = re.search(rf'href="(/ui/jobs/{long_job.id}\?events=[^"]+)"'.encode(), body)
    if status != 200 or found is None:
        raise BenchFailure(f"the {LONG_TRAIL:,}-event job's page has no link to later events")
    return found.group(1).decode().replace("&amp;", "&")


def measure(targets: list[Target], plan: Plan) -> tuple[dict[int, dict[str, Any]], bool]:
    """Every page on every size, the sizes taking turns so that noise hits them alike.
    Latencies per size and page; whether any answer had a Server-Timing header."""
    per_round = max(1, plan.samples // ROUNDS)
    out: dict[int, dict[str, Any]] = {t.size: {} for t in targets}
    server_timing = False
    for index, name in enumerate(page.name for page in targets[0].pages):
        timings: dict[int, list[float]] = {t.size: [] for t in targets}
        for target in targets:
            for _ in range(plan.warmup):
                _fetch(target, target.pages[index])
        for round_no in range(ROUNDS):
            for target in targets if round_no % 2 == 0 else targets[::-1]:
                for _ in range(per_round):
                    elapsed, header, _ = _fetch(target, target.pages[index])
                    timings[target.size].append(elapsed)
                    server_timing = server_timing or header is not None
        for target in targets:
            values = timings[target.size]
            out[target.size][name] = {
                "p50_ms": percentile(values, 50),
                "p95_ms": percentile(values, 95),
                "max_ms": max(values),
                "requests": len(values),
            }
    return out, server_timing


# ---- the benchmark ------------------------------------------------------------------------


async def _prepare(backend: str, n: int, tmp: Any, sampler: MemorySampler) -> Target:
    now = datetime.now(UTC)
    step_ms = HISTORY_DAYS * 86_400_000 // n  # spread over the last 30 days, whatever n
    start = now - timedelta(days=HISTORY_DAYS) + timedelta(milliseconds=step_ms)
    began = time.monotonic()
    jobs = generate_jobs(n, start=start, step_ms=step_ms, seed=17)
    target = Target(n, await create_database(backend, tmp), jobs, now)
    await load_priced_jobs(target.db, jobs)
    succeeded = [j for j in target.newest_first() if j.status == "succeeded"]
    normal_job, long_job = succeeded[10], succeeded[20]
    usage_rows = await fill(target.db, trail(normal_job, 5) + trail(long_job, LONG_TRAIL))
    say(
        f"ui [{backend}]: loaded {n:,} jobs, {usage_rows:,} usage rows, "
        f"{LONG_TRAIL + 5:,} events ({time.monotonic() - began:.1f}s)"
    )
    target.tokens = await _keys(target.db)
    port = free_port()
    target.server = ServerProcess(
        f"ui-{backend}-{n}",
        [str(venv_bin("poyo-relay")), "serve", "--port", str(port)],
        service_env(
            {
                "DATABASE_URL": target.db.url,
                "RUN_WORKER": "false",
                "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
                "ACCESS_LOG": "false",
            }
        ),
        tmp,
        port,
    ).start()
    target.server.wait_ready("/readyz")
    sampler.watch(f"ui[{backend} {n:,}]", target.server)
    target.sessions = {who: sign_in(port, key) for who, key in target.tokens.items()}
    target.ui = PageClient(port, target.sessions)
    target.api = Client(port, target.tokens)
    later = later_events_link(target, long_job)
    target.pages = [
        Page(BASELINE, f"/v1/jobs?limit={PAGE_SIZE}", _api_rows(target.newest_first()[:50])),
        *pages(target, long_job, normal_job, later),
    ]
    return target


async def run_backend(backend: str, size: Size, sampler: MemorySampler) -> dict[str, Any]:
    plan = PLANS.get(size.name, PLANS["smoke"])
    with workdir() as tmp:
        targets: list[Target] = []
        try:
            for n in plan.sizes:
                targets.append(await _prepare(backend, n, tmp, sampler))
            say(
                f"ui [{backend}]: timing {len(targets[0].pages)} pages, {plan.samples} requests "
                f"each per size, one at a time"
            )
            results, server_timing = await asyncio.to_thread(measure, targets, plan)
            errors: list[str] = []
            for target in targets:
                sampler.unwatch(f"ui[{backend} {target.size:,}]")
                assert target.server is not None
                errors += target.server.log_errors()
            return _report(backend, plan, results, server_timing, errors)
        finally:
            for target in targets:
                if target.ui is not None:
                    target.ui.close()
                if target.api is not None:
                    target.api.close()
                if target.server is not None:
                    target.server.stop()
                await drop_database(target.db)


def _report(
    backend: str,
    plan: Plan,
    results: dict[int, dict[str, Any]],
    server_timing: bool,
    errors: list[str],
) -> dict[str, Any]:
    large = plan.sizes[-1]
    baseline = results[large][BASELINE]["p50_ms"]
    rows = []
    missed = []
    for name, at_large in results[large].items():
        cells: list[str] = [name]
        for n in plan.sizes:
            found = results[n][name]
            cells += [fmt(found["p50_ms"], 1), fmt(found["p95_ms"], 1), fmt(found["max_ms"], 1)]
        cells.append(f"{at_large['p50_ms'] / baseline:.1f}")
        if name == BASELINE:
            cells.append("")
        else:
            ok = at_large["p95_ms"] <= GOAL_P95_MS
            if not ok:
                missed.append(name)
            cells.append("met" if ok else "MISSED")
        rows.append(cells)
    headers = ["page"]
    for n in plan.sizes:
        headers += [f"p50 ms @{n:,}", f"p95 @{n:,}", f"max @{n:,}"]
    headers += [f"p50 / API @{large:,}", f"p95 <= {GOAL_P95_MS:g} ms @{large:,}"]
    alternately = " (the sizes alternately)" if len(plan.sizes) > 1 else ""
    print_table(
        f"ui [{backend}]: dashboard pages, one request at a time on one connection, "
        f"{plan.samples} per page and size{alternately}, owner '{OWNER}' (90% of "
        f"jobs) unless marked; latency on loopback",
        headers,
        rows,
    )
    print(
        "  Server-Timing header: "
        + ("present (not used: latency is)" if server_timing else "absent; latency measured")
    )
    pages_count = len(results[large]) - 1
    verdict = "met" if not missed else f"MISSED for {len(missed)}: {', '.join(missed)}"
    print(
        f"  goal p95 <= {GOAL_P95_MS:g} ms for every page at {large:,} jobs: {verdict} "
        f"({pages_count - len(missed)} of {pages_count} met)"
    )
    failures = [f"server logged errors: {errors[0]}"] if errors else []
    return {
        "backend": backend,
        "sizes": list(plan.sizes),
        "latency_ms": {str(n): r for n, r in results.items()},
        "server_timing_header": server_timing,
        "goals": {"p95_ms": GOAL_P95_MS},
        "missed": missed,
        "failures": failures,
    }
