"""PostgreSQL's LISTEN, for the change feed: one connection per process, kept alive.

A trigger on job_events (migration e7a4b9c1d2f3) NOTIFYs `poyo_relay_events` from every
transaction that appends to the audit trail; the payload is that transaction's start time
(epoch seconds), from which the notification lag is measured. A lost connection is opened
again, and the feed told to re-read: what was notified meanwhile is not lost, because the
feed reads the table, not the notifications.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import structlog
from sqlalchemy.engine import make_url

from app.backoff import Backoff
from app.metrics import NOTIFICATION_LAG, STREAM_LISTENER_CONNECTED

log = structlog.get_logger(__name__)

CHANNEL = "poyo_relay_events"
APPLICATION_NAME = "poyo-relay-listen"
# A connection that died without a word (a cut cable) is noticed by the next query.
KEEPALIVE_SECONDS = 10.0
QUERY_TIMEOUT_SECONDS = 5.0
RECONNECT = Backoff(base_seconds=0.2, max_seconds=10.0)


def asyncpg_dsn(database_url: str) -> str:
    """The SQLAlchemy URL as asyncpg's own DSN."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class Listener:
    """Calls `on_notify` for every notification and `on_connect` after every (re)connect."""

    def __init__(
        self, database_url: str, on_notify: Callable[[], None], on_connect: Callable[[], None]
    ) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._on_notify = on_notify
        self._on_connect = on_connect
        self._task: asyncio.Task[None] | None = None
        self.connections = 0  # how many times it has connected: tests watch it

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pg-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self._listen()
                failures = 0
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                failures += 1
                log.warning("listener_disconnected", error_type=type(exc).__name__)
            STREAM_LISTENER_CONNECTED.set(0)
            await asyncio.sleep(RECONNECT.delay(failures))

    async def _listen(self) -> None:
        conn = await asyncpg.connect(
            self._dsn,
            timeout=QUERY_TIMEOUT_SECONDS,
            server_settings={"application_name": APPLICATION_NAME},
        )
        lost = asyncio.Event()
        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(CHANNEL, self._notified)
            self.connections += 1
            STREAM_LISTENER_CONNECTED.set(1)
            # Whatever was notified while no one listened is in the table: read it now.
            self._on_connect()
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), KEEPALIVE_SECONDS)
                    break
                await conn.fetchval("SELECT 1", timeout=QUERY_TIMEOUT_SECONDS)
            log.warning("listener_connection_lost")
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), QUERY_TIMEOUT_SECONDS)
            if not conn.is_closed():
                conn.terminate()

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        with contextlib.suppress(ValueError):
            NOTIFICATION_LAG.observe(max(0.0, time.time() - float(payload)))
        self._on_notify()
