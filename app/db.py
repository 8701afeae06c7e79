"""Engine, sessions and the declarative base.

Transactions are explicit units of work: `db.write()` commits on success and rolls back
on error, `db.read()` never writes. Services open them; repositories only flush.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
from sqlalchemy import Label, MetaData, event, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import ConnectionPoolEntry

from app.config import Settings
from app.writer_turns import Priority, WriterTurns

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

_WRITE = "poyo_write"
_SINGLE_STATEMENT = "poyo_single_statement"


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def plain_columns(model: type[Base]) -> tuple[Label[Any], ...]:
    """A model's table columns, each labelled with its attribute name: a Core row then
    reads like the model (`row.metadata_`) without the ORM's cost per statement and row."""
    return tuple(prop.columns[0].label(prop.key) for prop in inspect(model).column_attrs)


def _configure_sqlite(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    """WAL, a busy timeout, and BEGIN IMMEDIATE for writers: no 'database is locked'."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Take transaction control from the sqlite3 module so that BEGIN is ours.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A writer takes the write lock up front; a deferred transaction that upgrades
        # later fails at once with SQLITE_BUSY instead of waiting its turn. A lone
        # SELECT is its own transaction: no BEGIN (one trip to aiosqlite's thread fewer).
        options = conn.get_execution_options()
        if options.get(_SINGLE_STATEMENT, False):
            return
        conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get(_WRITE, False) else "BEGIN")


class Database:
    """One engine per process, a read session factory and a write session factory."""

    def __init__(self, settings: Settings) -> None:
        self.is_sqlite = settings.is_sqlite
        kwargs: dict[str, Any] = {"pool_pre_ping": False}
        if not self.is_sqlite:
            kwargs |= {
                "pool_size": settings.database_pool_size,
                "max_overflow": settings.database_max_overflow,
            }
        else:
            kwargs |= {"pool_size": 4, "max_overflow": 8}
        self.engine = create_async_engine(
            settings.database_url,
            json_serializer=_json_dumps,
            json_deserializer=orjson.loads,
            **kwargs,
        )
        if self.is_sqlite:
            _configure_sqlite(self.engine, settings.sqlite_busy_timeout_ms)
        self._write_engine = self.engine.execution_options(**{_WRITE: True})
        # (pysqlite is left in autocommit mode by _configure_sqlite already; switching its
        # isolation level back and forth would hand BEGIN back to the sqlite3 module.)
        self._single_statement_engine = (
            self.engine.execution_options(**{_SINGLE_STATEMENT: True})
            if self.is_sqlite
            else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        self._read_sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = async_sessionmaker(self._write_engine, expire_on_commit=False)
        # SQLite has one writer; queueing writers here is cheaper than spinning on the lock.
        self._writer_turns = WriterTurns() if self.is_sqlite else None

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self._read_sessions() as session:
            yield session

    @contextlib.asynccontextmanager
    async def read_connection(self) -> AsyncIterator[AsyncConnection]:
        """A Core connection for the hot read paths, where each statement stands alone:
        it runs without BEGIN or COMMIT (PostgreSQL: two round trips fewer)."""
        async with self._single_statement_engine.connect() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def write(self, priority: Priority = Priority.PROGRESS) -> AsyncIterator[AsyncSession]:
        """A write transaction; on SQLite, its turn comes by `priority` (app.writer_turns)."""
        async with (
            self._writer_turn(priority),
            self._write_sessions() as session,
            session.begin(),
        ):
            yield session

    @contextlib.asynccontextmanager
    async def write_connection(self) -> AsyncIterator[AsyncConnection]:
        """A Core connection in a write transaction, for lean hot paths."""
        async with self._writer_turn(Priority.PROGRESS), self._write_engine.begin() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def statement_connection(self) -> AsyncIterator[AsyncConnection]:
        """PostgreSQL only: a connection on which each statement commits on its own, so a
        single-statement write costs one round trip (no BEGIN, no COMMIT)."""
        if self.is_sqlite:
            raise RuntimeError("SQLite writes take their turn: use write()")
        async with self._single_statement_engine.connect() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def _writer_turn(self, priority: Priority) -> AsyncIterator[None]:
        if self._writer_turns is None:
            yield
            return
        async with self._writer_turns.turn(priority):
            yield

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")

    async def dispose(self) -> None:
        await self.engine.dispose()
