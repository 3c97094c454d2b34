"""Whether a frozen consumer holds the SQLite store's write lock.

SQLite has one writer at a time. A consumer SIGSTOPped in the middle of a write
transaction keeps the lock while it is frozen, and every other consumer's write waits
behind it (their busy timeout): the group stops processing rather than taking over the
frozen consumer's work, and the zombie episode proves nothing. The harness asks for the
lock itself, ``BEGIN IMMEDIATE`` then ``ROLLBACK`` (it writes nothing); the consumers'
own transactions last milliseconds, so a lock that stays taken for ``tries`` waits of
``wait_s`` belongs to the frozen one.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable

from sqlalchemy.engine import make_url


def sqlite_lock_probe(database_url: str) -> Callable[[], Awaitable[bool]] | None:
    """A probe for the store at ``database_url``, or None when it is not a SQLite file."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    path = url.database

    async def locked() -> bool:
        return await write_locked(path)

    return locked


async def write_locked(path: str, *, wait_s: float = 1.0, tries: int = 2) -> bool:
    """True when the write lock of the SQLite file at ``path`` stayed taken throughout."""
    for _ in range(tries):
        if not await asyncio.to_thread(_locked_once, path, wait_s):
            return False
    return True


def _locked_once(path: str, wait_s: float) -> bool:
    connection = sqlite3.connect(path, timeout=wait_s, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError:  # "database is locked" once wait_s ran out
        return True
    else:
        connection.execute("ROLLBACK")
        return False
    finally:
        connection.close()
