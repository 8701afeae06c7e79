"""The catalog benchmark (issue 12): what knowing all 152 models costs.

(a) Start-up. A fresh interpreter that builds the catalog (parse the shipped snapshot,
    compile every model's schema, pick each model's example), against the same interpreter
    importing the service alone; and `poyo-relay serve` from launch to `/readyz` on a new
    database (which seeds the catalog) and again on the same one. Goal: under 2 s.
(b) Validation's share of POST /v1/jobs. `poyo-relay serve` (RUN_WORKER=false, in front of
    `poyo-relay sandbox`, tasks that never finish) takes jobs for every model's example in
    turn; the server's CPU time per request is compared with the CPU time of validating the
    same inputs here, with the same code. Goal: under 5 %.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import subprocess
import sys
import time
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]

from app.auth.service import create_key
from app.catalog.compiled import Catalog
from app.catalog.document import load_snapshot
from app.config import load_settings
from app.db import Database
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
    print_table,
    say,
    service_env,
    venv_bin,
    workdir,
)

STARTUP_GOAL_SECONDS = 2.0
SHARE_GOAL = 0.05
CONCURRENCY = 8
BUILD = "from app.catalog.compiled import Catalog; from app.catalog.document import load_snapshot"


def _interpreter_seconds(code: str, runs: int) -> float:
    """Median wall time of `python -c code` in a fresh interpreter."""
    timings = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=60)
        timings.append(time.perf_counter() - began)
    return median(timings)


def _serve(db: BenchDatabase, name: str, sim_url: str, provider_key: str) -> ServerProcess:
    port = free_port()
    return ServerProcess(
        name,
        [str(venv_bin("poyo-relay")), "serve", "--port", str(port)],
        service_env(
            {
                "DATABASE_URL": db.url,
                "POYO_API_KEY": provider_key,
                "POYO_BASE_URL": sim_url,
                "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
                "RUN_WORKER": "false",
                "RATE_LIMIT_JOBS_PER_MINUTE": "0",
            }
        ),
        db.workdir,
        port,
    )


def _ready_in(server: ServerProcess) -> float:
    began = time.perf_counter()
    server.start()
    server.wait_ready("/readyz")
    return time.perf_counter() - began


def validation_seconds(catalog: Catalog, inputs: list[tuple[str, Any]], rounds: int) -> float:
    """CPU seconds one validation takes here, the median over `rounds` passes."""
    per_pass = []
    for _ in range(rounds):
        began = time.process_time()
        for model, data in inputs:
            catalog.validate(model, data)
        per_pass.append((time.process_time() - began) / len(inputs))
    return median(per_pass)


async def _post_jobs(url: str, token: str, inputs: list[tuple[str, Any]], count: int) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    jobs = itertools.islice(itertools.cycle(inputs), count)
    problems: list[str] = []
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:

        async def client() -> None:
            for model, data in jobs:
                response = await http.post("/v1/jobs", json={"model": model, "input": data})
                if response.status_code != 201:
                    problems.append(f"{model}: {response.status_code} {response.text[:200]}")

        await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    if problems:
        raise BenchFailure(f"{len(problems)} jobs refused; first: {problems[0]}")


async def run_backend(backend: str, size: Size, sampler: MemorySampler) -> dict[str, Any]:
    catalog = Catalog(load_snapshot())
    inputs = [(model, spec.example) for model, spec in catalog.models.items()]
    build = _interpreter_seconds(f"{BUILD}; Catalog(load_snapshot())", size.catalog_startups)
    bare = _interpreter_seconds(BUILD, size.catalog_startups)
    with workdir() as tmp:
        db = await create_database(backend, tmp)
        servers: list[ServerProcess] = []
        try:
            provider_key = "sim-" + secrets.token_urlsafe(16)
            sim_port = free_port()
            simulator = ServerProcess(
                f"catalog-simulator-{backend}",
                [str(venv_bin("poyo-relay")), "sandbox", "--port", str(sim_port),
                 "--queue-seconds", "3600", "--api-key", provider_key],
                service_env({}), tmp, sim_port,
            ).start()  # fmt: skip
            servers.append(simulator)
            simulator.wait_ready("/_sandbox/stats")
            first = _serve(db, f"catalog-first-start-{backend}", simulator.url, provider_key)
            servers.append(first)
            cold = _ready_in(first)
            first.stop()
            service = _serve(db, f"catalog-service-{backend}", simulator.url, provider_key)
            servers.append(service)
            warm = _ready_in(service)
            sampler.watch(f"catalog[{backend}] api", service)

            database = Database(load_settings(database_url=db.url, _env_file=None))
            try:
                _, token = await create_key(database, name="bench")
            finally:
                await database.dispose()
            await _post_jobs(service.url, token, inputs, len(inputs))  # warm up
            process = psutil.Process(service.worker_pids()[0])
            before = process.cpu_times()
            count = size.catalog_jobs
            say(f"catalog [{backend}]: {count:,} jobs over {len(inputs)} models")
            await _post_jobs(service.url, token, inputs, count)
            after = process.cpu_times()
            server_cpu = (after.user - before.user + after.system - before.system) / count
        finally:
            for server in reversed(servers):
                server.stop()
            await drop_database(db)
    validate = validation_seconds(catalog, inputs, rounds=20)
    return _report(backend, build, bare, cold, warm, server_cpu, validate, len(inputs), count)


def _report(
    backend: str,
    build: float,
    bare: float,
    cold: float,
    warm: float,
    server_cpu: float,
    validate: float,
    models: int,
    count: int,
) -> dict[str, Any]:
    share = validate / server_cpu
    print_table(
        f"catalog [{backend}] (a): start-up with all {models} models",
        ("what", "seconds", "vs baseline", f"goal < {STARTUP_GOAL_SECONDS:g} s"),
        [
            ("interpreter: import + build the catalog", fmt(build, 3), fmt(build / bare, 2), ""),
            ("interpreter: import the catalog code (baseline)", fmt(bare, 3), "1.00", ""),
            ("serve to /readyz, new database", fmt(cold, 2), fmt(cold / bare, 2),
             "met" if cold < STARTUP_GOAL_SECONDS else "MISSED"),
            ("serve to /readyz, again", fmt(warm, 2), fmt(warm / bare, 2),
             "met" if warm < STARTUP_GOAL_SECONDS else "MISSED"),
        ],
    )  # fmt: skip
    print_table(
        f"catalog [{backend}] (b): validation's share of POST /v1/jobs ({count:,} jobs)",
        ("server CPU per job", "validation per job", "share", f"goal < {SHARE_GOAL:.0%}"),
        [
            (
                f"{server_cpu * 1e3:.2f} ms",
                f"{validate * 1e6:.1f} us",
                f"{share:.2%}",
                "met" if share < SHARE_GOAL else "MISSED",
            )
        ],
    )
    return {
        "startup": {"build_s": build, "import_s": bare, "serve_cold_s": cold, "serve_s": warm},
        "server_cpu_per_job_s": server_cpu,
        "validation_per_job_s": validate,
        "validation_share": share,
        "jobs": count,
    }
