"""Issue 6 §2: job reads with a small and a large history.

Jobs are bulk-loaded (COPY / executemany, not the API) for one owner and some others, the
service (`poyo-relay serve`) answers GET /v1/jobs/{id} and four list queries over loopback,
one request at a time on a kept-alive connection. Then the history grows to the large size
and the same requests are timed again. The PostgreSQL plan of every list query, captured
from the app's own query code, must use an index (no sequential scan on jobs).
"""

from __future__ import annotations

import asyncio
import http.client
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import event

from app.auth.models import Caller
from app.auth.service import create_key
from app.config import load_settings
from app.db import Database
from app.jobs import queries
from app.jobs.queries import JobFilter, encode_cursor
from app.jobs.states import JobStatus
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
from bench.dataset import MODELS, OTHER_OWNERS, OWNER, JobSpec, generate_jobs, load_jobs

P50_GOAL_MS = 5.0
RATIO_GOAL = 1.5
DEEP = 10_000
LIMIT = 20


@dataclass(frozen=True)
class Query:
    name: str
    filters: JobFilter
    deep: bool = False
    owner: str = OWNER

    def params(self, cursor: str | None) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.filters.status is not None:
            out["status"] = self.filters.status.value
        if self.filters.model is not None:
            out["model"] = self.filters.model
        if cursor is not None:
            out["cursor"] = cursor
        return out


LIST_QUERIES = (
    Query("list: first page", JobFilter()),
    Query("list: status=failed", JobFilter(status=JobStatus.FAILED)),
    Query("list: model=text-to-video", JobFilter(model=MODELS[1])),
    Query(
        "list: status=succeeded&model=image",
        JobFilter(status=JobStatus.SUCCEEDED, model=MODELS[0]),
    ),
    Query(f"list: page {DEEP:,} rows deep", JobFilter(), deep=True),
    Query(f"list: owner {OTHER_OWNERS[0]} (~1% of jobs)", JobFilter(), owner=OTHER_OWNERS[0]),
)
ROUNDS = 5  # the two sizes are timed alternately, a fifth of the samples at a time


class Client:
    """Sequential requests on one kept-alive connection; each timed end to end."""

    def __init__(self, port: int, tokens: dict[str, str]) -> None:
        self.port = port
        self.tokens = tokens
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def get(self, path: str, owner: str = OWNER) -> tuple[float, int, bytes]:
        headers = {"Authorization": f"Bearer {self.tokens[owner]}"}
        started = time.perf_counter()
        try:
            self.conn.request("GET", path, headers=headers)
            response = self.conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            raise
        return time.perf_counter() - started, response.status, body

    def close(self) -> None:
        self.conn.close()


def _path(query: Query, cursor: str | None) -> str:
    params = query.params(cursor)
    if not params:
        return "/v1/jobs"
    return "/v1/jobs?" + "&".join(f"{k}={v}" for k, v in params.items())


@dataclass
class Target:
    """One history size: its database, its server, its client and its jobs."""

    size: int
    db: BenchDatabase
    jobs: list[JobSpec]
    server: ServerProcess | None = None
    client: Client | None = None

    def newest_first(self, owner: str) -> list[JobSpec]:
        return [job for job in self.jobs if job.owner == owner][::-1]


def _timed(client: Client, path: str, owner: str) -> tuple[float, bytes]:
    elapsed, status, body = client.get(path, owner)
    if status != 200:
        raise BenchFailure(f"GET {path} answered {status}: {body[:300]!r}")
    return elapsed * 1000, body


def _measure(targets: list[Target], size: Size) -> dict[int, dict[str, dict[str, float]]]:
    """Every query on every size, the sizes taking turns so that noise hits them alike."""
    per_round = max(1, size.reads_samples // ROUNDS)
    out: dict[int, dict[str, dict[str, float]]] = {t.size: {} for t in targets}
    plans: list[tuple[str, str, dict[int, list[str]], dict[int, int]]] = []
    gets: dict[int, list[str]] = {}
    for target in targets:
        rng = random.Random(target.size)
        mine = target.newest_first(OWNER)
        gets[target.size] = [
            f"/v1/jobs/{rng.choice(mine).id}" for _ in range(size.reads_warmup + size.reads_samples)
        ]
    plans.append(("get: /v1/jobs/{id}", OWNER, gets, {}))
    for query in LIST_QUERIES:
        paths: dict[int, list[str]] = {}
        depths: dict[int, int] = {}
        for target in targets:
            newest = target.newest_first(query.owner)
            cursor = None
            if query.deep:
                depths[target.size] = min(DEEP, len(newest) - 2 * LIMIT)
                cursor = encode_cursor(newest[depths[target.size] - 1].id)
            paths[target.size] = [_path(query, cursor)] * (size.reads_warmup + size.reads_samples)
        plans.append((query.name, query.owner, paths, depths))
    for name, owner, paths, depths in plans:
        timings: dict[int, list[float]] = {t.size: [] for t in targets}
        for target in targets:  # warm-up
            assert target.client is not None
            for path in paths[target.size][: size.reads_warmup]:
                _, body = _timed(target.client, path, owner)
        for round_no in range(ROUNDS):
            for target in targets if round_no % 2 == 0 else targets[::-1]:
                assert target.client is not None
                begin = size.reads_warmup + round_no * per_round
                for path in paths[target.size][begin : begin + per_round]:
                    elapsed, body = _timed(target.client, path, owner)
                    timings[target.size].append(elapsed)
                if name.startswith("list"):
                    _check_page(name, target, owner, body, depths.get(target.size))
        for target in targets:
            out[target.size][name] = _stats(timings[target.size])
            if target.size in depths:
                out[target.size][name]["depth"] = depths[target.size]
    return out


def _check_page(name: str, target: Target, owner: str, body: bytes, depth: int | None) -> None:
    page = orjson.loads(body)["data"]
    if len(page) != LIMIT:
        raise BenchFailure(f"{name} returned {len(page)} jobs, expected {LIMIT}")
    if depth is not None and page[0]["id"] != target.newest_first(owner)[depth].id:
        raise BenchFailure(f"{name}: the page starts at {page[0]['id']}, not row {depth + 1}")


def _stats(timings: list[float]) -> dict[str, float]:
    return {"p50_ms": percentile(timings, 50), "p99_ms": percentile(timings, 99)}


# ---- plans ------------------------------------------------------------------------------------


async def _plans(db: BenchDatabase, deep_cursor: str) -> dict[str, list[str]]:
    """The plan of each list query, captured from app.jobs.queries as the server runs it."""
    database = Database(load_settings(database_url=db.url, _env_file=None))
    captured: list[tuple[str, Any]] = []

    @event.listens_for(database.engine.sync_engine, "before_cursor_execute")
    def _capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        if "FROM jobs" in statement and not statement.startswith("EXPLAIN"):
            captured.append((statement, parameters))

    plans: dict[str, list[str]] = {}
    try:
        for query in LIST_QUERIES:
            captured.clear()
            await queries.list_jobs(
                database,
                caller=Caller(owner=query.owner),
                filters=query.filters,
                limit=LIMIT,
                cursor=deep_cursor if query.deep else None,
            )
            statement, parameters = captured[-1]
            prefix = "EXPLAIN QUERY PLAN " if db.is_sqlite else "EXPLAIN (ANALYZE, BUFFERS) "
            async with database.engine.connect() as conn:
                result = await conn.exec_driver_sql(prefix + statement, parameters)
                rows = result.fetchall()
            if db.is_sqlite:
                plans[query.name] = [str(row[-1]) for row in rows]
            else:
                plans[query.name] = [str(row[0]) for row in rows]
    finally:
        await database.dispose()
    return plans


def _plan_problems(backend: str, plans: dict[str, list[str]]) -> list[str]:
    problems = []
    for name, lines in plans.items():
        text = "\n".join(lines)
        if backend == "postgresql" and "Seq Scan on jobs" in text:
            problems.append(f"{name}: sequential scan on jobs")
        if backend == "sqlite" and any(line.strip() == "SCAN jobs" for line in lines):
            problems.append(f"{name}: full scan of jobs")
    return problems


# ---- the benchmark ------------------------------------------------------------------------------


async def run_backend(backend: str, size: Size, sampler: MemorySampler) -> dict[str, Any]:
    sizes = (size.reads_small, size.reads_large)
    with workdir() as tmp:
        targets: list[Target] = []
        try:
            say(f"reads [{backend}]: generating {sizes[1]:,} jobs")
            start = datetime.now(UTC) - timedelta(seconds=sizes[1]) - timedelta(days=1)
            jobs = generate_jobs(sizes[1], start=start, step_ms=1000, seed=11)
            for n in sizes:
                # Each size has its own database and server: the two are timed alternately.
                target = Target(n, await create_database(backend, tmp), jobs[:n])
                targets.append(target)
                began = time.monotonic()
                await load_jobs(target.db, target.jobs)
                say(f"reads [{backend}]: loaded {n:,} jobs ({time.monotonic() - began:.1f}s)")
                tokens = await _keys(target.db)
                port = free_port()
                env = service_env(
                    {
                        "DATABASE_URL": target.db.url,
                        "RUN_WORKER": "false",
                        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
                    }
                )
                target.server = ServerProcess(
                    f"reads-{backend}-{n}",
                    [str(venv_bin("poyo-relay")), "serve", "--port", str(port)],
                    env, tmp, port,
                ).start()  # fmt: skip
                target.server.wait_ready()
                sampler.watch(f"reads[{backend} {n:,}]", target.server)
                target.client = Client(port, tokens)
            say(f"reads [{backend}]: timing {len(LIST_QUERIES) + 1} queries on both sizes")
            results = await asyncio.to_thread(_measure, targets, size)
            plans: dict[int, dict[str, list[str]]] = {}
            errors: list[str] = []
            for target in targets:
                mine = target.newest_first(OWNER)
                depth = min(DEEP, len(mine) - 2 * LIMIT)
                plans[target.size] = await _plans(target.db, encode_cursor(mine[depth - 1].id))
                sampler.unwatch(f"reads[{backend} {target.size:,}]")
                assert target.server is not None
                errors += target.server.log_errors()
            return _report(backend, sizes, results, plans, errors)
        finally:
            for target in targets:
                if target.client is not None:
                    target.client.close()
                if target.server is not None:
                    target.server.stop()
                await drop_database(target.db)


async def _keys(db: BenchDatabase) -> dict[str, str]:
    database = Database(load_settings(database_url=db.url, _env_file=None))
    try:
        return {
            owner: (await create_key(database, name=owner))[1] for owner in (OWNER, OTHER_OWNERS[0])
        }
    finally:
        await database.dispose()


def _report(
    backend: str,
    sizes: tuple[int, int],
    results: dict[int, dict[str, dict[str, float]]],
    plans: dict[int, dict[str, list[str]]],
    errors: list[str],
) -> dict[str, Any]:
    small, large = sizes
    rows = []
    missed = []
    for name, at_small in results[small].items():
        at_large = results[large][name]
        ratio = at_large["p50_ms"] / at_small["p50_ms"]
        ok = at_large["p50_ms"] <= P50_GOAL_MS and ratio <= RATIO_GOAL
        if not ok:
            missed.append(name)
        depth = f" (row {int(at_large['depth']):,})" if "depth" in at_large else ""
        rows.append(
            (
                name + depth,
                fmt(at_small["p50_ms"], 2),
                fmt(at_small["p99_ms"], 2),
                fmt(at_large["p50_ms"], 2),
                fmt(at_large["p99_ms"], 2),
                f"{ratio:.2f}",
                "met" if ok else "MISSED",
            )
        )
    print_table(
        f"reads [{backend}]: one request at a time, limit {LIMIT}, owner '{OWNER}' "
        f"(90% of jobs), sizes timed alternately; goal p50 <= {P50_GOAL_MS:g} ms at "
        f"{large:,} and ratio <= {RATIO_GOAL}",
        (
            "query",
            f"p50 ms @{small:,}",
            f"p99 ms @{small:,}",
            f"p50 ms @{large:,}",
            f"p99 ms @{large:,}",
            f"p50 ratio {large // small}x",
            "goal",
        ),
        rows,
    )
    label = "PostgreSQL EXPLAIN (ANALYZE, BUFFERS)" if backend == "postgresql" else "SQLite plan"
    print(f"\nreads [{backend}]: {label} of each list query at {large:,} jobs")
    for name, lines in plans[large].items():
        print(f"  -- {name}")
        for line in lines:
            print(f"     {line}")
    problems = _plan_problems(backend, plans[large]) + [
        f"at {small:,} jobs: {p}" for p in _plan_problems(backend, plans[small])
    ]
    failures = [f"plan: {p}" for p in problems]
    if errors:
        failures.append(f"server logged errors: {errors[0]}")
    print(f"  plans use an index: {'yes' if not problems else 'NO: ' + '; '.join(problems)}")
    return {
        "backend": backend,
        "sizes": list(sizes),
        "latency_ms": {str(n): r for n, r in results.items()},
        "plans": {str(n): p for n, p in plans.items()},
        "goals": {"p50_ms": P50_GOAL_MS, "ratio": RATIO_GOAL},
        "missed": missed,
        "failures": failures,
    }
