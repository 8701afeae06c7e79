"""Turns at SQLite's single writer, with an urgent lane.

On SQLite every write transaction of the process waits here for its turn. Under load the
queue grows long (each turn also waits for the busy event loop), and most writes can wait.
One kind cannot: recording a task the provider has just accepted. Until that commits, a
crash would leave the job's outcome unknown and may cost a second paid task, so those
writes take the next turn, ahead of every ordinary writer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator


class WriterTurns:
    """A lock handed over in order: urgent waiters first, then the others, each FIFO."""

    def __init__(self) -> None:
        self._held = False
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._ordinary: deque[asyncio.Future[None]] = deque()

    @property
    def held(self) -> bool:
        return self._held

    @property
    def waiting(self) -> int:
        return len(self._urgent) + len(self._ordinary)

    @contextlib.asynccontextmanager
    async def turn(self, *, urgent: bool = False) -> AsyncIterator[None]:
        await self._acquire(self._urgent if urgent else self._ordinary)
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
        for lane in (self._urgent, self._ordinary):
            while lane:
                waiter = lane.popleft()
                if not waiter.done():
                    waiter.set_result(None)  # still held: ownership passes directly
                    return
        self._held = False
