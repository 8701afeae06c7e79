"""Runs the worker's loops until told to stop, then stops claiming and drains or releases.

The loops are built by the runtime (app/runtime.py), each with the service it needs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import structlog

from app.db import Database
from app.jobs import leases
from app.metrics import WORKER_LOOP_LAG, WORKER_QUEUE_DEPTH
from app.timeutil import utcnow
from app.worker.loops import ClaimLoop

log = structlog.get_logger(__name__)

GAUGE_INTERVAL_SECONDS = 5.0
# The queues whose depth and lag are published: queue name (depth), loop name (lag).
GAUGED = (("pending", "submit"), ("awaiting_reconcile", "reconcile"))


class QueueGauges:
    """Publishes the depth and lag of the submit and reconcile queues every few seconds."""

    def __init__(self, db: Database, loops: dict[str, ClaimLoop]) -> None:
        self.db = db
        self.queues = [(queue, loop, loops[loop].queue) for queue, loop in GAUGED]

    async def run_once(self) -> None:
        now = utcnow()
        async with self.db.read_connection() as conn:
            for queue_name, loop_name, queue in self.queues:
                depth, oldest = await leases.depth(conn, queue, now)
                WORKER_QUEUE_DEPTH.labels(queue_name).set(depth)
                lag = (now - oldest).total_seconds() if oldest else 0.0
                WORKER_LOOP_LAG.labels(loop_name).set(max(lag, 0.0))

    async def serve(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await self.run_once()
            except Exception as exc:
                log.warning("worker_gauges_failed", error_type=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), GAUGE_INTERVAL_SECONDS)


class Background(Protocol):
    """Work the worker runs beside its claim loops until told to stop."""

    name: str

    async def serve(self, stopping: asyncio.Event) -> None: ...


class Periodic:
    """A service's `run_once()` (the production body, what tests drive), run every
    `seconds`, the first time after `first_delay`, until the worker stops. A failure is
    logged, and the next run comes on time."""

    def __init__(
        self,
        name: str,
        run_once: Callable[[], Awaitable[object]],
        *,
        seconds: float,
        first_delay: float = 0.0,
    ) -> None:
        self.name = name
        self.run_once = run_once
        self.seconds = seconds
        self.first_delay = first_delay

    async def serve(self, stopping: asyncio.Event) -> None:
        delay = self.first_delay
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), delay)
            if stopping.is_set():
                return
            try:
                await self.run_once()
            except Exception as exc:
                log.warning("worker_periodic_failed", task=self.name, error_type=type(exc).__name__)
            delay = self.seconds


class Worker:
    def __init__(
        self,
        *,
        db: Database,
        loops: Sequence[ClaimLoop],
        lease_owner: str,
        background: Sequence[Background] = (),
    ) -> None:
        self.lease_owner = lease_owner
        self.loops = {loop.name: loop for loop in loops}
        self.background = {task.name: task for task in background}
        self.gauges = QueueGauges(db, self.loops)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self.run(), name="poyo-relay-worker")
        return self._task

    async def run(self) -> None:
        """Every loop runs on its own, so a slow provider call in one never holds up another."""
        log.info("worker_started", lease_owner=self.lease_owner)
        runners = [asyncio.create_task(loop.serve()) for loop in self.loops.values()]
        runners.append(asyncio.create_task(self.gauges.serve(self._stopping)))
        runners += [asyncio.create_task(b.serve(self._stopping)) for b in self.background.values()]
        try:
            await asyncio.gather(*runners)
        except asyncio.CancelledError:
            for runner in runners:
                runner.cancel()
            await asyncio.gather(*runners, return_exceptions=True)  # leases get released
            raise
        finally:
            log.info("worker_stopped", lease_owner=self.lease_owner)

    def request_stop(self) -> None:
        """Stop claiming new work; what is in flight goes on. Safe from a signal handler."""
        self._stopping.set()
        for loop in self.loops.values():
            loop.request_stop()

    async def stop(self, grace_seconds: float = 3.0) -> None:
        """Stop claiming; let in-flight jobs finish for a while, then release their leases."""
        self.request_stop()
        task = self._task
        if task is None or task.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), grace_seconds)
        except TimeoutError:
            log.warning("worker_stop_timeout", grace_seconds=grace_seconds)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
