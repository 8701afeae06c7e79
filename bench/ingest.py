"""Issue 6 §1: callback ingestion against the stack's own limit.

Real uvicorn processes (the same number of workers for every variant) serve
bench.ingest_app: (a) the service's callback endpoint, (b) a bare endpoint that parses the
same JSON, (c) a naive durable endpoint (one ORM transaction per callback); and
bench.ingest_example, a separate app: (d) an in-memory receiver doing the work of PoYo's
FastAPI example (issue 19). wrk (or the asyncio fallback) drives each at the same
concurrency, alternately a, b, c, d, a, b, c, d, ... Afterwards every callback that (a) or
(c) answered 2xx must be in the database.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from app.callbacks.credentials import CALLBACK_PATH, CallbackCredentials
from app.keyring.models import ServerKey
from bench import profile
from bench.common import (
    BenchDatabase,
    MemorySampler,
    ServerProcess,
    Size,
    create_database,
    drop_database,
    fmt,
    free_port,
    median,
    print_table,
    say,
    service_env,
    workdir,
)
from bench.dataset import JobSpec, generate_jobs, load_jobs
from bench.ingest_app import BARE_PREFIX, FACTORY, NAIVE_EVENT, NAIVE_PREFIX
from bench.ingest_example import ACCEPTED_MARK, EXAMPLE_PREFIX
from bench.loadgen import LoadResult, run_load

VARIANTS = {
    "a": ("callback endpoint", CALLBACK_PATH),
    "b": ("bare (parse JSON, 200)", BARE_PREFIX),
    "c": ("naive durable (ORM txn)", NAIVE_PREFIX),
    "d": ("in-memory (PoYo's example)", EXAMPLE_PREFIX),
}
GOALS = {
    # backend: (a/b at least, a/c at least, p99 of (a) at most, ms)
    "postgresql": (0.35, 3.0, 50.0),
    "sqlite": (0.15, 3.0, 100.0),
}
# Issue 19, against (d), on both backends: a/d at least, p99 of (a) at most, ms.
GOALS_D = (1.0, 25.0)
STORED_A = ("callback.received", "callback.duplicate", "callback.ignored")


@dataclass
class IngestOptions:
    workers: int = 2
    concurrency: int = 50
    threads: int = 1
    generator: str = "wrk"
    profile: bool = False
    profile_dir: Path | None = None
    factory: str = FACTORY


@dataclass
class VariantRuns:
    runs: list[LoadResult] = field(default_factory=list)  # measured rounds
    accepted: int = 0  # 2xx over every run, warm-up and profiling included
    sent_runs: int = 0
    non_2xx: int = 0
    socket_errors: int = 0
    offset: int = 0

    def add(self, result: LoadResult, *, measured: bool, concurrency: int) -> None:
        if measured:
            self.runs.append(result)
        self.accepted += result.accepted
        self.non_2xx += result.non_2xx
        self.socket_errors += result.socket_errors + result.timeouts
        self.sent_runs += 1
        # The next run starts past every request this one may have had in flight.
        self.offset += result.requests + concurrency

    def summary(self) -> dict[str, float]:
        return {
            "rps": median([r.rps for r in self.runs]),
            "rps_min": min(r.rps for r in self.runs),
            "rps_max": max(r.rps for r in self.runs),
            "p50_ms": median([r.p50_ms for r in self.runs]),
            "p99_ms": median([r.p99_ms for r in self.runs]),
            "p99_worst_ms": max(r.p99_ms for r in self.runs),
        }


def _write_pool(path: Path, jobs: list[JobSpec], credentials: CallbackCredentials) -> None:
    with path.open("w") as handle:
        for job in jobs:
            handle.write(f"{job.id} {credentials.token(job.id)} {job.task_id}\n")


async def _event_counts(db: BenchDatabase) -> dict[str, int]:
    query = "SELECT type, count(*) FROM job_events GROUP BY type"
    if db.is_sqlite:
        conn = sqlite3.connect(db.raw)
        try:
            return {row[0]: int(row[1]) for row in conn.execute(query)}
        finally:
            conn.close()
    pg = await asyncpg.connect(db.raw)
    try:
        return {row[0]: int(row[1]) for row in await pg.fetch(query)}
    finally:
        await pg.close()


async def _batches(db: BenchDatabase) -> tuple[int, int]:
    """How many transactions stored (a)'s events, and the largest: a batch shares `now`."""
    types = ", ".join(f"'{t}'" for t in (*STORED_A, "callback.rejected"))
    query = (
        "SELECT count(*), coalesce(max(n), 0) FROM (SELECT created_at, count(*) AS n "
        f"FROM job_events WHERE type IN ({types}) GROUP BY created_at) AS batches"
    )
    if db.is_sqlite:
        conn = sqlite3.connect(db.raw)
        try:
            row = conn.execute(query).fetchone()
            return int(row[0]), int(row[1])
        finally:
            conn.close()
    pg = await asyncpg.connect(db.raw)
    try:
        record = await pg.fetchrow(query)
        assert record is not None
        return int(record[0]), int(record[1])
    finally:
        await pg.close()


async def _jobs_marked(db: BenchDatabase, task_marker: str) -> int:
    """Jobs of one pool whose callback_status a callback set."""
    query = (
        "SELECT count(*) FROM jobs WHERE callback_status IS NOT NULL "
        "AND provider_task_id LIKE '%-' || $1 || '%'"
    )
    if db.is_sqlite:
        conn = sqlite3.connect(db.raw)
        try:
            row = conn.execute(query.replace("$1", "?"), (task_marker,)).fetchone()
            return int(row[0])
        finally:
            conn.close()
    pg = await asyncpg.connect(db.raw)
    try:
        return int(await pg.fetchval(query, task_marker))
    finally:
        await pg.close()


async def run_backend(
    backend: str, size: Size, options: IngestOptions, sampler: MemorySampler
) -> dict[str, Any]:
    say(f"ingest [{backend}]: preparing the database")
    with workdir() as tmp:
        db = await create_database(backend, tmp)
        server: ServerProcess | None = None
        example: ServerProcess | None = None
        try:
            start = datetime.now(UTC) - timedelta(hours=2)
            jobs_a = generate_jobs(
                size.ingest_jobs_a, start=start, step_ms=1, seed=1, owner_share=1.0,
                status="queued", task_prefix="a",
            )  # fmt: skip
            jobs_c = generate_jobs(
                size.ingest_jobs_c, start=start + timedelta(hours=1), step_ms=1, seed=2,
                owner_share=1.0, status="queued", task_prefix="c",
            )  # fmt: skip
            await load_jobs(db, jobs_a + jobs_c)
            secret = secrets.token_urlsafe(32)
            port = free_port()
            credentials = CallbackCredentials(
                key=ServerKey(secret.encode()), public_base_url=f"http://127.0.0.1:{port}"
            )
            pools = {"a": tmp / "pool-a.txt", "c": tmp / "pool-c.txt"}
            _write_pool(pools["a"], jobs_a, credentials)
            _write_pool(pools["c"], jobs_c, credentials)
            pools["b"] = pools["a"]
            env = service_env(
                {
                    "DATABASE_URL": db.url,
                    "CALLBACK_SECRET": secret,
                    "RUN_WORKER": "false",
                    "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
                }
            )
            server = ServerProcess(
                f"ingest-{backend}",
                [_python(), "-m", "bench.ingest_app", "--port", str(port),
                 "--workers", str(options.workers), "--factory", options.factory],
                env, tmp, port,
            ).start()  # fmt: skip
            # (d): its own app, the same uvicorn options and workers, the same environment.
            example_port = free_port()
            example = ServerProcess(
                f"ingest-example-{backend}",
                [_python(), "-m", "bench.ingest_example", "--port", str(example_port),
                 "--workers", str(options.workers), "--pool", str(pools["a"])],
                env, tmp, example_port,
            ).start()  # fmt: skip
            pools["d"] = pools["a"]
            ports = {"a": port, "b": port, "c": port, "d": example_port}
            server.wait_ready(workers=options.workers)
            example.wait_ready(workers=options.workers)
            label = f"ingest[{backend}]"
            sampler.watch(label, server)
            sampler.watch(f"{label} (d)", example)
            say(
                f"ingest [{backend}]: {options.workers} uvicorn workers, {len(jobs_a):,} + "
                f"{len(jobs_c):,} jobs, concurrency {options.concurrency}, "
                f"{size.ingest_rounds} x {size.ingest_seconds:g}s per variant "
                f"({options.generator})"
            )
            runs = {name: VariantRuns() for name in VARIANTS}

            def load(name: str, seconds: float) -> LoadResult:
                return run_load(
                    generator=options.generator,
                    port=ports[name],
                    pool_file=pools[name],
                    prefix=VARIANTS[name][1],
                    offset=runs[name].offset,
                    concurrency=options.concurrency,
                    seconds=seconds,
                    threads=options.threads,
                )

            for name in VARIANTS:  # warm-up: connections, caches, JIT-free but lazy imports
                result = await asyncio.to_thread(load, name, size.ingest_warmup_seconds)
                runs[name].add(result, measured=False, concurrency=options.concurrency)
            for round_no in range(size.ingest_rounds):
                for name in VARIANTS:
                    result = await asyncio.to_thread(load, name, size.ingest_seconds)
                    runs[name].add(result, measured=True, concurrency=options.concurrency)
                    say(
                        f"  round {round_no + 1} ({name}) {fmt(result.rps, 0)} req/s, "
                        f"p50 {fmt(result.p50_ms, 2)} ms, p99 {fmt(result.p99_ms, 2)} ms, "
                        f"non-2xx {result.non_2xx}"
                    )
            profiles: dict[str, Any] = {}
            if options.profile and profile.available():
                for name in ("a", "c"):
                    profiles[name] = await _profile_variant(
                        backend, name, server, load, runs, options, size
                    )
            sampler.unwatch(label)
            sampler.unwatch(f"{label} (d)")
            errors = server.log_errors() + example.log_errors()
            server.stop()
            server = None
            example.stop()
            logged_d = _count_in_log(example)
            example = None
            return await _verify_and_report(backend, db, runs, options, errors, profiles, logged_d)
        finally:
            for process in (server, example):
                if process is not None:
                    process.stop()
            await drop_database(db)


def _count_in_log(server: ServerProcess) -> int:
    """(d)'s accepted callbacks: the JSON lines its handler printed (stdout, the log file)."""
    if server.log_path is None or not server.log_path.exists():
        return 0
    with server.log_path.open(errors="replace") as handle:
        return sum(line.count(ACCEPTED_MARK) for line in handle)


def _python() -> str:
    import sys

    return sys.executable


async def _profile_variant(
    backend: str,
    name: str,
    server: ServerProcess,
    load: Any,
    runs: dict[str, VariantRuns],
    options: IngestOptions,
    size: Size,
) -> dict[str, Any]:
    seconds = max(5.0, size.ingest_seconds)
    pid = server.worker_pids()[0]
    out_dir = options.profile_dir or server.cwd
    raw = out_dir / f"pyspy-ingest-{backend}-{name}.txt"
    say(f"ingest [{backend}]: py-spy on worker pid {pid} during ({name}) for {seconds:g}s")
    spy = profile.start(pid, seconds, raw)
    await asyncio.sleep(0.3)
    result = await asyncio.to_thread(load, name, seconds + 0.5)
    runs[name].add(result, measured=False, concurrency=options.concurrency)
    _, stderr = await asyncio.to_thread(spy.communicate)
    if not raw.exists():
        say(f"py-spy wrote nothing: {stderr.decode(errors='replace')[-500:]}")
        return {}
    summary = profile.summarise(raw)
    profile.print_profile(
        f"py-spy, ingest [{backend}] ({name}) {VARIANTS[name][0]}, one of "
        f"{options.workers} workers, at {fmt(result.rps, 0)} req/s",
        summary,
    )
    return profile.as_dict(summary) | {"raw_file": str(raw), "rps_during": result.rps}


async def _verify_and_report(
    backend: str,
    db: BenchDatabase,
    runs: dict[str, VariantRuns],
    options: IngestOptions,
    errors: list[str],
    profiles: dict[str, Any],
    logged_d: int,
) -> dict[str, Any]:
    counts = await _event_counts(db)
    stored_a = sum(counts.get(t, 0) for t in STORED_A)
    stored_c = counts.get(NAIVE_EVENT, 0)
    rejected = counts.get("callback.rejected", 0)
    marked_a = await _jobs_marked(db, "a")
    batches, largest_batch = await _batches(db)
    summaries = {name: runs[name].summary() for name in VARIANTS}
    rows = []
    for name, (title, _path) in VARIANTS.items():
        s = summaries[name]
        rows.append(
            (
                f"({name}) {title}",
                fmt(s["rps"], 0),
                f"{fmt(s['rps_min'], 0)}..{fmt(s['rps_max'], 0)}",
                fmt(s["p50_ms"], 2),
                fmt(s["p99_ms"], 2),
                fmt(s["p99_worst_ms"], 2),
                runs[name].non_2xx,
                runs[name].socket_errors,
            )
        )
    print_table(
        f"ingest [{backend}]: {options.workers} uvicorn workers, concurrency "
        f"{options.concurrency}, median of {len(runs['a'].runs)} alternating round(s)",
        ("variant", "req/s", "range", "p50 ms", "p99 ms", "worst p99", "non-2xx", "errors"),
        rows,
    )
    a_b = summaries["a"]["rps"] / summaries["b"]["rps"]
    a_c = summaries["a"]["rps"] / summaries["c"]["rps"]
    a_d = summaries["a"]["rps"] / summaries["d"]["rps"]
    goal_ab, goal_ac, goal_p99 = GOALS[backend]
    goal_ad, goal_p99_d = GOALS_D
    p99 = summaries["a"]["p99_ms"]
    inflight_a = runs["a"].sent_runs * options.concurrency
    inflight_c = runs["c"].sent_runs * options.concurrency
    lost_a = max(0, runs["a"].accepted - stored_a)
    lost_c = max(0, runs["c"].accepted - stored_c)
    received = counts.get("callback.received", 0)
    checks = [
        ("ratio a/b", f"{a_b:.2f}", f">= {goal_ab}", _verdict(a_b >= goal_ab)),
        ("ratio a/c", f"{a_c:.2f}", f">= {goal_ac}", _verdict(a_c >= goal_ac)),
        ("p99 of (a), ms", fmt(p99, 2), f"<= {goal_p99:g}", _verdict(p99 <= goal_p99)),
        ("ratio a/d (issue 19)", f"{a_d:.2f}", f">= {goal_ad:g}", _verdict(a_d >= goal_ad)),
        (
            "p99 of (a), ms (issue 19)",
            fmt(p99, 2),
            f"<= {goal_p99_d:g}",
            _verdict(p99 <= goal_p99_d),
        ),
        (
            "(a) answered 2xx / events stored",
            f"{runs['a'].accepted:,} / {stored_a:,}",
            "stored >= answered",
            _verdict(lost_a == 0),
        ),
        ("(a) lost callbacks", str(lost_a), "0", _verdict(lost_a == 0)),
        (
            "(a) received / duplicate events",
            f"{received:,} / {counts.get('callback.duplicate', 0):,}",
            "",
            "",
        ),
        (
            "(a) transactions / mean batch / largest",
            f"{batches:,} / {stored_a / max(batches, 1):.1f} / {largest_batch}",
            "group commit",
            "",
        ),
        (
            "(a) jobs marked by a callback",
            f"{marked_a:,}",
            f"= received ({received:,})",
            _verdict(marked_a == received),
        ),
        (
            "(c) answered 2xx / events stored",
            f"{runs['c'].accepted:,} / {stored_c:,}",
            "stored >= answered",
            _verdict(lost_c == 0),
        ),
        (
            "(d) answered 2xx / lines logged",
            f"{runs['d'].accepted:,} / {logged_d:,}",
            "in memory only",
            "",
        ),
        ("rejected callbacks stored", str(rejected), "0", _verdict(rejected == 0)),
        ("server log errors", str(len(errors)), "0", _verdict(not errors)),
    ]
    print_table(f"ingest [{backend}]: goals and checks", ("check", "value", "goal", ""), checks)
    for line in errors:
        print(f"  log: {line}")
    failures = []
    if lost_a or lost_c:
        failures.append(f"lost callbacks: (a) {lost_a}, (c) {lost_c}")
    if runs["a"].non_2xx or runs["a"].socket_errors:
        failures.append(
            f"(a) had {runs['a'].non_2xx} non-2xx answers and {runs['a'].socket_errors} errors"
        )
    if rejected:
        failures.append(f"{rejected} well-formed callbacks were rejected")
    if marked_a != received:
        failures.append(f"{received} callbacks received but {marked_a} jobs marked")
    if stored_a > runs["a"].accepted + inflight_a or stored_c > runs["c"].accepted + inflight_c:
        say(f"note: more events than answers: in flight when the load stopped ({backend})")
    if errors:
        failures.append(f"server logged errors: {errors[0]}")
    return {
        "backend": backend,
        "workers": options.workers,
        "concurrency": options.concurrency,
        "generator": options.generator,
        "variants": {
            name: {**summaries[name], "rounds": [asdict(r) for r in runs[name].runs]}
            for name in VARIANTS
        },
        "ratio_a_b": a_b,
        "ratio_a_c": a_c,
        "ratio_a_d": a_d,
        "goals": {
            "a_b": goal_ab,
            "a_c": goal_ac,
            "p99_ms": goal_p99,
            "a_d": goal_ad,
            "p99_ms_issue19": goal_p99_d,
        },
        "events": counts,
        "accepted_a": runs["a"].accepted,
        "stored_a": stored_a,
        "lost_a": lost_a,
        "transactions_a": batches,
        "mean_batch_a": stored_a / max(batches, 1),
        "largest_batch_a": largest_batch,
        "accepted_c": runs["c"].accepted,
        "stored_c": stored_c,
        "accepted_d": runs["d"].accepted,
        "logged_d": logged_d,
        "profiles": profiles,
        "failures": failures,
    }


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"
