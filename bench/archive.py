"""The archive benchmark: what keeping a large output costs (app/archive).

A file of random bytes (1 GiB; smoke: 64 MiB) named `out.mp4` is served by a static file
server on loopback (`python -m bench.archive serve`: the standard library's, sending the
file with sendfile(2) so that it is not the bottleneck). Then:

(a) Memory. A separate process (`python -m bench.archive archiver`) builds the archive
    exactly as the worker does (`app.runtime.archive_service`: local storage, the real
    downloader), stores one succeeded job whose output is that URL, leases it from the
    archive queue and calls `ArchiveService.archive()` once. It reads its own RSS just
    before (the baseline), resets the kernel's high-water mark, samples its RSS every
    5 ms during the attempt, and reports the peak: the increase is what archiving the file
    cost. Goal: under 64 MB, however large the file.
(b) Throughput. `curl -o` of the same URL to a file, once before and once after the
    archive, against the archive() call's wall time: the ratio curl seconds / archive
    seconds, with the faster curl. Goal: at least 0.5.

The job must end `archived`, with the source's size and sha256 recorded, and the stored
file must hash to the source's sha256; anything else breaks the benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from app.archive.rules import storage_key
from app.archive.storage import LocalStorage
from app.config import load_settings
from app.db import Database
from app.ids import new_job_id
from app.jobs import leases
from app.jobs import repository as repo
from app.jobs.events import EventType, NewEvent
from app.jobs.models import Job, provider_output, read_output
from app.jobs.states import ArchiveStatus, JobStatus
from app.logs import configure_logging
from app.provider.schemas import ProviderStatus
from app.runtime import archive_service
from app.timeutil import utcnow
from bench.common import (
    BenchFailure,
    MemorySampler,
    ServerProcess,
    Size,
    create_database,
    drop_database,
    fmt,
    free_port,
    print_table,
    say,
    service_env,
    workdir,
)

MB = 2**20
RSS_INCREASE_GOAL_MB = 64.0
THROUGHPUT_GOAL = 0.5
BLOCK_BYTES = MB
FILE_NAME = "out.mp4"
SAMPLE_SECONDS = 0.005
LEASE_OWNER = "bench-archive"
# Environment variables that would send httpx or curl through a proxy instead of loopback.
PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


# ---- the file server (a child process) -----------------------------------------------------


class _SendfileHandler(http.server.SimpleHTTPRequestHandler):
    """The standard library's static file handler, the body sent with sendfile(2)."""

    def copyfile(self, source: Any, outputfile: Any) -> None:
        self.connection.sendfile(source)

    def log_message(self, format: str, *args: Any) -> None:
        return None  # a line per request on stderr says nothing the benchmark needs


def serve(port: int, directory: Path) -> None:
    def handler(*args: Any) -> _SendfileHandler:
        return _SendfileHandler(*args, directory=str(directory))

    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as server:
        server.serve_forever()


# ---- the archiving process (a child process) --------------------------------------------


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


def _reset_high_water_mark() -> bool:
    """Reset the kernel's peak RSS of this process (VmHWM); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _high_water_mark() -> int | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


class _PeakRss:
    """This process's largest RSS while the block runs, sampled in a thread."""

    def __init__(self) -> None:
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-peak", daemon=True)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self._sample()

    def _sample(self) -> None:
        self.peak = max(self.peak, _rss())
        self.samples += 1


async def archive_once(
    *, database_url: str, url: str, archive_dir: Path, max_bytes: int
) -> dict[str, Any]:
    """Store one succeeded job whose output is `url`, lease it from the archive queue and
    archive it as the worker would; the figures and what the job recorded."""
    settings = load_settings(
        _env_file=None,
        database_url=database_url,
        archive_enabled=True,
        archive_allow_private=True,  # the file server is on loopback
        archive_dir=str(archive_dir),
        archive_max_bytes=max_bytes,
        log_level="WARNING",
    )
    configure_logging(level=settings.log_level, fmt="json")
    db = Database(settings)
    service = archive_service(settings, db)
    try:
        now = utcnow()
        job = Job(
            id=new_job_id(now),
            owner="bench",
            model="wan2.5-text-to-video",
            status=JobStatus.SUCCEEDED,
            input={"prompt": "a lighthouse at dusk"},
            metadata_={},
            provider_task_id="bench-archive-task",
            provider_status=ProviderStatus.FINISHED,
            progress=100,
            outputs=[provider_output(url, "video")],
            created_at=now,
            updated_at=now,
            submitted_at=now,
            completed_at=now,
            submit_attempts=1,
            poll_attempts=0,
            archive_status=ArchiveStatus.PENDING,
            archive_attempts=0,
            archive_due_at=now,
        )
        async with db.write() as conn:
            await repo.add_job(conn, job, NewEvent(EventType.JOB_CREATED, {}))
        queue = leases.Queue((JobStatus.SUCCEEDED,), due_at="archive_due_at")
        async with db.write() as conn:
            now = utcnow()
            until = now + timedelta(seconds=settings.worker_lease_seconds)
            claimed = await leases.claim(
                conn, queue, owner=LEASE_OWNER, now=now, until=until, limit=1
            )
        if claimed != [job.id]:
            raise RuntimeError(f"the archive queue gave {claimed}, not [{job.id}]")

        gc.collect()
        baseline = _rss()
        reset = _reset_high_water_mark()
        with _PeakRss() as sampled:
            began = time.perf_counter()
            await service.archive(job_id=job.id, lease_owner=LEASE_OWNER)
            seconds = time.perf_counter() - began
        high_water = _high_water_mark() if reset else None
        peak = max(sampled.peak, high_water or 0)

        async with db.read() as session:
            stored = await repo.load(session, job.id)
        if stored is None or not stored.outputs:
            raise RuntimeError(f"job {job.id} vanished, or its outputs")
        output = read_output(stored.outputs[0])
        return {
            "job_id": job.id,
            "baseline_rss": baseline,
            "peak_rss": peak,
            "peak_rss_sampled": sampled.peak,
            "peak_rss_kernel": high_water,
            "samples": sampled.samples,
            "seconds": seconds,
            "archive_status": str(stored.archive_status),
            "archive_error": stored.archive_error,
            "size_bytes": output["size_bytes"],
            "sha256": output["sha256"],
            "content_type": output["content_type"],
            "stored_path": str(LocalStorage(archive_dir).path(storage_key(job.id, 0))),
        }
    finally:
        await service.aclose()
        await db.dispose()


# ---- the benchmark ----------------------------------------------------------------------


def _write_source(path: Path, size: int) -> str:
    """`size` random bytes at `path`; their sha256."""
    hasher = hashlib.sha256()
    with path.open("wb") as file:
        left = size
        while left > 0:
            block = os.urandom(min(BLOCK_BYTES, left))
            hasher.update(block)
            file.write(block)
            left -= len(block)
    return hasher.hexdigest()


def _sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(BLOCK_BYTES):
            hasher.update(block)
    return hasher.hexdigest()


def _child_env() -> dict[str, str]:
    env = service_env({})
    return {k: v for k, v in env.items() if k.lower() not in PROXY_VARIABLES}


def _curl_seconds(curl: str, url: str, target: Path, size: int) -> float:
    """Wall time of `curl -o target url`; the copy is checked for size and removed."""
    argv = [curl, "--silent", "--show-error", "--fail", "--noproxy", "*", "-o", str(target), url]
    began = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
    seconds = time.perf_counter() - began
    try:
        if result.returncode != 0:
            raise BenchFailure(f"curl failed ({result.returncode}): {result.stderr.strip()}")
        got = target.stat().st_size
        if got != size:
            raise BenchFailure(f"curl saved {got} bytes of {size}")
    finally:
        target.unlink(missing_ok=True)
    return seconds


def _log_errors(process: ServerProcess) -> list[str]:
    """Lines of the process's log that report errors: JSON logs, as app.logs writes them
    (orjson: no space after the colon), or tracebacks."""
    if process.log_path is None or not process.log_path.exists():
        return []
    markers = ('"level":"error"', '"level":"critical"', '"level": "error"', "Traceback")
    with process.log_path.open(errors="replace") as handle:
        return [line.rstrip()[:400] for line in handle if any(m in line for m in markers)]


def _settle() -> None:
    """Write dirty pages out, so that one phase's writeback does not slow the next."""
    os.sync()


async def _run_archiver(
    tmp: Path, database_url: str, url: str, archive_dir: Path, size: int, sampler: MemorySampler
) -> dict[str, Any]:
    result_path = tmp / "archiver-result.json"
    argv = [
        sys.executable, "-m", "bench.archive", "archiver",
        "--database-url", database_url, "--url", url, "--archive-dir", str(archive_dir),
        "--max-bytes", str(max(2 * size, 2**31)), "--result", str(result_path),
    ]  # fmt: skip
    archiver = ServerProcess("archive-archiver", argv, _child_env(), tmp, 0).start()
    assert archiver.proc is not None
    sampler.watch("archive archiver", archiver)
    try:
        timeout = 120 + size / (20 * MB)  # generous: 20 MB/s would be a broken archive
        try:
            code = await asyncio.to_thread(archiver.proc.wait, timeout)
        except subprocess.TimeoutExpired:
            raise BenchFailure(
                f"the archiver did not finish in {timeout:.0f}s:\n{archiver.log_tail()}"
            ) from None
        if code != 0 or not result_path.exists():
            raise BenchFailure(f"the archiver exited with {code}:\n{archiver.log_tail()}")
        errors = _log_errors(archiver)
        if errors:
            raise BenchFailure(f"the archiver logged errors: {errors[0]}")
        result: dict[str, Any] = json.loads(result_path.read_text())
        return result
    finally:
        sampler.unwatch("archive archiver")
        archiver.stop()


async def run_backend(backend: str, size: Size, sampler: MemorySampler) -> dict[str, Any]:
    curl = shutil.which("curl")
    if curl is None:
        raise BenchFailure("curl not found (apt-get install -y curl): it is the baseline")
    with workdir() as tmp:
        files, archive_dir = tmp / "files", tmp / "outputs"
        files.mkdir()
        source = files / FILE_NAME
        count = size.archive_bytes
        say(f"archive [{backend}]: writing {count / MB:,.0f} MiB of random bytes")
        expected = await asyncio.to_thread(_write_source, source, count)
        db = await create_database(backend, tmp)
        port = free_port()
        server = ServerProcess(
            "archive-file-server",
            [sys.executable, "-m", "bench.archive", "serve", str(port), str(files)],
            _child_env(),
            tmp,
            port,
        )
        try:
            server.start().wait_ready("/")
            url = f"{server.url}/{FILE_NAME}"
            await asyncio.to_thread(_settle)
            say(f"archive [{backend}]: curl -o, then archive(), then curl -o, of {url}")
            curls = [await asyncio.to_thread(_curl_seconds, curl, url, tmp / "curl.out", count)]
            await asyncio.to_thread(_settle)
            result = await _run_archiver(tmp, db.url, url, archive_dir, count, sampler)
            await asyncio.to_thread(_settle)
            curls.append(await asyncio.to_thread(_curl_seconds, curl, url, tmp / "curl.out", count))
            problems = _problems(result, count, expected)
            if not problems:
                stored_sha = await asyncio.to_thread(_sha256, Path(result["stored_path"]))
                if stored_sha != expected:
                    problems.append("the stored file's sha256 differs from the source's")
            if problems:
                raise BenchFailure("; ".join(problems))
            errors = _log_errors(server)
            return _report(backend, count, result, curls, errors)
        finally:
            server.stop()
            await drop_database(db)


def _problems(result: dict[str, Any], count: int, expected: str) -> list[str]:
    problems = []
    if result["archive_status"] != "archived":
        problems.append(
            f"archive status {result['archive_status']!r}, error {result['archive_error']!r}"
        )
    if result["size_bytes"] != count:
        problems.append(f"{result['size_bytes']} bytes recorded, {count} served")
    if result["sha256"] != expected:
        problems.append("the recorded sha256 differs from the source's")
    if result["content_type"] != "video/mp4":
        problems.append(f"content type {result['content_type']!r} recorded, video/mp4 served")
    return problems


def _report(
    backend: str,
    count: int,
    result: dict[str, Any],
    curls: list[float],
    errors: list[str],
) -> dict[str, Any]:
    baseline_mb = result["baseline_rss"] / MB
    peak_mb = result["peak_rss"] / MB
    increase_mb = peak_mb - baseline_mb
    curl_s = min(curls)
    archive_s = float(result["seconds"])
    ratio = curl_s / archive_s
    size_mb = count / MB
    kernel = result["peak_rss_kernel"]
    table = [
        ("file (random bytes, served as video/mp4), MiB", fmt(size_mb, 0), ""),
        ("archiving process RSS before archive(), MB", fmt(baseline_mb), ""),
        ("archiving process peak RSS during archive(), MB", fmt(peak_mb), ""),
        (
            f"  sampled every {SAMPLE_SECONDS * 1000:g} ms / kernel high-water mark, MB",
            f"{fmt(result['peak_rss_sampled'] / MB)} / "
            + (fmt(kernel / MB) if kernel is not None else "-"),
            "",
        ),
        (
            "peak RSS increase, MB",
            fmt(increase_mb),
            "met" if increase_mb < RSS_INCREASE_GOAL_MB else "MISSED",
        ),
        (
            "curl -o (before / after), s",
            " / ".join(fmt(s, 2) for s in curls),
            "",
        ),
        ("curl -o (the faster), MB/s", fmt(size_mb / curl_s, 0), ""),
        ("archive() (download, hash, probe, store, record), s", fmt(archive_s, 2), ""),
        ("archive(), MB/s", fmt(size_mb / archive_s, 0), ""),
        (
            "throughput archive / curl",
            fmt(ratio, 2),
            "met" if ratio >= THROUGHPUT_GOAL else "MISSED",
        ),
        ("file server log errors", str(len(errors)), "met" if not errors else "MISSED"),
    ]
    print_table(
        f"archive [{backend}]: one {size_mb:,.0f} MiB output from a loopback file server, "
        f"local storage; goals: peak RSS increase < {RSS_INCREASE_GOAL_MB:g} MB, "
        f"archive / curl >= {THROUGHPUT_GOAL:g}",
        ("what", "value", "goal"),
        table,
    )
    for line in errors:
        print(f"  log: {line}")
    return {
        "backend": backend,
        "file_bytes": count,
        "baseline_rss_mb": round(baseline_mb, 1),
        "peak_rss_mb": round(peak_mb, 1),
        "peak_rss_sampled_mb": round(result["peak_rss_sampled"] / MB, 1),
        "peak_rss_kernel_mb": round(kernel / MB, 1) if kernel is not None else None,
        "rss_increase_mb": round(increase_mb, 1),
        "goal_rss_increase_mb": RSS_INCREASE_GOAL_MB,
        "curl_seconds": curls,
        "archive_seconds": archive_s,
        "curl_mb_per_s": size_mb / curl_s,
        "archive_mb_per_s": size_mb / archive_s,
        "throughput_ratio": ratio,
        "goal_throughput_ratio": THROUGHPUT_GOAL,
        "failures": [f"file server logged errors: {errors[0]}"] if errors else [],
    }


# ---- the child processes' entry point -----------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.archive")
    commands = parser.add_subparsers(dest="command", required=True)
    serving = commands.add_parser("serve", help="serve a directory on 127.0.0.1 (sendfile)")
    serving.add_argument("port", type=int)
    serving.add_argument("directory", type=Path)
    archiver = commands.add_parser("archiver", help="archive one output, write the figures")
    archiver.add_argument("--database-url", required=True)
    archiver.add_argument("--url", required=True)
    archiver.add_argument("--archive-dir", type=Path, required=True)
    archiver.add_argument("--max-bytes", type=int, required=True)
    archiver.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.port, args.directory)
        return
    result = asyncio.run(
        archive_once(
            database_url=args.database_url,
            url=args.url,
            archive_dir=args.archive_dir,
            max_bytes=args.max_bytes,
        )
    )
    args.result.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
