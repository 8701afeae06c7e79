"""Bulk job data, loaded straight into the database (COPY on PostgreSQL, executemany on SQLite).

Rows look like the service's own: ids are `job_` + a lower-case ULID whose time part is the
row's `created_at` (app/ids.py), JSON columns hold what the API would have stored.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from bench.common import BenchDatabase

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"

JOB_COLUMNS = (
    "id",
    "owner",
    "model",
    "status",
    "input",
    "metadata",
    "webhook_url",
    "provider_task_id",
    "provider_status",
    "callback_status",
    "progress",
    "outputs",
    "error",
    "created_at",
    "updated_at",
    "submitted_at",
    "completed_at",
    "submit_attempts",
    "poll_attempts",
    "submit_started_at",
    "next_check_at",
    "lease_owner",
    "lease_expires_at",
)
_JSON_COLUMNS = {"input", "metadata", "outputs", "error"}
_TIME_COLUMNS = {
    "created_at",
    "updated_at",
    "submitted_at",
    "completed_at",
    "submit_started_at",
    "next_check_at",
    "lease_expires_at",
}
MODELS = ("wan2.5-image-to-video", "wan2.5-text-to-video")
OWNER = "bench"
OTHER_OWNERS = tuple(f"other-{i}" for i in range(9))
# status, share of jobs (cumulative thresholds are derived below)
STATUS_MIX = (("succeeded", 0.88), ("failed", 0.07), ("running", 0.02), ("queued", 0.02))
_PROVIDER_STATUS = {
    "pending": None,
    "queued": "not_started",
    "running": "running",
    "succeeded": "finished",
    "failed": "failed",
}


def ulid_job_id(millis: int, randomness: int) -> str:
    """`job_` + the ULID of (millis, 80 random bits), lower-case Crockford base32."""
    value = (millis << 80) | randomness
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "job_" + "".join(reversed(chars))


@dataclass(frozen=True)
class JobSpec:
    """One generated job: the fields benchmarks need to find it again."""

    id: str
    owner: str
    model: str
    status: str
    task_id: str
    created_at: datetime


def generate_jobs(
    count: int,
    *,
    start: datetime,
    step_ms: int,
    seed: int,
    owner_share: float = 0.9,
    status: str | None = None,
    task_prefix: str = "t",
) -> list[JobSpec]:
    """`count` jobs created `step_ms` apart from `start`, oldest first.

    `owner_share` of them belong to OWNER, the rest to OTHER_OWNERS. With `status` every job
    has it; otherwise STATUS_MIX (the remainder pending).
    """
    rng = random.Random(seed)
    base = int(start.timestamp() * 1000)
    jobs = []
    for i in range(count):
        millis = base + i * step_ms
        job_id = ulid_job_id(millis, rng.getrandbits(80))
        owner = OWNER if rng.random() < owner_share else rng.choice(OTHER_OWNERS)
        if status is None:
            roll = rng.random()
            chosen = "pending"
            for name, share in STATUS_MIX:
                if roll < share:
                    chosen = name
                    break
                roll -= share
        else:
            chosen = status
        created = datetime.fromtimestamp(millis / 1000, UTC)
        jobs.append(
            JobSpec(
                id=job_id,
                owner=owner,
                model=rng.choice(MODELS),
                status=chosen,
                task_id=f"task-unified-{millis // 1000}-{task_prefix}{i:09d}",
                created_at=created,
            )
        )
    return jobs


def _row(job: JobSpec, i: int) -> dict[str, Any]:
    created = job.created_at
    submitted = created + timedelta(milliseconds=150)
    terminal = job.status in ("succeeded", "failed")
    completed = created + timedelta(seconds=40 + i % 60) if terminal else None
    active = not terminal
    image = job.model == "wan2.5-image-to-video"
    job_input: dict[str, Any] = {
        "prompt": f"a red fox running through fresh snow at dawn, take {i}",
        "duration": 5,
    }
    if image:
        job_input |= {"image_urls": [f"https://example.com/images/{i}.jpg"], "resolution": "720p"}
    pending = job.status == "pending"
    return {
        "id": job.id,
        "owner": job.owner,
        "model": job.model,
        "status": job.status,
        "input": job_input,
        "metadata": {"order": str(i)},
        "webhook_url": None,
        "provider_task_id": None if pending else job.task_id,
        "provider_status": _PROVIDER_STATUS[job.status],
        "callback_status": None,
        "progress": 100 if terminal else (50 if job.status == "running" else 0),
        "outputs": (
            [{"url": f"https://cdn.example.com/videos/{job.task_id}.mp4", "type": "video"}]
            if job.status == "succeeded"
            else None
        ),
        "error": (
            {"code": "provider_failed", "message": "simulated generation failure"}
            if job.status == "failed"
            else None
        ),
        "created_at": created,
        "updated_at": completed or submitted,
        "submitted_at": None if pending else submitted,
        "completed_at": completed,
        "submit_attempts": 1,
        "poll_attempts": 0,
        "submit_started_at": None,
        "next_check_at": (created + timedelta(seconds=300)) if active else None,
        "lease_owner": None,
        "lease_expires_at": None,
    }


def _chunks(jobs: Sequence[JobSpec], size: int, offset: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(jobs), size):
        yield [_row(job, offset + start + k) for k, job in enumerate(jobs[start : start + size])]


async def load_jobs(db: BenchDatabase, jobs: Sequence[JobSpec], *, offset: int = 0) -> None:
    """Insert `jobs` as fast as the backend allows."""
    if db.is_sqlite:
        _load_sqlite(db.raw, jobs, offset)
    else:
        await _load_postgres(db.raw, jobs, offset)


async def _load_postgres(url: str, jobs: Sequence[JobSpec], offset: int) -> None:
    conn = await asyncpg.connect(url, timeout=30)
    try:
        for chunk in _chunks(jobs, 50_000, offset):
            records = [
                tuple(
                    orjson.dumps(row[c]).decode()
                    if c in _JSON_COLUMNS and row[c] is not None
                    else row[c]
                    for c in JOB_COLUMNS
                )
                for row in chunk
            ]
            await conn.copy_records_to_table("jobs", records=records, columns=list(JOB_COLUMNS))
        await conn.execute("ANALYZE jobs")
    finally:
        await conn.close()


def _sqlite_time(value: datetime | None) -> str | None:
    # SQLAlchemy's SQLite DATETIME storage format, naive UTC (app/db_types.py).
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _load_sqlite(path: str, jobs: Sequence[JobSpec], offset: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=OFF")
        placeholders = ", ".join("?" for _ in JOB_COLUMNS)
        statement = f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}) VALUES ({placeholders})"
        for chunk in _chunks(jobs, 100_000, offset):
            records = [
                tuple(
                    (orjson.dumps(row[c]).decode() if row[c] is not None else None)
                    if c in _JSON_COLUMNS
                    else _sqlite_time(row[c])
                    if c in _TIME_COLUMNS
                    else row[c]
                    for c in JOB_COLUMNS
                )
                for row in chunk
            ]
            conn.execute("BEGIN")
            conn.executemany(statement, records)
            conn.execute("COMMIT")
        conn.execute("ANALYZE")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
