"""Alembic migrations agree with the models, on a fresh SQLite and PostgreSQL database.

`alembic upgrade head` on an empty database must give exactly the schema the models
describe (Alembic's own autogenerate comparison finds nothing to do), and the migration
history must run down to nothing and back up again.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

import app.models  # noqa: F401  (every table on Base.metadata)
from app.db import Base
from tests.support import (
    alembic_config,
    create_postgres_database,
    drop_postgres_database,
    migrate,
)


@pytest.fixture(params=["sqlite", "postgresql"])
async def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A brand-new database with nothing in it (not the suite's shared, migrated one)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        return
    try:
        url = await create_postgres_database()
    except Exception as exc:
        if os.environ.get("POYO_TEST_SKIP_POSTGRES") == "1" and os.environ.get("CI") != "true":
            pytest.skip(f"PostgreSQL unreachable and POYO_TEST_SKIP_POSTGRES=1: {exc}")
        raise
    yield url
    await drop_postgres_database(url)


def _diffs(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, Base.metadata))


def _state(connection: Connection) -> dict[str, Any]:
    inspector = inspect(connection)
    tables = set(inspector.get_table_names())
    return {
        "tables": tables,
        "revision": MigrationContext.configure(connection).get_current_revision(),
        "indexes": {
            table: {index["name"]: index for index in inspector.get_indexes(table)}
            for table in tables
        },
    }


async def inspect_db(url: str) -> tuple[list[Any], dict[str, Any]]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            diffs = await connection.run_sync(_diffs)
            state = await connection.run_sync(_state)
    finally:
        await engine.dispose()
    return diffs, state


def head_revision() -> str:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    heads = script.get_heads()
    assert len(heads) == 1, f"the history must have exactly one head, not {heads}"
    return heads[0]


def test_history_is_one_line() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    revisions = list(script.walk_revisions())
    assert revisions, "there is at least one revision"
    assert len(script.get_bases()) == 1
    head_revision()
    for revision in revisions:
        assert revision.doc, f"revision {revision.revision} says what it does"


async def test_upgrade_head_matches_the_models_exactly(empty_database: str) -> None:
    diffs, state = await inspect_db(empty_database)
    assert state["tables"] == set()
    await asyncio.to_thread(migrate, empty_database)

    diffs, state = await inspect_db(empty_database)
    assert diffs == [], f"models and migrations disagree: {diffs}"
    assert state["tables"] == set(Base.metadata.tables) | {"alembic_version"}
    assert state["revision"] == head_revision()
    # The worker's partial index keeps only jobs that still need attention.
    due = state["indexes"]["jobs"]["ix_jobs_due"]
    options = due.get("dialect_options", {})
    where = options.get("postgresql_where") or options.get("sqlite_where")
    assert where is not None, due
    assert "next_check_at" in str(where).lower()
    assert "not null" in str(where).lower()


async def test_downgrade_to_base_and_upgrade_again(empty_database: str) -> None:
    config = alembic_config(empty_database)
    await asyncio.to_thread(migrate, empty_database)
    await asyncio.to_thread(command.downgrade, config, "base")
    _, state = await inspect_db(empty_database)
    assert state["tables"] <= {"alembic_version"}, state["tables"]
    assert state["revision"] is None

    await asyncio.to_thread(migrate, empty_database)
    diffs, state = await inspect_db(empty_database)
    assert diffs == [], diffs
    assert state["revision"] == head_revision()

    # Upgrading an up-to-date database is a no-op.
    await asyncio.to_thread(migrate, empty_database)
    diffs, again = await inspect_db(empty_database)
    assert diffs == []
    assert again["tables"] == state["tables"]
