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
from sqlalchemy.exc import OperationalError
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


# SQLite's own busy handler waits 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100 ms between
# tries, so a writer that finds the lock taken tries less and less often, while the holder's
# process, whose next transaction starts the moment its last one commits, takes the lock
# again before the waiter looks. The writer's engine (below) gives each try a short timeout
# instead and tries again at once, for as long as the busy timeout of the other connections.
_SQLITE_BUSY_TIMEOUT_MS = 30_000
_SQLITE_BUSY = 5  # SQLITE_BUSY, the result code of a lock another connection holds


def create_writer_engine(
    url: str,
    *,
    sqlite_synchronous: SqliteSynchronous,
    lock_poll_ms: int,
    gives_up_after_s: float = _SQLITE_BUSY_TIMEOUT_MS / 1000,
) -> AsyncEngine | None:
    """SQLite only, ``lock_poll_ms`` above 0: an engine for the process's writer queue alone.

    Its connections take the write lock (``BEGIN IMMEDIATE``) in tries of ``lock_poll_ms``
    each, one after another, up to the 30 s the other connections wait (``gives_up_after_s``),
    and then fails as they do ("database is locked"), instead of with
    SQLite's growing back-off (see above): a process waiting for another's commit gets the
    lock within about a millisecond of its release. Nothing else changes: the same file,
    the same ``synchronous``, the same transactions. The cost is the waiter's: a round trip
    to the driver's thread every ``lock_poll_ms`` while it waits. Reads keep the main
    engine and its busy timeout. None on PostgreSQL or with ``lock_poll_ms`` 0, where the
    main engine writes as before.
    """
    if lock_poll_ms < 0:
        raise ValueError(f"lock_poll_ms must be 0 or more, got {lock_poll_ms!r}")
    if lock_poll_ms == 0 or make_url(url).get_backend_name() != "sqlite":
        return None
    engine = create_async_engine(
        url,
        connect_args={"timeout": lock_poll_ms / 1000},
        # The writer queue runs one transaction at a time.
        pool_size=2,
        max_overflow=2,
        pool_use_lifo=True,
    )
    pragmas = partial(
        _sqlite_pragmas,
        synchronous=SqliteSynchronous(sqlite_synchronous),
        busy_timeout_ms=lock_poll_ms,
    )
    event.listen(engine.sync_engine, "connect", pragmas)
    tries = partial(_sqlite_begin, lock_tries_for_s=gives_up_after_s)
    event.listen(engine.sync_engine, "begin", tries)
    return engine


def as_utc(value: datetime) -> datetime:
    """A datetime read from the store, timezone-aware. SQLite hands back naive datetimes
    even for timezone-aware columns; paygate stores UTC only, so a naive one is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def as_utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


WRITE_OPTION = "paygate_write"
SINGLE_READ_OPTION = "paygate_single_read"
_WAL_ATTEMPTS = 100


def _sqlite_begin(conn: Any, *, lock_tries_for_s: float | None = None) -> None:
    # A deferred transaction that reads and then writes can fail with SQLITE_BUSY when two
    # of them overlap (neither waits for the other); taking the write lock up front makes
    # writers queue behind each other instead. Reads stay deferred so they never queue.
    options = conn.get_execution_options()
    if options.get(WRITE_OPTION):
        if lock_tries_for_s is None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            _begin_immediate_trying(conn, lock_tries_for_s)
    elif not options.get(SINGLE_READ_OPTION):
        conn.exec_driver_sql("BEGIN")
    # A connection that runs one SELECT and nothing else needs no BEGIN: SQLite runs a
    # statement outside a transaction in an implicit one of its own, so it reads one
    # snapshot all the same, and the explicit BEGIN was a round trip to aiosqlite's thread.


def _begin_immediate_trying(conn: Any, tries_for_s: float) -> None:
    # Each try waits the connection's short busy timeout in SQLite; a failed BEGIN starts no
    # transaction, so trying again is safe. The await is the driver's round trip: other
    # tasks run meanwhile.
    deadline = time.monotonic() + tries_for_s
    while True:
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            return
        except OperationalError as exc:
            if not _is_busy(exc.orig) or time.monotonic() >= deadline:
                raise


def _is_busy(error: BaseException | None) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return bool(code & 0xFF == _SQLITE_BUSY)
    return "database is locked" in str(error)


def _sqlite_pragmas(
    dbapi_connection: Any,
    _record: Any,
    *,
    synchronous: SqliteSynchronous,
    busy_timeout_ms: int = _SQLITE_BUSY_TIMEOUT_MS,
) -> None:
    # WAL lets the facade read while the consumer writes; `synchronous` is the durability
    # chosen (see SqliteSynchronous); foreign keys are off by default in SQLite.
    # Let SQLAlchemy's "begin" event emit BEGIN, instead of the driver's own deferred one.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
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
async def write_connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection whose transactions will write: on SQLite, its ``begin()`` takes the
    write lock (``BEGIN IMMEDIATE``), waiting for it if another connection holds it.

    On PostgreSQL its transactions are READ COMMITTED whatever the server's default
    (``default_transaction_isolation``): the writes' lock order (persistence.lock_order)
    locks a row, then reads what others committed under it, which needs each statement's
    own snapshot. A data key's retire counts the values under the key after locking its
    row, waiting for inserts under way (persistence.vault_key_guard); in REPEATABLE READ
    the count read the snapshot taken before that wait, missed those inserts, and erased a
    key cards were still under."""
    async with engine.connect() as conn:
        options: dict[str, Any] = {WRITE_OPTION: True}
        if conn.dialect.name == "postgresql":
            options["isolation_level"] = "READ COMMITTED"
        await conn.execution_options(**options)
        yield conn


@contextlib.asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction that will write: on SQLite it takes the write lock at BEGIN."""
    async with write_connection(engine) as conn, conn.begin():
        yield conn
