"""Closed-loop HTTP load: wrk with bench/callbacks.lua, or a lean asyncio generator.

Both send the same requests (callbacks for the jobs of a pool file, cycling from an offset)
and report the same summary. wrk is preferred: it costs the 2-core machine far less CPU
than any Python client; the asyncio generator is the fallback when wrk is not installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import BENCH_DIR, BenchFailure, percentile

LUA_SCRIPT = BENCH_DIR / "callbacks.lua"


@dataclass
class LoadResult:
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    timeouts: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def accepted(self) -> int:
        """Requests answered 2xx (wrk counts 3xx as success too; the service sends none)."""
        return self.requests - self.non_2xx


def body_for(task_id: str) -> bytes:
    """The callback body the simulator sends for a finished task (the same as the Lua's)."""
    return (
        '{"code":200,"msg":"success","data":{"task_id":"' + task_id + '","status":"finished",'
        '"progress":100,"files":[{"file_url":"https://cdn.example.com/videos/' + task_id + '.mp4",'
        '"file_type":"video"}],"created_time":"2025-11-12T10:30:00","error_message":null}}'
    ).encode()


def choose_generator(requested: str) -> str:
    if requested == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    if requested == "wrk" and shutil.which("wrk") is None:
        raise BenchFailure("wrk is not installed (apt-get install -y wrk), use --loadgen python")
    return requested


def run_load(
    *,
    generator: str,
    port: int,
    pool_file: Path,
    prefix: str,
    offset: int,
    concurrency: int,
    seconds: float,
    threads: int = 1,
) -> LoadResult:
    """One closed-loop run against 127.0.0.1:port; blocks for `seconds`."""
    if generator == "wrk":
        argv = [
            "wrk",
            f"-t{threads}",
            f"-c{concurrency}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "30s",
            "-s",
            str(LUA_SCRIPT),
            f"http://127.0.0.1:{port}",
            "--",
            str(pool_file),
            prefix,
            str(offset),
            str(threads),
        ]
    else:
        argv = [
            sys.executable,
            "-m",
            "bench.loadgen",
            "--port",
            str(port),
            "--pool",
            str(pool_file),
            "--prefix",
            prefix,
            "--offset",
            str(offset),
            "--concurrency",
            str(concurrency),
            "--seconds",
            str(seconds),
        ]
    result = subprocess.run(
        argv, capture_output=True, text=True, check=False, timeout=seconds + 120
    )
    for line in result.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            data = json.loads(line.removeprefix("BENCH_JSON "))
            return LoadResult(
                requests=data["requests"],
                seconds=data["duration_us"] / 1e6,
                non_2xx=data["non_2xx"],
                socket_errors=data["connect_errors"] + data["read_errors"] + data["write_errors"],
                timeouts=data["timeouts"],
                p50_ms=data["p50_us"] / 1000,
                p90_ms=data["p90_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
                max_ms=data["max_us"] / 1000,
            )
    raise BenchFailure(
        f"load generator failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
    )


# ---- the asyncio fallback generator ------------------------------------------------------------


@dataclass
class _Stats:
    latencies: list[float]
    non_2xx: int = 0
    errors: int = 0


async def _connection(
    port: int,
    requests: list[bytes],
    next_index: list[int],
    stop_at: float,
    stats: _Stats,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop_at:
            index = next_index[0] % len(requests)
            next_index[0] += 1
            started = time.perf_counter()
            writer.write(requests[index])
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            stats.latencies.append(time.perf_counter() - started)
            if not 200 <= status < 400:
                stats.non_2xx += 1
            if b"connection: close" in head.lower():
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except (OSError, asyncio.IncompleteReadError):
        stats.errors += 1
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _generate(args: argparse.Namespace, pool: list[list[str]]) -> dict[str, float]:
    requests = []
    for job_id, token, task_id in pool:
        body = body_for(task_id)
        requests.append(
            (
                f"POST {args.prefix}/{job_id}/{token} HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{args.port}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
    stats = _Stats(latencies=[])
    next_index = [args.offset]
    started = time.perf_counter()
    stop_at = started + args.seconds
    await asyncio.gather(
        *(
            _connection(args.port, requests, next_index, stop_at, stats)
            for _ in range(args.concurrency)
        )
    )
    elapsed = time.perf_counter() - started
    us = [x * 1e6 for x in stats.latencies]
    return {
        "requests": len(us),
        "duration_us": elapsed * 1e6,
        "connect_errors": 0,
        "read_errors": stats.errors,
        "write_errors": 0,
        "non_2xx": stats.non_2xx,
        "timeouts": 0,
        "p50_us": percentile(us, 50),
        "p90_us": percentile(us, 90),
        "p99_us": percentile(us, 99),
        "max_us": max(us, default=0.0),
        "mean_us": sum(us) / len(us) if us else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="asyncio closed-loop callback load")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pool", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    pool = [line.split() for line in Path(args.pool).read_text().splitlines() if line]
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        summary = asyncio.run(_generate(args, pool))
    else:
        summary = uvloop.run(_generate(args, pool))
    print("BENCH_JSON " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
