"""The database: engine, units of work, and what differs between SQLite and PostgreSQL.

Reads load typed ORM objects (`read()`), or Core rows on the hot paths
(`read_connection()`, no BEGIN/COMMIT). Writes are Core statements that repositories
build, in units that services open (`write()`, or `single_write()` for one write that is
atomic by itself). SQLite's writes take turns by priority (app/writer_turns.py).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from enum import StrEnum
from typing import Any

import orjson
from sqlalchemy import Label, MetaData, event, exc, inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, ExceptionContext
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
# PostgreSQL lets a few write transactions run at once; SQLite has one writer.
POSTGRES_WRITE_CONCURRENCY = 3
SUSPECT_POOL_SECONDS = 30.0


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def plain_columns(model: type[Base]) -> tuple[Label[Any], ...]:
    """A model's table columns, each labelled with its attribute name: a Core row then
    reads like the model (`row.metadata_`) without the ORM's cost per statement and row."""
    return tuple(prop.columns[0].label(prop.key) for prop in inspect(model).column_attrs)


def row_values(obj: Base) -> dict[str, Any]:
    """An ORM object's column values keyed by column name, for a Core INSERT (columns left
    unset take their defaults)."""
    values = {
        prop.columns[0].key: getattr(obj, prop.key) for prop in inspect(type(obj)).column_attrs
    }
    return {column: value for column, value in values.items() if value is not None}


def upsert(conn: AsyncConnection, table: type[Base]) -> postgresql.Insert | sqlite.Insert:
    """An INSERT in the connection's dialect, which can say what to do on a conflict."""
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table)
    return postgresql.insert(table)


# PostgreSQL's "undefined_table"; SQLite says it in words.
_UNDEFINED_TABLE = "42P01"


def is_unmigrated(error: BaseException) -> bool:
    """The database has no such table: its schema was never created (or is older)."""
    if not isinstance(error, exc.DBAPIError):
        return False
    cause = error.orig
    return getattr(cause, "sqlstate", None) == _UNDEFINED_TABLE or "no such table" in str(cause)


def is_unavailable(error: BaseException) -> bool:
    """The database could not be reached or dropped the connection (a failover, a pooler
    restart, an unreachable host): the request changed nothing and may be retried."""
    if isinstance(error, exc.DBAPIError):
        return error.connection_invalidated or isinstance(
            error, exc.OperationalError | exc.InterfaceError
        )
    if isinstance(error, exc.InvalidRequestError):  # the pool's reconnections ran out
        return str(error) == "This connection is closed"
    # A driver's own errors while connecting: refused, reset, timed out, host unknown.
    return isinstance(error, exc.TimeoutError | ConnectionError | TimeoutError | socket.gaierror)


def _check_after_disconnects(engine: AsyncEngine) -> None:
    """Once the database has dropped a connection (a failover, a pooler restart), pooled
    ones may be dead too: for a while, each is checked before use and silently replaced
    if dead, rather than costing every request a round trip all the time."""
    suspect_until = 0.0

    @event.listens_for(engine.sync_engine, "handle_error")
    def _on_error(context: ExceptionContext) -> None:
        nonlocal suspect_until
        if context.is_disconnect:
            suspect_until = time.monotonic() + SUSPECT_POOL_SECONDS

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: ConnectionPoolEntry, _proxy: Any) -> None:
        if time.monotonic() < suspect_until:
            try:
                engine.dialect.do_ping(dbapi_connection)
            except Exception as error:
                raise exc.DisconnectionError() from error  # the pool takes another


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


class Topic(StrEnum):
    """What a unit of write may announce to this process's listeners once it commits."""

    WEBHOOKS_DUE = "webhooks_due"


# What each open unit of write has announced. Kept beside the connection rather than in
# it: a unit whose connection broke must not touch it again to find out.
_ANNOUNCED: dict[AsyncConnection, set[Topic]] = {}


def announce(conn: AsyncConnection, topic: Topic) -> None:
    """Once this unit of write commits, wake this process's listeners of `topic` (a loop
    that would otherwise only find the work at its next poll)."""
    _ANNOUNCED.setdefault(conn, set()).add(topic)


def _announced(conn: AsyncConnection) -> frozenset[Topic]:
    return frozenset(_ANNOUNCED.pop(conn, ()))


class Database:
    """One engine per process, and the units of work built on it."""

    def __init__(self, settings: Settings) -> None:
        self._is_sqlite = settings.is_sqlite
        size, overflow = (
            (4, 8)
            if self._is_sqlite
            else (settings.database_pool_size, settings.database_max_overflow)
        )
        self.engine = create_async_engine(
            settings.database_url,
            json_serializer=_json_dumps,
            json_deserializer=orjson.loads,
            pool_size=size,
            max_overflow=overflow,
            # A statement's values (secrets among them) never go into an error's message.
            hide_parameters=True,
        )
        _check_after_disconnects(self.engine)
        if self._is_sqlite:
            _configure_sqlite(self.engine, settings.sqlite_busy_timeout_ms)
        self._write_engine = self.engine.execution_options(**{_WRITE: True})
        # (pysqlite is left in autocommit mode by _configure_sqlite already; switching its
        # isolation level back and forth would hand BEGIN back to the sqlite3 module.)
        self._single_statement_engine = (
            self.engine.execution_options(**{_SINGLE_STATEMENT: True})
            if self._is_sqlite
            else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        self._read_sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer; queueing writers here is cheaper than spinning on the lock.
        self._writer_turns = WriterTurns() if self._is_sqlite else None
        self.write_concurrency = 1 if self._is_sqlite else POSTGRES_WRITE_CONCURRENCY
        self._commit_listeners: list[tuple[Topic | None, Callable[[], None]]] = []

    def on_commit(self, listener: Callable[[], None], topic: Topic | None = None) -> None:
        """Call `listener` after each unit of write of this process commits, or only after
        those that announced `topic` (in-process wake-ups; it must be quick and must not
        raise)."""
        self._commit_listeners.append((topic, listener))

    def _committed(self, topics: frozenset[Topic]) -> None:
        for topic, listener in self._commit_listeners:
            if topic is None or topic in topics:
                listener()

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self._read_sessions() as session:
            yield session

    @contextlib.asynccontextmanager
    async def read_connection(self) -> AsyncIterator[AsyncConnection]:
        async with self._single_statement_engine.connect() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def write(self, priority: Priority = Priority.PROGRESS) -> AsyncIterator[AsyncConnection]:
        """A write transaction; on SQLite, its turn comes by `priority` (app.writer_turns)."""
        async with self._writer_turn(priority), self._write_engine.connect() as conn:
            try:
                async with conn.begin():
                    yield conn
            finally:
                topics = _announced(conn)
        self._committed(topics)

    @contextlib.asynccontextmanager
    async def single_write(self, priority: Priority) -> AsyncIterator[AsyncConnection]:
        """A unit for one repository write that is atomic by itself: on PostgreSQL its one
        statement commits on its own; SQLite runs it in a write transaction of its turn."""
        if self._writer_turns is not None:
            async with self.write(priority) as conn:
                yield conn
            return
        async with self._single_statement_engine.connect() as conn:
            try:
                yield conn
            finally:
                topics = _announced(conn)
        self._committed(topics)

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
