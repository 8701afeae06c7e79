"""Waiting at scale: one API process holding thousands of streams and long-polls.

The issue's goal: 5,000 concurrent waiters on one `poyo-relay serve` process on PostgreSQL,
half `GET /v1/jobs/{id}/stream` (server-sent events) and half `GET /v1/jobs/{id}?wait=60`,
cost at most 20 KB each, are answered within 250 ms (p99) of the commit that ends their job,
and leave the callback ingest rate at no less than 0.8 of its rate with nobody waiting.

One server process serves every phase (bench/README.md explains each choice):

  warm-up    callbacks for T/5 s; 20 + 20 waiters opened and woken
  baseline   callbacks for T s, nobody waiting                        -> R0 (before)
  open       W/2 streams, then W/2 long-polls, in batches             -> RSS before/after
  loaded     the same callbacks for T s, one in 4 for a waiter's job  -> R1
  wake-up    another process commits the end of every waiter's job as the worker writes
             it, 25 jobs a transaction; per waiter: its answer's arrival - that COMMIT
  baseline   callbacks for T s again, nobody waiting                  -> R0 (after)

The waiters are this process's own minimal HTTP/1.1 clients (asyncio protocols), one
connection each: a general-purpose client for 5,000 connections would take the CPU the
server needs. The server is `poyo-relay serve` run through bench.gcwatch, which records its
garbage collector's pauses. `python -m bench.waiters finish ...` is the committing process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import resource
import secrets
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import psutil  # type: ignore[import-untyped]

from app.auth.service import create_key
from app.callbacks.credentials import CALLBACK_PATH, CallbackCredentials
from app.config import load_settings
from app.db import Database
from app.keyring.models import ServerKey
from bench import gcwatch, profile
from bench.common import (
    BENCH_DIR,
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
    workdir,
)
from bench.dataset import OWNER, JobSpec, generate_jobs, load_jobs
from bench.ingest import STORED_A, VariantRuns
from bench.loadgen import LoadResult, run_load

GOAL_KB_PER_WAITER = 20.0
GOAL_WAKE_P99_MS = 250.0
GOAL_INGEST_RATIO = 0.8
KB = 1024  # KB and MB are 2^10 and 2^20 bytes, as in every table of these benchmarks
MB = 2**20
OPEN_BATCH = 250  # connections opened at once (uvicorn's accept backlog is 2,048)
OPEN_TIMEOUT = 60.0  # seconds a batch may take to be answered / registered
FINISH_BATCH = 25  # jobs ended per transaction in the wake-up phase
WAITED_EVERY = 4  # while they wait, one callback in 4 is for a waiter's job (each once)
DRIFT_WARNING = 0.15  # baselines before and after further apart than this: say so
WARMUP_WAITERS = 20  # of each kind
LONG_POLL_SECONDS = 60
TERMINAL = frozenset({"succeeded", "failed"})
STREAMS_METRIC = 'poyo_relay_open_streams{scope="job"}'
WAITERS_METRIC = "poyo_relay_waiters"
_METRIC = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")

# The end of a job as the worker writes it (app/jobs/confirmation.py `apply`, then
# app/jobs/repository.py `_change_status` in its one-statement PostgreSQL form): the poll's
# event, then the compare-and-set with the job.status_changed event, all stamped with one
# `now`, in one transaction; here 25 jobs at a time.
FINISH_POLLED = """
INSERT INTO job_events (job_id, type, data, created_at)
SELECT id, 'provider.polled',
       jsonb_build_object('task_id', provider_task_id, 'status', 'finished', 'progress', 100),
       $2::timestamptz
FROM jobs WHERE id = ANY($1::text[]) ORDER BY id
"""
FINISH_MOVE = """
WITH moved AS (
    UPDATE jobs SET
        status = 'succeeded', provider_status = 'finished', progress = 100,
        outputs = jsonb_build_array(jsonb_build_object(
            'url', 'https://cdn.example.com/videos/' || provider_task_id || '.mp4',
            'type', 'video',
            'provider_url', 'https://cdn.example.com/videos/' || provider_task_id || '.mp4',
            'content_type', NULL, 'size_bytes', NULL, 'sha256', NULL, 'archived_at', NULL,
            'width', NULL, 'height', NULL, 'duration_seconds', NULL)),
        poll_attempts = 0, checked_at = $2::timestamptz, updated_at = $2::timestamptz,
        completed_at = $2::timestamptz, submit_started_at = NULL, next_check_at = NULL,
        lease_owner = NULL, lease_expires_at = NULL
    WHERE id = ANY($1::text[]) AND status IN ('pending', 'queued', 'running')
    RETURNING id
)
INSERT INTO job_events (job_id, type, data, created_at)
SELECT id, 'job.status_changed', '{"from": "queued", "to": "succeeded"}'::jsonb,
       $2::timestamptz
FROM moved ORDER BY id
RETURNING job_id
"""


@dataclass
class WaitersOptions:
    concurrency: int = 50
    threads: int = 1
    generator: str = "wrk"
    profile: bool = False
    profile_dir: Path | None = None


# ---- the waiting clients ---------------------------------------------------------------------


@dataclass
class Board:
    """What the waiters report, as counters (so that waiting for "all of them" is cheap)."""

    changed: asyncio.Event = field(default_factory=asyncio.Event)
    first_sse: int = 0  # streams that received their first message
    answered_sse: int = 0  # streams that delivered the job as ended
    ended_sse: int = 0  # streams that sent `event: end`
    complete_sse: int = 0  # streams whose body ended (the chunked terminator)
    answered_poll: int = 0  # long-polls answered with the job ended
    reissued: int = 0  # long-polls answered unended (after 60 s) and sent again
    lost: int = 0  # connections closed before their answer
    failed: int = 0  # answers that were not 200, or unreadable
    problems: list[str] = field(default_factory=list)
    # Arrival - the event's created_at (the callback transaction's clock reading), seconds,
    # for every callback event a stream delivered after its first message.
    callback_lags: list[float] = field(default_factory=list)

    def touch(self) -> None:
        self.changed.set()

    def problem(self, text: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(text)

    async def until(self, predicate: Callable[[], bool], within: float, what: str) -> None:
        deadline = time.monotonic() + within
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchFailure(f"gave up after {within:g}s waiting for {what}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.5)):
                    await self.changed.wait()


class Waiter(asyncio.Protocol):
    """One waiting client on its own connection: an SSE stream (`sse`) or a long-poll
    (`poll`, sent again when it is answered with the job unended). Times are time.time()
    read as the bytes arrive."""

    def __init__(self, board: Board, kind: str, job_id: str, request: bytes) -> None:
        self.board = board
        self.kind = kind
        self.job_id = job_id
        self.request = request
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._in_body = False
        self._chunked = False
        self._length = 0
        self._text = bytearray()  # SSE text not yet split into messages
        self.first_at: float | None = None  # SSE: its first message
        self.answer_at: float | None = None  # the job seen ended
        self.answer_event: str | None = None  # SSE: the event type of that message
        self.end_at: float | None = None  # SSE: `event: end`
        self.complete = False  # answered (or failed): closing is no loss
        self.polls = 0
        self.heartbeats = 0
        self.terminal_change = False  # SSE: delivered the job.status_changed that ended it

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._send()

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self._buf += data
        try:
            self._parse(now)
        except Exception as exc:
            self._fail(f"{self.kind} {self.job_id}: unreadable answer: {exc!r}")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.complete:
            self.board.lost += 1
            self.board.problem(f"{self.kind} {self.job_id}: connection lost ({exc!r})")
            self.board.touch()

    # -- helpers

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _send(self) -> None:
        assert self.transport is not None
        self.polls += 1
        self.transport.write(self.request)

    def _fail(self, text: str) -> None:
        self.board.failed += 1
        self.board.problem(text)
        self.complete = True  # not lost: failed
        self.close()
        self.board.touch()

    def _parse(self, now: float) -> None:
        while not self.complete:
            if not self._in_body:
                end = self._buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self._buf[:end]).lower()
                del self._buf[: end + 4]
                status = int(head[9:12])
                if status != 200:
                    self._fail(f"{self.kind} {self.job_id}: HTTP {status}")
                    return
                self._in_body = True
                self._chunked = b"transfer-encoding: chunked" in head
                found = re.search(rb"content-length: *(\d+)", head)
                self._length = int(found.group(1)) if found else 0
            elif self._chunked:
                if not self._chunk(now):
                    return
            else:
                if len(self._buf) < self._length:
                    return
                body = bytes(self._buf[: self._length])
                del self._buf[: self._length]
                self._in_body = False
                self._poll_answer(body, now)

    def _chunk(self, now: float) -> bool:
        line_end = self._buf.find(b"\r\n")
        if line_end < 0:
            return False
        size = int(bytes(self._buf[:line_end]).split(b";")[0], 16)
        if len(self._buf) < line_end + 2 + size + 2:
            return False
        payload = bytes(self._buf[line_end + 2 : line_end + 2 + size])
        del self._buf[: line_end + 4 + size]
        if size == 0:  # the body's end (the service sends no trailers)
            self.complete = True
            self.board.complete_sse += 1
            self.close()
            self.board.touch()
            return False
        self._text += payload
        while (cut := self._text.find(b"\n\n")) >= 0:
            message = bytes(self._text[:cut])
            del self._text[: cut + 2]
            self._message(message, now)
        return True

    def _message(self, raw: bytes, now: float) -> None:
        if raw.startswith(b":"):
            self.heartbeats += 1
            return
        event = None
        data = None
        for line in raw.split(b"\n"):
            if line.startswith(b"data: "):
                data = line[6:]
            elif line.startswith(b"event: "):
                event = line[7:]
        if event == b"end":
            if self.end_at is None:
                self.end_at = now
                self.board.ended_sse += 1
                self.board.touch()
            return
        if data is None:
            return  # the `retry:` preamble
        payload = orjson.loads(data)
        what = payload.get("event") or {}
        kind = str(what.get("type"))
        if kind == "job.status_changed" and (what.get("data") or {}).get("to") in TERMINAL:
            self.terminal_change = True
        if self.first_at is None:
            self.first_at = now
            self.board.first_sse += 1
            self.board.touch()
        elif kind.startswith("callback."):
            created = datetime.fromisoformat(what["created_at"]).timestamp()
            self.board.callback_lags.append(now - created)
        if payload["job"]["status"] in TERMINAL and self.answer_at is None:
            self.answer_at = now
            self.answer_event = kind
            self.board.answered_sse += 1
            self.board.touch()

    def _poll_answer(self, body: bytes, now: float) -> None:
        status = orjson.loads(body)["status"]
        if status in TERMINAL:
            self.answer_at = now
            self.complete = True
            self.board.answered_poll += 1
            self.close()
            self.board.touch()
        else:  # waited 60 s: wait again, on the same connection
            self.board.reissued += 1
            self._send()


def _request(path: str, port: int, token: str, accept: str = "application/json") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Accept: {accept}\r\n\r\n"
    ).encode()


def make_waiters(
    board: Board, kind: str, jobs: Sequence[str], port: int, token: str
) -> list[Waiter]:
    if kind == "sse":
        return [
            Waiter(board, kind, job, _request(f"/v1/jobs/{job}/stream", port, token,
                                              "text/event-stream"))
            for job in jobs
        ]  # fmt: skip
    return [
        Waiter(board, kind, job, _request(f"/v1/jobs/{job}?wait={LONG_POLL_SECONDS}", port, token))
        for job in jobs
    ]


def _factory(waiter: Waiter) -> Callable[[], Waiter]:
    return lambda: waiter


async def _connect(port: int, waiters: Sequence[Waiter]) -> None:
    loop = asyncio.get_running_loop()
    for waiter in waiters:
        await loop.create_connection(_factory(waiter), "127.0.0.1", port)


def _streams_reached(board: Board, target: int) -> Callable[[], bool]:
    return lambda: board.first_sse >= target


async def open_waiters(board: Board, port: int, waiters: Sequence[Waiter]) -> None:
    """Open `waiters` OPEN_BATCH at a time; each batch must be served before the next: the
    streams' first messages received, the long-polls counted by poyo_relay_waiters."""
    sse_before = board.first_sse
    polling = int((await read_metrics(port)).get(WAITERS_METRIC, 0))
    for start in range(0, len(waiters), OPEN_BATCH):
        batch = waiters[start : start + OPEN_BATCH]
        # A few connecting tasks, so that connects overlap without a burst of thousands.
        lanes = 10
        await asyncio.gather(*(_connect(port, batch[i::lanes]) for i in range(lanes)))
        streams = sum(1 for w in batch if w.kind == "sse")
        polls = len(batch) - streams
        sse_before += streams
        polling += polls
        await board.until(
            _streams_reached(board, sse_before),
            OPEN_TIMEOUT,
            f"{sse_before} streams' first messages ({board.first_sse} so far)",
        )
        if polls:
            await until_metric(port, WAITERS_METRIC, polling, OPEN_TIMEOUT, board)
        if board.lost or board.failed:
            raise BenchFailure(f"waiters failed while opening: {board.problems[:3]}")


# ---- /metrics ------------------------------------------------------------------------------


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        raw = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        out = bytearray()
        while body:
            size_line, _, rest = body.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            out += rest[:size]
            body = rest[size + 2 :]
        body = bytes(out)
    return int(head[9:12]), body


async def read_metrics(port: int) -> dict[str, float]:
    """The samples of /metrics, keyed `name` or `name{labels}`."""
    status, body = await http_get(port, "/metrics")
    if status != 200:
        raise BenchFailure(f"/metrics answered {status}")
    samples = {}
    for line in body.decode().splitlines():
        found = _METRIC.match(line)
        if found:
            key = found["name"] + (f"{{{found['labels']}}}" if found["labels"] else "")
            samples[key] = float(found["value"])
    return samples


async def until_metric(port: int, name: str, value: float, within: float, board: Board) -> None:
    deadline = time.monotonic() + within
    while True:
        seen = (await read_metrics(port)).get(name)
        if seen == value:
            return
        if board.lost or board.failed:
            raise BenchFailure(f"waiters failed: {board.problems[:3]}")
        if time.monotonic() > deadline:
            raise BenchFailure(f"{name} is {seen}, expected {value:g} within {within:g}s")
        await asyncio.sleep(0.05)


def _lag_quantile(samples: dict[str, float], q: float) -> float | None:
    """The upper bound of the bucket holding quantile q of the notification lag, seconds."""
    prefix = "poyo_relay_notification_lag_seconds_bucket{le="
    buckets = sorted(
        (float(key[len(prefix) + 1 : -2]), count)
        for key, count in samples.items()
        if key.startswith(prefix) and "+Inf" not in key
    )
    total = samples.get("poyo_relay_notification_lag_seconds_count", 0.0)
    if not total:
        return None
    for bound, count in buckets:
        if count >= q * total:
            return bound
    return float("inf")


# ---- ending the waiters' jobs: another process commits, as the worker would --------------------


def _batches(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


@dataclass
class Commits:
    """Per transaction: time.time() just before COMMIT was sent, and just after it returned.
    The commit happened in between; a latency measured from `sent` is an upper bound."""

    sent: list[float]
    done: list[float]


async def _finish_main(
    dsn: str, job_ids: Sequence[str], batch: int, seconds: float
) -> dict[str, Any]:
    batches = list(_batches(job_ids, batch))
    interval = seconds / max(1, len(batches))
    conn = await asyncpg.connect(dsn, timeout=30)
    sent: list[float] = []
    done: list[float] = []
    moved: list[int] = []
    try:
        start = time.monotonic() + 0.05
        for i, ids in enumerate(batches):
            delay = start + i * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await conn.execute("BEGIN")
            now = datetime.now(UTC)
            await conn.execute(FINISH_POLLED, ids, now)
            rows = await conn.fetch(FINISH_MOVE, ids, now)
            sent.append(time.time())
            await conn.execute("COMMIT")
            done.append(time.time())
            moved.append(len(rows))
    finally:
        await conn.close()
    return {"sent": sent, "done": done, "moved": moved}


async def finish_jobs(
    db: BenchDatabase, tmp: Path, name: str, job_ids: Sequence[str], seconds: float
) -> Commits:
    """End `job_ids` from a separate process, FINISH_BATCH per transaction, spread over
    `seconds`."""
    jobs_file = tmp / f"finish-{name}.txt"
    jobs_file.write_text("\n".join(job_ids) + "\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.waiters", "finish", "--dsn", db.raw,
        "--jobs", str(jobs_file), "--batch", str(FINISH_BATCH), "--seconds", str(seconds),
        env=service_env({}), cwd=tmp,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), seconds + 120)
    for line in stdout.decode().splitlines():
        if line.startswith("BENCH_JSON "):
            result = json.loads(line.removeprefix("BENCH_JSON "))
            expected = [len(b) for b in _batches(job_ids, FINISH_BATCH)]
            if result["moved"] != expected:
                raise BenchFailure(f"the finishing transactions moved {result['moved']} jobs")
            return Commits(result["sent"], result["done"])
    raise BenchFailure(
        f"finishing process failed (exit {process.returncode}): {stderr.decode()[-2000:]}"
    )


# ---- the data set ------------------------------------------------------------------------------

# The trail of a queued job as the service writes it (created, submitted, queued): bulk
# loading writes no events, and a stream's first message is its job's latest event.
HISTORY = """
INSERT INTO job_events (job_id, type, data, created_at)
SELECT id, kind, CASE kind
        WHEN 'job.created' THEN jsonb_build_object('model', model, 'key_id', $2::text)
        WHEN 'provider.submitted' THEN jsonb_build_object('task_id', provider_task_id,
                                                           'attempt', 1)
        ELSE '{"from": "pending", "to": "queued"}'::jsonb END,
       CASE kind WHEN 'job.created' THEN created_at ELSE submitted_at END
FROM jobs, unnest(ARRAY['job.created', 'provider.submitted', 'job.status_changed'])
     WITH ORDINALITY AS k(kind, n)
WHERE id = ANY($1::text[])
ORDER BY id, n
"""


async def add_history(db: BenchDatabase, job_ids: Sequence[str], key_id: str) -> None:
    conn = await asyncpg.connect(db.raw, timeout=30)
    try:
        await conn.execute(HISTORY, list(job_ids), key_id)
        # Settled before the server starts: hint bits, the visibility map and statistics
        # written now rather than by autovacuum during a measured phase.
        await conn.execute("VACUUM (ANALYZE) jobs, job_events")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


def _write_pool(path: Path, jobs: Sequence[JobSpec], credentials: CallbackCredentials) -> None:
    with path.open("w") as handle:
        for job in jobs:
            handle.write(f"{job.id} {credentials.token(job.id)} {job.task_id}\n")


def interleave(ingest: Sequence[JobSpec], waited: Sequence[JobSpec], every: int) -> list[JobSpec]:
    """`ingest`, with each job of `waited` (once) as every `every`-th item while they last."""
    out: list[JobSpec] = []
    extras = iter(waited)
    for job in ingest:
        if len(out) % every == every - 1:
            extra = next(extras, None)
            if extra is not None:
                out.append(extra)
        out.append(job)
    return out


async def _db_counts(db: BenchDatabase) -> tuple[dict[str, int], dict[str, int]]:
    conn = await asyncpg.connect(db.raw, timeout=30)
    try:
        events = {
            r[0]: int(r[1])
            for r in await conn.fetch("SELECT type, count(*) FROM job_events GROUP BY type")
        }
        statuses = {
            r[0]: int(r[1])
            for r in await conn.fetch("SELECT status, count(*) FROM jobs GROUP BY status")
        }
        return events, statuses
    finally:
        await conn.close()


# ---- measurements --------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuReading:
    """CPU seconds so far: the whole machine's (busy, every core), the server's, this
    process's (the waiters' clients), its finished children's (the load generator) and the
    bench database's PostgreSQL backends'."""

    at: float
    machine: float
    server: float
    bench: float
    children: float
    postgres: float


def _process_cpu(process: psutil.Process) -> float:
    with contextlib.suppress(psutil.Error):
        times = process.cpu_times()
        return float(times.user + times.system)
    return 0.0


def _postgres_cpu(db_name: str) -> float:
    """The backends serving `db_name` (their process title names the database)."""
    total = 0.0
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if cmdline and cmdline[0].startswith("postgres:") and db_name in " ".join(cmdline):
            total += _process_cpu(process)
    return total


def cpu_reading(server: psutil.Process, db_name: str) -> CpuReading:
    times = psutil.cpu_times()
    busy = times.user + times.nice + times.system + times.irq + times.softirq
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return CpuReading(
        at=time.monotonic(),
        machine=float(busy),
        server=_process_cpu(server),
        bench=_process_cpu(psutil.Process()),
        children=children.ru_utime + children.ru_stime,
        postgres=_postgres_cpu(db_name),
    )


@dataclass(frozen=True)
class CpuUse:
    """Cores busy on average over a phase, by whom."""

    machine: float
    server: float
    bench: float
    loadgen: float
    postgres: float

    @property
    def others(self) -> float:
        """Everything else on the machine: other processes (other databases' backends
        included), and PostgreSQL's shared background processes."""
        return max(0.0, self.machine - self.server - self.bench - self.loadgen - self.postgres)

    @classmethod
    def between(cls, a: CpuReading, b: CpuReading) -> CpuUse:
        wall = max(1e-9, b.at - a.at)
        return cls(
            machine=(b.machine - a.machine) / wall,
            server=(b.server - a.server) / wall,
            bench=(b.bench - a.bench) / wall,
            loadgen=(b.children - a.children) / wall,
            postgres=(b.postgres - a.postgres) / wall,
        )

    def row(self) -> str:
        return (
            f"{self.server:.2f} + {self.bench:.2f} + {self.loadgen:.2f} + {self.postgres:.2f}"
            f" + {self.others:.2f} = {self.machine:.2f}"
        )


@dataclass(frozen=True)
class GcPauses:
    """The server's logged collections (bench.gcwatch) within a window."""

    full: int  # generation-2 collections
    longest_ms: float
    total_ms: float  # of every logged collection (full, or 5 ms and more)

    @classmethod
    def between(cls, log: Sequence[tuple[float, int, float]], a: float, b: float) -> GcPauses:
        inside = [(gen, ms) for at, gen, ms in log if a <= at <= b]
        return cls(
            full=sum(1 for gen, _ in inside if gen == 2),
            longest_ms=max((ms for _, ms in inside), default=0.0),
            total_ms=sum(ms for _, ms in inside),
        )

    def text(self, seconds: float) -> str:
        share = self.total_ms / 1000 / seconds if seconds else 0.0
        return f"{self.full} full, {self.longest_ms:,.0f} ms, {self.total_ms:,.0f} ms ({share:.0%})"


@dataclass
class Phase:
    """One callback load: its result, the CPU spent, and the wall-clock window."""

    name: str
    result: LoadResult
    cpu: CpuUse
    began: float  # time.time()
    ended: float

    @property
    def wall(self) -> float:
        return self.ended - self.began

    @property
    def server_ms_per_callback(self) -> float:
        return self.cpu.server * self.wall * 1000 / max(1, self.result.requests)


async def memory(pid: int, samples: int = 3) -> tuple[float, float]:
    """Median RSS and USS of `pid` over a few samples, bytes."""
    rss, uss = [], []
    for i in range(samples):
        if i:
            await asyncio.sleep(0.3)
        info = psutil.Process(pid).memory_full_info()
        rss.append(float(info.rss))
        uss.append(float(info.uss))
    return sorted(rss)[samples // 2], sorted(uss)[samples // 2]


def _ms(values: Sequence[float]) -> tuple[float, float, float]:
    ms = [v * 1000 for v in values]
    return percentile(ms, 50), percentile(ms, 99), max(ms, default=float("nan"))


# ---- the benchmark ---------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a run measured, for the report."""

    count: int
    memory: list[tuple[float, float]] = field(default_factory=list)  # (rss, uss) x 3
    open_seconds: tuple[float, float] = (0.0, 0.0)
    open_window: tuple[float, float] = (0.0, 0.0)
    metrics_open: dict[str, float] = field(default_factory=dict)
    metrics_loaded: dict[str, float] = field(default_factory=dict)
    metrics_answered: dict[str, float] = field(default_factory=dict)
    phases: list[Phase] = field(default_factory=list)  # before, waiting, after
    callback_lags: list[float] = field(default_factory=list)
    callbacks_to_waiters: int = 0
    waiters: list[Waiter] = field(default_factory=list)
    finish_order: list[str] = field(default_factory=list)
    commits: Commits = field(default_factory=lambda: Commits([], []))
    wake_window: tuple[float, float] = (0.0, 0.0)
    board: Board = field(default_factory=Board)
    runs: dict[str, VariantRuns] = field(default_factory=dict)
    pools: dict[str, int] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    gc_log: list[tuple[float, int, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    profile: dict[str, Any] = field(default_factory=dict)


async def run_backend(
    backend: str, size: Size, options: WaitersOptions, sampler: MemorySampler
) -> dict[str, Any]:
    if backend != "postgresql":
        raise BenchFailure("the waiters benchmark runs on PostgreSQL only")
    count = size.waiters - size.waiters % 2
    out = Outcome(count=count)
    say(f"waiters [{backend}]: preparing the database")
    with workdir() as tmp:
        db = await create_database(backend, tmp)
        db_name = db.name
        server: ServerProcess | None = None
        try:
            start = datetime.now(UTC) - timedelta(hours=3)
            waited = generate_jobs(
                count, start=start, step_ms=1, seed=11, owner_share=1.0, status="queued",
                task_prefix="w",
            )  # fmt: skip
            warm = generate_jobs(
                2 * WARMUP_WAITERS, start=start + timedelta(minutes=10), step_ms=1, seed=12,
                owner_share=1.0, status="queued", task_prefix="x",
            )  # fmt: skip
            idle = generate_jobs(
                2 * size.waiters_pool_jobs, start=start + timedelta(minutes=20), step_ms=1,
                seed=13, owner_share=1.0, status="queued", task_prefix="i",
            )  # fmt: skip
            loaded = generate_jobs(
                size.waiters_pool_jobs, start=start + timedelta(minutes=40), step_ms=1,
                seed=14, owner_share=1.0, status="queued", task_prefix="l",
            )  # fmt: skip
            await load_jobs(db, waited + warm + idle + loaded)
            database = Database(load_settings(database_url=db.url, _env_file=None))
            try:
                key, token = await create_key(database, name=OWNER)
            finally:
                await database.dispose()
            await add_history(db, [job.id for job in waited + warm], key.id)
            secret = secrets.token_urlsafe(32)
            port = free_port()
            credentials = CallbackCredentials(
                key=ServerKey(secret.encode()), public_base_url=f"http://127.0.0.1:{port}"
            )
            pools = {"idle": tmp / "pool-idle.txt", "loaded": tmp / "pool-loaded.txt"}
            _write_pool(pools["idle"], idle, credentials)
            rng = random.Random(7)
            mixed = list(waited)
            rng.shuffle(mixed)
            _write_pool(pools["loaded"], interleave(loaded, mixed, WAITED_EVERY), credentials)
            out.pools = {"idle": len(idle), "loaded": len(loaded) + count}
            env = service_env(
                {
                    "DATABASE_URL": db.url,
                    "CALLBACK_SECRET": secret,
                    "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
                    "RUN_WORKER": "false",
                    # No worker runs: a stream asking PoYo for fresh progress would only
                    # write requests for checks nobody makes.
                    "PROGRESS_REFRESH_SECONDS": "0",
                    "ARCHIVE_ENABLED": "false",
                    "ACCESS_LOG": "false",
                    "LOG_LEVEL": "WARNING",
                    "STREAM_MAX_CLIENTS": str(count + 2 * WARMUP_WAITERS + 1000),
                }
            )
            gc_log = tmp / "gc.log"
            server = ServerProcess(
                "waiters-api",
                [sys.executable, "-m", "bench.gcwatch", str(gc_log), "serve", "--port", str(port)],
                env, tmp, port,
            ).start()  # fmt: skip
            server.wait_ready("/readyz")
            pid = server.worker_pids()[0]
            server_process = psutil.Process(pid)
            sampler.watch(f"waiters[{backend}]", server)
            out.runs = runs = {"idle": VariantRuns(), "loaded": VariantRuns()}

            async def load(pool: str, seconds: float, name: str, measured: bool) -> Phase:
                before = cpu_reading(server_process, db_name)
                began = time.time()
                result = await asyncio.to_thread(
                    run_load, generator=options.generator, port=port, pool_file=pools[pool],
                    prefix=CALLBACK_PATH, offset=runs[pool].offset,
                    concurrency=options.concurrency, seconds=seconds, threads=options.threads,
                )  # fmt: skip
                ended = time.time()
                cpu = CpuUse.between(before, cpu_reading(server_process, db_name))
                phase = Phase(name, result, cpu, began, ended)
                runs[pool].add(result, measured=measured, concurrency=options.concurrency)
                say(
                    f"  {name}: {fmt(result.rps, 0)} callbacks/s, p99 {fmt(result.p99_ms, 1)} "
                    f"ms, non-2xx {result.non_2xx}; cores busy: server {cpu.server:.2f}, "
                    f"machine {cpu.machine:.2f}"
                )
                return phase

            # -- warm-up: the callback path, and a few waiters of each kind woken
            say(
                f"waiters [{backend}]: one `poyo-relay serve` process (pid {pid}); warming up "
                f"({options.generator}, concurrency {options.concurrency})"
            )
            # Long enough for every pooled connection to have prepared its statements.
            warmup = max(1.0, size.waiters_ingest_seconds / 5)
            await load("idle", warmup, "warm-up", measured=False)
            board = Board()
            warm_ids = [job.id for job in warm]
            warmers = make_waiters(board, "sse", warm_ids[:WARMUP_WAITERS], port, token)
            warmers += make_waiters(board, "poll", warm_ids[WARMUP_WAITERS:], port, token)
            await open_waiters(board, port, warmers)
            await finish_jobs(db, tmp, "warm", warm_ids, 0.5)
            await board.until(
                lambda: (
                    board.complete_sse == WARMUP_WAITERS and board.answered_poll == WARMUP_WAITERS
                ),
                30,
                "the warm-up waiters' answers",
            )
            if board.lost or board.failed:
                raise BenchFailure(f"warm-up waiters failed: {board.problems[:3]}")
            await until_metric(port, WAITERS_METRIC, 0, 10, board)

            # -- baseline: nobody waits
            out.phases.append(
                await load("idle", size.waiters_ingest_seconds, "baseline, nobody waiting",
                           measured=True)
            )  # fmt: skip

            # -- open the waiters: streams, then long-polls
            out.board = board = Board()
            order = [job.id for job in waited]
            sse_ids, poll_ids = order[: count // 2], order[count // 2 :]
            out.memory.append(await memory(pid))
            opened_at = time.time()
            say(f"waiters [{backend}]: opening {len(sse_ids):,} streams, {OPEN_BATCH} at a time")
            streams = make_waiters(board, "sse", sse_ids, port, token)
            await open_waiters(board, port, streams)
            sse_seconds = time.time() - opened_at
            out.memory.append(await memory(pid))
            say(f"waiters [{backend}]: opening {len(poll_ids):,} long-polls")
            polls_at = time.time()
            polls = make_waiters(board, "poll", poll_ids, port, token)
            await open_waiters(board, port, polls)
            out.open_seconds = (sse_seconds, time.time() - polls_at)
            out.open_window = (opened_at, time.time())
            out.waiters = streams + polls
            await asyncio.sleep(0.5)
            out.memory.append(await memory(pid))
            out.metrics_open = await read_metrics(port)
            rss0, rss2 = out.memory[0][0], out.memory[2][0]
            say(
                f"waiters [{backend}]: {count:,} waiting; server RSS {rss0 / MB:.1f} -> "
                f"{rss2 / MB:.1f} MB ({(rss2 - rss0) / count / KB:.1f} KB each)"
            )

            # -- loaded: the same callbacks while they wait, one in WAITED_EVERY for their jobs
            during = await load("loaded", size.waiters_ingest_seconds,
                                f"loaded, {count:,} waiting", measured=True)  # fmt: skip
            out.phases.append(during)
            out.callbacks_to_waiters = min(count, during.result.requests // WAITED_EVERY)
            if options.profile and profile.available():
                out.profile = await _profile_loaded(backend, pid, load, size, options)
            await asyncio.sleep(0.5)  # the last callbacks' messages
            out.metrics_loaded = await read_metrics(port)
            out.callback_lags = list(board.callback_lags)
            if board.lost or board.failed or board.answered_sse or board.answered_poll:
                raise BenchFailure(
                    f"waiters ended early: {board.lost} lost, {board.failed} failed, "
                    f"{board.answered_sse + board.answered_poll} answered: {board.problems[:3]}"
                )

            # -- wake-up: another process ends every waiter's job
            out.finish_order = list(order)
            rng.shuffle(out.finish_order)
            say(
                f"waiters [{backend}]: ending their jobs, {FINISH_BATCH} per transaction over "
                f"{size.waiters_finish_seconds:g}s, from another process"
            )
            woken_at = time.time()
            out.commits = await finish_jobs(
                db, tmp, "waiters", out.finish_order, size.waiters_finish_seconds
            )
            with contextlib.suppress(BenchFailure):  # reported below, as stranded waiters
                await board.until(
                    lambda: board.answered_poll + board.complete_sse >= count,
                    30,
                    "every waiter's answer",
                )
            out.wake_window = (woken_at, time.time())
            await asyncio.sleep(0.3)
            out.metrics_answered = await read_metrics(port)
            for waiter in out.waiters:
                waiter.close()

            # -- baseline again, nobody waiting
            out.phases.append(
                await load("idle", size.waiters_ingest_seconds, "baseline again", measured=True)
            )
            sampler.unwatch(f"waiters[{backend}]")
            out.errors = server.log_errors()
            server.stop()
            server = None
            out.gc_log = gcwatch.read(str(gc_log))
            out.events, out.statuses = await _db_counts(db)
            return _report(backend, options, out)
        finally:
            for waiter in out.waiters:
                waiter.close()
            if server is not None:
                server.stop()
            await drop_database(db)


async def _profile_loaded(
    backend: str,
    pid: int,
    load: Callable[[str, float, str, bool], Awaitable[Phase]],
    size: Size,
    options: WaitersOptions,
) -> dict[str, Any]:
    """py-spy on the server during one more loaded run (not measured: py-spy takes CPU)."""
    seconds = max(5.0, size.waiters_ingest_seconds)
    raw = (options.profile_dir or BENCH_DIR / "results") / f"pyspy-waiters-{backend}.txt"
    say(f"waiters [{backend}]: py-spy on the server (pid {pid}) for {seconds:g}s, not measured")
    spy = profile.start(pid, seconds, raw)
    await asyncio.sleep(0.3)
    phase = await load("loaded", seconds + 0.5, "profiled (not measured)", False)
    _, stderr = await asyncio.to_thread(spy.communicate)
    if not raw.exists():
        say(f"py-spy wrote nothing: {stderr.decode(errors='replace')[-500:]}")
        return {}
    summary = profile.summarise(raw)
    profile.print_profile(
        f"py-spy, waiters [{backend}]: the server at {fmt(phase.result.rps, 0)} callbacks/s "
        "while the waiters wait",
        summary,
    )
    return profile.as_dict(summary) | {"raw_file": str(raw), "rps_during": phase.result.rps}


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _check(ok: bool) -> str:
    return "ok" if ok else "FAILED"


def _g(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _report(backend: str, options: WaitersOptions, out: Outcome) -> dict[str, Any]:
    count = out.count
    half = count // 2
    board = out.board
    (rss0, uss0), (rss1, uss1), (rss2, uss2) = out.memory
    kb = {
        "per_waiter": (rss2 - rss0) / count / KB,
        "per_sse": (rss1 - rss0) / half / KB,
        "per_poll": (rss2 - rss1) / half / KB,
        "uss_per_waiter": (uss2 - uss0) / count / KB,
        "uss_per_sse": (uss1 - uss0) / half / KB,
        "uss_per_poll": (uss2 - uss1) / half / KB,
    }
    before, during, after = out.phases
    r0 = (before.result.rps + after.result.rps) / 2
    ratio = during.result.rps / r0
    drift = abs(before.result.rps - after.result.rps) / r0

    # Wake-up: each waiter's answer against its transaction's COMMIT.
    batch_of = {job_id: i // FINISH_BATCH for i, job_id in enumerate(out.finish_order)}
    wake: dict[str, list[float]] = {"sse": [], "poll": []}
    wake_done: list[float] = []
    early = before_return = 0
    for waiter in out.waiters:
        if waiter.answer_at is None:
            continue
        i = batch_of[waiter.job_id]
        lag = waiter.answer_at - out.commits.sent[i]
        early += lag < 0
        before_return += waiter.answer_at < out.commits.done[i]
        wake[waiter.kind].append(lag)
        wake_done.append(waiter.answer_at - out.commits.done[i])
    combined = wake["sse"] + wake["poll"]
    sse_ms, poll_ms, all_ms = _ms(wake["sse"]), _ms(wake["poll"]), _ms(combined)
    done_ms = _ms(wake_done)
    commit_ms = _ms([d - s for s, d in zip(out.commits.sent, out.commits.done, strict=True)])
    lag_ms = _ms(out.callback_lags)
    stranded = [w for w in out.waiters if w.answer_at is None]
    unended = [w for w in out.waiters if w.kind == "sse" and (w.end_at is None or not w.complete)]
    streams = [w for w in out.waiters if w.kind == "sse"]
    answer_events = Counter(w.answer_event for w in streams)
    status_changed = sum(1 for w in streams if w.terminal_change)
    heartbeats = sum(w.heartbeats for w in streams)

    gc_open = GcPauses.between(out.gc_log, *out.open_window)
    gc_phases = [GcPauses.between(out.gc_log, p.began, p.ended) for p in out.phases]
    gc_wake = GcPauses.between(out.gc_log, *out.wake_window)
    metrics = out.metrics_answered
    notify_count = metrics.get("poyo_relay_notification_lag_seconds_count", 0.0)
    notify_mean = metrics.get("poyo_relay_notification_lag_seconds_sum", 0.0) / max(
        1.0, notify_count
    )
    notify_p99 = _lag_quantile(metrics, 0.99)
    spread = out.commits.done[-1] - out.commits.sent[0] if out.commits.done else 0.0

    def trio(values: tuple[float, float, float]) -> str:
        return " / ".join(fmt(v, 1) for v in values)

    def phases(text: Callable[[Phase], str]) -> str:
        return " | ".join(text(p) for p in out.phases)

    rows = [
        ("waiters held by one API process", f"{count:,} ({half:,} SSE + {half:,} long-poll)",
         "", ""),
        ("opening them: streams / long-polls, s",
         f"{out.open_seconds[0]:.1f} / {out.open_seconds[1]:.1f}", f"{OPEN_BATCH} at a time",
         ""),
        ("server RSS: before / +streams / +long-polls, MB",
         f"{rss0 / MB:.1f} / {rss1 / MB:.1f} / {rss2 / MB:.1f}", "", ""),
        ("memory per waiter (RSS increase / waiters), KB", fmt(kb["per_waiter"], 1),
         f"<= {GOAL_KB_PER_WAITER:g}", _verdict(kb["per_waiter"] <= GOAL_KB_PER_WAITER)),
        ("  per SSE stream / per long-poll, KB",
         f"{kb['per_sse']:.1f} / {kb['per_poll']:.1f}", "", ""),
        ("  USS: per waiter (SSE / long-poll), KB",
         f"{kb['uss_per_waiter']:.1f} ({kb['uss_per_sse']:.1f} / {kb['uss_per_poll']:.1f})",
         "", ""),
        ("callbacks/s: baseline before / after (R0 = mean)",
         f"{fmt(before.result.rps, 0)} / {fmt(after.result.rps, 0)} ({fmt(r0, 0)})",
         f"drift {drift:.0%}", ""),
        (f"callbacks/s while {count:,} wait (R1)", fmt(during.result.rps, 0), "", ""),
        ("ingest ratio R1 / R0", f"{ratio:.2f}", f">= {GOAL_INGEST_RATIO:g}",
         _verdict(ratio >= GOAL_INGEST_RATIO)),
        ("callback p50 / p99, ms: before | waiting | after",
         phases(lambda p: f"{fmt(p.result.p50_ms, 1)} / {fmt(p.result.p99_ms, 1)}"), "", ""),
        ("cores busy: server + clients + wrk + postgres + others = machine", "", "", ""),
        ("  before", before.cpu.row(), "", ""),
        ("  waiting", during.cpu.row(), "", ""),
        ("  after", after.cpu.row(), "", ""),
        ("server CPU per callback, ms: before | waiting | after",
         phases(lambda p: f"{p.server_ms_per_callback:.3f}"), "", ""),
        ("server GC pauses (collections, longest, total and share of the time)", "", "", ""),
        ("  while opening the waiters",
         gc_open.text(out.open_window[1] - out.open_window[0]), "", ""),
        *((f"  {label}", g.text(p.wall), "", "")
          for label, g, p in zip(("baseline before", "while they wait", "baseline after"),
                                 gc_phases, out.phases, strict=True)),
        ("  during the wake-up", gc_wake.text(out.wake_window[1] - out.wake_window[0]), "", ""),
        (f"callbacks for waiters' jobs while waiting (1 in {WAITED_EVERY})",
         f"~{out.callbacks_to_waiters:,}", "", ""),
        ("  callback txn -> SSE message, ms p50 / p99 / max", trio(lag_ms),
         f"{len(out.callback_lags):,} messages", ""),
        (f"wake-up: {len(out.commits.sent)} commits of {FINISH_BATCH} jobs, over s",
         fmt(spread, 1), "", ""),
        ("  COMMIT's own duration, ms p50 / p99 / max", trio(commit_ms), "", ""),
        ("  commit -> SSE answer, ms p50 / p99 / max", trio(sse_ms), "", ""),
        ("  commit -> long-poll answer, ms p50 / p99 / max", trio(poll_ms), "", ""),
        ("  commit -> answer, all, ms p50 / p99 / max", trio(all_ms),
         f"p99 <= {GOAL_WAKE_P99_MS:g}", _verdict(all_ms[1] <= GOAL_WAKE_P99_MS)),
        ("  from COMMIT's return instead, ms p50 / p99 / max", trio(done_ms),
         f"{before_return:,} answers before it", ""),
        ("NOTIFY lag (txn start -> listener), ms mean / p99 bucket",
         f"{notify_mean * 1000:.1f} / <= {fmt((notify_p99 or 0) * 1000, 0)}",
         f"{int(notify_count):,} notifications", ""),
        ("SSE answers by the event that carried them",
         ", ".join(f"{k} {v:,}" for k, v in answer_events.items()), "", ""),
        ("SSE streams that sent the job.status_changed ending their job",
         f"{status_changed:,} of {half:,}", "", ""),
        ("heartbeats received / long-polls re-sent after 60 s",
         f"{heartbeats:,} / {board.reissued:,}", "", ""),
    ]  # fmt: skip
    print_table(
        f"waiters [{backend}]: one `poyo-relay serve` process, {count:,} waiters; callbacks "
        f"by {options.generator} at concurrency {options.concurrency}, "
        f"{before.result.seconds:.0f}s per phase",
        ("what", "value", "goal", ""),
        rows,
    )
    if drift > DRIFT_WARNING:
        print(
            f"  note: the two baselines differ by {drift:.0%}: the machine's speed changed "
            "during the run (see 'others' above); the ratio is less certain than it looks"
        )

    runs = out.runs
    accepted = sum(run.accepted for run in runs.values())
    stored = sum(out.events.get(t, 0) for t in STORED_A)
    lost_callbacks = max(0, accepted - stored)
    rejected = out.events.get("callback.rejected", 0)
    bad_callbacks = sum(run.non_2xx + run.socket_errors for run in runs.values())
    wrapped = [n for n, run in runs.items() if run.offset - options.concurrency > out.pools[n]]
    counted = [
        (out.metrics_open.get(STREAMS_METRIC), out.metrics_open.get(WAITERS_METRIC)),
        (out.metrics_loaded.get(STREAMS_METRIC), out.metrics_loaded.get(WAITERS_METRIC)),
        (out.metrics_answered.get(STREAMS_METRIC), out.metrics_answered.get(WAITERS_METRIC)),
    ]
    expected_counts = [(half, half), (half, half), (0, 0)]
    checks = [
        *(
            (f"metrics {when}: open_streams{{job}} / waiters", f"{_g(s)} / {_g(w)}",
             f"{e[0]} / {e[1]}", _check((s, w) == e))
            for when, (s, w), e in zip(("once open", "after the callbacks", "once answered"),
                                       counted, expected_counts, strict=True)
        ),
        ("waiters never answered", str(len(stranded)), "0", _check(not stranded)),
        ("streams without `event: end` and the body's end", str(len(unended)), "0",
         _check(not unended)),
        ("answers before their COMMIT was sent", str(early), "0", _check(not early)),
        ("connections lost / answers not 200", f"{board.lost} / {board.failed}", "0 / 0",
         _check(not board.lost and not board.failed)),
        ("callbacks answered 2xx / stored", f"{accepted:,} / {stored:,}", "stored >= answered",
         _check(not lost_callbacks)),
        ("callbacks non-2xx or failed", str(bad_callbacks), "0", _check(not bad_callbacks)),
        ("rejected callbacks stored", str(rejected), "0", _check(not rejected)),
        ("jobs by status", ", ".join(f"{k} {v:,}" for k, v in sorted(out.statuses.items())),
         "", ""),
        ("callback pools wrapped (repeats sent: cheaper duplicates)",
         ", ".join(wrapped) or "none", "none", "ok" if not wrapped else "note"),
        ("server log errors", str(len(out.errors)), "0", _check(not out.errors)),
    ]  # fmt: skip
    print_table(f"waiters [{backend}]: checks", ("check", "value", "expected", ""), checks)
    for line in out.errors:
        print(f"  log: {line}")
    for line in board.problems[:5]:
        print(f"  waiter: {line}")

    failures = []
    if stranded:
        failures.append(f"{len(stranded)} waiters never answered")
    if unended:
        failures.append(f"{len(unended)} streams did not end with `event: end`")
    if early:
        failures.append(f"{early} answers arrived before their job's COMMIT was sent")
    if board.lost or board.failed:
        failures.append(f"{board.lost} connections lost, {board.failed} bad answers")
    if lost_callbacks:
        failures.append(f"{lost_callbacks} callbacks answered 2xx but not stored")
    if rejected:
        failures.append(f"{rejected} well-formed callbacks were rejected")
    if bad_callbacks:
        failures.append(f"{bad_callbacks} callbacks answered non-2xx or failed")
    if counted != expected_counts:
        failures.append(f"metrics counted {counted} waiters, expected {expected_counts}")
    if out.errors:
        failures.append(f"server logged errors: {out.errors[0]}")
    return {
        "backend": backend,
        "waiters": count,
        "generator": options.generator,
        "concurrency": options.concurrency,
        "memory_mb": {
            "rss_before": rss0 / MB, "rss_streams": rss1 / MB, "rss_all": rss2 / MB,
            "uss_before": uss0 / MB, "uss_streams": uss1 / MB, "uss_all": uss2 / MB,
        },
        "memory_kb": kb,
        "open_seconds": {"sse": out.open_seconds[0], "poll": out.open_seconds[1]},
        "ingest": {
            p.name: {
                "rps": p.result.rps, "p50_ms": p.result.p50_ms, "p99_ms": p.result.p99_ms,
                "requests": p.result.requests, "cores": asdict(p.cpu),
                "server_ms_per_callback": p.server_ms_per_callback,
            }
            for p in out.phases
        },
        "ingest_ratio": ratio,
        "baseline_drift": drift,
        "gc": {
            "opening": asdict(gc_open),
            **{p.name: asdict(g) for p, g in zip(out.phases, gc_phases, strict=True)},
            "wake-up": asdict(gc_wake),
        },
        "callback_to_sse_ms": dict(zip(("p50", "p99", "max"), lag_ms, strict=True))
        | {"messages": len(out.callback_lags)},
        "wake_ms": {
            "sse": dict(zip(("p50", "p99", "max"), sse_ms, strict=True)),
            "poll": dict(zip(("p50", "p99", "max"), poll_ms, strict=True)),
            "all": dict(zip(("p50", "p99", "max"), all_ms, strict=True)),
            "all_from_commit_return": dict(zip(("p50", "p99", "max"), done_ms, strict=True)),
        },
        "sse_answer_events": {str(k): v for k, v in answer_events.items()},
        "sse_status_changed_delivered": status_changed,
        "notification_lag_mean_ms": notify_mean * 1000,
        "goals": {"kb_per_waiter": GOAL_KB_PER_WAITER, "wake_p99_ms": GOAL_WAKE_P99_MS,
                  "ingest_ratio": GOAL_INGEST_RATIO},
        "events": out.events,
        "profile": out.profile,
        "failures": failures,
    }  # fmt: skip


# ---- the committing process ------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description="end jobs as the worker would (bench)")
    sub = parser.add_subparsers(dest="command", required=True)
    finish = sub.add_parser("finish")
    finish.add_argument("--dsn", required=True)
    finish.add_argument("--jobs", type=Path, required=True)
    finish.add_argument("--batch", type=int, default=FINISH_BATCH)
    finish.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    job_ids = [line for line in args.jobs.read_text().splitlines() if line]
    result = asyncio.run(_finish_main(args.dsn, job_ids, args.batch, args.seconds))
    print("BENCH_JSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
