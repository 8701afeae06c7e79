"""What every benchmark shares: databases, server processes, memory sampling, tables.

Benchmarks start real processes on loopback and talk to them over HTTP; nothing here
imports the service into the benchmark's own event loop except to prepare data.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import importlib.metadata
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import psutil  # type: ignore[import-untyped]

from app.config import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
BACKENDS = ("postgresql", "sqlite")


class BenchFailure(Exception):
    """A benchmark broke (lost callbacks, errors, timeouts): the run must exit non-zero."""


# ---- sizes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Size:
    name: str
    # ingest
    ingest_seconds: float
    ingest_rounds: int
    ingest_warmup_seconds: float
    ingest_jobs_a: int
    ingest_jobs_c: int
    # reads
    reads_small: int
    reads_large: int
    reads_samples: int
    reads_warmup: int
    # end to end
    e2e_jobs: int
    e2e_timeout: float
    # catalog
    catalog_jobs: int
    catalog_startups: int
    # archive: the size of the one output archived
    archive_bytes: int
    # waiters: how many wait (half streams, half long-polls), seconds of callbacks per
    # phase, jobs in each callback pool, seconds over which their jobs are ended
    waiters: int
    waiters_ingest_seconds: float
    waiters_pool_jobs: int
    waiters_finish_seconds: float
    # costs: usage with a small and a large history (timed requests per query and size,
    # warm-up requests), then POST /v1/jobs without and with a budget: rounds of each,
    # seconds per round, seconds of warm-up
    costs_small: int
    costs_large: int
    costs_samples: int
    costs_warmup: int
    costs_rounds: int
    costs_seconds: float
    costs_warmup_seconds: float
    costs_admission_calls: int  # budgets.admit() timed in-process, per variant


SIZES = {
    "smoke": Size(
        name="smoke",
        ingest_seconds=2.0,
        ingest_rounds=1,
        ingest_warmup_seconds=0.5,
        ingest_jobs_a=20_000,
        ingest_jobs_c=5_000,
        reads_small=10_000,
        reads_large=50_000,
        reads_samples=100,
        reads_warmup=20,
        e2e_jobs=100,
        e2e_timeout=90.0,
        catalog_jobs=300,
        catalog_startups=1,
        archive_bytes=64 * 2**20,
        waiters=300,
        waiters_ingest_seconds=2.0,
        waiters_pool_jobs=20_000,
        waiters_finish_seconds=1.5,
        costs_small=2_000,
        costs_large=20_000,
        costs_samples=40,
        costs_warmup=5,
        costs_rounds=1,
        costs_seconds=1.5,
        costs_warmup_seconds=1.0,
        costs_admission_calls=300,
    ),
    "full": Size(
        name="full",
        ingest_seconds=10.0,
        ingest_rounds=3,
        ingest_warmup_seconds=1.0,
        ingest_jobs_a=250_000,
        ingest_jobs_c=60_000,
        reads_small=10_000,
        reads_large=1_000_000,
        reads_samples=400,
        reads_warmup=50,
        e2e_jobs=2_000,
        e2e_timeout=300.0,
        catalog_jobs=3_000,
        catalog_startups=5,
        archive_bytes=2**30,
        waiters=5_000,
        waiters_ingest_seconds=20.0,
        waiters_pool_jobs=100_000,
        waiters_finish_seconds=8.0,
        costs_small=10_000,
        costs_large=1_000_000,
        costs_samples=400,
        costs_warmup=50,
        costs_rounds=12,
        costs_seconds=4.0,
        costs_warmup_seconds=2.0,
        costs_admission_calls=4_000,
    ),
}


# ---- statistics and tables ------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest-rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, round(q / 100 * len(ordered) + 0.4999))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def fmt(value: float | int | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if value != value:  # NaN
        return "-"
    return f"{value:,.{digits}f}"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    print(f"\n{title}")
    line = "  ".join("-" * w for w in widths)
    print("  ".join(h.ljust(w) for h, w in zip(cells[0], widths, strict=True)))
    print(line)
    for row in cells[1:]:
        print(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    sys.stdout.flush()


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---- the machine --------------------------------------------------------------------------


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def wrk_version() -> str | None:
    path = shutil.which("wrk")
    if path is None:
        return None
    result = subprocess.run([path, "-v"], capture_output=True, text=True, check=False)
    text = (result.stdout + result.stderr).strip().splitlines()
    return text[0] if text else "wrk"


async def postgres_version(admin_url: str) -> str:
    try:
        conn = await asyncpg.connect(admin_url, timeout=10)
    except Exception as exc:
        return f"unreachable ({type(exc).__name__})"
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def machine_info(pg_version: str) -> dict[str, Any]:
    load = os.getloadavg()
    return {
        "cpu": _cpu_model(),
        "cores_logical": psutil.cpu_count(logical=True),
        "cores_physical": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average": [round(x, 2) for x in load],
        "os": platform.platform(),
        "python": platform.python_version(),
        "fastapi": _version("fastapi"),
        "starlette": _version("starlette"),
        "uvicorn": _version("uvicorn"),
        "uvloop": _version("uvloop"),
        "httptools": _version("httptools"),
        "sqlalchemy": _version("sqlalchemy"),
        "asyncpg": _version("asyncpg"),
        "aiosqlite": _version("aiosqlite"),
        "pydantic": _version("pydantic"),
        "orjson": _version("orjson"),
        "postgresql": pg_version,
        "sqlite": sqlite3.sqlite_version,
        "wrk": wrk_version() or "absent",
        "py-spy": _version("py-spy"),
    }


def print_machine(info: Mapping[str, Any]) -> None:
    rows = [(key, value) for key, value in info.items()]
    print_table("machine", ("what", "value"), rows)


# ---- databases ------------------------------------------------------------------------------


def postgres_admin_url() -> str:
    """The PostgreSQL server benchmarks create their databases on.

    BENCH_POSTGRES_URL, else DATABASE_URL when it names PostgreSQL, else TEST_POSTGRES_URL,
    else postgres@127.0.0.1:5432. Only the server is used: each benchmark creates and drops
    its own database on it.
    """
    for name in ("BENCH_POSTGRES_URL", "DATABASE_URL", "TEST_POSTGRES_URL"):
        value = os.environ.get(name, "")
        if value.startswith(("postgresql", "postgres:")):
            return plain_postgres_url(value)
    return DEFAULT_POSTGRES_URL


def plain_postgres_url(url: str) -> str:
    """An asyncpg (libpq-style) URL from a SQLAlchemy one."""
    for prefix in ("postgresql+asyncpg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url.removeprefix(prefix)
    return url


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    query = ""
    if "?" in url.rsplit("/", 1)[1]:
        query = "?" + url.rsplit("?", 1)[1]
    return f"{base}/{name}{query}"


@dataclass
class BenchDatabase:
    """A database made for one benchmark; `url` is the SQLAlchemy URL the service gets."""

    backend: str
    url: str
    raw: str  # asyncpg URL (PostgreSQL) or file path (SQLite)
    workdir: Path

    @property
    def is_sqlite(self) -> bool:
        return self.backend == "sqlite"

    @property
    def name(self) -> str:
        """The PostgreSQL database's name (as its backends' process titles show it)."""
        return self.raw.rsplit("/", 1)[1].split("?", 1)[0]


async def create_database(
    backend: str, workdir: Path, env: Mapping[str, str] | None = None
) -> BenchDatabase:
    """A fresh, migrated database of this backend; `env` is added to the migrating
    process's environment (e.g. another tree's PYTHONPATH, to migrate with its code)."""
    if backend == "sqlite":
        path = workdir / f"bench-{uuid.uuid4().hex[:8]}.db"
        db = BenchDatabase("sqlite", f"sqlite+aiosqlite:///{path}", str(path), workdir)
    else:
        raw = await create_postgres_database(f"poyo_relay_bench_{uuid.uuid4().hex[:10]}")
        db = BenchDatabase(
            "postgresql", "postgresql+asyncpg://" + raw.split("://", 1)[1], raw, workdir
        )
    await asyncio.to_thread(migrate, db, env)
    return db


def migrate(db: BenchDatabase, extra_env: Mapping[str, str] | None = None) -> None:
    """`poyo-relay migrate` in a child process, as an operator would run it."""
    env = service_env({"DATABASE_URL": db.url, **(extra_env or {})})
    result = subprocess.run(
        [str(venv_bin("poyo-relay")), "migrate"],
        env=env,
        cwd=db.workdir,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if result.returncode != 0:
        raise BenchFailure(f"migration failed:\n{result.stdout}\n{result.stderr}")


def _remove_sqlite(path: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(path + suffix).unlink()


async def drop_database(db: BenchDatabase) -> None:
    if db.is_sqlite:
        _remove_sqlite(db.raw)
        return
    await drop_postgres_database(db.name)


async def create_postgres_database(name: str) -> str:
    """A new, empty database on the benchmarks' PostgreSQL server; its asyncpg URL."""
    admin = postgres_admin_url()
    conn = await asyncpg.connect(admin, timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return _with_database(admin, name)


async def drop_postgres_database(name: str) -> None:
    conn = await asyncpg.connect(postgres_admin_url(), timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="poyo-bench-") as path:
        yield Path(path)


# ---- processes ------------------------------------------------------------------------------


def venv_bin(name: str) -> Path:
    """A console script next to this interpreter (the project's virtualenv)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return candidate
    found = shutil.which(name)
    if found is None:
        raise BenchFailure(f"{name} not found next to {sys.executable} nor on PATH")
    return Path(found)


_SETTING_NAMES = {name.upper() for name in Settings.model_fields}


def service_env(values: Mapping[str, str]) -> dict[str, str]:
    """The environment for a service process: the caller's, minus every setting of the
    service (so defaults apply and a developer's exports do not leak in), plus `values`."""
    env = {k: v for k, v in os.environ.items() if k.upper() not in _SETTING_NAMES}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    env["PYTHONUNBUFFERED"] = "1"
    env.update(values)
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# The service's JSON lines are orjson's (`"level":"error"`, no space); uvicorn's own are
# plain text.
_ERROR_LINE = re.compile(r'"level": ?"(error|critical)"|Traceback|^(ERROR|CRITICAL)[: ]')


@dataclass
class ServerProcess:
    """A server started as a child process, its output in a log file, stopped by its pid."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        self.log_path = self.cwd / f"{self.name.replace(' ', '_')}-{self.port}.log"
        log = self.log_path.open("wb")
        try:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        return self

    def wait_ready(self, path: str = "/healthz", timeout: float = 60.0, workers: int = 1) -> None:
        """Until `path` answers 200 and `workers` worker processes are serving."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise BenchFailure(f"{self.name} exited during start-up:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise BenchFailure(f"{self.name} did not start in {timeout}s:\n{self.log_tail()}")
            if self._answers(path) and len(self.worker_pids()) >= workers:
                break
            time.sleep(0.1)
        if workers > 1:
            # Every worker must have finished its lifespan start-up; give them a moment and
            # make sure many fresh connections are answered.
            time.sleep(1.0)
            for _ in range(20):
                if not self._answers(path):
                    raise BenchFailure(f"{self.name} stopped answering:\n{self.log_tail()}")

    def _answers(self, path: str) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            conn.request("GET", path)
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def worker_pids(self) -> list[int]:
        """The processes doing the work: uvicorn's spawned workers, or the process itself."""
        assert self.proc is not None
        try:
            parent = psutil.Process(self.proc.pid)
            children = parent.children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        workers = []
        for child in children:
            with contextlib.suppress(psutil.Error):
                cmdline = " ".join(child.cmdline())
                if "resource_tracker" not in cmdline and "python" in cmdline:
                    workers.append(child.pid)
        return workers or [self.proc.pid]

    def all_pids(self) -> list[int]:
        assert self.proc is not None
        pids = [self.proc.pid]
        with contextlib.suppress(psutil.Error):
            pids += [c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)]
        return pids

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def log_errors(self, limit: int = 10) -> list[str]:
        """Log lines that report errors or tracebacks (the log is JSON lines or plain)."""
        if self.log_path is None or not self.log_path.exists():
            return []
        found = []
        with self.log_path.open(errors="replace") as handle:
            for line in handle:
                if "ClientDisconnect" in line:
                    continue  # the load generator hung up mid-request when its run ended
                if _ERROR_LINE.search(line):
                    found.append(line.rstrip()[:400])
                    if len(found) >= limit:
                        break
        return found

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to the process we started, then SIGKILL to it and its children if needed."""
        if self.proc is None or self.proc.poll() is not None:
            return
        pids = self.all_pids()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            for pid in reversed(pids):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.proc.wait(5)
        # Workers that outlived their supervisor (they should not) are ended by pid.
        for pid in pids[1:]:
            with contextlib.suppress(psutil.Error):
                child = psutil.Process(pid)
                child.wait(5)


# ---- memory -------------------------------------------------------------------------------


@dataclass
class MemorySampler:
    """Samples the RSS of registered processes (and their children) in a thread."""

    interval: float = 0.1
    peaks: dict[str, tuple[int, int]] = field(default_factory=dict)  # label -> (pid, bytes)
    _watch: dict[str, ServerProcess] = field(default_factory=dict)
    _roles: dict[str, str] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> MemorySampler:
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def watch(self, label: str, server: ServerProcess) -> None:
        with self._lock:
            self._watch[label] = server

    def unwatch(self, label: str) -> None:
        self.sample_once()
        with self._lock:
            self._watch.pop(label, None)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample_once()

    def sample_once(self) -> None:
        with self._lock:
            watched = list(self._watch.items())
        for label, server in watched:
            if server.proc is None:
                continue
            pids = server.all_pids()
            workers = set(server.worker_pids())
            for pid in pids:
                try:
                    rss = psutil.Process(pid).memory_info().rss
                except psutil.Error:
                    continue
                if pid == server.proc.pid:
                    role = "process" if pid in workers else "supervisor"
                else:
                    role = "worker" if pid in workers else "helper (multiprocessing)"
                key = f"{label} {role} pid={pid}"
                with self._lock:
                    previous = self.peaks.get(key, (pid, 0))[1]
                    if rss > previous:
                        self.peaks[key] = (pid, rss)

    def report(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"process": key, "peak_rss_mb": round(rss / 2**20, 1)}
                for key, (_pid, rss) in sorted(self.peaks.items())
            ]


# ---- CPU ------------------------------------------------------------------------------------


def database_backend_pids(db_name: str, exclude: Iterable[int] = ()) -> list[int]:
    """The PostgreSQL backends serving `db_name` (their process title names the database)."""
    skip = set(exclude)
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if (
            process.pid not in skip
            and cmdline
            and cmdline[0].startswith("postgres:")
            and db_name in " ".join(cmdline)
        ):
            found.append(process.pid)
    return found


class CpuMeter:
    """User + system CPU seconds used by a set of processes since `start()`.

    `pids()` names the processes at each reading: a server's process tree (uvicorn's
    supervisor and any workers it spawned), a database's backends. A thread reads them every
    `interval` seconds, so a process that exits between two readings keeps what it had used
    at its last one. Processes are told apart by pid and start time; one first seen after
    `start()` counts from zero if it started since, else from when it was first seen.
    """

    def __init__(self, pids: Callable[[], Iterable[int]], interval: float = 0.25) -> None:
        self._pids = pids
        self.interval = interval
        self._first: dict[tuple[int, float], float] = {}
        self._last: dict[tuple[int, float], float] = {}
        self._started_at = 0.0  # wall clock, as psutil's create_time()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> CpuMeter:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> CpuMeter:
        with self._lock:
            self._first.clear()
            self._last.clear()
            self._started_at = time.time()
        self._sample(baseline=True)
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="cpu-meter", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def read(self) -> float:
        """CPU seconds used since `start()`, read now."""
        self._sample()
        with self._lock:
            return sum(last - self._first[key] for key, last in self._last.items())

    def processes(self) -> int:
        """How many processes have been counted since `start()`."""
        with self._lock:
            return len(self._last)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self, *, baseline: bool = False) -> None:
        try:
            pids = list(self._pids())
        except (psutil.Error, AssertionError):
            return
        for pid in pids:
            try:
                process = psutil.Process(pid)
                created = process.create_time()
                times = process.cpu_times()
            except psutil.Error:
                continue
            used = float(times.user + times.system)
            key = (pid, created)
            with self._lock:
                if key not in self._first:
                    born_since = not baseline and created >= self._started_at
                    self._first[key] = 0.0 if born_since else used
                self._last[key] = max(used, self._last.get(key, 0.0))
