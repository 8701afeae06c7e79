"""Issue 6 §3 and issue 19: end to end, through the API, to the simulator and back.

`poyo-relay sandbox` (the PoYo simulator, fast tasks) and `poyo-relay serve` (the API with
its embedded worker, default worker settings, no webhook endpoint, no `webhook_url`) run
as their own processes. First, unloaded: one client submits jobs one at a time, taking
turns with direct submissions to the simulator (the same body the service sends), for the
latency of `POST /v1/jobs` against the simulator's own. Then, once those jobs are settled,
N jobs are submitted over HTTP at concurrency 16; the simulator POSTs each job's callback
when its task ends; the benchmark waits until every job is terminal, then until every
succeeded job's outputs are archived, and reads the timings from the database: jobs/s,
the time from a job's `callback.received` event to its `completed_at`, and the CPU time
(psutil, user + system) the service, the simulator and the database's backends used per
job, from just before the first submission to the last terminal job, and to the last
archive settled.

With `baseline`, the same run is repeated against another commit of the service (a
`git worktree` of it, served by the same virtualenv with its tree first on PYTHONPATH;
the simulator stays the current tree's) and the two are compared.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
import traceback
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench import profile
from bench.common import (
    REPO_ROOT,
    BenchDatabase,
    BenchFailure,
    CpuMeter,
    MemorySampler,
    ServerProcess,
    Size,
    create_database,
    database_backend_pids,
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
# Unloaded POST /v1/jobs: jobs sent one at a time (after a few not counted), per size.
SEQUENTIAL = {"smoke": 20, "full": 100}
SEQUENTIAL_WARMUP = 5
# ... in groups that end before the first of their callbacks can arrive (tasks take
# QUEUE_SECONDS + RUN_SECONDS = 0.25 s), each group settled before the next: while a
# request is timed, neither server has anything else to do.
GROUP_SECONDS = 0.15
GROUP_MAX = 8
POLL_SECONDS = 0.05
SINK_WAIT_SECONDS = 15.0
# Goals. Issue 6: callback -> terminal p99 <= 2 s. Issue 19: <= 500 ms; service CPU per job
# (create -> terminal) <= 4 ms; unloaded POST p50 <= the simulator's submit p50 + 3 ms;
# throughput with one serve process on PostgreSQL >= 4 x the baseline's.
P99_GOAL_S = 2.0
P99_GOAL_19_S = 0.5
CPU_GOAL_MS = 4.0
POST_OVERHEAD_GOAL_MS = 3.0
THROUGHPUT_GOAL_RATIO = 4.0
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
         WHERE e.job_id = j.id AND e.type = 'callback.received') AS callback_at,
       j.archive_status
FROM jobs j
"""
# Terminal jobs, and terminal jobs whose archive is settled (none due, or archived, or
# given up: `archive_status` is null or not 'pending'; app/jobs/states.py ArchiveStatus).
_PROGRESS = """
SELECT coalesce(sum(CASE WHEN status IN ('succeeded', 'failed') THEN 1 ELSE 0 END), 0),
       coalesce(sum(CASE WHEN status IN ('succeeded', 'failed')
                          AND (archive_status IS NULL OR archive_status <> 'pending')
                         THEN 1 ELSE 0 END), 0)
FROM jobs
"""

Row = tuple[str, str, datetime, datetime | None, datetime | None, str | None]


def _parse_time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


async def _timings(db: BenchDatabase, ids: set[str]) -> list[Row]:
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
    for job_id, status, created, completed, callback, archive in rows:
        if job_id not in ids:
            continue
        created_at = _parse_time(created)
        assert created_at is not None
        out.append(
            (job_id, status, created_at, _parse_time(completed), _parse_time(callback), archive)
        )
    return out


class Progress:
    """Terminal and settled job counts, read on one kept connection (its PostgreSQL backend
    is left out of the database's CPU)."""

    def __init__(self, db: BenchDatabase) -> None:
        self.db = db
        self.backend_pid: int | None = None
        self._pg: asyncpg.Connection | None = None
        self._lite: sqlite3.Connection | None = None

    async def __aenter__(self) -> Progress:
        if self.db.is_sqlite:
            self._lite = sqlite3.connect(self.db.raw, timeout=30)
        else:
            self._pg = await asyncpg.connect(self.db.raw)
            self.backend_pid = int(await self._pg.fetchval("SELECT pg_backend_pid()"))
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._lite is not None:
            self._lite.close()
        if self._pg is not None:
            await self._pg.close()

    async def counts(self) -> tuple[int, int]:
        if self._lite is not None:
            terminal, settled = self._lite.execute(_PROGRESS).fetchone()
        else:
            assert self._pg is not None
            terminal, settled = await self._pg.fetchrow(_PROGRESS)
        return int(terminal), int(settled)


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


# ---- the unloaded phase: POST /v1/jobs one at a time, and the simulator's own submit ------------


class CallbackSink:
    """A loopback HTTP/1.1 server answering 204 to every request: where the simulator's
    callbacks for the benchmark's direct submissions go (a closed port would only make it
    retry each one three times)."""

    def __init__(self) -> None:
        self.received = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._arrived = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> CallbackSink:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    async def wait_for(self, count: int, seconds: float) -> int:
        """Until `count` requests have arrived, or `seconds` passed; how many arrived."""
        deadline = time.monotonic() + seconds
        while self.received < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        return self.received

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                if length:
                    await reader.readexactly(length)
                self.received += 1
                self._arrived.set()
                writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


@dataclass
class Unloaded:
    service_ms: list[float] = field(default_factory=list)
    simulator_ms: list[float] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)  # warm-up included
    direct: int = 0  # direct submissions to the simulator, warm-up included
    groups: int = 0


async def _unloaded(
    api_url: str,
    token: str,
    simulator: ServerProcess,
    provider_key: str,
    progress: Progress,
    deadline: float,
    count: int,
) -> Unloaded:
    """`count` jobs (after SEQUENTIAL_WARMUP) one at a time from one client, each followed
    by one submission straight to the simulator with the body the service sends (app/
    provider/client.py: model, callback_url, input; bearer key; Idempotency-Key), its
    callback to a sink of ours. A group ends after GROUP_SECONDS or GROUP_MAX jobs; then
    every job so far must be terminal with its archive settled, and every direct task must
    have called back, before the next group starts."""
    result = Unloaded()
    api_headers = {"Authorization": f"Bearer {token}"}
    sim_headers = {"Accept": "application/json", "Authorization": f"Bearer {provider_key}"}
    async with (
        CallbackSink() as sink,
        httpx.AsyncClient(base_url=api_url, timeout=30) as api,
        httpx.AsyncClient(base_url=simulator.url, timeout=30, headers=sim_headers) as sim,
    ):
        group_began: float | None = None
        for i in range(SEQUENTIAL_WARMUP + count):
            if group_began is not None and (
                time.monotonic() - group_began > GROUP_SECONDS
                or len(result.job_ids) % GROUP_MAX == 0
            ):
                await _settle_group(result, sink, progress, deadline, simulator)
                group_began = None
            if group_began is None:
                group_began = time.monotonic()
            job = JOBS[i % 2]
            began = time.perf_counter()
            response = await api.post("/v1/jobs", json=job, headers=api_headers)
            service_ms = (time.perf_counter() - began) * 1000
            if response.status_code != 201 or response.json()["status"] == "failed":
                raise BenchFailure(
                    f"unloaded job {i}: HTTP {response.status_code} {response.text[:200]}"
                )
            result.job_ids.append(response.json()["id"])
            body = {
                "model": job["model"],
                "callback_url": f"{sink.url}/direct/{i}",
                "input": job["input"],
            }
            headers = {"Idempotency-Key": f"bench-{uuid.uuid4().hex}"}
            began = time.perf_counter()
            response = await sim.post("/api/generate/submit", json=body, headers=headers)
            simulator_ms = (time.perf_counter() - began) * 1000
            if response.status_code != 200 or response.json().get("code") != 200:
                raise BenchFailure(
                    f"direct submission {i}: HTTP {response.status_code} {response.text[:200]}"
                )
            result.direct += 1
            if i >= SEQUENTIAL_WARMUP:
                result.service_ms.append(service_ms)
                result.simulator_ms.append(simulator_ms)
        await _settle_group(result, sink, progress, deadline, simulator)
    return result


async def _settle_group(
    result: Unloaded,
    sink: CallbackSink,
    progress: Progress,
    deadline: float,
    simulator: ServerProcess,
) -> None:
    await _wait_settled(progress, len(result.job_ids), deadline, "unloaded phase", simulator)
    received = await sink.wait_for(result.direct, SINK_WAIT_SECONDS)
    if received < result.direct:
        raise BenchFailure(
            f"the simulator called back {received} of {result.direct} direct submissions; "
            f"simulator: {await _simulator_stats(simulator.url)}"
        )
    result.groups += 1


# ---- the loaded phase -----------------------------------------------------------------------


@dataclass
class Submitted:
    seconds: float
    problems: list[str]
    job_ids: list[str]
    latencies_ms: list[float]


async def _submit_all(url: str, token: str, count: int) -> Submitted:
    """Submit `count` jobs at SUBMIT_CONCURRENCY."""
    problems: list[str] = []
    ids: list[str] = []
    latencies: list[float] = []
    limit = asyncio.Semaphore(SUBMIT_CONCURRENCY)
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=SUBMIT_CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:

        async def one(i: int) -> None:
            async with limit:
                began = time.perf_counter()
                response = await http.post("/v1/jobs", json=JOBS[i % 2], headers=headers)
                latencies.append((time.perf_counter() - began) * 1000)
            if response.status_code != 201:
                problems.append(f"job {i}: HTTP {response.status_code} {response.text[:200]}")
            elif response.json()["status"] == "failed":
                problems.append(f"job {i}: failed at submission: {response.text[:200]}")
            else:
                ids.append(response.json()["id"])

        began = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(count)))
        return Submitted(time.monotonic() - began, problems, ids, latencies)


async def _wait_settled(
    progress: Progress, total: int, deadline: float, what: str, simulator: ServerProcess
) -> None:
    """Until all `total` jobs in the database are terminal with their archives settled."""
    while True:
        terminal, settled = await progress.counts()
        if settled >= total:
            return
        if time.monotonic() > deadline:
            raise BenchFailure(
                f"{what}: {terminal} of {total} jobs terminal, {settled} archives settled "
                f"in time; simulator: {await _simulator_stats(simulator.url)}"
            )
        await asyncio.sleep(POLL_SECONDS)


@dataclass
class CpuAt:
    """CPU seconds since the first submission, read at one moment."""

    wall: float
    service: float
    simulator: float
    postgres: float


async def _create_key(db: BenchDatabase, cwd: Path, extra_env: Mapping[str, str]) -> str:
    """`poyo-relay keys create` of the tree under test; the token is its output's last word."""
    result = await asyncio.to_thread(
        subprocess.run,
        [str(venv_bin("poyo-relay")), "keys", "create", "bench"],
        env=service_env({"DATABASE_URL": db.url, **extra_env}),
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    words = result.stdout.split()
    if result.returncode != 0 or not words:
        raise BenchFailure(f"keys create failed:\n{result.stdout}\n{result.stderr}")
    return words[-1]


# ---- the baseline: another commit in a git worktree -------------------------------------------


@dataclass(frozen=True)
class Tree:
    """The code the service runs: the current checkout, or a worktree of `ref`."""

    label: str  # "current" or "baseline <ref>"
    path: Path | None = None  # None: this checkout
    commit: str | None = None

    @property
    def env(self) -> dict[str, str]:
        if self.path is None:
            return {}
        inherited = os.environ.get("PYTHONPATH", "")
        return {"PYTHONPATH": os.pathsep.join(p for p in (str(self.path), inherited) if p)}

    @property
    def tag(self) -> str:
        return "" if self.path is None else " baseline"


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=120
    )


def resolve_commit(ref: str) -> str | None:
    """The commit `ref` names in this checkout, or None."""
    resolved = _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    return resolved.stdout.strip() if resolved.returncode == 0 else None


@contextlib.contextmanager
def baseline_tree(ref: str) -> Iterator[Tree]:
    """`git worktree add --detach` of `ref` in a temporary directory, removed afterwards
    (`git worktree remove --force`), whatever happens in between."""
    commit = resolve_commit(ref)
    if commit is None:
        raise BenchFailure(f"--baseline {ref}: not a commit of {REPO_ROOT}")
    parent = Path(tempfile.mkdtemp(prefix="poyo-bench-baseline-"))
    path = parent / f"poyo-relay-{commit[:10]}"
    added = False
    try:
        result = _git("worktree", "add", "--detach", str(path), commit)
        if result.returncode != 0:
            raise BenchFailure(f"git worktree add {ref} failed: {result.stderr.strip()}")
        added = True
        tree = Tree(f"baseline {ref}", path, commit)
        # The service must import the worktree's `app`, not this checkout's.
        check = subprocess.run(
            [str(venv_bin("python")), "-c", "import app; print(app.__file__)"],
            env=service_env(tree.env),
            cwd=parent,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if not check.stdout.strip().startswith(str(path)):
            raise BenchFailure(
                f"the baseline's PYTHONPATH imports app from {check.stdout.strip() or '?'} "
                f"({check.stderr.strip()[-300:]}), not from {path}"
            )
        say(f"e2e: baseline {ref} = {commit[:10]} in {path}")
        yield tree
    finally:
        if added:
            removed = _git("worktree", "remove", "--force", str(path))
            if removed.returncode != 0:
                say(f"git worktree remove {path} failed: {removed.stderr.strip()}")
        shutil.rmtree(parent, ignore_errors=True)


# ---- one run ------------------------------------------------------------------------------------


async def run_backend(
    backend: str,
    size: Size,
    sampler: MemorySampler,
    profile_dir: Path | None = None,
    baseline: str | None = None,
) -> dict[str, Any]:
    """With `profile_dir`, py-spy records the service (the current tree's) from the first
    loaded submission until every archive is settled. With `baseline` (a git ref), the run
    is repeated with the service of that commit, and the two compared."""
    current = await _run_tree(backend, size, sampler, profile_dir, Tree("current"))
    if baseline is None:
        return current
    try:
        with baseline_tree(baseline) as tree:
            base = await _run_tree(backend, size, sampler, None, tree)
    except BenchFailure as exc:
        base = {"failures": [str(exc)]}
    except Exception as exc:
        traceback.print_exc()
        base = {"failures": [f"{type(exc).__name__}: {exc}"]}
    base["ref"] = baseline
    comparison = _compare(backend, baseline, current, base)
    failures = list(current.get("failures", [])) + [
        f"baseline {baseline}: {failure}" for failure in base.get("failures", [])
    ]
    return current | {"baseline": base, "comparison": comparison, "failures": failures}


async def _run_tree(
    backend: str, size: Size, sampler: MemorySampler, profile_dir: Path | None, tree: Tree
) -> dict[str, Any]:
    with workdir() as tmp:
        db = await create_database(backend, tmp, tree.env)
        servers: list[ServerProcess] = []
        spy: subprocess.Popen[bytes] | None = None
        meters: list[CpuMeter] = []
        labels = (f"e2e[{backend}]{tree.tag} simulator", f"e2e[{backend}]{tree.tag} api+worker")
        try:
            provider_key = "sim-" + secrets.token_urlsafe(16)
            sim_port, api_port = free_port(), free_port()
            # The simulator is always this checkout's: the provider side is the same in
            # both runs.
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
                        # The simulator's files are on loopback: without this every archive
                        # would be refused and retried for minutes instead of done.
                        "ARCHIVE_ALLOW_PRIVATE": "true",
                        **tree.env,
                    }
                ),
                tmp,
                api_port,
            ).start()
            servers.append(service)
            simulator.wait_ready("/_sandbox/stats")
            service.wait_ready("/readyz")
            sampler.watch(labels[0], simulator)
            sampler.watch(labels[1], service)
            token = await _create_key(db, tmp, tree.env)
            count = size.e2e_jobs
            sequential = SEQUENTIAL.get(size.name, 20)
            began = time.monotonic()
            deadline = began + size.e2e_timeout

            async with Progress(db) as progress:
                say(
                    f"e2e [{backend}] {tree.label}: {sequential} jobs one at a time (after "
                    f"{SEQUENTIAL_WARMUP}), each followed by a direct submission to the simulator"
                )
                unloaded = await _unloaded(
                    service.url, token, simulator, provider_key, progress, deadline, sequential
                )
                before = len(unloaded.job_ids)
                total = before + count

                say(
                    f"e2e [{backend}] {tree.label}: submitting {count:,} jobs at concurrency "
                    f"{SUBMIT_CONCURRENCY} (simulated tasks take "
                    f"{QUEUE_SECONDS + RUN_SECONDS:g}s)"
                )
                raw = (profile_dir or tmp) / f"pyspy-e2e-{backend}.txt"
                if profile_dir is not None and profile.available():
                    spy = profile.start(service.worker_pids()[0], size.e2e_timeout + 60, raw)
                    await asyncio.sleep(0.3)
                db_name = db.name
                skip = [progress.backend_pid] if progress.backend_pid else []
                service_cpu = CpuMeter(service.all_pids)
                simulator_cpu = CpuMeter(simulator.all_pids)
                postgres_cpu = CpuMeter(
                    lambda: [] if db.is_sqlite else database_backend_pids(db_name, skip)
                )
                meters = [service_cpu, simulator_cpu, postgres_cpu]
                for meter in meters:
                    meter.start()
                loaded_at = time.monotonic()
                deadline = loaded_at + size.e2e_timeout

                def cpu_now() -> CpuAt:
                    return CpuAt(
                        wall=time.monotonic() - loaded_at,
                        service=service_cpu.read(),
                        simulator=simulator_cpu.read(),
                        postgres=postgres_cpu.read(),
                    )

                submitted = await _submit_all(service.url, token, count)
                if submitted.problems:
                    raise BenchFailure(
                        f"{len(submitted.problems)} submissions failed; first: "
                        f"{submitted.problems[0]}"
                    )
                at_terminal: CpuAt | None = None
                while True:
                    terminal, settled = await progress.counts()
                    if at_terminal is None and terminal >= total:
                        at_terminal = cpu_now()
                    if terminal >= total and settled >= total:
                        at_settled = cpu_now()
                        break
                    if time.monotonic() > deadline:
                        raise BenchFailure(
                            f"only {terminal - before} of {count} jobs terminal and "
                            f"{settled - before} archives settled after "
                            f"{size.e2e_timeout:g}s; simulator: "
                            f"{await _simulator_stats(simulator.url)}"
                        )
                    await asyncio.sleep(POLL_SECONDS)
            for meter in meters:
                meter.stop()
            assert at_terminal is not None
            profiled: dict[str, Any] = {}
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes what it has on Ctrl-C
                await asyncio.to_thread(spy.wait, 30)
                spy = None
                if raw.exists():
                    summary = profile.summarise(raw)
                    profile.print_profile(
                        f"py-spy, e2e [{backend}], the API+worker process, {count:,} jobs, "
                        "until every archive is settled",
                        summary,
                    )
                    profiled = profile.as_dict(summary) | {"raw_file": str(raw)}
            errors = service.log_errors() + simulator.log_errors()
            rows = await _timings(db, set(submitted.job_ids))
            return _report(
                backend, tree, count, submitted, unloaded, at_terminal, at_settled, rows, errors
            ) | {"profile": profiled}
        finally:
            for meter in meters:
                meter.stop()
            if spy is not None and spy.poll() is None:
                spy.send_signal(signal.SIGINT)
                await asyncio.to_thread(spy.wait, 30)
            for label in labels:
                with contextlib.suppress(Exception):
                    sampler.unwatch(label)
            for server in reversed(servers):
                server.stop()
            await drop_database(db)


def _ms(values: list[float], q: float) -> float:
    return percentile(values, q)


def _per_job_ms(seconds: float, count: int) -> float:
    return seconds * 1000 / count if count else float("nan")


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _report(
    backend: str,
    tree: Tree,
    count: int,
    submitted: Submitted,
    unloaded: Unloaded,
    at_terminal: CpuAt,
    at_settled: CpuAt,
    rows: list[Row],
    errors: list[str],
) -> dict[str, Any]:
    statuses: dict[str, int] = {}
    archives: dict[str, int] = {}
    to_terminal: list[float] = []
    lifetimes: list[float] = []
    without_callback = 0
    for _job_id, status, created, completed, callback, archive in rows:
        statuses[status] = statuses.get(status, 0) + 1
        archives[archive or "none"] = archives.get(archive or "none", 0) + 1
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
    p50, p99 = percentile(to_terminal, 50), percentile(to_terminal, 99)
    post_p50, sim_p50 = _ms(unloaded.service_ms, 50), _ms(unloaded.simulator_ms, 50)
    overhead = post_p50 - sim_p50
    cpu = {
        "service_to_terminal": _per_job_ms(at_terminal.service, count),
        "service_to_archived": _per_job_ms(at_settled.service, count),
        "simulator_to_terminal": _per_job_ms(at_terminal.simulator, count),
        "simulator_to_archived": _per_job_ms(at_settled.simulator, count),
        "postgres_to_terminal": _per_job_ms(at_terminal.postgres, count),
        "postgres_to_archived": _per_job_ms(at_settled.postgres, count),
    }
    is_pg = backend == "postgresql"
    n = len(unloaded.service_ms)
    table = [
        ("jobs", f"{count:,}", ""),
        ("statuses", ", ".join(f"{k} {v:,}" for k, v in sorted(statuses.items())), ""),
        ("archives", ", ".join(f"{k} {v:,}" for k, v in sorted(archives.items())), ""),
        (f"unloaded POST /v1/jobs p50 / p99, ms ({n}, one at a time, {unloaded.groups} groups)",
         f"{fmt(post_p50, 2)} / {fmt(_ms(unloaded.service_ms, 99), 2)}", ""),
        ("unloaded simulator submit p50 / p99, ms (direct)",
         f"{fmt(sim_p50, 2)} / {fmt(_ms(unloaded.simulator_ms, 99), 2)}", ""),
        ("unloaded POST p50 - simulator submit p50, ms", fmt(overhead, 2),
         f"<= {POST_OVERHEAD_GOAL_MS:g}: {_verdict(overhead <= POST_OVERHEAD_GOAL_MS)}"),
        ("submission (POST /v1/jobs), jobs/s", fmt(count / submitted.seconds, 1), ""),
        (f"POST /v1/jobs at concurrency {SUBMIT_CONCURRENCY} p50 / p99, ms",
         f"{fmt(_ms(submitted.latencies_ms, 50), 1)} / {fmt(_ms(submitted.latencies_ms, 99), 1)}",
         ""),
        ("throughput: first created to last terminal, jobs/s", fmt(count / span, 1), ""),
        ("wall time until all terminal / archives settled, s",
         f"{fmt(at_terminal.wall, 1)} / {fmt(at_settled.wall, 1)}", ""),
        ("callback -> terminal p50, ms", fmt(p50 * 1000, 0), ""),
        ("callback -> terminal p99, ms", fmt(p99 * 1000, 0),
         f"<= {P99_GOAL_19_S * 1000:g}: {_verdict(p99 <= P99_GOAL_19_S)} "
         f"(<= {P99_GOAL_S * 1000:g}: {_verdict(p99 <= P99_GOAL_S)})"),
        ("callback -> terminal max, ms", fmt(max(to_terminal, default=0) * 1000, 0), ""),
        ("created -> terminal p50, ms", fmt(percentile(lifetimes, 50) * 1000, 0), ""),
        ("created -> terminal p99, ms", fmt(percentile(lifetimes, 99) * 1000, 0), ""),
        ("service CPU per job, create -> terminal, ms", fmt(cpu["service_to_terminal"], 2),
         f"<= {CPU_GOAL_MS:g}: {_verdict(cpu['service_to_terminal'] <= CPU_GOAL_MS)}"),
        ("service CPU per job, create -> archive settled, ms",
         fmt(cpu["service_to_archived"], 2), ""),
        ("service cores busy until terminal (CPU s / wall s)",
         fmt(at_terminal.service / at_terminal.wall, 2), ""),
        ("simulator CPU per job, to terminal / to archived, ms",
         f"{fmt(cpu['simulator_to_terminal'], 2)} / {fmt(cpu['simulator_to_archived'], 2)}", ""),
        *(
            [("PostgreSQL backends CPU per job, to terminal / to archived, ms",
              f"{fmt(cpu['postgres_to_terminal'], 2)} / {fmt(cpu['postgres_to_archived'], 2)}",
              "")]
            if is_pg else []
        ),
        ("terminal without a received callback", str(without_callback), ""),
        ("server log errors", str(len(errors)), _verdict(not errors)),
    ]  # fmt: skip
    commit = f" ({tree.commit[:10]})" if tree.commit else ""
    print_table(
        f"end to end [{backend}], {tree.label}{commit}: poyo-relay serve (embedded worker, "
        f"default settings) + poyo-relay sandbox",
        ("what", "value", "goal"),
        table,
    )
    for line in errors:
        print(f"  log: {line}")
    failures = []
    if statuses.get("succeeded", 0) != count:
        failures.append(f"expected {count} succeeded jobs, got {statuses}")
    if archives.get("failed"):
        failures.append(f"{archives['failed']} jobs' archives failed: {archives}")
    if errors:
        failures.append(f"server logged errors: {errors[0]}")
    return {
        "backend": backend,
        "tree": tree.label,
        "commit": tree.commit,
        "jobs": count,
        "statuses": statuses,
        "archives": archives,
        "submit_jobs_per_s": count / submitted.seconds,
        "submit_latency_ms": {
            "concurrency": SUBMIT_CONCURRENCY,
            "p50": _ms(submitted.latencies_ms, 50),
            "p99": _ms(submitted.latencies_ms, 99),
        },
        "unloaded_ms": {
            "requests": n,
            "groups": unloaded.groups,
            "post_p50": post_p50,
            "post_p99": _ms(unloaded.service_ms, 99),
            "simulator_submit_p50": sim_p50,
            "simulator_submit_p99": _ms(unloaded.simulator_ms, 99),
            "overhead_p50": overhead,
            "goal_overhead_ms": POST_OVERHEAD_GOAL_MS,
        },
        "throughput_jobs_per_s": count / span,
        "wall_seconds": at_terminal.wall,
        "wall_seconds_to_archived": at_settled.wall,
        "cpu_ms_per_job": cpu,
        "service_cores_busy": at_terminal.service / at_terminal.wall,
        "goal_cpu_ms_per_job": CPU_GOAL_MS,
        "callback_to_terminal_ms": {
            "p50": p50 * 1000,
            "p99": p99 * 1000,
            "max": max(to_terminal, default=0) * 1000,
        },
        "created_to_terminal_ms": {
            "p50": percentile(lifetimes, 50) * 1000,
            "p99": percentile(lifetimes, 99) * 1000,
        },
        "terminal_without_callback": without_callback,
        "goal_p99_s": P99_GOAL_S,
        "goal_p99_issue19_s": P99_GOAL_19_S,
        "failures": failures,
    }


# ---- current vs baseline ----------------------------------------------------------------------


def _get(result: Mapping[str, Any], *path: str) -> float | None:
    value: Any = result
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return float(value) if isinstance(value, int | float) else None


_COMPARED = (
    ("throughput, jobs/s", ("throughput_jobs_per_s",)),
    ("service CPU per job to terminal, ms", ("cpu_ms_per_job", "service_to_terminal")),
    ("service CPU per job to archive settled, ms", ("cpu_ms_per_job", "service_to_archived")),
    ("simulator CPU per job to terminal, ms", ("cpu_ms_per_job", "simulator_to_terminal")),
    ("unloaded POST /v1/jobs p50, ms", ("unloaded_ms", "post_p50")),
    ("unloaded POST p50 - simulator submit p50, ms", ("unloaded_ms", "overhead_p50")),
    ("callback -> terminal p99, ms", ("callback_to_terminal_ms", "p99")),
)


def _compare(
    backend: str, ref: str, current: Mapping[str, Any], base: Mapping[str, Any]
) -> dict[str, Any]:
    rows = []
    out: dict[str, Any] = {"ref": ref, "commit": base.get("commit"), "rows": {}}
    for name, path in _COMPARED:
        now, then = _get(current, *path), _get(base, *path)
        ratio = now / then if now is not None and then else None
        goal = ""
        if path == ("throughput_jobs_per_s",):
            if backend != "postgresql":
                goal = f">= {THROUGHPUT_GOAL_RATIO:g}x: PostgreSQL's goal"
            elif ratio is not None:
                goal = f">= {THROUGHPUT_GOAL_RATIO:g}x: {_verdict(ratio >= THROUGHPUT_GOAL_RATIO)}"
        elif path[0] == "callback_to_terminal_ms" and now is not None:
            goal = f"<= {P99_GOAL_19_S * 1000:g}: {_verdict(now <= P99_GOAL_19_S * 1000)}"
        elif path == ("cpu_ms_per_job", "service_to_terminal") and now is not None:
            goal = f"<= {CPU_GOAL_MS:g}: {_verdict(now <= CPU_GOAL_MS)}"
        elif path == ("unloaded_ms", "overhead_p50") and now is not None:
            goal = f"<= {POST_OVERHEAD_GOAL_MS:g}: {_verdict(now <= POST_OVERHEAD_GOAL_MS)}"
        digits = 1 if path[0] in ("throughput_jobs_per_s", "callback_to_terminal_ms") else 2
        rows.append(
            (name, fmt(now, digits), fmt(then, digits), fmt(ratio, 2) + "x" if ratio else "-", goal)
        )
        out["rows"][name] = {"current": now, "baseline": then, "ratio": ratio}
    commit = base.get("commit")
    print_table(
        f"end to end [{backend}]: current tree vs baseline {ref}"
        + (f" ({str(commit)[:10]})" if commit else " (its run failed)"),
        ("what", "current", "baseline", "current/baseline", "goal"),
        rows,
    )
    return out
