"""Runs the worker loops until told to stop, then stops claiming and drains or releases."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from app.jobs import repository as repo
from app.jobs.states import JobStatus
from app.metrics import WORKER_LOOP_LAG, WORKER_QUEUE_DEPTH
from app.runtime import Runtime
from app.timeutil import utcnow
from app.worker.loops import ClaimLoop, build_loops

log = structlog.get_logger(__name__)

GAUGE_INTERVAL_SECONDS = 5.0
ERROR_PAUSE_SECONDS = 1.0
# queue name (depth gauge), loop name (lag gauge), the statuses that loop works on
_QUEUES = (
    ("pending", "submit", (JobStatus.PENDING,)),
    ("awaiting_reconcile", "reconcile", (JobStatus.QUEUED, JobStatus.RUNNING)),
)


class Worker:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.lease_owner = f"worker:{runtime.instance}"
        self.loops: list[ClaimLoop] = build_loops(runtime, self.lease_owner)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self.run(), name="poyo-relay-worker")
        return self._task

    async def run(self) -> None:
        """Every loop runs on its own, so a slow provider call in one never holds up another."""
        log.info("worker_started", lease_owner=self.lease_owner)
        runners = [asyncio.create_task(self._run_loop(loop)) for loop in self.loops]
        runners.append(asyncio.create_task(self._run_gauges()))
        try:
            await asyncio.gather(*runners)
        except asyncio.CancelledError:
            await asyncio.gather(*runners, return_exceptions=True)  # leases get released
            raise
        finally:
            log.info("worker_stopped", lease_owner=self.lease_owner)

    async def _run_loop(self, loop: ClaimLoop) -> None:
        woken = self.runtime.wakeup.subscribe()
        await loop.serve(self._stopping, woken, self.runtime.settings.worker_poll_seconds)

    async def _pass(self, loop: ClaimLoop) -> int:
        try:
            return await loop.run_once()
        except Exception as exc:
            log.exception("worker_loop_failed", loop=loop.name, error_type=type(exc).__name__)
            await asyncio.sleep(ERROR_PAUSE_SECONDS)
            return 0

    async def run_once(self) -> bool:
        """One pass over every loop in turn (for tests and tools); True if more is waiting."""
        busy = False
        for loop in self.loops:
            if not self._stopping.is_set():
                busy |= await self._pass(loop) >= loop.limit
        return busy

    async def _run_gauges(self) -> None:
        while not self._stopping.is_set():
            await self._update_gauges()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), GAUGE_INTERVAL_SECONDS)

    def request_stop(self) -> None:
        """Stop claiming new work; what is in flight goes on. Safe from a signal handler."""
        self._stopping.set()
        self.runtime.wakeup.notify()

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

    async def _update_gauges(self) -> None:
        now = utcnow()
        try:
            async with self.runtime.db.read() as session:
                for queue, loop, statuses in _QUEUES:
                    WORKER_QUEUE_DEPTH.labels(queue).set(
                        await repo.count_due(session, statuses=statuses, now=now)
                    )
                    oldest = await repo.oldest_due(session, statuses=statuses, now=now)
                    lag = (now - oldest).total_seconds() if oldest else 0.0
                    WORKER_LOOP_LAG.labels(loop).set(max(lag, 0.0))
        except Exception as exc:
            log.warning("worker_gauges_failed", error_type=type(exc).__name__)
