"""Which database errors mean "the database cannot be reached now", as opposed to a bug.

The callers (the facade's database guard; later the consumer) answer the first kind with
``service_unavailable`` and log it once per outage; the second kind stays a bug with its
traceback. This module is the one place that knows how SQLAlchemy, asyncpg and SQLite
spell an outage:

- connecting: asyncpg's socket errors (refused, reset, DNS) and its connect timeout escape
  SQLAlchemy unwrapped, as ``OSError`` / ``TimeoutError``; a server that is starting up,
  shutting down or out of connection slots answers with a PostgreSQL error instead;
- the pool: no connection free within the pool timeout (``sqlalchemy.exc.TimeoutError``);
- a connection lost mid-statement: SQLAlchemy flags it ``connection_invalidated``;
- ``OperationalError``: on SQLite only for the codes that pass (busy, locked, I/O,
  cannot open, full), since SQLite also files "no such table" there, which is a bug.
"""

from __future__ import annotations

import sqlite3
from typing import Final

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import exc as sa_exc

# Socket errors and timeouts: asyncpg's, while connecting, escape SQLAlchemy unwrapped.
# PostgreSQL's answers that mean "not now": the server is starting or stopping, was shut
# down under the connection, or has no connection slot left; and asyncpg's own "the
# connection is gone".
_UNAVAILABLE: Final[tuple[type[BaseException], ...]] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
)
# SQLite primary result codes of a database that is busy or cannot be read or written.
_SQLITE_UNAVAILABLE: Final = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
    }
)
# Causes are followed this deep; SQLAlchemy wraps a driver error two or three times.
_MAX_CHAIN: Final = 6


def is_database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc``, raised by a database call, means the database is unreachable now."""
    for error in _chain(exc):
        if isinstance(error, sa_exc.TimeoutError):  # no pooled connection in time
            return True
        if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
            return True
        if isinstance(error, sqlite3.Error):
            return error.sqlite_errorcode & 0xFF in _SQLITE_UNAVAILABLE
        if isinstance(error, _UNAVAILABLE):
            return True
        if isinstance(error, sa_exc.OperationalError) and not isinstance(error.orig, sqlite3.Error):
            return True
    return False


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc``, then what it wraps: the driver error of a SQLAlchemy error, and causes."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < _MAX_CHAIN:
        chain.append(current)
        if isinstance(current, sa_exc.DBAPIError) and isinstance(current.orig, BaseException):
            current = current.orig
        else:
            current = current.__cause__ or current.__context__
    return chain
