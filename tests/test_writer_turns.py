"""Turns at SQLite's single writer: one at a time, in order, urgent writes first, and no
turn lost when a waiter is cancelled."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from app.db import Database
from app.writer_turns import WriterTurns
from tests.support import make_settings


async def queue_up(
    turns: WriterTurns, order: list[str], name: str, *, urgent: bool = False
) -> asyncio.Task[None]:
    async def take() -> None:
        async with turns.turn(urgent=urgent):
            order.append(name)
            await asyncio.sleep(0)

    task = asyncio.create_task(take())
    await asyncio.sleep(0)  # it is waiting now
    return task


async def test_urgent_waiters_go_first_and_each_lane_is_fifo() -> None:
    turns = WriterTurns()
    order: list[str] = []
    async with turns.turn():
        tasks = [
            await queue_up(turns, order, "a"),
            await queue_up(turns, order, "b"),
            await queue_up(turns, order, "urgent-1", urgent=True),
            await queue_up(turns, order, "c"),
            await queue_up(turns, order, "urgent-2", urgent=True),
        ]
        assert turns.waiting == 5
    await asyncio.gather(*tasks)
    assert order == ["urgent-1", "urgent-2", "a", "b", "c"]
    assert not turns.held
    assert turns.waiting == 0


async def test_never_two_holders_at_once() -> None:
    turns = WriterTurns()
    inside = 0
    most = 0

    async def writer(number: int) -> None:
        nonlocal inside, most
        async with turns.turn(urgent=number % 3 == 0):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            inside -= 1

    await asyncio.gather(*(writer(n) for n in range(200)))
    assert most == 1
    assert not turns.held


async def test_a_cancelled_waiter_gives_up_its_place() -> None:
    turns = WriterTurns()
    order: list[str] = []
    async with turns.turn():
        cancelled = await queue_up(turns, order, "cancelled", urgent=True)
        after = await queue_up(turns, order, "after")
        cancelled.cancel()
        await asyncio.sleep(0)
        assert turns.waiting == 1
    async with asyncio.timeout(2):  # a lost turn would leave it waiting forever
        await after
    assert order == ["after"]
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert not turns.held


async def test_a_waiter_cancelled_as_its_turn_comes_passes_it_on() -> None:
    turns = WriterTurns()
    order: list[str] = []
    holder = turns.turn()
    await holder.__aenter__()
    handed = await queue_up(turns, order, "handed")
    after = await queue_up(turns, order, "after")
    await holder.__aexit__(None, None, None)  # the turn is handed to "handed"...
    handed.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await handed
    async with asyncio.timeout(2):  # a lost turn would leave it waiting forever
        await after
    assert order == ["after"]
    assert not turns.held
    assert turns.waiting == 0


async def test_an_error_inside_a_turn_frees_it() -> None:
    turns = WriterTurns()
    with pytest.raises(RuntimeError):
        async with turns.turn():
            raise RuntimeError("the transaction failed")
    async with asyncio.timeout(1):
        async with turns.turn():
            assert turns.held


@pytest.mark.parametrize("migrated_database", ["sqlite"], indirect=True)
async def test_sqlite_commits_an_urgent_write_before_queued_ones(database_url: str) -> None:
    db = Database(make_settings(database_url=database_url))
    await_first = asyncio.Event()
    release_first = asyncio.Event()
    committed: list[str] = []

    async def write(name: str, *, urgent: bool = False, hold: bool = False) -> None:
        async with db.write(urgent=urgent) as session:
            await session.execute(text("SELECT 1"))
            if hold:
                await_first.set()
                await release_first.wait()
        committed.append(name)

    try:
        first = asyncio.create_task(write("first", hold=True))
        await await_first.wait()
        ordinary = [asyncio.create_task(write(f"ordinary-{n}")) for n in range(3)]
        await asyncio.sleep(0.05)
        urgent = asyncio.create_task(write("urgent", urgent=True))
        await asyncio.sleep(0.05)
        release_first.set()
        await asyncio.gather(first, *ordinary, urgent)
    finally:
        await db.dispose()
    assert committed == ["first", "urgent", "ordinary-0", "ordinary-1", "ordinary-2"]
