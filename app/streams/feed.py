"""The change feed: one reader per process tails the jobs' audit trail and hands each new
event, with its job, to the streams and waiters that want it.

Every change of a job appends to job_events, in the transaction that makes the change, so
the trail's ids order the changes. The feed delivers them in id order, never past an id it
has not seen: on PostgreSQL concurrent transactions commit out of id order, so a missing
id (a transaction still committing) holds back the ids after it until it appears, or, if
its transaction rolled back, for HOLE_GRACE_SECONDS. One `position` then tells a new
subscriber exactly which events are in the table (≤ position, read them there) and which
the feed will hand it (> position): no gap, no duplicate.

Woken by our own commits (Database.on_commit), by PostgreSQL's NOTIFY from other processes
(listener.py), and every STREAM_POLL_SECONDS in case a wake-up was missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import Database, is_unavailable
from app.errors import Unavailable
from app.jobs.models import EventRecord, JobRecord
from app.jobs.states import JobStatus
from app.metrics import STREAM_SKIPPED_IDS
from app.streams import changes
from app.streams.listener import Listener

log = structlog.get_logger(__name__)

BATCH = 500
HOLE_GRACE_SECONDS = 2.0
# Commits in a burst are read together rather than one query each.
COALESCE_SECONDS = 0.01


@dataclass(frozen=True, slots=True)
class Change:
    """An event of a job's trail and the job as read just after it (the event's data only
    for subscribers that asked for it)."""

    event_id: int
    job: JobRecord
    event: EventRecord | None


class Interrupted(Exception):
    """The subscription ended early: its reader fell too far behind (`slow_reader`: it
    must start again from the table), or the server is shutting down (`shutdown`)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Subscription:
    """Changes for one job (`job_id`), or for every job matching `scope` and filters.
    `after` is the feed's position when it subscribed: later changes arrive here, earlier
    ones are in the table."""

    # Thousands of these wait at once: no per-instance dict.
    __slots__ = (
        "_limit",
        "_queue",
        "_ready",
        "after",
        "interrupted",
        "job_id",
        "model",
        "owner",
        "status",
        "with_events",
    )

    def __init__(
        self,
        *,
        after: int,
        limit: int,
        job_id: str | None = None,
        owner: str | None = None,
        status: JobStatus | None = None,
        model: str | None = None,
        with_events: bool = False,
    ) -> None:
        self.after = after
        self.job_id = job_id
        self.owner = owner
        self.status = status
        self.model = model
        self.with_events = with_events
        self._limit = limit
        self._queue: deque[Change] = deque()
        self._ready = asyncio.Event()
        self.interrupted: str | None = None

    def matches(self, job: JobRecord) -> bool:
        return (
            (self.owner is None or job.owner == self.owner)
            and (self.status is None or job.status == self.status)
            and (self.model is None or job.model == self.model)
        )

    def offer(self, change: Change) -> None:
        if len(self._queue) >= self._limit:
            # A slow reader is cut off, never buffered without bound.
            self.interrupt("slow_reader")
        elif self.interrupted is None:
            self._queue.append(change)
            self._ready.set()

    def interrupt(self, reason: str) -> None:
        self.interrupted = self.interrupted or reason
        self._queue.clear()
        self._ready.set()

    async def next(self, seconds: float) -> Change | None:
        """The next change, or None after `seconds` without one."""
        if not self._queue and self.interrupted is None:
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._ready.wait()
        if self.interrupted is not None:
            raise Interrupted(self.interrupted)
        return self._queue.popleft() if self._queue else None

    def pending(self) -> list[Change]:
        """The changes already queued, taken without waiting."""
        taken = list(self._queue)
        self._queue.clear()
        return taken


class ChangeFeed:
    def __init__(
        self, db: Database, *, poll_seconds: float, max_subscribers: int, queue_limit: int
    ) -> None:
        self.db = db
        self.poll_seconds = poll_seconds
        self.max_subscribers = max_subscribers
        self.queue_limit = queue_limit
        # How long a missing id holds back the ones after it (see the module's docstring).
        self.hole_grace_seconds = HOLE_GRACE_SECONDS
        self.position = 0
        self.started = False  # position read: until then, no one may subscribe
        self._wake = asyncio.Event()
        self._by_job: dict[str, set[Subscription]] = {}
        self._wide: set[Subscription] = set()
        self._count = 0
        self._closing = False
        self._hole: tuple[int, float] | None = None  # (first missing id, first seen)
        self._task: asyncio.Task[None] | None = None
        self.listener: Listener | None = None
        # Set while the feed has read everything committed that it knows of.
        self._caught_up = asyncio.Event()

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self, listen_url: str | None) -> None:
        """Start at the newest event; on PostgreSQL, listen at `listen_url`."""
        try:
            await self._start_position()
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            log.warning("change_feed_not_started", error_type=type(exc).__name__)  # run() retries
        self.db.on_commit(self.wake)
        if listen_url is not None:
            self.listener = Listener(listen_url, on_notify=self.wake, on_connect=self.wake)
            self.listener.start()
        self._task = asyncio.create_task(self._run(), name="change-feed")

    async def stop(self) -> None:
        if self.listener is not None:
            await self.listener.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _start_position(self) -> None:
        async with self.db.read_connection() as conn:
            self.position = await changes.newest_event_id(conn)
        self.started = True

    def wake(self) -> None:
        self._wake.set()

    async def caught_up(self, seconds: float) -> None:
        """Until the feed has handed out everything it has read (a transaction's events may
        span two reads), or `seconds` pass."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._caught_up.wait()

    def request_close(self) -> None:
        """End every stream and wait now (the server is shutting down: its clients resume
        elsewhere). Safe from a signal handler."""
        if self._task is not None:
            self._task.get_loop().call_soon_threadsafe(self._close_all)

    def _close_all(self) -> None:
        self._closing = True
        for subscription in (*self._wide, *(s for subs in self._by_job.values() for s in subs)):
            subscription.interrupt("shutdown")

    # ---- subscribing -----------------------------------------------------------------------

    @property
    def subscribers(self) -> int:
        """Streams and waits served now."""
        return self._count

    def admit(self) -> None:
        """Refuse (503) a new stream or wait when this process already serves
        STREAM_MAX_CLIENTS, or is shutting down."""
        if self._closing:
            raise Unavailable("this server is shutting down; retry shortly")
        if not self.started:
            raise Unavailable()
        if self._count >= self.max_subscribers:
            raise Unavailable("this server has as many open streams and waits as it may")

    @contextlib.asynccontextmanager
    async def subscribe(self, **criteria: Any) -> AsyncIterator[Subscription]:
        """A subscription for the `with` block (criteria as Subscription's)."""
        self.admit()
        subscription = Subscription(after=self.position, limit=self.queue_limit, **criteria)
        self._add(subscription)
        try:
            yield subscription
        finally:
            self._remove(subscription)

    def _add(self, subscription: Subscription) -> None:
        if subscription.job_id is None:
            self._wide.add(subscription)
        else:
            self._by_job.setdefault(subscription.job_id, set()).add(subscription)
        self._count += 1

    def _remove(self, subscription: Subscription) -> None:
        if subscription.job_id is None:
            self._wide.discard(subscription)
        else:
            subscribers = self._by_job.get(subscription.job_id, set())
            subscribers.discard(subscription)
            if not subscribers:
                self._by_job.pop(subscription.job_id, None)
        self._count -= 1

    # ---- reading ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            timeout = self.poll_seconds
            if self._hole is not None:
                grace_left = self._hole[1] + self.hole_grace_seconds - _now()
                timeout = min(timeout, max(0.05, grace_left))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()
            self._caught_up.clear()
            try:
                while await self.run_once():
                    pass
                self._caught_up.set()
            except Exception as exc:
                if not is_unavailable(exc):
                    log.exception("change_feed_failed")
                else:
                    log.warning("change_feed_unavailable", error_type=type(exc).__name__)
                await asyncio.sleep(self.poll_seconds)
            await asyncio.sleep(COALESCE_SECONDS)

    async def run_once(self) -> bool:
        """Read what is new, hand it out; True when there may be more to read at once."""
        if not self.started:
            await self._start_position()
            return False
        async with self.db.read_connection() as conn:
            rows = await changes.ids_after(conn, self.position, BATCH)
            ready = self._in_order(rows, _now())
            if not ready:
                return False
            # From here to the hand-out, `position` and the subscribers it applies to move
            # together: whoever subscribes later reads these events from the table.
            self.position = ready[-1][0]
            deliveries = self._recipients(ready)
            if deliveries:
                await self._hand_out(conn, deliveries)
        return len(rows) == BATCH and len(ready) == len(rows)

    def _in_order(self, rows: Sequence[tuple[int, str]], now: float) -> list[tuple[int, str]]:
        """The leading rows with no id missing before them (or missing for too long)."""
        expected = self.position + 1
        ready: list[tuple[int, str]] = []
        for row in rows:
            event_id = row[0]
            if event_id != expected:
                if self._hole is None or self._hole[0] != expected:
                    self._hole = (expected, now)
                if now - self._hole[1] < self.hole_grace_seconds:
                    return ready
                # Rolled back (or committing for longer than anyone should): go on.
                STREAM_SKIPPED_IDS.inc(event_id - expected)
                log.info("change_feed_skipped_ids", first=expected, last=event_id - 1)
            self._hole = None
            ready.append(row)
            expected = event_id + 1
        return ready

    def _recipients(
        self, rows: Iterable[tuple[int, str]]
    ) -> list[tuple[int, str, tuple[Subscription, ...]]]:
        deliveries = []
        for event_id, job_id in rows:
            subscribers = (*self._by_job.get(job_id, ()), *self._wide)
            if subscribers:
                deliveries.append((event_id, job_id, subscribers))
        return deliveries

    async def _hand_out(
        self, conn: AsyncConnection, deliveries: list[tuple[int, str, tuple[Subscription, ...]]]
    ) -> None:
        jobs = await changes.jobs_by_id(conn, {job_id for _, job_id, _ in deliveries})
        wanted = [event_id for event_id, _, subs in deliveries if any(s.with_events for s in subs)]
        events = {e.id: e for e in await changes.events_by_id(conn, wanted)} if wanted else {}
        for event_id, job_id, subscribers in deliveries:
            job = jobs.get(job_id)
            if job is None:  # deleted (pruned) meanwhile
                continue
            for subscriber in subscribers:
                if subscriber.job_id is not None or subscriber.matches(job):
                    event = events.get(event_id) if subscriber.with_events else None
                    subscriber.offer(Change(event_id, job, event))


def _now() -> float:
    return time.monotonic()
