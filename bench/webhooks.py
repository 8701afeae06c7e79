"""Outgoing webhooks: delivery throughput, and one slow endpoint's effect on another.

A receiver of the benchmark's own (`python -m bench.webhooks receive`: asyncio on uvloop,
HTTP/1.1 keep-alive, one process on loopback) answers 204 at once on `/fast/...` and
`/baseline/...`, and after a delay (10 s; smoke 2 s) on `/slow/...`, recording each
request's `webhook-id` and arrival time per path.

(1) Throughput. Baseline: httpx in this process POSTs M signed test bodies (Standard
Webhooks headers, signed per request as the service signs) to the receiver, 64 at a time:
(a) as the worker sends, one pool of 4 connections per endpoint path, before and after the
relay's run; (b) through one pool of 64 (32 kept alive), as the worker did before. Relay:
`poyo-relay serve` without its worker (`RUN_WORKER=false`) registers 16 endpoints on the
receiver and takes M `POST /v1/webhook_endpoints/{id}/test` (16 clients), so the outbox
holds M due deliveries before anything sends; then `poyo-relay worker` starts (defaults:
WEBHOOK_CONCURRENCY 64, WEBHOOK_ENDPOINT_CONCURRENCY 4: 16 endpoints x 4 = 64) and the
receiver counts. Both rates are (arrivals - 1) / (last arrival - first arrival) at the
receiver; the worker's CPU is read when the first and the last message arrive.

(2) Isolation. `poyo-relay serve` with its embedded worker (WEBHOOK_TIMEOUT_SECONDS 15),
endpoint A on `/slow/a`, B on `/fast/b`. Test messages to B at a steady 20/s for T
seconds with A idle, then again for T while A is sent the same stream (from 1 s before):
B's latency is its arrival at the receiver - the message's `created_at` (stamped by the
API process before its commit: an upper bound of commit -> arrival). p99 with A loaded /
p99 with A idle.

Checks (a failure makes the run exit 1): every message queued arrived at least once (its
`webhook-id`), each delivery recorded succeeded with one attempt answered 204, sampled
signatures verify with the endpoint's secret, A never had more than
WEBHOOK_ENDPOINT_CONCURRENCY requests in flight, the delivery log answers through the
API, and no error in any process's log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import orjson
import psutil  # type: ignore[import-untyped]
from standardwebhooks.webhooks import Webhook

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
from bench.waiters import _postgres_cpu, _process_cpu

OWNER = "bench"
ENDPOINTS = 16  # x WEBHOOK_ENDPOINT_CONCURRENCY (4) = WEBHOOK_CONCURRENCY (64)
CONCURRENCY = 64  # the baseline's requests in flight: the worker's default slots
PER_ENDPOINT = 4  # WEBHOOK_ENDPOINT_CONCURRENCY's default
QUEUE_CLIENTS = 16
THROUGHPUT_GOAL = 1_000.0  # deliveries/s, PostgreSQL
ISOLATION_GOAL = 1.5  # B's p99 with A loaded / with A idle: "unchanged within noise"
ISOLATION_RATE = 20.0  # messages/s to B, and to A while it is loaded
TIMEOUT_SECONDS = 15.0  # WEBHOOK_TIMEOUT_SECONDS for the isolation run (A answers in 10)
SAMPLES_CHECKED = 3  # signatures verified per endpoint
# BENCH_WEBHOOKS_ANALYZE=0: leave the queued outbox without statistics (PostgreSQL).
ANALYZE_ENV = "BENCH_WEBHOOKS_ANALYZE"


@dataclass(frozen=True)
class WebhooksSize:
    messages: int  # queued before the worker starts
    slow_seconds: float  # A's answer time
    phase_seconds: float  # isolation: per phase
    deliver_timeout: float
    baseline: int  # requests per baseline run


SIZES = {
    "smoke": WebhooksSize(
        messages=300, slow_seconds=2.0, phase_seconds=2.0, deliver_timeout=60, baseline=300
    ),
    "full": WebhooksSize(
        messages=20_000,
        slow_seconds=10.0,
        phase_seconds=30.0,
        deliver_timeout=300,
        baseline=5_000,
    ),
}


# ---- the receiver (its own process) ------------------------------------------------------------


class _Board:
    """What the receiver saw, per path."""

    def __init__(self, slow_seconds: float) -> None:
        self.slow_seconds = slow_seconds
        self.arrivals: dict[str, list[tuple[str, float]]] = defaultdict(list)
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        self.samples: dict[str, list[dict[str, str]]] = defaultdict(list)
        self.connections = 0
        self.unsigned = 0

    def stats(self) -> dict[str, Any]:
        return {
            "paths": {
                path: {
                    "count": len(seen),
                    "distinct": len({mid for mid, _ in seen}),
                    "max_in_flight": self.max_in_flight[path],
                }
                for path, seen in self.arrivals.items()
            },
            "connections": self.connections,
            "unsigned": self.unsigned,
        }

    def reset(self) -> None:
        self.arrivals.clear()
        self.max_in_flight.clear()
        self.samples.clear()
        self.connections = 0
        self.unsigned = 0


_NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"


class _Connection(asyncio.Protocol):
    def __init__(self, board: _Board) -> None:
        self.board = board
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False  # a slow answer is pending: requests after it wait (in order)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's: not a subclass
        self.board.connections += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._parse()

    def _parse(self) -> None:
        while not self.busy:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            self._handle(method, target, headers, body)

    def _handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
        assert self.transport is not None
        board = self.board
        url = urlsplit(target)
        path = url.path
        if method == "POST" and path.startswith(("/fast/", "/slow/", "/baseline/")):
            message_id = headers.get("webhook-id")
            if message_id is None or "webhook-signature" not in headers:
                board.unsigned += 1
                message_id = message_id or "?"
            board.arrivals[path].append((message_id, time.time()))
            samples = board.samples[path]
            if len(samples) < SAMPLES_CHECKED:
                samples.append(
                    {
                        "id": message_id,
                        "timestamp": headers.get("webhook-timestamp", ""),
                        "signature": headers.get("webhook-signature", ""),
                        "body": body.decode("utf-8", "replace"),
                    }
                )
            if path.startswith("/slow/"):
                board.in_flight[path] += 1
                board.max_in_flight[path] = max(board.max_in_flight[path], board.in_flight[path])
                self.busy = True
                loop = asyncio.get_running_loop()
                loop.call_later(board.slow_seconds, self._answer_slow, path)
                return
            self.transport.write(_NO_CONTENT)
            return
        if method == "GET" and path == "/_stats":
            self._json(board.stats())
        elif method == "GET" and path == "/_arrivals":
            wanted = parse_qs(url.query).get("path", [])
            self._json({p: board.arrivals.get(p, []) for p in wanted})
        elif method == "GET" and path == "/_samples":
            self._json(board.samples)
        elif method == "POST" and path == "/_reset":
            board.reset()
            self._json({"ok": True})
        elif method == "GET" and path == "/healthz":
            self._json({"ok": True})
        else:
            self.transport.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")

    def _answer_slow(self, path: str) -> None:
        self.board.in_flight[path] -= 1
        self.busy = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_NO_CONTENT)
            self._parse()

    def _json(self, value: object) -> None:
        assert self.transport is not None
        body = orjson.dumps(value)
        head = (
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        )
        self.transport.write(head.encode() + body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def _receive(port: int, slow_seconds: float) -> None:
    board = _Board(slow_seconds)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Connection(board), "127.0.0.1", port, backlog=1024, reuse_address=True
    )
    async with server:
        await server.serve_forever()


def receive_main(port: int, slow_seconds: float) -> None:
    import uvloop  # uvicorn[standard]'s, as the service runs on it

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_receive(port, slow_seconds))


# ---- talking to the receiver ------------------------------------------------------------------


class Receiver:
    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.http = httpx.AsyncClient(base_url=server.url, timeout=30)
        assert server.proc is not None
        self.process = psutil.Process(server.proc.pid)

    async def stats(self) -> dict[str, Any]:
        return dict((await self.http.get("/_stats")).json())

    async def total(self, prefix: str) -> int:
        paths = (await self.stats())["paths"]
        return sum(int(p["count"]) for name, p in paths.items() if name.startswith(prefix))

    async def arrivals(self, paths: Sequence[str]) -> dict[str, list[tuple[str, float]]]:
        answer = await self.http.get("/_arrivals", params=[("path", p) for p in paths])
        return {p: [(str(m), float(t)) for m, t in seen] for p, seen in answer.json().items()}

    async def samples(self) -> dict[str, list[dict[str, str]]]:
        return dict((await self.http.get("/_samples")).json())

    async def reset(self) -> None:
        (await self.http.post("/_reset")).raise_for_status()

    async def aclose(self) -> None:
        await self.http.aclose()


def _rate(arrivals: Sequence[tuple[str, float]]) -> tuple[float, float]:
    """(deliveries/s between the first and the last arrival, that span in seconds)."""
    times = sorted(t for _, t in arrivals)
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    return ((len(times) - 1) / span if span > 0 else float("nan")), span


# ---- the baseline: httpx straight to the receiver ------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """How the baseline's requests are sent: `pools` httpx clients of `per_pool`
    connections (and in flight), keeping `keepalive` of them open."""

    name: str
    pools: int
    per_pool: int
    keepalive: int


# The worker's own clients: one pool per endpoint of WEBHOOK_ENDPOINT_CONCURRENCY
# connections, all kept alive (app/webhooks/delivery.py `Deliverer._pool`).
AS_WORKER = Variant(
    f"httpx, {ENDPOINTS} pools of {PER_ENDPOINT} (one per endpoint), as the worker's",
    ENDPOINTS,
    PER_ENDPOINT,
    PER_ENDPOINT,
)
# The same 64 in flight through one pool of 64, 32 kept alive: the worker's client before
# it kept a pool per endpoint (httpcore's pool search is quadratic in its size).
ONE_POOL = Variant("httpx, one pool of 64 (32 kept alive), the worker's before", 1, CONCURRENCY, 32)


@dataclass
class Baseline:
    rate: float
    span: float
    cpu_ms_per_1000: float
    receiver_ms_per_1000: float
    connections: int
    failures: int


_TEST_DATA = {"endpoint_id": "ep_baseline", "message": "a test message from poyo-relay"}


async def run_baseline(receiver: Receiver, count: int, variant: Variant) -> Baseline:
    """`count` signed POSTs, pools x per_pool in flight, to the receiver's 16 paths."""
    await receiver.reset()
    signer = Webhook("whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    limits = httpx.Limits(
        max_connections=variant.per_pool, max_keepalive_connections=variant.keepalive
    )
    numbers = iter(range(count))
    failures = 0
    me = psutil.Process()
    pools = [
        httpx.AsyncClient(timeout=10, limits=limits, follow_redirects=False)
        for _ in range(variant.pools)
    ]

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal failures
        for i in numbers:
            now = datetime.now(UTC)
            message_id = f"msg_baseline{i:08d}"
            body = orjson.dumps(
                {"type": "webhook.test", "timestamp": now.isoformat(), "data": _TEST_DATA}
            ).decode()
            headers = {
                "content-type": "application/json",
                "user-agent": "poyo-relay-webhooks",
                "webhook-id": message_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": signer.sign(message_id, now, body),
            }
            try:
                response = await http.post(
                    f"{receiver.server.url}/baseline/{i % ENDPOINTS}",
                    content=body.encode(),
                    headers=headers,
                )
                if response.status_code != 204:
                    failures += 1
            except httpx.HTTPError:
                failures += 1

    try:
        cpu, served = _process_cpu(me), _process_cpu(receiver.process)
        await asyncio.gather(
            *(client(pools[k % variant.pools]) for k in range(variant.pools * variant.per_pool))
        )
        cpu, served = _process_cpu(me) - cpu, _process_cpu(receiver.process) - served
    finally:
        for pool in pools:
            await pool.aclose()
    paths = [f"/baseline/{i}" for i in range(ENDPOINTS)]
    seen = [a for arrivals in (await receiver.arrivals(paths)).values() for a in arrivals]
    stats = await receiver.stats()
    if len({m for m, _ in seen}) != count:
        raise BenchFailure(f"baseline: {len(seen)} of {count} requests reached the receiver")
    rate, span = _rate(seen)
    return Baseline(
        rate, span, cpu * 1e6 / count, served * 1e6 / count, int(stats["connections"]), failures
    )


# ---- the service ----------------------------------------------------------------------------


def _env(db: BenchDatabase, port: int, extra: dict[str, str]) -> dict[str, str]:
    return service_env(
        {
            "DATABASE_URL": db.url,
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            "WEBHOOK_ALLOW_PRIVATE": "true",
            "ARCHIVE_ENABLED": "false",
            "BALANCE_CHECK_SECONDS": "0",
            "ACCESS_LOG": "false",
        }
        | extra
    )


async def _token(db: BenchDatabase) -> str:
    database = Database(load_settings(database_url=db.url, _env_file=None))
    try:
        _, token = await create_key(database, name=OWNER)
    finally:
        await database.dispose()
    return token


async def _register(http: httpx.AsyncClient, url: str, description: str) -> tuple[str, str]:
    response = await http.post(
        "/v1/webhook_endpoints", json={"url": url, "description": description}
    )
    if response.status_code != 201:
        raise BenchFailure(f"registering {url}: HTTP {response.status_code} {response.text}")
    body = response.json()
    return str(body["id"]), str(body["secret"])


async def _queue_test(http: httpx.AsyncClient, endpoint_id: str) -> str:
    response = await http.post(f"/v1/webhook_endpoints/{endpoint_id}/test")
    if response.status_code != 202:
        raise BenchFailure(f"test message: HTTP {response.status_code} {response.text[:300]}")
    return str(response.json()["message_ids"][0])


def _api(url: str, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url,
        timeout=60,
        headers={"Authorization": f"Bearer {token}"},
        limits=httpx.Limits(max_connections=QUEUE_CLIENTS * 2),
    )


async def _query(db: BenchDatabase, sql: str) -> list[tuple[Any, ...]]:
    if db.is_sqlite:
        conn = sqlite3.connect(db.raw, timeout=30)
        try:
            return list(conn.execute(sql))
        finally:
            conn.close()
    pg = await asyncpg.connect(db.raw)
    try:
        return [tuple(r) for r in await pg.fetch(sql)]
    finally:
        await pg.close()


def _parse_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


def _verify(samples: dict[str, list[dict[str, str]]], secrets: dict[str, str]) -> list[str]:
    """Problems with the sampled signatures of each path whose secret is known."""
    problems = []
    for path, secret in secrets.items():
        taken = samples.get(path, [])
        if not taken:
            problems.append(f"{path}: nothing sampled")
        for sample in taken:
            headers = {
                "webhook-id": sample["id"],
                "webhook-timestamp": sample["timestamp"],
                "webhook-signature": sample["signature"],
            }
            try:
                Webhook(secret).verify(sample["body"], headers)
            except Exception as exc:
                problems.append(f"{path} {sample['id']}: {type(exc).__name__}: {exc}")
    return problems


# ---- (1) throughput ---------------------------------------------------------------------------


@dataclass
class Throughput:
    messages: int = 0
    queue_seconds: float = 0.0
    rate: float = float("nan")
    span: float = 0.0
    launch_to_last: float = 0.0
    worker_ms_per_1000: float = float("nan")
    postgres_ms_per_1000: float = float("nan")
    receiver_ms_per_1000: float = float("nan")
    machine_cores: float = float("nan")
    connections: int = 0
    attempts_p50_ms: float = float("nan")
    attempts_p99_ms: float = float("nan")
    received: int = 0
    distinct: int = 0
    recorded: dict[str, int] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)


async def _queue_many(
    http: httpx.AsyncClient, endpoints: Sequence[str], count: int
) -> tuple[list[str], float]:
    numbers = iter(range(count))
    ids: list[str] = []

    async def client() -> None:
        for i in numbers:
            ids.append(await _queue_test(http, endpoints[i % len(endpoints)]))

    began = time.monotonic()
    await asyncio.gather(*(client() for _ in range(QUEUE_CLIENTS)))
    return ids, time.monotonic() - began


async def run_throughput(
    backend: str,
    db: BenchDatabase,
    tmp: Path,
    receiver: Receiver,
    token: str,
    wsize: WebhooksSize,
    sampler: MemorySampler,
    profile_dir: Path | None,
    processes: list[ServerProcess],
) -> tuple[Throughput, list[str]]:
    """(`processes` gets each process started, for the caller to stop.)"""
    out = Throughput(messages=wsize.messages)
    problems: list[str] = []
    port = free_port()
    api = ServerProcess(
        f"webhooks-api-{backend}",
        [str(venv_bin("poyo-relay")), "serve", "--port", str(port)],
        _env(db, port, {"RUN_WORKER": "false"}),
        tmp,
        port,
    ).start()
    processes.append(api)
    api.wait_ready("/readyz")
    sampler.watch(f"webhooks[{backend}] api", api)
    paths = [f"/fast/{i}" for i in range(ENDPOINTS)]
    secrets: dict[str, str] = {}
    async with _api(api.url, token) as http:
        endpoints = []
        for path in paths:
            endpoint_id, secret = await _register(http, receiver.server.url + path, path)
            endpoints.append(endpoint_id)
            secrets[path] = secret
        say(f"webhooks [{backend}]: queueing {wsize.messages:,} test messages to {ENDPOINTS} "
            f"endpoints through the API ({QUEUE_CLIENTS} clients), no worker running")  # fmt: skip
        queued, out.queue_seconds = await _queue_many(http, endpoints, wsize.messages)
    say(f"  queued in {out.queue_seconds:.1f}s ({wsize.messages / out.queue_seconds:,.0f}/s)")
    sampler.unwatch(f"webhooks[{backend}] api")
    api.stop()
    if not db.is_sqlite and os.environ.get(ANALYZE_ENV, "1") != "0":
        # What autovacuum does after this many inserts (the bench server runs without it).
        # The claim no longer depends on it (no per-row NOT EXISTS since the ordering moved
        # to the 'waiting' state); BENCH_WEBHOOKS_ANALYZE=0 runs without (see the README).
        await _query(db, "ANALYZE webhook_endpoints, webhook_messages, webhook_deliveries")
    await receiver.reset()

    worker = ServerProcess(
        f"webhooks-worker-{backend}",
        [str(venv_bin("poyo-relay")), "worker"],
        _env(db, port, {}),
        tmp,
        0,
    )
    receiver_process = receiver.process
    db_name = db.name if not db.is_sqlite else ""
    launched = time.monotonic()
    worker.start()
    processes.append(worker)
    assert worker.proc is not None
    worker_process = psutil.Process(worker.proc.pid)
    sampler.watch(f"webhooks[{backend}] worker", worker)
    spy: subprocess.Popen[bytes] | None = None
    raw = (profile_dir or tmp) / f"pyspy-webhooks-worker-{backend}.txt"
    first: tuple[int, float, float, float, float, float] | None = None
    count = 0
    deadline = launched + wsize.deliver_timeout
    while count < wsize.messages:
        if worker.proc.poll() is not None:
            raise BenchFailure(f"the worker exited:\n{worker.log_tail()}")
        if time.monotonic() > deadline:
            raise BenchFailure(
                f"only {count} of {wsize.messages} messages arrived within "
                f"{wsize.deliver_timeout:g}s of the worker's launch"
            )
        await asyncio.sleep(0.02)
        count = await receiver.total("/fast/")
        if count and first is None:
            first = (count, *_cpu(worker_process, receiver_process, db_name))
            if profile_dir is not None and profile.available():
                spy = profile.start(worker.proc.pid, wsize.deliver_timeout, raw)
    last = _cpu(worker_process, receiver_process, db_name)
    out.launch_to_last = time.monotonic() - launched
    assert first is not None
    if spy is not None:
        spy.send_signal(2)  # SIGINT: py-spy writes what it has
        await asyncio.to_thread(spy.wait, 30)
        if raw.exists():
            summary = profile.summarise(raw)
            profile.print_profile(f"py-spy, webhooks [{backend}], the worker", summary)
            out.profile = profile.as_dict(summary) | {"raw_file": str(raw)}
    delivered = wsize.messages - first[0]
    out.worker_ms_per_1000 = (last[0] - first[1]) * 1e6 / delivered
    out.receiver_ms_per_1000 = (last[1] - first[2]) * 1e6 / delivered
    if not db.is_sqlite:
        out.postgres_ms_per_1000 = (last[2] - first[3]) * 1e6 / delivered
    out.machine_cores = (last[3] - first[4]) / max(1e-9, last[4] - first[5])

    seen = [a for arrivals in (await receiver.arrivals(paths)).values() for a in arrivals]
    out.received = len(seen)
    out.distinct = len({m for m, _ in seen})
    out.rate, out.span = _rate(seen)
    stats = await receiver.stats()
    out.connections = int(stats["connections"])
    missing = set(queued) - {m for m, _ in seen}
    if missing:
        problems.append(f"{len(missing)} queued messages never arrived, e.g. {min(missing)}")
    if stats["unsigned"]:
        problems.append(f"{stats['unsigned']} requests without webhook-id/signature")
    problems += _verify(await receiver.samples(), secrets)

    # The attempts are written in batches after the answers: wait for the last.
    settled = "SELECT count(*) FROM webhook_deliveries WHERE state = 'succeeded'"
    until = time.monotonic() + 30
    while time.monotonic() < until:  # another process writes them
        if int((await _query(db, settled))[0][0]) >= wsize.messages:
            break
        await asyncio.sleep(0.2)
    sampler.unwatch(f"webhooks[{backend}] worker")
    worker.stop()
    states = await _query(db, "SELECT state, count(*) FROM webhook_deliveries GROUP BY state")
    attempts = await _query(
        db, "SELECT coalesce(http_status, 0), count(*) FROM webhook_attempts GROUP BY 1"
    )
    out.recorded = {f"delivery {s}": int(n) for s, n in states} | {
        f"attempt HTTP {s}": int(n) for s, n in attempts
    }
    if out.recorded != {
        "delivery succeeded": wsize.messages,
        "attempt HTTP 204": wsize.messages,
    }:
        problems.append(f"recorded: {out.recorded}, expected {wsize.messages} of each")
    latencies = [float(r[0]) for r in await _query(db, "SELECT latency_ms FROM webhook_attempts")]
    out.attempts_p50_ms = percentile(latencies, 50)
    out.attempts_p99_ms = percentile(latencies, 99)
    return out, problems


def _cpu(
    worker: psutil.Process, receiver: psutil.Process, db_name: str
) -> tuple[float, float, float, float, float]:
    times = psutil.cpu_times()
    busy = times.user + times.nice + times.system + times.irq + times.softirq
    pg = _postgres_cpu(db_name) if db_name else 0.0
    return _process_cpu(worker), _process_cpu(receiver), pg, float(busy), time.monotonic()


# ---- (2) isolation --------------------------------------------------------------------------


@dataclass
class Isolation:
    slow_seconds: float = 0.0
    seconds: float = 0.0
    idle_ms: list[float] = field(default_factory=list)
    loaded_ms: list[float] = field(default_factory=list)
    slow_sent: int = 0
    slow_received: int = 0
    slow_max_in_flight: int = 0
    log_page: int = 0
    loaded_missing: int = 0


async def _paced(http: httpx.AsyncClient, endpoint_id: str, seconds: float) -> list[str]:
    """Test messages at ISOLATION_RATE for `seconds`, each sent on time (not after the
    previous answer); their ids."""
    count = max(1, round(seconds * ISOLATION_RATE))
    began = time.monotonic()

    async def one(i: int) -> str:
        await asyncio.sleep(max(0.0, began + i / ISOLATION_RATE - time.monotonic()))
        return await _queue_test(http, endpoint_id)

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def _until_arrived(
    receiver: Receiver, path: str, ids: Sequence[str], within: float
) -> dict[str, float]:
    deadline = time.monotonic() + within
    wanted = set(ids)
    while True:
        arrived = {m: t for m, t in (await receiver.arrivals([path]))[path] if m in wanted}
        if len(arrived) == len(wanted):
            return arrived
        if time.monotonic() > deadline:
            return arrived  # the caller reports what is missing
        await asyncio.sleep(0.1)


async def _latencies(db: BenchDatabase, arrived: dict[str, float]) -> list[float]:
    ids = ", ".join(f"'{m}'" for m in arrived)
    rows = await _query(db, f"SELECT id, created_at FROM webhook_messages WHERE id IN ({ids})")
    return [(arrived[m] - _parse_time(at).timestamp()) * 1000 for m, at in rows]


async def run_isolation(
    backend: str,
    db: BenchDatabase,
    tmp: Path,
    receiver: Receiver,
    token: str,
    wsize: WebhooksSize,
    sampler: MemorySampler,
    processes: list[ServerProcess],
) -> tuple[Isolation, list[str]]:
    out = Isolation(slow_seconds=wsize.slow_seconds, seconds=wsize.phase_seconds)
    problems: list[str] = []
    port = free_port()
    server = ServerProcess(
        f"webhooks-serve-{backend}",
        [str(venv_bin("poyo-relay")), "serve", "--port", str(port)],
        _env(db, port, {"WEBHOOK_TIMEOUT_SECONDS": f"{TIMEOUT_SECONDS:g}"}),
        tmp,
        port,
    ).start()
    processes.append(server)
    server.wait_ready("/readyz")
    sampler.watch(f"webhooks[{backend}] api+worker", server)
    await receiver.reset()
    within = wsize.phase_seconds + 60
    async with _api(server.url, token) as http:
        slow, slow_secret = await _register(http, receiver.server.url + "/slow/a", "A (slow)")
        fast, fast_secret = await _register(http, receiver.server.url + "/fast/b", "B (fast)")
        say(f"webhooks [{backend}]: isolation, A answers after {wsize.slow_seconds:g}s; "
            f"B at {ISOLATION_RATE:g}/s for {wsize.phase_seconds:g}s with A idle, then with "
            f"A sent as many")  # fmt: skip
        warm = await _paced(http, fast, 1.0)
        await _until_arrived(receiver, "/fast/b", warm, within)
        idle = await _paced(http, fast, wsize.phase_seconds)
        arrived = await _until_arrived(receiver, "/fast/b", idle, within)
        out.idle_ms = await _latencies(db, arrived)
        if len(arrived) < len(idle):
            problems.append(f"A idle: {len(idle) - len(arrived)} of B's messages not arrived")

        async def stream_to_a() -> list[str]:
            return await _paced(http, slow, wsize.phase_seconds + 1.0)

        feeding = asyncio.create_task(stream_to_a())
        await asyncio.sleep(1.0)
        loaded = await _paced(http, fast, wsize.phase_seconds)
        sent_to_a = await feeding
        arrived = await _until_arrived(receiver, "/fast/b", loaded, within)
        out.loaded_ms = await _latencies(db, arrived)
        out.loaded_missing = len(loaded) - len(arrived)
        if out.loaded_missing:
            problems.append(
                f"A loaded: {out.loaded_missing} of B's {len(loaded)} messages had not arrived "
                f"{within:g}s after the last was queued"
            )
        out.slow_sent = len(sent_to_a)
        stats = (await receiver.stats())["paths"].get("/slow/a", {})
        out.slow_received = int(stats.get("count", 0))
        out.slow_max_in_flight = int(stats.get("max_in_flight", 0))
        if out.slow_max_in_flight > PER_ENDPOINT:
            problems.append(
                f"A had {out.slow_max_in_flight} requests in flight "
                f"(WEBHOOK_ENDPOINT_CONCURRENCY {PER_ENDPOINT})"
            )
        if out.slow_received == 0:
            problems.append("A received nothing")
        log = await http.get(f"/v1/webhook_endpoints/{fast}/deliveries", params={"limit": 100})
        page = log.json().get("data", []) if log.status_code == 200 else []
        out.log_page = len(page)
        if (
            log.status_code != 200
            or len(page) != 100
            or any(a.get("http_status") != 204 for a in page)
        ):
            problems.append(f"B's delivery log: HTTP {log.status_code}, {log.text[:300]}")
        problems += _verify(
            await receiver.samples(), {"/slow/a": slow_secret, "/fast/b": fast_secret}
        )
    sampler.unwatch(f"webhooks[{backend}] api+worker")
    server.stop(timeout=wsize.slow_seconds + 20)
    return out, problems


# ---- the benchmark -----------------------------------------------------------------------------


async def run_backend(
    backend: str, size: Size, sampler: MemorySampler, profile_dir: Path | None = None
) -> dict[str, Any]:
    wsize = SIZES[size.name]
    with workdir() as tmp:
        db = await create_database(backend, tmp)
        processes: list[ServerProcess] = []
        receiver: Receiver | None = None
        try:
            port = free_port()
            server = ServerProcess(
                f"webhooks-receiver-{backend}",
                [sys.executable, "-m", "bench.webhooks", "receive", "--port", str(port),
                 "--slow-seconds", f"{wsize.slow_seconds:g}"],
                service_env({}), tmp, port,
            ).start()  # fmt: skip
            processes.append(server)
            server.wait_ready("/healthz")
            receiver = Receiver(server)
            token = await _token(db)
            say(f"webhooks [{backend}]: baselines, httpx to the receiver, {wsize.baseline:,} "
                f"POSTs, {CONCURRENCY} in flight")  # fmt: skip
            before = await run_baseline(receiver, wsize.baseline, AS_WORKER)
            one_pool = await run_baseline(receiver, wsize.baseline, ONE_POOL)
            say(f"  {before.rate:,.0f} req/s ({AS_WORKER.name}); {one_pool.rate:,.0f} req/s "
                f"({ONE_POOL.name})")  # fmt: skip
            throughput, problems = await run_throughput(
                backend, db, tmp, receiver, token, wsize, sampler, profile_dir, processes
            )
            say(f"  relay: {throughput.rate:,.0f} deliveries/s")
            after = await run_baseline(receiver, wsize.baseline, AS_WORKER)
            say(f"  baseline again: {after.rate:,.0f} req/s")
            isolation, more = await run_isolation(
                backend, db, tmp, receiver, token, wsize, sampler, processes
            )
            problems += more
            errors = [e for p in processes for e in p.log_errors()]
            return _report(
                backend, before, after, one_pool, throughput, isolation, problems, errors
            )
        finally:
            if receiver is not None:
                await receiver.aclose()
            for process in reversed(processes):
                with contextlib.suppress(Exception):
                    process.stop()
            await drop_database(db)


def _ms(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{percentile(values, 50):,.1f} / {percentile(values, 99):,.1f} / {max(values):,.1f}"


def _report(
    backend: str,
    before: Baseline,
    after: Baseline,
    one_pool: Baseline,
    t: Throughput,
    iso: Isolation,
    problems: list[str],
    errors: list[str],
) -> dict[str, Any]:
    failed = before.failures + after.failures + one_pool.failures
    if failed:
        problems = [*problems, f"baseline: {failed} non-204 answers"]
    baseline = (before.rate + after.rate) / 2
    ratio = t.rate / baseline
    goal = THROUGHPUT_GOAL if backend == "postgresql" else None
    verdict = "" if goal is None else ("met" if t.rate >= goal else "MISSED")
    idle99, loaded99 = percentile(iso.idle_ms, 99), percentile(iso.loaded_ms, 99)
    if iso.loaded_missing:
        loaded99 = float("inf")  # some never arrived
    iso_ratio = loaded99 / idle99
    pg = fmt(t.postgres_ms_per_1000, 0) if backend == "postgresql" else "-"
    rows = [
        ("messages queued first (16 endpoints), through the API, per s",
         f"{t.messages:,} in {t.queue_seconds:.1f}s, {t.messages / t.queue_seconds:,.0f}/s", ""),
        (f"baseline (a) {AS_WORKER.name}: req/s before / after",
         f"{before.rate:,.0f} / {after.rate:,.0f}", ""),
        (f"baseline (b) {ONE_POOL.name}: req/s", f"{one_pool.rate:,.0f}", ""),
        ("relay worker: deliveries/s (first to last arrival)",
         f"{t.rate:,.0f} ({t.span:.2f}s)",
         f"{verdict} (>= {THROUGHPUT_GOAL:,.0f})" if goal else ""),
        ("ratio relay / (a) (mean of before and after)", f"{ratio:.2f}", ""),
        ("ratio relay / (b)", f"{t.rate / one_pool.rate:.2f}", ""),
        ("worker launch -> last arrival, s", f"{t.launch_to_last:.1f}", ""),
        ("CPU ms per 1,000: worker / its PostgreSQL backends / receiver",
         f"{fmt(t.worker_ms_per_1000, 0)} / {pg} / {fmt(t.receiver_ms_per_1000, 0)}", ""),
        ("CPU ms per 1,000: baseline client / receiver, (a) and (b)",
         f"{fmt(before.cpu_ms_per_1000, 0)} / {fmt(before.receiver_ms_per_1000, 0)}, "
         f"{fmt(one_pool.cpu_ms_per_1000, 0)} / {fmt(one_pool.receiver_ms_per_1000, 0)}", ""),
        ("machine cores busy while delivering", f"{t.machine_cores:.2f}", ""),
        ("connections the receiver accepted: relay / (a) / (b)",
         f"{t.connections:,} / {before.connections:,} / {one_pool.connections:,}", ""),
        ("attempt latency_ms p50 / p99 (as recorded)",
         f"{t.attempts_p50_ms:.0f} / {t.attempts_p99_ms:.0f}", ""),
        ("arrivals / distinct webhook-ids / queued",
         f"{t.received:,} / {t.distinct:,} / {t.messages:,}", ""),
        ("recorded", ", ".join(f"{k} {v:,}" for k, v in sorted(t.recorded.items())), ""),
        (f"B: created -> arrival p50 / p99 / max ms, A idle ({len(iso.idle_ms)})",
         _ms(iso.idle_ms), ""),
        (f"B: same, A answering in {iso.slow_seconds:g}s, sent {ISOLATION_RATE:g}/s "
         f"({len(iso.loaded_ms)})", _ms(iso.loaded_ms), ""),
        ("B's p99 ratio loaded / idle", f"{iso_ratio:.2f}",
         f"{'met' if iso_ratio <= ISOLATION_GOAL else 'MISSED'} (<= {ISOLATION_GOAL:g})"),
        ("A: sent / answered / most in flight",
         f"{iso.slow_sent:,} / {iso.slow_received:,} / {iso.slow_max_in_flight}",
         f"<= {PER_ENDPOINT}"),
        ("checks: signatures, every message arrived, recorded, log",
         "ok" if not problems else f"{len(problems)} problems", ""),
        ("service log errors", str(len(errors)), "met" if not errors else "MISSED"),
    ]  # fmt: skip
    print_table(
        f"webhooks [{backend}]: poyo-relay worker -> local receiver vs httpx; "
        f"slow endpoint A vs fast B (serve, embedded worker)",
        ("what", "value", "goal"),
        rows,
    )
    for line in problems[:10] + errors[:10]:
        print(f"  problem: {line}")
    failures = [f"check: {p}" for p in problems[:5]]
    if errors:
        failures.append(f"server logged errors: {errors[0]}")
    return {
        "backend": backend,
        "messages": t.messages,
        "baseline_rps": {"before": before.rate, "after": after.rate, "one_pool": one_pool.rate},
        "baseline_cpu_ms_per_1000": {
            "as_worker": before.cpu_ms_per_1000,
            "one_pool": one_pool.cpu_ms_per_1000,
        },
        "analyzed": backend != "postgresql" or os.environ.get(ANALYZE_ENV, "1") != "0",
        "deliveries_per_s": t.rate,
        "ratio": ratio,
        "goal_deliveries_per_s": goal,
        "queue_per_s": t.messages / t.queue_seconds,
        "launch_to_last_s": t.launch_to_last,
        "cpu_ms_per_1000": {
            "worker": t.worker_ms_per_1000,
            "postgres": t.postgres_ms_per_1000,
            "receiver": t.receiver_ms_per_1000,
        },
        "machine_cores": t.machine_cores,
        "connections": {
            "relay": t.connections,
            "as_worker": before.connections,
            "one_pool": one_pool.connections,
        },
        "attempt_latency_ms": {"p50": t.attempts_p50_ms, "p99": t.attempts_p99_ms},
        "recorded": t.recorded,
        "isolation": {
            "slow_seconds": iso.slow_seconds,
            "idle_ms": {"p50": percentile(iso.idle_ms, 50), "p99": idle99},
            "loaded_ms": {"p50": percentile(iso.loaded_ms, 50), "p99": loaded99},
            "ratio": iso_ratio,
            "slow": {
                "sent": iso.slow_sent,
                "received": iso.slow_received,
                "max_in_flight": iso.slow_max_in_flight,
            },
        },
        "profile": t.profile,
        "problems": problems,
        "failures": failures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="the webhook benchmark's receiver")
    sub = parser.add_subparsers(dest="command", required=True)
    receive = sub.add_parser("receive")
    receive.add_argument("--port", type=int, required=True)
    receive.add_argument("--slow-seconds", type=float, default=10.0)
    args = parser.parse_args()
    receive_main(args.port, args.slow_seconds)


if __name__ == "__main__":
    main()
