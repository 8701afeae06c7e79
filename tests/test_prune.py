"""Retention (app/ops/prune.py) on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import RateLimitWindow
from app.db import Database
from app.ids import job_id_time, new_job_id
from app.jobs.models import IdempotencyKey, Job, JobEvent
from app.ops.prune import prune
from app.timeutil import utcnow
from tests.support import make_settings

DAY = timedelta(days=1)
RETENTION = timedelta(days=90)
IDEMPOTENCY_TTL = timedelta(days=1)

# name: (age of the job, status, age when it ended or None, its lease runs for)
JOBS: dict[str, tuple[timedelta, str, timedelta | None, timedelta | None]] = {
    "old_succeeded": (100 * DAY, "succeeded", 100 * DAY, None),
    "old_failed": (120 * DAY, "failed", 120 * DAY, None),
    # ended long ago, but a worker holds it right now (say, to deliver its webhook)
    "old_leased": (110 * DAY, "succeeded", 110 * DAY, timedelta(hours=1)),
    # never ended: its trail is kept whatever its age
    "old_running": (100 * DAY, "running", None, None),
    # created long ago, ended recently: the job stays, its old events go
    "long_succeeded": (100 * DAY, "succeeded", 10 * DAY, None),
    "recent_succeeded": (10 * DAY, "succeeded", 10 * DAY, None),
}
EVENTS_PER_JOB = 3


async def seed(db: Database, now: datetime) -> dict[str, str]:
    """Jobs of every kind, 3 events each dated at creation, idempotency keys and
    rate-limit windows; returns the job ids by name."""
    ids: dict[str, str] = {}
    async with db.write() as conn:
        session = AsyncSession(bind=conn)
        for name, (age, status, ended, lease) in JOBS.items():
            job_id = new_job_id(now - age)
            created = job_id_time(job_id)
            ids[name] = job_id
            session.add(
                Job(
                    id=job_id,
                    owner="tenant-a",
                    model="wan2.5-image-to-video",
                    status=status,
                    input={"prompt": name},
                    metadata_={},
                    progress=100 if ended else 50,
                    created_at=created,
                    updated_at=now - ended if ended else created,
                    completed_at=now - ended if ended else None,
                    submit_attempts=1,
                    poll_attempts=0,
                    lease_owner="worker:elsewhere" if lease else None,
                    lease_expires_at=now + lease if lease else None,
                )
            )
        await session.flush()
        for name, job_id in ids.items():
            created = job_id_time(job_id)
            for n in range(EVENTS_PER_JOB):
                session.add(
                    JobEvent(
                        job_id=job_id,
                        type="job.created" if n == 0 else "provider.polled",
                        created_at=created + timedelta(seconds=n),
                        data={"n": n, "job": name},
                    )
                )
        keys = [
            ("old-key", ids["old_succeeded"], now - 100 * DAY),
            ("expired-key", ids["recent_succeeded"], now - 2 * DAY),
            ("live-key", ids["recent_succeeded"], now - timedelta(hours=1)),
        ]
        for key, job_id, created in keys:
            session.add(
                IdempotencyKey(
                    owner="tenant-a",
                    key=key,
                    request_hash="0" * 64,
                    job_id=job_id,
                    created_at=created,
                )
            )
        current = int(time.time()) // 60 * 60
        session.add(RateLimitWindow(key_id="key_spent", window_start=current - 3600, count=5))
        session.add(RateLimitWindow(key_id="key_live", window_start=current, count=1))
        await session.flush()
    return ids


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(make_settings(database_url=database_url))
    yield database
    await database.dispose()


async def remaining(db: Database) -> dict[str, Any]:
    async with db.read() as session:
        jobs = set((await session.execute(select(Job.id))).scalars())
        counts = select(JobEvent.job_id, func.count()).group_by(JobEvent.job_id)
        events = {row[0]: row[1] for row in (await session.execute(counts)).all()}
        keys = set((await session.execute(select(IdempotencyKey.key))).scalars())
        windows = set((await session.execute(select(RateLimitWindow.key_id))).scalars())
    return {"jobs": jobs, "events": events, "keys": keys, "windows": windows}


async def test_prune_deletes_old_events_of_ended_jobs_only(db: Database) -> None:
    now = utcnow()
    ids = await seed(db, now)

    result = await prune(
        db, older_than=RETENTION, idempotency_ttl=IDEMPOTENCY_TTL, batch_size=2, now=now
    )

    old_trails = ["old_succeeded", "old_failed", "old_leased", "long_succeeded"]
    assert result.events == EVENTS_PER_JOB * len(old_trails)
    assert result.jobs == 0
    assert result.idempotency_keys == 2
    assert result.rate_limit_windows == 1
    # 12 events 2 at a time: the work was split into many short transactions
    assert result.batches >= 6
    left = await remaining(db)
    assert left["jobs"] == set(ids.values())
    assert left["events"] == {
        ids["old_running"]: EVENTS_PER_JOB,
        ids["recent_succeeded"]: EVENTS_PER_JOB,
    }
    assert left["keys"] == {"live-key"}
    assert left["windows"] == {"key_live"}


async def test_prune_jobs_deletes_ended_jobs_with_their_events_and_keys(db: Database) -> None:
    now = utcnow()
    ids = await seed(db, now)

    result = await prune(
        db, older_than=RETENTION, idempotency_ttl=IDEMPOTENCY_TTL, jobs=True, batch_size=2, now=now
    )

    assert result.jobs == 2  # old_succeeded and old_failed
    left = await remaining(db)
    assert left["jobs"] == {
        ids["old_leased"],
        ids["old_running"],
        ids["long_succeeded"],
        ids["recent_succeeded"],
    }
    assert left["events"] == {
        ids["old_running"]: EVENTS_PER_JOB,
        ids["recent_succeeded"]: EVENTS_PER_JOB,
    }
    assert left["keys"] == {"live-key"}
    # every event of the deleted jobs, and the old events of the two ended jobs that stay
    assert result.events == EVENTS_PER_JOB * 4

    again = await prune(
        db, older_than=RETENTION, idempotency_ttl=IDEMPOTENCY_TTL, jobs=True, batch_size=2, now=now
    )
    assert (again.events, again.jobs, again.idempotency_keys, again.rate_limit_windows) == (
        0,
        0,
        0,
        0,
    )


async def test_a_shorter_retention_reaches_recent_jobs(db: Database) -> None:
    now = utcnow()
    ids = await seed(db, now)

    result = await prune(
        db, older_than=5 * DAY, idempotency_ttl=IDEMPOTENCY_TTL, jobs=True, batch_size=1000, now=now
    )

    left = await remaining(db)
    assert left["jobs"] == {ids["old_leased"], ids["old_running"]}
    assert result.jobs == 4
    assert result.batches >= 4  # jobs, events, keys, windows: one pass each at least


async def test_prune_refuses_a_zero_age(db: Database) -> None:
    with pytest.raises(ValueError, match="positive"):
        await prune(db, older_than=timedelta(0), idempotency_ttl=IDEMPOTENCY_TTL)


async def test_prune_skips_a_job_another_transaction_holds(
    db: Database, database_url: str, backend: str
) -> None:
    """On PostgreSQL a prune neither waits for nor blocks a transaction on a job row."""
    if backend != "postgresql":
        pytest.skip("row locks are a PostgreSQL matter; SQLite has one writer at a time")
    now = utcnow()
    ids = await seed(db, now)
    other = Database(make_settings(database_url=database_url))
    try:
        async with other.write() as conn:
            await conn.execute(
                text("SELECT id FROM jobs WHERE id = :id FOR UPDATE"), {"id": ids["old_failed"]}
            )
            # the lock is held while the prune runs; the prune must finish without it
            result = await asyncio.wait_for(
                prune(
                    db,
                    older_than=RETENTION,
                    idempotency_ttl=IDEMPOTENCY_TTL,
                    jobs=True,
                    batch_size=2,
                    now=now,
                ),
                timeout=60,
            )
        assert result.jobs == 1
        assert ids["old_failed"] in (await remaining(db))["jobs"]
        later = await prune(
            db, older_than=RETENTION, idempotency_ttl=IDEMPOTENCY_TTL, jobs=True, now=now
        )
        assert later.jobs == 1
        assert ids["old_failed"] not in (await remaining(db))["jobs"]
    finally:
        await other.dispose()
