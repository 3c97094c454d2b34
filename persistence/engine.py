"""Engine creation: the one place that knows SQLite from PostgreSQL."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from enum import StrEnum
from functools import partial
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine


class SqliteSynchronous(StrEnum):
    """SQLite's ``PRAGMA synchronous`` on paygate's connections (always in WAL mode).

    ``FULL`` syncs the write-ahead log at every commit: a committed transaction survives a
    crash of the process, of the OS and a power loss. ``NORMAL`` syncs it only at
    checkpoints: a commit survives a crash of the process, but an OS crash or a power loss
    can take the last commits back. The consumer commits a payment's outcome and then the
    command's Kafka offset, so under ``NORMAL`` such a crash can lose an outcome whose
    command Kafka will never redeliver. Hence ``FULL`` unless explicitly chosen otherwise.
    """

    FULL = "full"
    NORMAL = "normal"


# SQLAlchemy's default pool keeps 5 connections and closes the overflow on return. Under
# load the facade has more reads than that in flight, and each overflow checkout opened a
# new SQLite connection (with aiosqlite, a new thread, the file opened, the pragmas run)
# only to close it: profiled under the REST bench, about a fifth of the facade's busy
# samples. Idle SQLite connections cost a blocked thread each, so keep enough of them.
SQLITE_POOL_SIZE = 20
SQLITE_POOL_OVERFLOW = 20


def create_engine(
    url: str, *, sqlite_synchronous: SqliteSynchronous = SqliteSynchronous.FULL
) -> AsyncEngine:
    """An engine for ``url``; on SQLite, connections use WAL and ``sqlite_synchronous``."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_async_engine(
            url,
            connect_args={"timeout": 30},
            pool_size=SQLITE_POOL_SIZE,
            max_overflow=SQLITE_POOL_OVERFLOW,
            # The most recently returned connection first: a quiet process keeps using a
            # few warm ones (their threads and page caches) instead of cycling all 20.
            pool_use_lifo=True,
        )
        pragmas = partial(_sqlite_pragmas, synchronous=SqliteSynchronous(sqlite_synchronous))
        event.listen(engine.sync_engine, "connect", pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


def as_utc(value: datetime) -> datetime:
    """A datetime read from the store, timezone-aware. SQLite hands back naive datetimes
    even for timezone-aware columns; paygate stores UTC only, so a naive one is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def as_utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


WRITE_OPTION = "paygate_write"
SINGLE_READ_OPTION = "paygate_single_read"
_WAL_ATTEMPTS = 100


def _sqlite_begin(conn: Any) -> None:
    # A deferred transaction that reads and then writes can fail with SQLITE_BUSY when two
    # of them overlap (neither waits for the other); taking the write lock up front makes
    # writers queue behind each other instead. Reads stay deferred so they never queue.
    options = conn.get_execution_options()
    if options.get(WRITE_OPTION):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    elif not options.get(SINGLE_READ_OPTION):
        conn.exec_driver_sql("BEGIN")
    # A connection that runs one SELECT and nothing else needs no BEGIN: SQLite runs a
    # statement outside a transaction in an implicit one of its own, so it reads one
    # snapshot all the same, and the explicit BEGIN was a round trip to aiosqlite's thread.


def _sqlite_pragmas(dbapi_connection: Any, _record: Any, *, synchronous: SqliteSynchronous) -> None:
    # WAL lets the facade read while the consumer writes; `synchronous` is the durability
    # chosen (see SqliteSynchronous); foreign keys are off by default in SQLite.
    # Let SQLAlchemy's "begin" event emit BEGIN, instead of the driver's own deferred one.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    _use_wal(cursor)
    # Interpolated from the enum's two values only: PRAGMA takes no bound parameters.
    cursor.execute(f"PRAGMA synchronous={synchronous.value.upper()}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _use_wal(cursor: Any) -> None:
    # WAL is a property of the file, kept once set, so only a fresh file needs the switch.
    # The switch needs the file to itself, and SQLite may answer "database is locked" at
    # once rather than wait (busy handler or not) while another connection - another
    # process starting on the same fresh file - is in the middle of it; so try again.
    for attempt in range(_WAL_ATTEMPTS):
        cursor.execute("PRAGMA journal_mode")
        if str(cursor.fetchone()[0]).lower() == "wal":
            return
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            if attempt == _WAL_ATTEMPTS - 1:
                raise
            time.sleep(0.05)


def single_read_engine(engine: AsyncEngine) -> AsyncEngine:
    """``engine`` (same pool) for connections that run exactly one ``SELECT`` each.

    On SQLite their transaction sends no ``BEGIN`` (see ``_sqlite_begin``): one statement
    is atomic by itself. Never use it for two statements that must agree with each other,
    nor for a write; on PostgreSQL it changes nothing.
    """
    return engine.execution_options(**{SINGLE_READ_OPTION: True})


@contextlib.asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction that will write: on SQLite it takes the write lock at BEGIN."""
    async with engine.connect() as conn:
        await conn.execution_options(**{WRITE_OPTION: True})
        async with conn.begin():
            yield conn
