"""Costs: what spend reporting and budgets cost the service.

(1) `GET /v1/usage` with a small and a large history. Two databases get 10,000 and
1,000,000 jobs (smoke: 2,000 and 20,000), each size spread evenly over the last 60 days,
half of them one tenant's (`bench`), the rest nine other owners', two models; every job
carries the estimate the service would have given its input (image-to-video: 480p-1080p,
5 or 10 s; text-to-video: a priced size for two jobs in three, else no estimate), and
ended jobs what PoYo charged. `usage_daily` is then built from the jobs in one
INSERT ... SELECT ... GROUP BY, as the migration's backfill does, with the sums the
service keeps (a running job reserves its estimate; a failed one spends nothing; a
succeeded one what it was charged). A `poyo-relay serve` on each database answers
`GET /v1/usage` grouped by day and by model, over 30 and over 60 days, for the tenant's
key and for an admin key (every owner's, per owner), one request at a time, the two sizes
taking turns. Every answer's sums must equal a direct SQL sum over the jobs.

(2) The budget check's share of `POST /v1/jobs`. The large database's server (embedded
worker off: `RUN_WORKER=false`) takes jobs for the tenant from 16 concurrent clients in
front of `poyo-relay sandbox` whose tasks never finish, for T seconds at a time, in
rounds: (a) the tenant has no budget, (b) it has daily and monthly budgets it never
reaches, so every creation locks the budget row (PostgreSQL) and sums today's and this
month's spend. a, b, a, b, ...; throughput b/a, with where the machine's CPU went in
each (the machine is small and shared: the server's CPU per job is steadier than its
throughput). Every answer must be 201, the jobs stored must number the 201s,
`usage_daily` must have counted each one and its estimate, and a budget set below the
day's spend must then refuse a job (402). Last, with the server idle, `budgets.admit()`
itself runs in this process against the same database, each call rolled back, without and
with the budget: its CPU per call, the check's cost free of HTTP, clients and submission.

Without the worker, a request's work is the whole of what is measured: its validation,
estimate, admission transaction and submission to the simulator. With it, each job's
polls, callback and end (and the spend written then) would add work to both variants
alike, and jobs admitted in one round would end during the next.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import psutil  # type: ignore[import-untyped]
from sqlalchemy import event

from app.auth.service import create_key
from app.billing import repository as usage_repo
from app.billing import service as budget_service
from app.billing.budgets import Limits
from app.billing.estimate import Estimate, estimate
from app.catalog.document import Entry, load_snapshot
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
    median,
    percentile,
    print_table,
    say,
    service_env,
    venv_bin,
    workdir,
)
from bench.dataset import (
    _JSON_COLUMNS,
    _TIME_COLUMNS,
    JOB_COLUMNS,
    OWNER,
    JobSpec,
    _row,
    _sqlite_time,
    generate_jobs,
)
from bench.reads import Client
from bench.waiters import _postgres_cpu, _process_cpu

USAGE_P50_GOAL_MS = 10.0
USAGE_RATIO_GOAL = 1.5
THROUGHPUT_RATIO_GOAL = 0.9
HISTORY_DAYS = 60
# The tenant's share of the jobs; the rest are nine other owners'. Half, so that even the
# small history has jobs of every owner on nearly every day: the admin's per-owner answers
# are then about as long at both sizes (an answer's length, owners x days, is what costs).
OWNER_SHARE = 0.5
ADMIN = "bench-admin"
ROUNDS = 5  # usage: the two sizes are timed alternately, a fifth of the samples at a time
CONCURRENCY = 16  # POST /v1/jobs clients, as bench/e2e.py submits
# Budgets for (b): far above anything the tenant spends (1,000,000 jobs of at most 180
# credits is 1.8e8), so every job is admitted after the full check.
NEVER_REACHED = {"daily_credits": 1e10, "monthly_credits": 1e11}
NO_BUDGET: dict[str, float | None] = {"daily_credits": None, "monthly_credits": None}
NEVER_REACHED_LIMITS = Limits(daily=10**13, monthly=10**14)  # the same, in millicredits
JOB_MODEL = "wan2.5-image-to-video"
JOB_BODY = orjson.dumps(
    {
        "model": JOB_MODEL,
        "input": {
            "prompt": "a red fox running through snow",
            "image_urls": ["https://example.com/fox.jpg"],
            "resolution": "720p",
            "duration": 5,
        },
    }
)
JOB_ESTIMATE = 60_000  # millicredits: price_table["720p"]["5"] = 60 credits

# ---- the history: jobs with their costs, and usage_daily built from them ----------------------

COST_COLUMNS = ("cost_estimate_millicredits", "cost_charged_millicredits")
_I2V_RESOLUTIONS = ("480p", "720p", "1080p")
_T2V_SIZES = ("1280*720", "832*480", None)  # None: no size, no estimate (PoYo's default)
_UNESTIMATED_CHARGE = 60_000  # what PoYo charged a succeeded job that had no estimate


def _day_sql(backend: str) -> str:
    return "date(created_at)" if backend == "sqlite" else "(created_at AT TIME ZONE 'UTC')::date"


# What a job counts for in usage: spent is its reservation while it runs, what it was
# charged (else its estimate) once it succeeded, nothing once it failed.
_SUMS = """count(*),
  sum(CASE WHEN cost_estimate_millicredits IS NULL THEN 1 ELSE 0 END),
  coalesce(sum(cost_estimate_millicredits), 0),
  coalesce(sum(cost_charged_millicredits), 0),
  coalesce(sum(CASE WHEN status = 'failed' THEN 0
                    WHEN status = 'succeeded'
                      THEN coalesce(cost_charged_millicredits, cost_estimate_millicredits, 0)
                    ELSE coalesce(cost_estimate_millicredits, 0) END), 0)"""


class _Pricer:
    """Each job's input varied, and the estimate the service gives that input."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {e.model_id: e for e in load_snapshot().items}
        self.cache: dict[tuple[str, str | None, int], Estimate] = {}

    def row(self, job: JobSpec, i: int) -> dict[str, Any]:
        row = _row(job, i)
        job_input: dict[str, Any] = dict(row["input"])
        duration = 5 if i % 2 else 10
        job_input["duration"] = duration
        if job.model == "wan2.5-image-to-video":
            variant: str | None = _I2V_RESOLUTIONS[i % 3]
            job_input["resolution"] = variant
        else:
            variant = _T2V_SIZES[i % 3]
            if variant is not None:
                job_input["size"] = variant
        key = (job.model, variant, duration)
        if key not in self.cache:
            self.cache[key] = estimate(self.entries[job.model], job_input)
        cost = self.cache[key].millicredits
        row["input"] = job_input
        row["cost_estimate_millicredits"] = cost
        if job.status == "succeeded":
            row["cost_charged_millicredits"] = cost if cost is not None else _UNESTIMATED_CHARGE
        elif job.status == "failed":
            row["cost_charged_millicredits"] = 0
        else:
            row["cost_charged_millicredits"] = None
        return row


async def load_priced_jobs(db: BenchDatabase, jobs: Sequence[JobSpec]) -> None:
    """The jobs, with their costs (bench/dataset.py's rows plus two columns)."""
    pricer = _Pricer()
    columns = (*JOB_COLUMNS, *COST_COLUMNS)
    chunk = 50_000
    if db.is_sqlite:
        conn = sqlite3.connect(db.raw, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous=OFF")
            statement = (
                f"INSERT INTO jobs ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' for _ in columns)})"
            )
            for start in range(0, len(jobs), chunk):
                records = [
                    _sqlite_record(pricer.row(job, start + k), columns)
                    for k, job in enumerate(jobs[start : start + chunk])
                ]
                conn.execute("BEGIN")
                conn.executemany(statement, records)
                conn.execute("COMMIT")
        finally:
            conn.close()
        return
    pg = await asyncpg.connect(db.raw, timeout=30)
    try:
        for start in range(0, len(jobs), chunk):
            records = [
                _pg_record(pricer.row(job, start + k), columns)
                for k, job in enumerate(jobs[start : start + chunk])
            ]
            await pg.copy_records_to_table("jobs", records=records, columns=list(columns))
    finally:
        await pg.close()


def _pg_record(row: Mapping[str, Any], columns: Sequence[str]) -> tuple[Any, ...]:
    return tuple(
        orjson.dumps(row[c]).decode() if c in _JSON_COLUMNS and row[c] is not None else row[c]
        for c in columns
    )


def _sqlite_record(row: Mapping[str, Any], columns: Sequence[str]) -> tuple[Any, ...]:
    return tuple(
        (orjson.dumps(row[c]).decode() if row[c] is not None else None)
        if c in _JSON_COLUMNS
        else _sqlite_time(row[c])
        if c in _TIME_COLUMNS
        else row[c]
        for c in columns
    )


async def build_usage(db: BenchDatabase) -> int:
    """usage_daily from the jobs, as the migration's backfill builds it (with the costs);
    the number of rows."""
    day = _day_sql(db.backend)
    statement = (
        "INSERT INTO usage_daily (owner, day, model, jobs, unestimated_jobs, "
        "estimated_millicredits, charged_millicredits, spent_millicredits) "
        f"SELECT owner, {day}, model, {_SUMS} FROM jobs GROUP BY owner, {day}, model"
    )
    if db.is_sqlite:
        conn = sqlite3.connect(db.raw, isolation_level=None)
        try:
            conn.execute(statement)
            conn.execute("ANALYZE")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return int(conn.execute("SELECT count(*) FROM usage_daily").fetchone()[0])
        finally:
            conn.close()
    pg = await asyncpg.connect(db.raw, timeout=30)
    try:
        await pg.execute(statement)
        await pg.execute("ANALYZE jobs")
        await pg.execute("ANALYZE usage_daily")
        return int(await pg.fetchval("SELECT count(*) FROM usage_daily"))
    finally:
        await pg.close()


Sums = tuple[int, int, int, int, int]  # jobs, unestimated, estimated, charged, spent


async def sums_from_jobs(
    db: BenchDatabase, *, owner: str | None, by_owner: bool, group_by: str, first: date, last: date
) -> dict[tuple[str | None, str], Sums]:
    """What `GET /v1/usage` must answer, summed over the jobs themselves."""
    day = _day_sql(db.backend)
    key = day if group_by == "day" else "model"
    keys = f"owner, {key}" if by_owner else key
    where = f"{day} >= {_ph(db, 1)} AND {day} <= {_ph(db, 2)}"
    params: list[Any] = [first, last] if not db.is_sqlite else [first.isoformat(), last.isoformat()]
    if owner is not None:
        where += f" AND owner = {_ph(db, 3)}"
        params.append(owner)
    query = f"SELECT {keys}, {_SUMS} FROM jobs WHERE {where} GROUP BY {keys}"
    if db.is_sqlite:
        conn = sqlite3.connect(db.raw)
        try:
            rows = [tuple(r) for r in conn.execute(query, params)]
        finally:
            conn.close()
    else:
        pg = await asyncpg.connect(db.raw, timeout=30)
        try:
            rows = [tuple(r) for r in await pg.fetch(query, *params)]
        finally:
            await pg.close()
    out: dict[tuple[str | None, str], Sums] = {}
    for row in rows:
        who = str(row[0]) if by_owner else None
        rest = row[1:] if by_owner else row
        label = rest[0].isoformat() if isinstance(rest[0], date) else str(rest[0])
        values = tuple(int(v or 0) for v in rest[1:])
        out[(who, label)] = (values[0], values[1], values[2], values[3], values[4])
    return out


def _ph(db: BenchDatabase, n: int) -> str:
    return "?" if db.is_sqlite else f"${n}"


def sums_from_answer(body: bytes, group_by: str) -> dict[tuple[str | None, str], Sums]:
    out: dict[tuple[str | None, str], Sums] = {}
    for row in orjson.loads(body)["data"]:
        out[(row.get("owner"), str(row[group_by]))] = (
            int(row["jobs"]),
            int(row["unestimated_jobs"]),
            round(row["credits_estimated"] * 1000),
            round(row["credits_charged"] * 1000),
            round(row["credits_spent"] * 1000),
        )
    return out


# ---- (1) GET /v1/usage ------------------------------------------------------------------------


@dataclass(frozen=True)
class UsageQuery:
    group_by: str
    days: int
    who: str  # OWNER (the tenant) or ADMIN (every owner, per owner)

    @property
    def name(self) -> str:
        scope = "tenant" if self.who == OWNER else "admin, per owner"
        return f"group_by={self.group_by}, {self.days} days, {scope}"

    def dates(self, today: date) -> tuple[date, date]:
        return today - timedelta(days=self.days - 1), today

    def path(self, today: date) -> str:
        first, last = self.dates(today)
        return f"/v1/usage?group_by={self.group_by}&from={first}&to={last}"


USAGE_QUERIES = tuple(
    UsageQuery(group_by, days, who)
    for who in (OWNER, ADMIN)
    for days in (30, HISTORY_DAYS)
    for group_by in ("day", "model")
)


@dataclass
class Target:
    """One history size: its database, its server and its client."""

    size: int
    db: BenchDatabase
    server: ServerProcess | None = None
    client: Client | None = None
    usage_rows: int = 0


def _measure_usage(
    targets: list[Target], today: date, samples: int, warmup: int
) -> tuple[dict[int, dict[str, dict[str, float]]], dict[int, dict[str, bytes]]]:
    """Every query on every size, sequentially, the sizes taking turns; the timings and
    the last answer of each."""
    per_round = max(1, samples // ROUNDS)
    timings: dict[int, dict[str, dict[str, float]]] = {t.size: {} for t in targets}
    answers: dict[int, dict[str, bytes]] = {t.size: {} for t in targets}
    for query in USAGE_QUERIES:
        path = query.path(today)
        taken: dict[int, list[float]] = {t.size: [] for t in targets}
        for target in targets:
            assert target.client is not None
            for _ in range(warmup):
                _get(target.client, path, query.who)
        for round_no in range(ROUNDS):
            for target in targets if round_no % 2 == 0 else targets[::-1]:
                assert target.client is not None
                for _ in range(per_round):
                    elapsed, body = _get(target.client, path, query.who)
                    taken[target.size].append(elapsed)
                answers[target.size][query.name] = body
        for target in targets:
            values = taken[target.size]
            rows = len(orjson.loads(answers[target.size][query.name])["data"])
            timings[target.size][query.name] = {
                "p50_ms": percentile(values, 50),
                "p99_ms": percentile(values, 99),
                "rows": rows,
            }
    return timings, answers


def _get(client: Client, path: str, who: str) -> tuple[float, bytes]:
    elapsed, status, body = client.get(path, who)
    if status != 200:
        raise BenchFailure(f"GET {path} ({who}) answered {status}: {body[:300]!r}")
    return elapsed * 1000, body


async def _check_answers(
    target: Target, today: date, answers: Mapping[str, bytes]
) -> tuple[int, list[str]]:
    """Each answer against the jobs' own sums: how many were checked, and the mismatches."""
    problems = []
    for query in USAGE_QUERIES:
        first, last = query.dates(today)
        admin = query.who == ADMIN
        expected = await sums_from_jobs(
            target.db,
            owner=None if admin else OWNER,
            by_owner=admin,
            group_by=query.group_by,
            first=first,
            last=last,
        )
        got = sums_from_answer(answers[query.name], query.group_by)
        if got != expected:
            wrong = sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))
            key = wrong[0]
            problems.append(
                f"{target.size:,} jobs, {query.name}: {len(wrong)} groups differ from the "
                f"jobs' sums; first {key}: answered {got.get(key)}, jobs {expected.get(key)}"
            )
    return len(USAGE_QUERIES), problems


async def _usage_plans(db: BenchDatabase, today: date) -> dict[str, list[str]]:
    """The plan of each 60-day query, captured from app.billing.repository as it runs."""
    database = Database(load_settings(database_url=db.url, _env_file=None))
    captured: list[tuple[str, Any]] = []

    @event.listens_for(database.engine.sync_engine, "before_cursor_execute")
    def _capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        if "FROM usage_daily" in statement and not statement.startswith("EXPLAIN"):
            captured.append((statement, parameters))

    plans: dict[str, list[str]] = {}
    prefix = "EXPLAIN QUERY PLAN " if db.is_sqlite else "EXPLAIN (ANALYZE, BUFFERS) "
    try:
        for query in USAGE_QUERIES:
            if query.days != HISTORY_DAYS:
                continue
            first, last = query.dates(today)
            admin = query.who == ADMIN
            captured.clear()
            async with database.read_connection() as conn:
                await usage_repo.usage(
                    conn,
                    owner=None if admin else OWNER,
                    by_owner=admin,
                    group_by=query.group_by,
                    first=first,
                    last=last,
                )
            statement, parameters = captured[-1]
            async with database.engine.connect() as conn:
                rows = (await conn.exec_driver_sql(prefix + statement, parameters)).fetchall()
            plans[query.name] = [str(row[-1] if db.is_sqlite else row[0]) for row in rows]
    finally:
        await database.dispose()
    return plans


# ---- (2) POST /v1/jobs with and without a budget -------------------------------------------------


@dataclass(frozen=True)
class Cpu:
    """CPU seconds: the whole machine's (every core), the server's, the simulator's, this
    process's (the clients) and the bench database's PostgreSQL backends'."""

    machine: float = 0.0
    server: float = 0.0
    simulator: float = 0.0
    bench: float = 0.0
    postgres: float = 0.0

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(*(a - b for a, b in zip(self.values(), other.values(), strict=True)))

    def __add__(self, other: Cpu) -> Cpu:
        return Cpu(*(a + b for a, b in zip(self.values(), other.values(), strict=True)))

    def values(self) -> tuple[float, float, float, float, float]:
        return (self.machine, self.server, self.simulator, self.bench, self.postgres)

    @property
    def others(self) -> float:
        """Everything else on the machine (other work; PostgreSQL's shared processes)."""
        return max(0.0, self.machine - self.server - self.simulator - self.bench - self.postgres)


@dataclass(frozen=True)
class Watched:
    """The processes whose CPU a run reads."""

    server: psutil.Process
    simulator: psutil.Process
    db_name: str | None  # None: SQLite (in the server's process)

    def read(self) -> Cpu:
        times = psutil.cpu_times()
        return Cpu(
            machine=float(times.user + times.nice + times.system + times.irq + times.softirq),
            server=_process_cpu(self.server),
            simulator=_process_cpu(self.simulator),
            bench=_process_cpu(psutil.Process()),
            postgres=_postgres_cpu(self.db_name) if self.db_name else 0.0,
        )


@dataclass
class LoadRun:
    variant: str
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    first_refusal: bytes | None = None
    cpu: Cpu = field(default_factory=Cpu)

    @property
    def requests(self) -> int:
        return len(self.latencies_ms)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def _request_bytes(port: int, method: str, path: str, token: str, body: bytes) -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        elif name.strip().lower() == b"transfer-encoding":
            raise BenchFailure("POST /v1/jobs answered a chunked body; expected Content-Length")
    body = await reader.readexactly(length) if length else b""
    return status, body


async def post_load(
    port: int, token: str, variant: str, seconds: float, watched: Watched
) -> LoadRun:
    """CONCURRENCY closed-loop connections POSTing jobs for `seconds`; each finishes its
    request in flight when time is up, so every request sent is answered and counted."""
    request = _request_bytes(port, "POST", "/v1/jobs", token, JOB_BODY)
    run = LoadRun(variant, seconds)
    cpu = watched.read()
    began = time.perf_counter()
    stop_at = began + seconds

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < stop_at:
                sent = time.perf_counter()
                writer.write(request)
                status, body = await _read_response(reader)
                run.latencies_ms.append((time.perf_counter() - sent) * 1000)
                run.statuses[status] += 1
                if status != 201 and run.first_refusal is None:
                    run.first_refusal = body[:400]
        finally:
            writer.close()
            await writer.wait_closed()

    await asyncio.gather(*(connection() for _ in range(CONCURRENCY)))
    run.seconds = time.perf_counter() - began
    run.cpu = watched.read() - cpu
    return run


async def _call(
    port: int, method: str, path: str, token: str, body: object = None
) -> tuple[int, Any]:
    """One request on its own connection; the status and the decoded JSON."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        payload = b"" if body is None else orjson.dumps(body)
        writer.write(_request_bytes(port, method, path, token, payload))
        status, answer = await _read_response(reader)
    finally:
        writer.close()
        await writer.wait_closed()
    return status, orjson.loads(answer) if answer else None


async def _set_budget(port: int, admin_token: str, limits: Mapping[str, float | None]) -> None:
    status, answer = await _call(port, "PUT", f"/v1/budgets/{OWNER}", admin_token, dict(limits))
    if status != 200:
        raise BenchFailure(f"PUT /v1/budgets/{OWNER} answered {status}: {answer}")
    for name, value in limits.items():
        if answer[name] != value:
            raise BenchFailure(f"budget {name} is {answer[name]}, expected {value}")


async def _usage_between(port: int, token: str, first: date, last: date) -> Sums:
    path = f"/v1/usage?group_by=model&from={first}&to={last}"
    status, answer = await _call(port, "GET", path, token)
    if status != 200:
        raise BenchFailure(f"GET {path} answered {status}: {answer}")
    total = [0, 0, 0, 0, 0]
    for values in sums_from_answer(orjson.dumps(answer), "model").values():
        total = [a + b for a, b in zip(total, values, strict=True)]
    return (total[0], total[1], total[2], total[3], total[4])


async def _count_jobs(db: BenchDatabase, owner: str) -> int:
    query = "SELECT count(*) FROM jobs WHERE owner = " + _ph(db, 1)
    if db.is_sqlite:
        conn = sqlite3.connect(db.raw, timeout=30)
        try:
            return int(conn.execute(query, (owner,)).fetchone()[0])
        finally:
            conn.close()
    pg = await asyncpg.connect(db.raw, timeout=30)
    try:
        return int(await pg.fetchval(query, owner))
    finally:
        await pg.close()


@dataclass(frozen=True)
class AdmissionCpu:
    """`budgets.admit()` run in this process against the benchmark's database, each call in
    its own transaction, rolled back: CPU microseconds per call without a budget (a) and
    with one never reached (b), the variants alternating in blocks."""

    calls: int
    a_us: float
    b_us: float


async def measure_admission_cpu(db: BenchDatabase, calls: int, blocks: int = 10) -> AdmissionCpu:
    """The check's own CPU cost, free of the HTTP server, the clients and the submission:
    the Python work of admit() in this process (the server is CPU-bound on the same work),
    timed by process CPU time, which other work on the machine disturbs far less than
    throughput."""
    database = Database(load_settings(database_url=db.url, _env_file=None))
    spent: dict[str, float] = {"a": 0.0, "b": 0.0}
    per_block = max(1, calls // blocks)
    day = datetime.now(UTC).date()
    try:
        async with database.engine.connect() as conn:
            for block in range(2 * blocks + 2):
                variant = "ab"[block % 2]
                limits = Limits(None, None) if variant == "a" else NEVER_REACHED_LIMITS
                async with conn.begin():
                    await usage_repo.set_budget(
                        conn, owner=OWNER, limits=limits, now=datetime.now(UTC)
                    )
                began = time.process_time()
                for _ in range(per_block):
                    transaction = await conn.begin()
                    await budget_service.admit(
                        conn, owner=OWNER, model=JOB_MODEL, day=day, estimate=JOB_ESTIMATE
                    )
                    await transaction.rollback()
                if block >= 2:  # the first of each is a warm-up
                    spent[variant] += time.process_time() - began
            async with conn.begin():
                await usage_repo.set_budget(
                    conn, owner=OWNER, limits=Limits(None, None), now=datetime.now(UTC)
                )
    finally:
        await database.dispose()
    measured = per_block * blocks
    return AdmissionCpu(measured, spent["a"] * 1e6 / measured, spent["b"] * 1e6 / measured)


@dataclass
class ThroughputOutcome:
    runs: list[LoadRun]
    warmup_created: int
    jobs_before: int
    jobs_after: int
    usage_before: Sums
    usage_after: Sums
    refused_when_over: int  # the status of one job past a budget set below today's spend
    # With --profile: per variant, py-spy's summary of one more round and that round
    admission: AdmissionCpu | None = None
    profiles: dict[str, tuple[profile.Profile, LoadRun]] = field(default_factory=dict)


async def measure_throughput(
    target: Target,
    simulator: ServerProcess,
    tokens: Mapping[str, str],
    size: Size,
    profile_dir: Path | None = None,
) -> ThroughputOutcome:
    assert target.server is not None
    assert target.server.proc is not None
    assert simulator.proc is not None
    port, tenant, admin = target.server.port, tokens[OWNER], tokens[ADMIN]
    db_name = None if target.db.is_sqlite else target.db.name
    watched = Watched(
        psutil.Process(target.server.worker_pids()[0]),
        psutil.Process(simulator.proc.pid),
        db_name,
    )
    first_day = datetime.now(UTC).date()
    jobs_before = await _count_jobs(target.db, OWNER)
    usage_before = await _usage_between(port, tenant, first_day, first_day + timedelta(days=1))
    status, answer = await _call(port, "POST", "/v1/jobs", tenant, orjson.loads(JOB_BODY))
    if status != 201:
        raise BenchFailure(f"POST /v1/jobs answered {status}: {answer}")
    if answer["cost"]["credits_estimated"] != JOB_ESTIMATE / 1000:
        raise BenchFailure(f"the job's estimate is {answer['cost']}, expected 60 credits")
    warmup_created = 1
    # Warm-up: both paths once, so that every pooled connection has prepared them.
    for limits in (NEVER_REACHED, NO_BUDGET):
        await _set_budget(port, admin, limits)
        warm = await post_load(port, tenant, "warm-up", size.costs_warmup_seconds / 2, watched)
        if set(warm.statuses) != {201}:
            raise BenchFailure(f"warm-up answered {dict(warm.statuses)}: {warm.first_refusal!r}")
        warmup_created += warm.statuses[201]
    runs: list[LoadRun] = []
    for _ in range(size.costs_rounds):
        for variant, limits in (("a", NO_BUDGET), ("b", NEVER_REACHED)):
            await _set_budget(port, admin, limits)
            runs.append(await post_load(port, tenant, variant, size.costs_seconds, watched))
    profiles: dict[str, tuple[profile.Profile, LoadRun]] = {}
    if profile_dir is not None and profile.available():
        for variant, limits in (("a", NO_BUDGET), ("b", NEVER_REACHED)):
            await _set_budget(port, admin, limits)
            raw = profile_dir / f"pyspy-costs-{target.db.backend}-{variant}.txt"
            spy = profile.start(watched.server.pid, size.costs_seconds + 1, raw, rate=250)
            await asyncio.sleep(0.5)
            run = await post_load(port, tenant, variant, size.costs_seconds, watched)
            await asyncio.to_thread(spy.wait, 60)
            if raw.exists():
                profiles[variant] = (profile.summarise(raw), run)
            warmup_created += run.statuses[201]
            if set(run.statuses) != {201}:
                raise BenchFailure(f"profiled round answered {dict(run.statuses)}")
    # The check is live: a budget below today's spend refuses the next job (402).
    status, answer = await _call(port, "GET", f"/v1/budgets/{OWNER}", tenant)
    spent_today = float(answer["spent_today_credits"]) if status == 200 else 0.0
    await _set_budget(
        port, admin, {"daily_credits": max(spent_today, 1.0), "monthly_credits": None}
    )
    refused, _ = await _call(port, "POST", "/v1/jobs", tenant, orjson.loads(JOB_BODY))
    await _set_budget(port, admin, NO_BUDGET)
    last_day = datetime.now(UTC).date()
    usage_after = await _usage_between(port, tenant, first_day, last_day + timedelta(days=1))
    jobs_after = await _count_jobs(target.db, OWNER)
    # The server is idle now: the check's own CPU, in this process.
    admission = await measure_admission_cpu(target.db, size.costs_admission_calls)
    return ThroughputOutcome(
        runs,
        warmup_created,
        jobs_before,
        jobs_after,
        usage_before,
        usage_after,
        refused,
        admission,
        profiles,
    )


# ---- the benchmark ------------------------------------------------------------------------------


async def run_backend(
    backend: str, size: Size, sampler: MemorySampler, profile_dir: Path | None = None
) -> dict[str, Any]:
    """With `profile_dir`, py-spy records the server during one more round of each variant
    after the measured ones."""
    sizes = (size.costs_small, size.costs_large)
    with workdir() as tmp:
        targets: list[Target] = []
        simulator: ServerProcess | None = None
        try:
            provider_key = "sim-" + secrets.token_urlsafe(16)
            sim_port = free_port()
            simulator = ServerProcess(
                f"costs-simulator-{backend}",
                [str(venv_bin("poyo-relay")), "sandbox", "--port", str(sim_port),
                 "--queue-seconds", "3600", "--api-key", provider_key],
                service_env({}), tmp, sim_port,
            ).start()  # fmt: skip
            simulator.wait_ready("/_sandbox/stats")
            now = datetime.now(UTC)
            today = now.date()
            tokens: dict[str, str] = {}
            for n in sizes:
                target = Target(n, await create_database(backend, tmp))
                targets.append(target)
                began = time.monotonic()
                # Spread evenly over the last HISTORY_DAYS days, whatever the size.
                step_ms = HISTORY_DAYS * 86_400_000 // n
                start = now - timedelta(days=HISTORY_DAYS) + timedelta(milliseconds=step_ms)
                jobs = generate_jobs(
                    n, start=start, step_ms=step_ms, seed=23, owner_share=OWNER_SHARE
                )
                await load_priced_jobs(target.db, jobs)
                del jobs
                target.usage_rows = await build_usage(target.db)
                say(
                    f"costs [{backend}]: loaded {n:,} jobs and {target.usage_rows:,} usage rows "
                    f"({time.monotonic() - began:.1f}s)"
                )
                tokens = await _keys(target.db)
                port = free_port()
                target.server = ServerProcess(
                    f"costs-{backend}-{n}",
                    [str(venv_bin("poyo-relay")), "serve", "--port", str(port)],
                    service_env(
                        {
                            "DATABASE_URL": target.db.url,
                            "POYO_API_KEY": provider_key,
                            "POYO_BASE_URL": simulator.url,
                            "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
                            "RUN_WORKER": "false",
                            "RATE_LIMIT_JOBS_PER_MINUTE": "0",
                            "ACCESS_LOG": "false",
                        }
                    ),
                    tmp,
                    port,
                ).start()
                target.server.wait_ready("/readyz")
                sampler.watch(f"costs[{backend} {n:,}]", target.server)
                target.client = Client(port, tokens)
            say(f"costs [{backend}]: timing {len(USAGE_QUERIES)} usage queries on both sizes")
            timings, answers = await asyncio.to_thread(
                _measure_usage, targets, today, size.costs_samples, size.costs_warmup
            )
            checked, problems = 0, []
            for target in targets:
                done, wrong = await _check_answers(target, today, answers[target.size])
                checked += done
                problems += wrong
            plans = await _usage_plans(targets[-1].db, today)
            small = targets[0]
            assert small.server is not None
            assert small.client is not None
            sampler.unwatch(f"costs[{backend} {small.size:,}]")
            small.client.close()
            small.client = None
            errors = small.server.log_errors()
            small.server.stop()
            large = targets[-1]
            say(
                f"costs [{backend}]: POST /v1/jobs at concurrency {CONCURRENCY}, "
                f"{size.costs_rounds} x (a) no budget, (b) a budget never reached, "
                f"{size.costs_seconds:g}s each, on the {large.size:,}-job database"
            )
            throughput = await measure_throughput(large, simulator, tokens, size, profile_dir)
            assert large.server is not None
            sampler.unwatch(f"costs[{backend} {large.size:,}]")
            errors += large.server.log_errors() + simulator.log_errors()
            return _report(backend, targets, timings, checked, problems, plans, throughput, errors)
        finally:
            for target in targets:
                if target.client is not None:
                    target.client.close()
                if target.server is not None:
                    target.server.stop()
                await drop_database(target.db)
            if simulator is not None:
                simulator.stop()


async def _keys(db: BenchDatabase) -> dict[str, str]:
    database = Database(load_settings(database_url=db.url, _env_file=None))
    try:
        return {
            OWNER: (await create_key(database, name=OWNER))[1],
            ADMIN: (await create_key(database, name=ADMIN, is_admin=True))[1],
        }
    finally:
        await database.dispose()


# The admission's functions whose time the profile attributes (app/billing, app/jobs).
PROFILED_FUNCTIONS = (
    ("create_job", "jobs/router.py", "POST /v1/jobs's handler"),
    ("JobService.create", "jobs/service.py", "its service call (submission included)"),
    ("JobService.submit", "jobs/service.py", "  the submission to PoYo"),
    ("JobService._insert", "jobs/service.py", "  the admission transaction"),
    ("admit", "billing/service.py", "    budgets.admit"),
    ("limits_for_admission", "billing/repository.py", "      the budget row (PostgreSQL: locked)"),
    ("spent_between", "billing/repository.py", "      today's and this month's spend"),
    ("record_created", "billing/repository.py", "      the usage row's upsert"),
)


def _inclusive(found: profile.Profile, function: str, file: str) -> int:
    """Samples with `function` (py-spy's qualified name) of app/`file` on the stack."""
    return found.app_inclusive.get(f"{function} (app/{file})", 0)


def _print_profiles(
    backend: str, profiles: Mapping[str, tuple[profile.Profile, LoadRun]]
) -> dict[str, Any]:
    if not profiles:
        return {}
    rows = []
    out: dict[str, Any] = {}
    for function, file, label in PROFILED_FUNCTIONS:
        row: list[str] = [f"{label}: {function}"]
        for variant in ("a", "b"):
            if variant not in profiles:
                row += ["-", "-"]
                continue
            found, run = profiles[variant]
            share = _inclusive(found, function, file) / max(1, found.samples)
            per_job = share * run.cpu.server * 1000 / max(1, run.requests)
            row += [f"{100 * share:.1f}%", f"{per_job:.2f}"]
            out.setdefault(variant, {})[function] = {"share": share, "ms_per_job": per_job}
        rows.append(tuple(row))
    print_table(
        f"costs [{backend}]: py-spy on the server, one more round of each variant; a "
        f"function's share of the server's working samples (inclusive) and that share of the "
        f"round's server CPU per job",
        ("function", "(a) share", "(a) ms/job", "(b) share", "(b) ms/job"),
        rows,
    )
    if "b" in profiles:
        profile.print_profile(
            f"py-spy, costs [{backend}], (b) budget never reached", profiles["b"][0]
        )
    for variant, (found, run) in profiles.items():
        out.setdefault(variant, {})["summary"] = profile.as_dict(found)
        out[variant]["server_cpu_ms_per_job"] = run.cpu.server * 1000 / max(1, run.requests)
    return out


def _admission_rows(found: AdmissionCpu | None, server_ms: float) -> list[tuple[str, ...]]:
    if found is None:
        return []
    extra_ms = (found.b_us - found.a_us) / 1000
    implied = server_ms / (server_ms + extra_ms) if server_ms + extra_ms > 0 else float("nan")
    return [
        (
            f"budgets.admit() in-process, CPU per call (a) / (b), {found.calls:,} calls each",
            f"{found.a_us:,.0f} / {found.b_us:,.0f} us",
            "",
            "",
        ),
        (
            "  the check's extra CPU, per job of the server's (a)",
            f"{extra_ms:.2f} of {server_ms:.2f} ms",
            "",
            "",
        ),
        ("  throughput (b) / (a) that implies, CPU-bound", f"{implied:.3f}", "", ""),
    ]


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _check(ok: bool) -> str:
    return "ok" if ok else "FAILED"


def _report(
    backend: str,
    targets: list[Target],
    timings: dict[int, dict[str, dict[str, float]]],
    checked: int,
    problems: list[str],
    plans: dict[str, list[str]],
    throughput: ThroughputOutcome,
    errors: list[str],
) -> dict[str, Any]:
    small, large = targets[0].size, targets[-1].size
    rows = []
    missed: list[str] = []
    for query in USAGE_QUERIES:
        at_small, at_large = timings[small][query.name], timings[large][query.name]
        ratio = at_large["p50_ms"] / at_small["p50_ms"]
        ok = at_large["p50_ms"] <= USAGE_P50_GOAL_MS and ratio <= USAGE_RATIO_GOAL
        if not ok:
            missed.append(f"usage: {query.name}")
        rows.append(
            (
                query.name,
                f"{int(at_small['rows'])} / {int(at_large['rows'])}",
                fmt(at_small["p50_ms"], 2),
                fmt(at_small["p99_ms"], 2),
                fmt(at_large["p50_ms"], 2),
                fmt(at_large["p99_ms"], 2),
                f"{ratio:.2f}",
                _verdict(ok),
            )
        )
    print_table(
        f"costs [{backend}]: GET /v1/usage, one request at a time, jobs over the last "
        f"{HISTORY_DAYS} days ({targets[0].usage_rows:,} / {targets[-1].usage_rows:,} usage "
        f"rows), sizes timed alternately; goal p50 <= {USAGE_P50_GOAL_MS:g} ms at {large:,} "
        f"and ratio <= {USAGE_RATIO_GOAL}",
        (
            "query",
            "rows answered",
            f"p50 ms @{small:,}",
            f"p99 ms @{small:,}",
            f"p50 ms @{large:,}",
            f"p99 ms @{large:,}",
            f"ratio {large // small}x",
            "goal",
        ),
        rows,
    )
    print(
        f"  answers equal to SQL sums over the jobs: "
        f"{'yes' if not problems else 'NO'} ({checked} answers checked)"
    )
    for problem in problems:
        print(f"  - {problem}")
    label = "PostgreSQL EXPLAIN (ANALYZE, BUFFERS)" if backend == "postgresql" else "SQLite plan"
    print(f"\ncosts [{backend}]: {label} of the {HISTORY_DAYS}-day usage queries at {large:,}")
    for name, lines in plans.items():
        print(f"  -- {name}")
        for line in lines:
            print(f"     {line}")

    out = throughput
    by_variant: dict[str, list[LoadRun]] = {"a": [], "b": []}
    for run in out.runs:
        by_variant[run.variant].append(run)
    stats: dict[str, dict[str, Any]] = {}
    for variant, runs in by_variant.items():
        latencies = [x for run in runs for x in run.latencies_ms]
        statuses: Counter[int] = Counter()
        for run in runs:
            statuses.update(run.statuses)
        rates = [run.rate for run in runs]
        cpu = Cpu()
        for run in runs:
            cpu = cpu + run.cpu
        wall = sum(run.seconds for run in runs)
        jobs = max(1, len(latencies))
        stats[variant] = {
            "rate": len(latencies) / wall,
            "cpu_ms_per_job": {
                "server": cpu.server * 1000 / jobs,
                "postgres": cpu.postgres * 1000 / jobs,
                "simulator": cpu.simulator * 1000 / jobs,
                "clients": cpu.bench * 1000 / jobs,
            },
            "cores_busy": {"machine": cpu.machine / wall, "others": cpu.others / wall},
            "rates": rates,
            "p50_ms": percentile(latencies, 50),
            "p99_ms": percentile(latencies, 99),
            "requests": len(latencies),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
        }
    ratio = stats["b"]["rate"] / stats["a"]["rate"]
    pairs = [b.rate / a.rate for a, b in zip(by_variant["a"], by_variant["b"], strict=True)]
    ok = ratio >= THROUGHPUT_RATIO_GOAL
    if not ok:
        missed.append("budget check: throughput b/a")
    created_201 = out.warmup_created + sum(run.statuses[201] for run in out.runs)
    stored = out.jobs_after - out.jobs_before
    not_201 = sum(n for run in out.runs for s, n in run.statuses.items() if s != 201)
    refused_b = sum(run.statuses[402] for run in by_variant["b"])
    delta = tuple(
        after - before for before, after in zip(out.usage_before, out.usage_after, strict=True)
    )
    usage_ok = delta == (created_201, 0, created_201 * JOB_ESTIMATE, 0, created_201 * JOB_ESTIMATE)
    table = []
    for variant, title in (("a", "(a) no budget"), ("b", "(b) budget never reached")):
        s = stats[variant]
        rates = s["rates"]
        table.append(
            (
                title,
                f"{len(rates)} x {out.runs[0].seconds:.0f}s",
                f"{s['requests']:,}",
                fmt(s["rate"], 1),
                f"{min(rates):,.1f} - {max(rates):,.1f}",
                fmt(s["p50_ms"], 1),
                fmt(s["p99_ms"], 1),
                ", ".join(f"{k}: {v:,}" for k, v in s["statuses"].items()),
            )
        )
    print_table(
        f"costs [{backend}]: POST /v1/jobs, {CONCURRENCY} closed-loop clients, one tenant, "
        f"wan2.5-image-to-video (60 credits), RUN_WORKER=false, tasks never finish; "
        f"rounds a, b, a, b, ...",
        ("variant", "rounds", "requests", "jobs/s", "range of rounds", "p50 ms", "p99 ms",
         "answers"),
        table,
    )  # fmt: skip
    cpu_rows = []
    for variant, title in (("a", "(a) no budget"), ("b", "(b) budget never reached")):
        per_job, cores = stats[variant]["cpu_ms_per_job"], stats[variant]["cores_busy"]
        cpu_rows.append(
            (
                title,
                fmt(per_job["server"], 2),
                fmt(per_job["postgres"], 2) if backend == "postgresql" else "-",
                fmt(per_job["simulator"], 2),
                fmt(per_job["clients"], 2),
                f"{cores['machine']:.2f}",
                f"{cores['others']:.2f}",
            )
        )
    print_table(
        f"costs [{backend}]: where the CPU went (the machine has {psutil.cpu_count()} cores; "
        f"'others' is work outside this benchmark)",
        ("variant", "server ms/job", "PostgreSQL ms/job", "simulator ms/job",
         "clients ms/job", "cores busy", "others"),
        cpu_rows,
    )  # fmt: skip
    server_ratio = stats["a"]["cpu_ms_per_job"]["server"] / stats["b"]["cpu_ms_per_job"]["server"]
    checks = [
        ("throughput (b) / (a)", f"{ratio:.3f}", f">= {THROUGHPUT_RATIO_GOAL}", _verdict(ok)),
        ("  each round's b / a", ", ".join(f"{p:.3f}" for p in pairs), "", ""),
        ("  median of the rounds' b / a", f"{median(pairs):.3f}", "", ""),
        ("server CPU per job (a) / (b)", f"{server_ratio:.3f}", "", ""),
        *_admission_rows(out.admission, stats["a"]["cpu_ms_per_job"]["server"]),
        ("answers other than 201", str(not_201), "0", _check(not_201 == 0)),
        ("refused (402) in (b)", str(refused_b), "0", _check(refused_b == 0)),
        (
            "jobs stored / 201 answers (warm-up included)",
            f"{stored:,} / {created_201:,}",
            "equal",
            _check(stored == created_201),
        ),
        (
            "usage_daily: jobs, unestimated, estimated, charged, spent added",
            ", ".join(f"{v:,}" for v in delta),
            f"{created_201:,} jobs x 60 credits",
            _check(usage_ok),
        ),
        (
            "a job past a budget below today's spend",
            f"HTTP {out.refused_when_over}",
            "402",
            _check(out.refused_when_over == 402),
        ),
        ("server log errors", str(len(errors)), "0", _check(not errors)),
    ]
    print_table(
        f"costs [{backend}]: the budget check's cost; goal (b)/(a) >= {THROUGHPUT_RATIO_GOAL}",
        ("what", "value", "expected", ""),
        checks,
    )
    for line in errors:
        print(f"  log: {line}")
    profiled = _print_profiles(backend, out.profiles)
    failures = [f"usage answer: {p}" for p in problems]
    if not_201:
        first = next((r.first_refusal for r in out.runs if r.first_refusal), b"")
        failures.append(f"{not_201} job creations not answered 201; first: {first!r}")
    if stored != created_201:
        failures.append(f"{stored} jobs stored for {created_201} answers 201")
    if not usage_ok:
        failures.append(f"usage_daily counted {delta} for {created_201} jobs of 60 credits")
    if out.refused_when_over != 402:
        failures.append(f"a job past its budget answered {out.refused_when_over}, not 402")
    if errors:
        failures.append(f"server logged errors: {errors[0]}")
    return {
        "backend": backend,
        "sizes": [small, large],
        "usage_rows": [t.usage_rows for t in targets],
        "usage_latency_ms": {str(n): r for n, r in timings.items()},
        "usage_answers_checked": checked,
        "usage_plans": plans,
        "throughput": {
            "concurrency": CONCURRENCY,
            "seconds_per_round": out.runs[0].seconds,
            "variants": stats,
            "ratio_b_over_a": ratio,
            "ratio_per_round": pairs,
            "median_round_ratio": median(pairs),
            "server_cpu_ratio_a_over_b": server_ratio,
            "admission_cpu_us": (
                {"calls": out.admission.calls, "a": out.admission.a_us, "b": out.admission.b_us}
                if out.admission
                else None
            ),
            "jobs_stored": stored,
            "answers_201": created_201,
            "usage_delta": list(delta),
        },
        "profile": profiled,
        "goals": {
            "usage_p50_ms": USAGE_P50_GOAL_MS,
            "usage_ratio": USAGE_RATIO_GOAL,
            "throughput_ratio": THROUGHPUT_RATIO_GOAL,
        },
        "missed": missed,
        "failures": failures,
    }
