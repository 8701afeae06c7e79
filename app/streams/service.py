"""Waiting for a job and streaming changes, on the change feed (feed.py).

A stream subscribes first, then reads from the table what happened up to the feed's
position at that moment, then hands on what the feed delivers after it: each event once,
in order, with the job as it is when sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import orjson

from app.auth.models import Caller
from app.db import Database
from app.jobs import queries
from app.jobs.confirmation import Confirmation
from app.jobs.models import EventRecord, JobRecord
from app.jobs.schemas import event_to_dict, job_to_dict
from app.jobs.states import ArchiveStatus, JobStatus, is_terminal
from app.metrics import OPEN_STREAMS, STREAMS_CUT, WAITERS
from app.streams import changes, sse
from app.streams.feed import Change, ChangeFeed, Interrupted, Subscription

REPLAY_PAGE = 500


def is_settled(job: JobRecord) -> bool:
    """Nothing more will change on its own: ended, and its outputs kept (or given up)."""
    return is_terminal(job.status) and job.archive_status is not ArchiveStatus.PENDING


def job_message(event: EventRecord | None, job: JobRecord) -> bytes:
    data = orjson.dumps(
        {"event": event_to_dict(event) if event is not None else None, "job": job_to_dict(job)}
    )
    return sse.message(data, event_id=event.id if event is not None else None)


END = sse.message(b"{}", event="end")


class StreamService:
    def __init__(
        self,
        *,
        db: Database,
        feed: ChangeFeed,
        confirmation: Confirmation,
        heartbeat_seconds: float,
        progress_refresh_seconds: float,
    ) -> None:
        self.db = db
        self.feed = feed
        self.confirmation = confirmation
        self.heartbeat_seconds = heartbeat_seconds
        # How often a stream of an in-flight job asks for fresh progress (as a reader does).
        self.tick_seconds = min(heartbeat_seconds, progress_refresh_seconds or heartbeat_seconds)

    # ---- long-poll -------------------------------------------------------------------------

    async def wait(self, caller: Caller, job: JobRecord, seconds: float) -> JobRecord:
        """The job once it has ended, or as it is after `seconds`."""
        if is_terminal(job.status):
            return job
        deadline = asyncio.get_running_loop().time() + seconds
        WAITERS.inc()
        try:
            async with self.feed.subscribe(job_id=job.id) as subscription:
                # What changed before subscribing is in the table.
                job = await queries.get_job(self.db, caller=caller, job_id=job.id)
                while not is_terminal(job.status):
                    remaining = deadline - asyncio.get_running_loop().time()
                    if remaining <= 0:
                        break
                    change = await subscription.next(remaining)
                    if change is None:
                        break
                    job = change.job
        except Interrupted:
            job = await queries.get_job(self.db, caller=caller, job_id=job.id)
        finally:
            WAITERS.dec()
        return job

    # ---- streams ---------------------------------------------------------------------------

    async def job_stream(
        self, caller: Caller, job: JobRecord, last_event_id: int | None
    ) -> AsyncIterator[bytes]:
        """One job's changes; the first message is its latest event (or, resuming, every
        event after `last_event_id`); ends once the job is settled."""
        OPEN_STREAMS.labels("job").inc()
        try:
            async with self.feed.subscribe(job_id=job.id, with_events=True) as subscription:
                yield sse.preamble()
                job = await queries.get_job(self.db, caller=caller, job_id=job.id)
                sent = last_event_id or 0
                async for event in self._job_history(job.id, last_event_id, subscription.after):
                    sent = event.id
                    yield job_message(event, job)
                if is_settled(job):
                    yield END
                    return
                async for change in self._live(subscription, sent, job):
                    if change is None:
                        yield sse.HEARTBEAT
                        continue
                    yield job_message(change.event, change.job)
                    if is_settled(change.job):
                        # The transaction that settled it may have written more events
                        # (a status poll and the status change): send them all first.
                        await self.feed.caught_up(seconds=1.0)
                        for rest in subscription.pending():
                            yield job_message(rest.event, rest.job)
                        yield END
                        return
        finally:
            OPEN_STREAMS.labels("job").dec()

    async def all_stream(
        self,
        caller: Caller,
        *,
        status: JobStatus | None,
        model: str | None,
        last_event_id: int | None,
    ) -> AsyncIterator[bytes]:
        """Every change of the caller's jobs (every job's, for an admin) that matches the
        filters, from now or, resuming, after `last_event_id`. It does not end."""
        OPEN_STREAMS.labels("all").inc()
        try:
            async with self.feed.subscribe(
                owner=caller.scope, status=status, model=model, with_events=True
            ) as subscription:
                yield sse.preamble()
                sent = last_event_id or 0
                if last_event_id is not None:
                    async for event, job in self._owner_history(subscription, last_event_id):
                        sent = event.id
                        yield job_message(event, job)
                async for change in self._live(subscription, sent, None):
                    yield sse.HEARTBEAT if change is None else job_message(change.event, change.job)
        finally:
            OPEN_STREAMS.labels("all").dec()

    async def _live(
        self, subscription: Subscription, sent: int, job: JobRecord | None
    ) -> AsyncIterator[Change | None]:
        """What the feed delivers after `sent`, and None when it is time for a heartbeat;
        ends when interrupted (a reader too slow, or the server shutting down: the client
        resumes from its last id). `job`, when given, is asked fresh progress for."""
        while True:
            try:
                change = await subscription.next(self.tick_seconds)
            except Interrupted as interrupted:
                if interrupted.reason == "slow_reader":
                    STREAMS_CUT.inc()
                return
            if change is None:
                if job is not None:
                    await self.confirmation.refresh_if_watched(job)
                yield None
                continue
            if change.event_id <= sent:
                continue  # already read from the table (the client was ahead of this server)
            if job is not None:
                job = change.job
            yield change

    async def _job_history(
        self, job_id: str, last_event_id: int | None, upto: int
    ) -> AsyncIterator[EventRecord]:
        if last_event_id is None:
            async with self.db.read_connection() as conn:
                latest = await changes.latest_job_event(conn, job_id, upto)
            if latest is not None:
                yield latest
            return
        after = last_event_id
        while True:
            async with self.db.read_connection() as conn:
                page = await changes.job_events_between(conn, job_id, after, upto, REPLAY_PAGE)
            for event in page:
                yield event
            if len(page) < REPLAY_PAGE:
                return
            after = page[-1].id

    async def _owner_history(
        self, subscription: Subscription, after: int
    ) -> AsyncIterator[tuple[EventRecord, JobRecord]]:
        while True:
            async with self.db.read_connection() as conn:
                page: Sequence[EventRecord] = await changes.owner_events_between(
                    conn, subscription.owner, after, subscription.after, REPLAY_PAGE
                )
                jobs = await changes.jobs_by_id(conn, {event.job_id for event in page})
            for event in page:
                job = jobs.get(event.job_id)
                if job is not None and subscription.matches(job):
                    yield event, job
            if len(page) < REPLAY_PAGE:
                return
            after = page[-1].id
