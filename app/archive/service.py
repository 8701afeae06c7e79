"""Archiving succeeded jobs' outputs, and finding them again to serve.

The worker's `archive` loop leases succeeded jobs whose archive is due and calls
`archive()`: each output not yet kept is downloaded to scratch, measured and hashed, read
for its media facts, and put in storage; the job's outputs then point at poyo-relay's own
URL. A failed attempt never changes the job's status: it is recorded on the job
(`archive.status`, `archive.error`) and in its events, counted in metrics, and retried
with backoff until ARCHIVE_MAX_ATTEMPTS. A job's own webhook_url waits for the first attempt
only, so that it usually carries the archived URLs without waiting out a storage outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import anyio
import structlog

from app.archive.download import Downloader, DownloadFailed
from app.archive.probe import probe
from app.archive.rules import StoredFile, archived_output, output_path, storage_key
from app.archive.storage import Storage, StorageError
from app.backoff import Backoff
from app.config import Settings
from app.db import Database
from app.jobs import leases
from app.jobs import repository as repo
from app.jobs.events import EventType, NewEvent
from app.jobs.models import Job, JobOutput, JobRecord, read_output
from app.jobs.repository import JobPatch, Lease
from app.jobs.states import ArchiveStatus, JobStatus
from app.metrics import ARCHIVE_BYTES, ARCHIVE_JOBS, ARCHIVE_OUTPUTS
from app.timeutil import utcnow
from app.webhooks import outbox
from app.webhooks.models import WebhookEventType

log = structlog.get_logger(__name__)

MAX_ERROR_CHARS = 500
BACKFILL_BATCH = 500
VERIFY_PAGE = 100


@dataclass(frozen=True)
class Attempt:
    """The outcome of one archive attempt of a job."""

    outputs: list[JobOutput]
    events: list[NewEvent]
    error: str | None


class ArchiveService:
    def __init__(
        self,
        *,
        settings: Settings,
        db: Database,
        storage: Storage,
        downloader: Downloader,
    ) -> None:
        self.db = db
        self.storage = storage
        self.downloader = downloader
        self.public_base_url = settings.public_base_url
        self.max_attempts = settings.archive_max_attempts
        self.retry = Backoff(settings.retry_base_seconds, settings.retry_max_seconds)
        self.lease = timedelta(seconds=settings.worker_lease_seconds)

    async def aclose(self) -> None:
        await self.downloader.aclose()
        await self.storage.aclose()

    # ---- the archive loop's handler -----------------------------------------------------

    async def archive(self, *, job_id: str, lease_owner: str) -> None:
        """One archive attempt for a leased succeeded job."""
        async with self.db.read() as session:
            job = await repo.load(session, job_id)
        if job is None:
            return
        lease = Lease(job, lease_owner)
        if job.status is not JobStatus.SUCCEEDED or job.archive_status is not ArchiveStatus.PENDING:
            await self._hand_back(lease, JobPatch(archive_due_at=None), [], archived=False)
            return
        async with self._holding(lease):
            attempt = await self._attempt(job)
        await self._record(lease, attempt)

    async def _attempt(self, job: Job) -> Attempt:
        outputs = [read_output(output) for output in job.outputs or []]
        events: list[NewEvent] = []
        for index, output in enumerate(outputs):
            if output["archived_at"] is not None:
                continue
            try:
                stored = await self._keep(job.id, index, output)
            except (DownloadFailed, StorageError) as exc:
                ARCHIVE_OUTPUTS.labels("failed").inc()
                return Attempt(outputs, events, f"output {index}: {exc}"[:MAX_ERROR_CHARS])
            ARCHIVE_OUTPUTS.labels("archived").inc()
            ARCHIVE_BYTES.inc(stored.size_bytes)
            url = self.public_base_url + output_path(job.id, index)
            outputs[index] = archived_output(output, url, stored, utcnow())
            facts = {"index": index, "size_bytes": stored.size_bytes, "sha256": stored.sha256}
            events.append(
                NewEvent(EventType.OUTPUT_ARCHIVED, {**facts, "content_type": stored.content_type})
            )
        return Attempt(outputs, events, None)

    async def _keep(self, job_id: str, index: int, output: JobOutput) -> StoredFile:
        """Download one output and store it; what it turned out to be."""
        started = time.monotonic()
        downloaded = await self.downloader.fetch(
            output["provider_url"], output["type"], self.storage.scratch
        )
        try:
            media = await anyio.to_thread.run_sync(probe, downloaded.path, downloaded.content_type)
            key = storage_key(job_id, index)
            await self.storage.put(key, downloaded.path, downloaded.content_type)
        finally:
            await anyio.Path(downloaded.path).unlink(missing_ok=True)
        log.info(
            "output_archived",
            job_id=job_id,
            index=index,
            size_bytes=downloaded.size_bytes,
            seconds=round(time.monotonic() - started, 3),
        )
        return StoredFile(
            content_type=downloaded.content_type,
            size_bytes=downloaded.size_bytes,
            sha256=downloaded.sha256,
            width=media.width,
            height=media.height,
            duration_seconds=media.duration_seconds,
        )

    async def _record(self, lease: Lease, attempt: Attempt) -> None:
        job, now = lease.job, utcnow()
        number = job.archive_attempts + 1
        patch = JobPatch(outputs=attempt.outputs, archive_attempts=number)
        events = list(attempt.events)
        if attempt.error is None:
            result = "archived"
            patch.update(JobPatch(archive_status=ArchiveStatus.ARCHIVED, archive_due_at=None))
            patch["archive_error"] = None
        elif number >= self.max_attempts:
            result = "abandoned"
            patch.update(JobPatch(archive_status=ArchiveStatus.FAILED, archive_due_at=None))
            patch["archive_error"] = attempt.error
            events.append(
                NewEvent(EventType.ARCHIVE_ABANDONED, {"attempt": number, "error": attempt.error})
            )
            log.warning("archive_abandoned", job_id=job.id, error=attempt.error)
        else:
            result = "retrying"
            retry_at = now + timedelta(seconds=self.retry.delay(number))
            patch.update(JobPatch(archive_due_at=retry_at, archive_error=attempt.error))
            data = {"attempt": number, "error": attempt.error, "retry_at": retry_at.isoformat()}
            events.append(NewEvent(EventType.ARCHIVE_FAILED, data))
        if await self._hand_back(lease, patch, events, archived=attempt.error is None):
            ARCHIVE_JOBS.labels(result).inc()

    async def _hand_back(
        self, lease: Lease, patch: JobPatch, events: list[NewEvent], *, archived: bool
    ) -> bool:
        """Record the attempt. Endpoints hear job.archived; the job's own webhook_url,
        which waited for the first attempt, hears now that the job ended."""
        job = lease.job
        async with self.db.write() as conn:
            now = utcnow()
            held = await repo.release(conn, lease, now, patch)
            if held:
                await repo.add_events(conn, job.id, events, now)
                if archived:
                    await outbox.job_event(conn, job, WebhookEventType.JOB_ARCHIVED, now)
                if job.archive_attempts == 0 and not await outbox.told_job_url(conn, job.id):
                    ended = outbox.STATUS_EVENTS[job.status]
                    await outbox.job_event(conn, job, ended, now, endpoints=False, job_url=True)
        return held

    @contextlib.asynccontextmanager
    async def _holding(self, lease: Lease) -> AsyncIterator[None]:
        """Renew the job's lease while a long download runs (a 2 GiB file outlasts it)."""

        async def renew() -> None:
            while True:
                await asyncio.sleep(self.lease.total_seconds() / 3)
                async with self.db.write() as conn:
                    until = utcnow() + self.lease
                    held = await leases.extend(
                        conn, owner=lease.owner, job_id=lease.job.id, until=until
                    )
                if not held:
                    log.warning("archive_lease_lost", job_id=lease.job.id)
                    return

        renewing = asyncio.create_task(renew())
        try:
            yield
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await renewing

    # ---- operations ---------------------------------------------------------------------

    async def backfill(self, *, since: datetime | None) -> int:
        """Make every succeeded job whose outputs are not archived (from before archiving,
        or given up on) due for archiving now; how many."""
        total = 0
        while True:
            async with self.db.write() as conn:
                job_ids = await repo.request_archive(
                    conn, since=since, now=utcnow(), limit=BACKFILL_BATCH
                )
            total += len(job_ids)
            if len(job_ids) < BACKFILL_BATCH:
                return total

    # ---- serving --------------------------------------------------------------------------

    def output(self, job: JobRecord, index: int) -> JobOutput | None:
        outputs = job.outputs or []
        return read_output(outputs[index]) if 0 <= index < len(outputs) else None

    # ---- verification ---------------------------------------------------------------------

    async def verify(self, *, since: datetime | None, limit: int | None) -> VerifyReport:
        """Re-read every archived output (of jobs completed since `since`, at most `limit`
        files) from storage and compare its size and sha256 with what was recorded."""
        report = VerifyReport()
        after = ""
        while limit is None or report.checked < limit:
            async with self.db.read() as session:
                jobs = await repo.archived_jobs(
                    session, after=after, since=since, limit=VERIFY_PAGE
                )
            for job in jobs:
                for index, output in enumerate(read_output(o) for o in job.outputs or []):
                    if output["archived_at"] is None or output["sha256"] is None:
                        continue
                    if limit is not None and report.checked >= limit:
                        return report
                    problem = await self._check(storage_key(job.id, index), output)
                    report.checked += 1
                    if problem:
                        report.problems.append(Mismatch(job.id, index, problem))
            if len(jobs) < VERIFY_PAGE:
                return report
            after = jobs[-1].id
        return report

    async def _check(self, key: str, output: JobOutput) -> str | None:
        expected = output["size_bytes"] or 0
        try:
            size = await self.storage.size(key)
            if size is None:
                return "missing from storage"
            if size != expected:
                return f"{size} bytes stored, {expected} recorded"
            hasher = hashlib.sha256()
            async for chunk in self.storage.read(key, 0, size):
                await anyio.to_thread.run_sync(hasher.update, chunk)
        except StorageError as exc:
            return f"unreadable: {exc}"
        if hasher.hexdigest() != output["sha256"]:
            return "sha256 differs from the one recorded"
        return None


@dataclass(frozen=True)
class Mismatch:
    job_id: str
    index: int
    problem: str


@dataclass
class VerifyReport:
    checked: int = 0
    problems: list[Mismatch] = field(default_factory=list)
