"""Waiters across API processes on PostgreSQL: a callback that lands on one process wakes
a waiter on another (LISTEN/NOTIFY), a killed listener connection comes back, and a
notification lost meanwhile strands no one. Plus the change feed's order under
concurrent commits, and what happens to a reader that falls behind."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
import httpx
import pytest
from sqlalchemy import text

from app.jobs.states import JobStatus
from app.streams.feed import Change, ChangeFeed, Interrupted, Subscription
from app.streams.listener import APPLICATION_NAME, Listener, asyncpg_dsn
from tests.conftest import Service, ServiceFactory
from tests.stand_in import ProviderStandIn
from tests.test_callbacks import queued_job
from tests.test_streams import finish, timed_get

on_postgresql = pytest.mark.parametrize("migrated_database", ["postgresql"], indirect=True)


async def replica(start_service: ServiceFactory, provider: ProviderStandIn) -> Service:
    """A second API process on the same database: no worker, and a change feed that only
    a notification (or a reconnection) can wake within a minute."""
    return await start_service(
        poyo_base_url=provider.url,
        poyo_api_key=provider.api_key,
        run_worker=False,
        stream_poll_seconds=60,
    )


def wait_on(service: Service, key: str, job_id: str) -> asyncio.Task[tuple[httpx.Response, float]]:
    http = service.client.http
    return asyncio.create_task(
        timed_get(http, f"/v1/jobs/{job_id}", key, params={"wait": 30}, timeout=40)
    )


@on_postgresql
async def test_a_callback_on_one_process_wakes_a_waiter_on_another(
    relay: Service, start_service: ServiceFactory, provider: ProviderStandIn
) -> None:
    other = await replica(start_service, provider)
    job, task_id = await queued_job(relay)
    waiter = wait_on(other, relay.client.key, job["id"])
    await asyncio.sleep(0.3)
    assert not waiter.done()
    called_back = await finish(relay, provider, job["id"], task_id)
    response, answered = await waiter
    assert response.json()["status"] == "succeeded"
    assert answered - called_back < 1.0


async def _terminate_listeners(database_url: str) -> int:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        killed: int = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = $1",
            APPLICATION_NAME,
        )
        return killed
    finally:
        await conn.close()


@on_postgresql
async def test_a_killed_listener_connection_is_opened_again(
    relay: Service, start_service: ServiceFactory, provider: ProviderStandIn, database_url: str
) -> None:
    other = await replica(start_service, provider)
    listener = other.runtime.feed.listener
    assert listener is not None
    await connected(listener, times=1)
    await connected(relay.runtime.feed.listener, times=1)
    assert await _terminate_listeners(database_url) == 2  # one per process
    await connected(listener, times=2)
    job, task_id = await queued_job(relay)
    waiter = wait_on(other, relay.client.key, job["id"])
    await asyncio.sleep(0.3)
    called_back = await finish(relay, provider, job["id"], task_id)
    response, answered = await waiter
    assert response.json()["status"] == "succeeded"
    assert answered - called_back < 1.0


async def connected(listener: Listener | None, *, times: int) -> None:
    """Wait until `listener` has connected `times` times."""
    assert listener is not None
    async with asyncio.timeout(5):
        while listener.connections < times:
            await asyncio.sleep(0.02)


@dataclass
class SwitchedProxy:
    """TCP to PostgreSQL that can be switched off: open connections are cut and new ones
    refused until it is switched on again."""

    target: tuple[str, int]
    on: bool = True
    server: asyncio.Server | None = None
    writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    def switch_off(self) -> None:
        self.on = False
        for writer in list(self.writers):
            writer.transport.abort()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.on:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers |= {writer, up_writer}
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for each in (writer, up_writer):
                self.writers.discard(each)
                each.transport.abort()

    async def stop(self) -> None:
        self.switch_off()
        if self.server is not None:
            self.server.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()


@contextlib.asynccontextmanager
async def listening_through(service: Service, proxy: SwitchedProxy) -> AsyncIterator[Listener]:
    """The service's change feed, listening through `proxy` instead of directly."""
    feed = service.runtime.feed
    assert feed.listener is not None
    await feed.listener.stop()
    port = await proxy.start()
    url = service.settings.database_url.replace("127.0.0.1:5432", f"127.0.0.1:{port}")
    assert url != service.settings.database_url
    feed.listener = Listener(url, on_notify=feed.wake, on_connect=feed.wake)
    feed.listener.start()
    await connected(feed.listener, times=1)
    try:
        yield feed.listener
    finally:
        await proxy.stop()


@on_postgresql
async def test_a_notification_missed_while_disconnected_strands_no_waiter(
    relay: Service, start_service: ServiceFactory, provider: ProviderStandIn
) -> None:
    other = await replica(start_service, provider)
    proxy = SwitchedProxy(("127.0.0.1", 5432))
    async with listening_through(other, proxy) as listener:
        job, task_id = await queued_job(relay)
        waiter = wait_on(other, relay.client.key, job["id"])
        await asyncio.sleep(0.3)
        proxy.switch_off()
        await finish(relay, provider, job["id"], task_id)
        await relay.client.wait_for_status(job["id"], {"succeeded"})
        await asyncio.sleep(1.0)
        # The notification went nowhere, and nothing else wakes this process for a minute.
        assert not waiter.done()
        proxy.on = True
        switched_on = time.monotonic()
        response, answered = await waiter
    assert response.json()["status"] == "succeeded"
    assert listener.connections == 2
    # Reconnection backs off (0.1 s, 0.2 s, … while refused): well within a few seconds.
    assert answered - switched_on < 5.0


# ---- the feed's order ----------------------------------------------------------------------


async def _insert_event(conn: asyncpg.Connection, job_id: str, kind: str) -> int:
    event_id: int = await conn.fetchval(
        "INSERT INTO job_events (job_id, type, data, created_at) "
        "VALUES ($1, $2, '{}'::json, now()) RETURNING id",
        job_id,
        kind,
    )
    return event_id


@on_postgresql
async def test_the_feed_never_delivers_past_a_transaction_still_committing(
    relay: Service, database_url: str
) -> None:
    job, _ = await queued_job(relay)
    feed = ChangeFeed(relay.runtime.db, poll_seconds=60, max_subscribers=10, queue_limit=100)
    async with relay.runtime.db.read_connection() as conn:
        feed.position = (await conn.execute(text("SELECT max(id) FROM job_events"))).scalar_one()
    feed.started = True
    slow = await asyncpg.connect(asyncpg_dsn(database_url))
    fast = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        async with feed.subscribe(job_id=job["id"]) as subscription:
            slow_tx = slow.transaction()
            await slow_tx.start()
            first = await _insert_event(slow, job["id"], "test.first")
            second = await _insert_event(fast, job["id"], "test.second")  # commits at once
            assert second > first
            await feed.run_once()
            assert await subscription.next(0.05) is None, "the earlier id is not committed yet"
            await slow_tx.commit()
            await feed.run_once()
            delivered = [await subscription.next(1), await subscription.next(1)]
            assert [change.event_id for change in delivered if change] == [first, second]
            # A rolled-back id is waited for, then (after the grace) passed over.
            rolled_back = slow.transaction()
            await rolled_back.start()
            await _insert_event(slow, job["id"], "test.rolled_back")
            await rolled_back.rollback()
            third = await _insert_event(fast, job["id"], "test.third")
            await feed.run_once()
            assert await subscription.next(0.05) is None
            feed.hole_grace_seconds = 0.0
            await feed.run_once()
            change = await subscription.next(1)
            assert change is not None
            assert change.event_id == third
    finally:
        await slow.close()
        await fast.close()


# ---- a reader that falls behind --------------------------------------------------------------


async def test_a_reader_that_falls_behind_is_cut_off_not_buffered() -> None:
    subscription = Subscription(after=0, limit=3, job_id="job_x")
    job = _FakeRow()
    for event_id in range(1, 4):
        subscription.offer(Change(event_id, job, None))  # type: ignore[arg-type]
    first = await subscription.next(0.1)
    assert first is not None
    assert first.event_id == 1
    for event_id in range(4, 7):  # one more than it may hold
        subscription.offer(Change(event_id, job, None))  # type: ignore[arg-type]
    with pytest.raises(Interrupted) as interrupted:
        await subscription.next(0.1)
    assert interrupted.value.reason == "slow_reader"


@dataclass
class _FakeRow:
    status: JobStatus = JobStatus.QUEUED
