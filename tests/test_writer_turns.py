"""Turns at SQLite's single writer: one at a time, by priority (accepted tasks first, new
jobs last but never starved), first come first served within one, and no turn lost when a
waiter is cancelled."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from app.db import Database
from app.writer_turns import MAX_PASSED_OVER, Priority, WriterTurns
from tests.support import make_settings


async def queue_up(
    turns: WriterTurns, order: list[str], name: str, priority: Priority = Priority.PROGRESS
) -> asyncio.Task[None]:
    async def take() -> None:
        async with turns.turn(priority):
            order.append(name)
            await asyncio.sleep(0)

    task = asyncio.create_task(take())
    await asyncio.sleep(0)  # it is waiting now
    return task


async def test_turns_go_by_priority_and_first_come_within_one() -> None:
    turns = WriterTurns()
    order: list[str] = []
    async with turns.turn():
        tasks = [
            await queue_up(turns, order, "new-1", Priority.ADMISSION),
            await queue_up(turns, order, "a"),
            await queue_up(turns, order, "b"),
            await queue_up(turns, order, "record-1", Priority.RECORD),
            await queue_up(turns, order, "new-2", Priority.ADMISSION),
            await queue_up(turns, order, "c"),
            await queue_up(turns, order, "record-2", Priority.RECORD),
        ]
        assert turns.waiting == 7
    await asyncio.gather(*tasks)
    assert order == ["record-1", "record-2", "a", "b", "c", "new-1", "new-2"]
    assert not turns.held
    assert turns.waiting == 0


async def test_never_two_holders_at_once() -> None:
    turns = WriterTurns()
    inside = 0
    most = 0

    async def writer(number: int) -> None:
        nonlocal inside, most
        async with turns.turn(Priority(number % 3)):
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
        cancelled = await queue_up(turns, order, "cancelled", Priority.RECORD)
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


async def test_new_work_is_never_passed_over_more_than_the_limit() -> None:
    """Work in progress that keeps coming cannot hold new jobs back forever."""
    turns = WriterTurns()
    order: list[str] = []
    busy = MAX_PASSED_OVER * 3

    async def progress(runner: int) -> None:
        # Two runners take turns: when one's turn ends, the other is already waiting.
        for number in range(busy):
            async with turns.turn(Priority.PROGRESS):
                order.append(f"runner {runner}: {number}")
                await asyncio.sleep(0)

    async with turns.turn():
        runners = [asyncio.create_task(progress(runner)) for runner in range(2)]
        await asyncio.sleep(0)
        admission = await queue_up(turns, order, "new", Priority.ADMISSION)
    async with asyncio.timeout(5):
        await admission
    passed_over = order.index("new")
    assert 0 < passed_over <= MAX_PASSED_OVER
    await asyncio.gather(*runners)
    assert len(order) == 2 * busy + 1


async def test_an_error_inside_a_turn_frees_it() -> None:
    turns = WriterTurns()
    with pytest.raises(RuntimeError):
        async with turns.turn():
            raise RuntimeError("the transaction failed")
    async with asyncio.timeout(1):
        async with turns.turn():
            assert turns.held


@pytest.mark.parametrize("migrated_database", ["sqlite"], indirect=True)
async def test_sqlite_commits_in_priority_order(database_url: str) -> None:
    db = Database(make_settings(database_url=database_url))
    await_first = asyncio.Event()
    release_first = asyncio.Event()
    committed: list[str] = []

    async def write(
        name: str, priority: Priority = Priority.PROGRESS, *, hold: bool = False
    ) -> None:
        async with db.write(priority) as session:
            await session.execute(text("SELECT 1"))
            if hold:
                await_first.set()
                await release_first.wait()
        committed.append(name)

    try:
        first = asyncio.create_task(write("first", hold=True))
        await await_first.wait()
        admission = asyncio.create_task(write("new job", Priority.ADMISSION))
        await asyncio.sleep(0.05)
        ordinary = [asyncio.create_task(write(f"progress-{n}")) for n in range(3)]
        await asyncio.sleep(0.05)
        record = asyncio.create_task(write("record", Priority.RECORD))
        await asyncio.sleep(0.05)
        release_first.set()
        await asyncio.gather(first, admission, *ordinary, record)
    finally:
        await db.dispose()
    assert committed == ["first", "record", "progress-0", "progress-1", "progress-2", "new job"]
