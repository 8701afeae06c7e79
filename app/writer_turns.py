"""Turns at SQLite's single writer, by priority.

On SQLite every write transaction of the process waits here for its turn. Under load the
queue grows long (each turn also waits for the busy event loop), so the order matters:

- `RECORD` first: recording a task the provider has just accepted. Until that commits, a
  crash would leave the job's outcome unknown and may cost a second paid task.
- `PROGRESS` next: work on jobs already in flight (callbacks, claims, status changes).
- `ADMISSION` last: taking in new jobs. When the writer is the bottleneck, new work waits
  at the door rather than slowing the jobs already running; an admission is still never
  passed over more than `MAX_PASSED_OVER` times in a row, so it cannot starve.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections import deque
from collections.abc import AsyncIterator

MAX_PASSED_OVER = 16


class Priority(enum.IntEnum):
    RECORD = 0
    PROGRESS = 1
    ADMISSION = 2


class WriterTurns:
    """A lock handed over by priority, first come first served within a priority."""

    def __init__(self) -> None:
        self._held = False
        self._lanes: dict[Priority, deque[asyncio.Future[None]]] = {p: deque() for p in Priority}
        self._admission_passed_over = 0

    @property
    def held(self) -> bool:
        return self._held

    @property
    def waiting(self) -> int:
        return sum(len(lane) for lane in self._lanes.values())

    @contextlib.asynccontextmanager
    async def turn(self, priority: Priority = Priority.PROGRESS) -> AsyncIterator[None]:
        await self._acquire(self._lanes[priority])
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, lane: deque[asyncio.Future[None]]) -> None:
        if not self._held and not self.waiting:
            self._held = True
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        lane.append(granted)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release()  # handed the turn just as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):  # a release may have dropped it
                    lane.remove(granted)
            raise

    def _release(self) -> None:
        """Hand the turn to the next waiter still waiting, or free the lock."""
        for priority in self._order():
            lane = self._lanes[priority]
            while lane:
                waiter = lane.popleft()
                if not waiter.done():
                    self._note_grant(priority)
                    waiter.set_result(None)  # still held: ownership passes directly
                    return
        self._held = False

    def _order(self) -> tuple[Priority, ...]:
        if self._admission_passed_over >= MAX_PASSED_OVER:
            return (Priority.ADMISSION, Priority.RECORD, Priority.PROGRESS)
        return tuple(Priority)

    def _note_grant(self, priority: Priority) -> None:
        admissions_waiting = any(not w.done() for w in self._lanes[Priority.ADMISSION])
        if priority is Priority.ADMISSION or not admissions_waiting:
            self._admission_passed_over = 0
        else:
            self._admission_passed_over += 1
