"""Issue 19: how many jobs/s and callbacks/s one PostgreSQL sustains with N API processes
and N worker processes, and what each process group spends per job; pgbench for the
database's own capacity on this machine.

For N = 1 and 2 (PostgreSQL only): `poyo-relay sandbox` (the PoYo simulator, tasks of
0.25 s, as bench.e2e), N x `poyo-relay serve` (`RUN_WORKER=false`, one uvicorn process
each, its own port, no proxy in front) and N x `poyo-relay worker`, all on one database.
The benchmark's own HTTP/1.1 clients (asyncio, keep-alive) create M jobs at a fixed
concurrency, request i going to API i mod N. Each API process gets its own address as
`PUBLIC_BASE_URL`: the API submits a job to PoYo within `POST /v1/jobs`, so a job's
callback comes back to the API that created it and callbacks are spread as the requests
are (the workers get API #1's, used only when they resubmit). After a warm-up, the
benchmark reads the CPU time of every process (psutil) and the database's transaction
counters, submits the M jobs, waits until all are terminal, and reads them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil  # type: ignore[import-untyped]

from app.auth.service import create_key
from app.config import load_settings
from app.db import Database
from bench.common import (
    BenchDatabase,
    BenchFailure,
    MemorySampler,
    ServerProcess,
    Size,
    create_database,
    create_postgres_database,
    database_backend_pids,
    drop_database,
    drop_postgres_database,
    fmt,
    free_port,
    percentile,
    postgres_admin_url,
    print_table,
    say,
    service_env,
    venv_bin,
    workdir,
)


@dataclass(frozen=True)
class ScaleSize:
    jobs: int  # M, measured
    warmup_jobs: int
    timeout: float  # seconds for the M jobs to end
    pgbench_scale: int
    pgbench_seconds: int


SCALE_SIZES = {
    "smoke": ScaleSize(jobs=48, warmup_jobs=8, timeout=60.0, pgbench_scale=10, pgbench_seconds=3),
    "full": ScaleSize(
        jobs=2_000, warmup_jobs=64, timeout=300.0, pgbench_scale=10, pgbench_seconds=20
    ),
}
PROCESS_COUNTS = (1, 2)
CONCURRENCY = 16
QUEUE_SECONDS = 0.05  # the simulator's tasks, as bench.e2e's
RUN_SECONDS = 0.2
PGBENCH_CLIENTS = 8
PGBENCH_THREADS = 2
TARGET_UTILISATION = 0.7  # of a core per process, for the estimate printed at the end
TARGET_RATES = (100, 1_000)  # jobs/s
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
GROUPS = ("api", "worker", "simulator", "postgres", "client")
GROUP_TITLES = {
    "api": "API processes (all)",
    "worker": "worker processes (all)",
    "simulator": "simulator",
    "postgres": "PostgreSQL backends of the database",
    "client": "benchmark process (clients, polling, RSS sampler)",
}
# The API's access log line of a callback (JSON, the route's template).
CALLBACK_ROUTE = "/v1/callbacks/poyo/{job_id}/{token}"


# ---- the clients -----------------------------------------------------------------------------


@dataclass
class Submission:
    ids: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    per_api: dict[int, int] = field(default_factory=dict)


async def submit(ports: Sequence[int], token: str, count: int, concurrency: int) -> Submission:
    """`count` jobs from `concurrency` closed-loop clients, request i to ports[i % N]; one
    httpx pool per API (keep-alive; a connection the server closed is simply replaced)."""
    out = Submission(per_api=dict.fromkeys(ports, 0))
    issued = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {token}"}
    pools = {
        port: httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers=headers, limits=limits, timeout=60
        )
        for port in ports
    }

    async def client() -> None:
        nonlocal issued
        while issued < count:
            i = issued
            issued += 1
            port = ports[i % len(ports)]
            started = time.perf_counter()
            response = await pools[port].post("/v1/jobs", json=JOBS[i % len(JOBS)])
            out.latencies.append(time.perf_counter() - started)
            out.per_api[port] += 1
            if response.status_code != 201:
                out.problems.append(f"job {i}: HTTP {response.status_code} {response.text[:200]}")
                continue
            answer = response.json()
            if answer.get("status") == "failed":
                out.problems.append(f"job {i}: failed at submission: {response.text[:200]}")
            out.ids.append(str(answer["id"]))

    began = time.monotonic()
    try:
        await asyncio.gather(*(client() for _ in range(concurrency)))
    finally:
        for pool in pools.values():
            await pool.aclose()
    out.seconds = time.monotonic() - began
    return out


# ---- readings ------------------------------------------------------------------------------


def _process_cpu(pid: int) -> float:
    with contextlib.suppress(psutil.Error):
        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)
    return 0.0


def _servers_cpu(servers: Sequence[ServerProcess]) -> float:
    return sum(_process_cpu(pid) for server in servers for pid in server.all_pids())


def _postgres_cpu(db_name: str) -> float:
    return sum(_process_cpu(pid) for pid in database_backend_pids(db_name))


def _machine_busy() -> float:
    times = psutil.cpu_times()
    return float(times.user + times.nice + times.system + times.irq + times.softirq)


@dataclass
class CpuReading:
    at: float
    machine: float
    groups: dict[str, float]


def read_cpu(groups: dict[str, list[ServerProcess]], db_name: str) -> CpuReading:
    values = {name: _servers_cpu(servers) for name, servers in groups.items()}
    values["postgres"] = _postgres_cpu(db_name)
    values["client"] = _process_cpu(psutil.Process().pid)
    return CpuReading(at=time.monotonic(), machine=_machine_busy(), groups=values)


_DB_COUNTERS = (
    "SELECT xact_commit + xact_rollback, tup_inserted, tup_updated, tup_deleted "
    "FROM pg_stat_database WHERE datname = $1"
)


async def _db_counters(admin_url: str, db_name: str) -> tuple[int, int, int, int]:
    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        row = await conn.fetchrow(_DB_COUNTERS, db_name)
    finally:
        await conn.close()
    if row is None:
        return (0, 0, 0, 0)
    return (int(row[0]), int(row[1]), int(row[2]), int(row[3]))


# ---- one N ---------------------------------------------------------------------------------


@dataclass
class Stack:
    simulator: ServerProcess
    apis: list[ServerProcess]
    workers: list[ServerProcess]

    def groups(self) -> dict[str, list[ServerProcess]]:
        return {"api": self.apis, "worker": self.workers, "simulator": [self.simulator]}


def _start_stack(
    n: int, db: BenchDatabase, simulator: ServerProcess, provider_key: str, tmp: Path
) -> Stack:
    base = {
        "DATABASE_URL": db.url,
        "POYO_API_KEY": provider_key,
        "POYO_BASE_URL": simulator.url,
        "RATE_LIMIT_JOBS_PER_MINUTE": "0",  # thousands of jobs from one key: not under test
        "ARCHIVE_ENABLED": "false",  # outputs on loopback; archiving is its own benchmark
    }
    cli = str(venv_bin("poyo-relay"))
    ports = [free_port() for _ in range(n)]
    apis = [
        ServerProcess(
            f"scaleout-n{n}-api{i + 1}",
            [cli, "serve", "--port", str(port)],
            service_env(
                base | {"RUN_WORKER": "false", "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}"}
            ),
            tmp,
            port,
        ).start()
        for i, port in enumerate(ports)
    ]
    workers = []
    for i in range(n):
        metrics = free_port()
        workers.append(
            ServerProcess(
                f"scaleout-n{n}-worker{i + 1}",
                [cli, "worker", "--metrics-host", "127.0.0.1", "--metrics-port", str(metrics)],
                service_env(base | {"PUBLIC_BASE_URL": f"http://127.0.0.1:{ports[0]}"}),
                tmp,
                metrics,
            ).start()
        )
    stack = Stack(simulator, apis, workers)
    try:
        for api in apis:
            api.wait_ready("/readyz")
        for worker in workers:
            worker.wait_ready("/metrics")
    except BaseException:
        _stop(stack)
        raise
    return stack


def _stop(stack: Stack) -> None:
    for server in [*stack.apis, *stack.workers]:
        server.stop()


async def _wait_terminal(
    pg: asyncpg.Connection, ids: list[str], seconds: float, simulator: ServerProcess
) -> int:
    """Until every job of `ids` is terminal; the number of queries it took."""
    query = (
        "SELECT count(*) FROM jobs WHERE id = ANY($1::text[]) AND status IN ('succeeded', 'failed')"
    )
    deadline = time.monotonic() + seconds
    queries = 0
    while True:
        done = int(await pg.fetchval(query, ids))
        queries += 1
        if done >= len(ids):
            return queries
        if time.monotonic() > deadline:
            raise BenchFailure(
                f"only {done} of {len(ids)} jobs terminal after {seconds:g}s; simulator log:\n"
                f"{simulator.log_tail(5)}"
            )
        await asyncio.sleep(0.1)


_JOB_TIMES = "SELECT status, created_at, completed_at FROM jobs WHERE id = ANY($1::text[])"
_CALLBACKS = (
    "SELECT type, count(*), min(created_at), max(created_at) FROM job_events "
    "WHERE job_id = ANY($1::text[]) AND type LIKE 'callback.%' GROUP BY type"
)


def _count_in_log(server: ServerProcess, needle: str) -> int | None:
    if server.log_path is None or not server.log_path.exists():
        return None
    with server.log_path.open(errors="replace") as handle:
        return sum(line.count(needle) for line in handle)


async def run_n(
    n: int,
    db: BenchDatabase,
    simulator: ServerProcess,
    provider_key: str,
    token: str,
    scale: ScaleSize,
    sampler: MemorySampler,
    tmp: Path,
) -> dict[str, Any]:
    say(f"scaleout [N={n}]: starting {n} API and {n} worker process(es)")
    stack = _start_stack(n, db, simulator, provider_key, tmp)
    labels = [f"scaleout[N={n}] {s.name.rsplit('-', 1)[1]}" for s in stack.apis + stack.workers]
    for label, server in zip(labels, stack.apis + stack.workers, strict=True):
        sampler.watch(label, server)
    admin = postgres_admin_url()
    name = db.name
    ports = [api.port for api in stack.apis]
    pg = await asyncpg.connect(db.raw, timeout=10)
    try:
        warm = await submit(ports, token, scale.warmup_jobs, min(CONCURRENCY, scale.warmup_jobs))
        if warm.problems:
            raise BenchFailure(f"warm-up: {len(warm.problems)} failed; {warm.problems[0]}")
        await _wait_terminal(pg, warm.ids, scale.timeout, simulator)
        await asyncio.sleep(1.2)  # the backends report their counters at most once a second
        counters_a = await _db_counters(admin, name)
        cpu_a = read_cpu(stack.groups(), name)
        logged_a = [_count_in_log(api, CALLBACK_ROUTE) for api in stack.apis]
        say(
            f"scaleout [N={n}]: {scale.jobs:,} jobs at concurrency {CONCURRENCY}, "
            f"round-robin over {n} API process(es)"
        )
        sub = await submit(ports, token, scale.jobs, CONCURRENCY)
        if sub.problems:
            raise BenchFailure(f"{len(sub.problems)} submissions failed; first: {sub.problems[0]}")
        polls = await _wait_terminal(pg, sub.ids, scale.timeout, simulator)
        cpu_b = read_cpu(stack.groups(), name)
        times = await pg.fetch(_JOB_TIMES, sub.ids)
        callbacks = await pg.fetch(_CALLBACKS, sub.ids)
        polls += 2  # the two reads above
    finally:
        await pg.close()
        for label in labels:
            sampler.unwatch(label)
        errors = [e for s in stack.apis + stack.workers for e in s.log_errors()]
        _stop(stack)
    await asyncio.sleep(0.5)  # exiting backends report their counters
    counters_b = await _db_counters(admin, name)
    per_api_callbacks = [
        None if a is None or b is None else b - a
        for a, b in zip(
            logged_a, [_count_in_log(api, CALLBACK_ROUTE) for api in stack.apis], strict=True
        )
    ]
    return _measure(
        n, scale, sub, times, callbacks, cpu_a, cpu_b, counters_a, counters_b, polls,
        per_api_callbacks, errors,
    )  # fmt: skip


def _measure(
    n: int,
    scale: ScaleSize,
    sub: Submission,
    times: list[asyncpg.Record],
    callbacks: list[asyncpg.Record],
    cpu_a: CpuReading,
    cpu_b: CpuReading,
    counters_a: tuple[int, int, int, int],
    counters_b: tuple[int, int, int, int],
    own_queries: int,
    per_api_callbacks: list[int | None],
    errors: list[str],
) -> dict[str, Any]:
    m = len(sub.ids)
    statuses: dict[str, int] = {}
    lifetimes: list[float] = []
    for status, created, completed in times:
        statuses[status] = statuses.get(status, 0) + 1
        if completed is not None:
            lifetimes.append((completed - created).total_seconds())
    first: datetime = min(r[1] for r in times)
    last: datetime = max(r[2] for r in times if r[2] is not None)
    span = max(1e-9, (last - first).total_seconds())
    by_type = {str(r[0]): (int(r[1]), r[2], r[3]) for r in callbacks}
    received, cb_first, cb_last = by_type.get("callback.received", (0, None, None))
    cb_span = (cb_last - cb_first).total_seconds() if cb_first and cb_last else 0.0
    wall = max(1e-9, cpu_b.at - cpu_a.at)
    cpu_ms = {g: (cpu_b.groups[g] - cpu_a.groups[g]) * 1000 / max(1, m) for g in GROUPS}
    busy = (cpu_b.machine - cpu_a.machine) / wall
    ours = sum(cpu_b.groups[g] - cpu_a.groups[g] for g in GROUPS) / wall
    # The benchmark's own polling queries are transactions too: not the service's.
    xacts = counters_b[0] - counters_a[0] - own_queries
    return {
        "processes": n,
        "jobs": m,
        "concurrency": CONCURRENCY,
        "statuses": statuses,
        "submit_seconds": sub.seconds,
        "submit_jobs_per_s": m / sub.seconds,
        "submit_p50_ms": percentile(sub.latencies, 50) * 1000,
        "submit_p99_ms": percentile(sub.latencies, 99) * 1000,
        "requests_per_api": list(sub.per_api.values()),
        "jobs_per_s": m / span,
        "span_seconds": span,
        "created_to_terminal_p50_ms": percentile(lifetimes, 50) * 1000,
        "created_to_terminal_p99_ms": percentile(lifetimes, 99) * 1000,
        "callbacks_received": received,
        "callback_events": {k: v[0] for k, v in by_type.items()},
        "callbacks_per_s": received / cb_span if cb_span > 0 else float("nan"),
        "callbacks_per_api": per_api_callbacks,
        "cpu_ms_per_job": cpu_ms,
        "cpu_ms_per_job_total": sum(cpu_ms.values()),
        "cores_busy": busy,
        "cores_others": max(0.0, busy - ours),
        "db_transactions_per_job": xacts / max(1, m),
        "db_rows_inserted_per_job": (counters_b[1] - counters_a[1]) / max(1, m),
        "db_rows_updated_per_job": (counters_b[2] - counters_a[2]) / max(1, m),
        "db_rows_deleted_per_job": (counters_b[3] - counters_a[3]) / max(1, m),
        "log_errors": errors,
    }


# ---- pgbench -------------------------------------------------------------------------------


_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.M)
_LATENCY = re.compile(r"^latency average = ([0-9.]+) ms", re.M)
_FAILED = re.compile(r"^number of failed transactions: ([0-9]+)", re.M)


async def run_pgbench(scale: ScaleSize) -> dict[str, Any]:
    """pgbench on a scratch database of the benchmarks' PostgreSQL server."""
    binary = shutil.which("pgbench")
    if binary is None:
        say("pgbench not found (apt-get install -y postgresql-contrib): skipped")
        return {"skipped": "pgbench not found"}
    name = f"poyo_relay_bench_pgbench_{uuid.uuid4().hex[:8]}"
    url = await create_postgres_database(name)
    out: dict[str, Any] = {
        "scale": scale.pgbench_scale,
        "clients": PGBENCH_CLIENTS,
        "threads": PGBENCH_THREADS,
        "seconds": scale.pgbench_seconds,
    }
    try:
        say(f"scaleout: pgbench -i -s {scale.pgbench_scale}")
        began = time.monotonic()
        await _pgbench([binary, "-i", "-q", "-s", str(scale.pgbench_scale), url])
        out["init_seconds"] = time.monotonic() - began
        for key, extra in (("tpcb", []), ("select_only", ["-S"])):
            say(
                f"scaleout: pgbench {' '.join(extra)} -c {PGBENCH_CLIENTS} -j "
                f"{PGBENCH_THREADS} -T {scale.pgbench_seconds}".replace("  ", " ")
            )
            psutil.cpu_times_percent(interval=None)  # from here: the next call's interval
            text = await _pgbench(
                [binary, *extra, "-c", str(PGBENCH_CLIENTS), "-j", str(PGBENCH_THREADS),
                 "-T", str(scale.pgbench_seconds), url]
            )  # fmt: skip
            cpu = psutil.cpu_times_percent(interval=None)
            tps, latency, failed = _TPS.search(text), _LATENCY.search(text), _FAILED.search(text)
            if tps is None:
                raise BenchFailure(f"pgbench printed no tps:\n{text[-1000:]}")
            out[key] = {
                "tps": float(tps.group(1)),
                "latency_ms": float(latency.group(1)) if latency else float("nan"),
                "failed": int(failed.group(1)) if failed else 0,
                "cores_idle": cpu.idle / 100 * (psutil.cpu_count() or 1),
            }
    finally:
        await drop_postgres_database(name)
    return out


async def _pgbench(argv: list[str]) -> str:
    result = await asyncio.to_thread(
        subprocess.run, argv, capture_output=True, text=True, check=False, timeout=600
    )
    if result.returncode != 0:
        # The URL (argv's last) may carry a password: not printed.
        raise BenchFailure(
            f"pgbench {' '.join(argv[1:-1])} failed (exit {result.returncode}):\n"
            f"{result.stderr[-1000:]}"
        )
    return result.stdout + result.stderr


# ---- the benchmark --------------------------------------------------------------------------


async def run_backend(backend: str, size: Size, sampler: MemorySampler) -> dict[str, Any]:
    if backend != "postgresql":
        return {"skipped": "PostgreSQL only"}
    scale = SCALE_SIZES[size.name]
    results: dict[str, Any] = {"jobs": scale.jobs, "concurrency": CONCURRENCY, "runs": []}
    with workdir() as tmp:
        say("scaleout: preparing the database")
        db = await create_database(backend, tmp)
        simulator: ServerProcess | None = None
        try:
            provider_key = "sim-" + secrets.token_urlsafe(16)
            sim_port = free_port()
            simulator = ServerProcess(
                "scaleout-simulator",
                [
                    str(venv_bin("poyo-relay")), "sandbox", "--port", str(sim_port),
                    "--queue-seconds", str(QUEUE_SECONDS), "--run-seconds", str(RUN_SECONDS),
                    "--api-key", provider_key,
                ],
                service_env({}), tmp, sim_port,
            ).start()  # fmt: skip
            simulator.wait_ready("/_sandbox/stats")
            sampler.watch("scaleout simulator", simulator)
            database = Database(load_settings(database_url=db.url, _env_file=None))
            try:
                _, token = await create_key(database, name="bench")
            finally:
                await database.dispose()
            for n in PROCESS_COUNTS:
                results["runs"].append(
                    await run_n(n, db, simulator, provider_key, token, scale, sampler, tmp)
                )
            sampler.unwatch("scaleout simulator")
            simulator_errors = simulator.log_errors()
        finally:
            if simulator is not None:
                simulator.stop()
            await drop_database(db)
    results["pgbench"] = await run_pgbench(scale)
    results["failures"] = _report(results, simulator_errors)
    return results


def _report(results: dict[str, Any], simulator_errors: list[str]) -> list[str]:
    runs: list[dict[str, Any]] = results["runs"]
    heads = ("what", *(f"N = {r['processes']}" for r in runs))

    def row(title: str, key: str, digits: int = 1) -> tuple[str, ...]:
        return (title, *(fmt(float(r[key]), digits) for r in runs))

    def listed(values: Sequence[int | None]) -> str:
        return " / ".join("-" if v is None else f"{v:,}" for v in values)

    rows: list[tuple[str, ...]] = [
        ("API + worker processes", *(f"{r['processes']} + {r['processes']}" for r in runs)),
        ("jobs (concurrency)", *(f"{r['jobs']:,} ({r['concurrency']})" for r in runs)),
        ("statuses", *(_statuses(r) for r in runs)),
        row("submission (POST /v1/jobs), jobs/s", "submit_jobs_per_s"),
        row("  POST p50, ms", "submit_p50_ms"),
        row("  POST p99, ms", "submit_p99_ms"),
        ("  requests per API process", *(listed(r["requests_per_api"]) for r in runs)),
        row("end to end, first created -> last terminal, jobs/s", "jobs_per_s"),
        row("created -> terminal p50, ms", "created_to_terminal_p50_ms", 0),
        row("created -> terminal p99, ms", "created_to_terminal_p99_ms", 0),
        row("callbacks ingested/s (first -> last received)", "callbacks_per_s"),
        (
            "  callbacks per API process (access log)",
            *(listed(r["callbacks_per_api"]) for r in runs),
        ),
    ]
    for group in GROUPS:
        rows.append(
            (
                f"CPU ms per job: {GROUP_TITLES[group]}",
                *(fmt(r["cpu_ms_per_job"][group], 2) for r in runs),
            )
        )
    rows += [
        row("CPU ms per job: all of the above", "cpu_ms_per_job_total", 2),
        row("cores busy (the machine's, while measured)", "cores_busy", 2),
        ("  of which other work", *(fmt(r["cores_others"], 2) for r in runs)),
        row("DB transactions per job (pg_stat_database, approx.)", "db_transactions_per_job"),
        row("DB rows inserted per job", "db_rows_inserted_per_job"),
        row("DB rows updated per job", "db_rows_updated_per_job"),
        ("server log errors", *(str(len(r["log_errors"])) for r in runs)),
    ]
    print_table(
        f"scaleout [postgresql]: N x `poyo-relay serve` (RUN_WORKER=false) + N x `poyo-relay "
        f"worker` + `poyo-relay sandbox` (tasks {QUEUE_SECONDS + RUN_SECONDS:g}s), one database",
        heads,
        rows,
    )
    bench = results["pgbench"]
    if "skipped" in bench:
        print(f"\npgbench: skipped ({bench['skipped']})")
    else:
        print_table(
            f"scaleout: pgbench on this machine's PostgreSQL (-s {bench['scale']}, "
            f"-c {bench['clients']} -j {bench['threads']} -T {bench['seconds']}; "
            f"init {bench['init_seconds']:.1f}s; pgbench's own client shares the cores)",
            ("run", "tps", "latency avg ms", "failed", "cores idle"),
            [
                (title, fmt(bench[key]["tps"], 0), fmt(bench[key]["latency_ms"], 2),
                 bench[key]["failed"], fmt(bench[key]["cores_idle"], 2))
                for key, title in (("tpcb", "TPC-B-like (default)"),
                                   ("select_only", "select-only (-S)"))
            ],
        )  # fmt: skip
        _print_estimate(runs, bench)
    failures = []
    for r in runs:
        for line in r["log_errors"]:
            print(f"  log (N={r['processes']}): {line}")
        if r["statuses"].get("succeeded", 0) != r["jobs"]:
            failures.append(f"N={r['processes']}: expected {r['jobs']} succeeded, {r['statuses']}")
        if r["callbacks_received"] < r["jobs"]:
            failures.append(
                f"N={r['processes']}: {r['callbacks_received']} callbacks received for "
                f"{r['jobs']} jobs"
            )
        if r["log_errors"]:
            failures.append(f"N={r['processes']}: server logged errors: {r['log_errors'][0]}")
    for line in simulator_errors:
        print(f"  log (simulator): {line}")
    if simulator_errors:
        failures.append(f"simulator logged errors: {simulator_errors[0]}")
    return failures


def _statuses(run: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(run["statuses"].items()))


def _print_estimate(runs: list[dict[str, Any]], bench: dict[str, Any]) -> None:
    """processes ~ jobs/s x CPU-ms-per-job / 1000 / utilisation; DB transactions/s vs TPS."""
    last = runs[-1]
    rows = []
    for rate in TARGET_RATES:
        api = rate * last["cpu_ms_per_job"]["api"] / 1000 / TARGET_UTILISATION
        worker = rate * last["cpu_ms_per_job"]["worker"] / 1000 / TARGET_UTILISATION
        postgres = rate * last["cpu_ms_per_job"]["postgres"] / 1000 / TARGET_UTILISATION
        xacts = rate * last["db_transactions_per_job"]
        rows.append(
            (
                f"{rate:,} jobs/s",
                fmt(api, 1),
                fmt(worker, 1),
                fmt(postgres, 1),
                f"{xacts:,.0f} ({xacts / bench['tpcb']['tps']:.2f} of TPC-B, "
                f"{xacts / bench['select_only']['tps']:.2f} of -S)",
            )
        )
    print_table(
        f"scaleout: what N = {last['processes']}'s CPU per job implies at "
        f"{TARGET_UTILISATION:.0%} of a core per process (processes ~ jobs/s x CPU ms per "
        "job / 1000 / utilisation); a rough guide, not a measurement",
        ("target", "API processes", "worker processes", "PostgreSQL cores", "DB txn/s needed"),
        rows,
    )
