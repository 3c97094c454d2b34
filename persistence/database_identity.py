"""Whether two engines reach one table, whatever their URLs say.

One database can be named by URLs whose text differs: a host name or its address, a Unix
socket or TCP, a default port written out or left out, other options; a
SQLite file by a relative path, through a symbolic or a hard link. And one URL text can
name two databases (two in-memory SQLite engines). So the question is asked of the
databases themselves, never of the URLs:

- PostgreSQL: a session of the first engine marks itself with a random application name
  (transaction-local: it is gone when that transaction ends, held open meanwhile), and a
  session of the second asks ``pg_stat_activity`` whether a session of *its* database
  carries the mark. Every session of a server sees every other one's pid, database and
  application name, whatever its role's privileges, so a match is one database of one
  server, and no match is not (another server, or another database of the same one). The
  table's name is then resolved on both (``to_regclass``: a ``search_path`` set by one URL
  can put another schema's table of that name first), and each session's role read
  (``current_user``): a URL naming the database under another role is not the same, as
  its engine's writes are not allowed what the other's are (a vault role that alone may
  touch the vault's tables, a paygate role without them). Taken for the same, the vault's
  rows would be written, and its keys' rows locked, with the other URL's role: refused
  there, or the operator's separation silently dropped.
- SQLite: the main database file's device and inode (``PRAGMA database_list``). An
  in-memory or temporary database has no file, and is only ever the same as itself.

Different dialects are different databases.
"""

from __future__ import annotations

import os
import secrets
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

_MARK_PREFIX: Final = "paygate identity "
_MARK = text("SELECT set_config('application_name', :mark, true)")
_MARKED = text(
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE application_name = :mark AND datname = current_database()"
)
_TABLE_OID = text("SELECT to_regclass(:table)::oid, current_user")


async def same_table(first: AsyncEngine, second: AsyncEngine, table: str) -> bool:
    """Whether ``table``, as each engine's sessions resolve its name, is one table of one
    database, reached under one role (see the module docstring). On PostgreSQL, False
    where it exists on neither; on SQLite, one file is one set of tables."""
    if first is second:
        return True
    dialect = first.dialect.name
    if dialect != second.dialect.name:
        return False
    if dialect == "postgresql":
        return await _same_postgresql_table(first, second, table)
    if dialect == "sqlite":
        one, other = await _sqlite_file(first), await _sqlite_file(second)
        return one is not None and one == other
    return False


async def _same_postgresql_table(first: AsyncEngine, second: AsyncEngine, table: str) -> bool:
    mark = _MARK_PREFIX + secrets.token_hex(16)
    async with first.connect() as marked, marked.begin():
        await marked.execute(_MARK, {"mark": mark})
        oid, role = (await marked.execute(_TABLE_OID, {"table": table})).one()
        async with second.connect() as looking:
            seen = await looking.scalar(_MARKED, {"mark": mark})
            other_oid, other_role = (await looking.execute(_TABLE_OID, {"table": table})).one()
    return bool(seen) and oid is not None and oid == other_oid and role == other_role


async def _sqlite_file(engine: AsyncEngine) -> tuple[int, int] | None:
    """The (device, inode) of the engine's main database file; None without one. A file
    path that names no file yet is not opened: connecting would create it."""
    url = engine.url
    if url.database and not url.query.get("uri") and _file_of(url.database) is None:
        return None
    async with engine.connect() as conn:
        # (seq, name, file) per attached database; "main" is the engine's own.
        listed: list[Any] = list(await conn.exec_driver_sql("PRAGMA database_list"))
    path = next((str(row[2]) for row in listed if row[1] == "main"), "")
    return _file_of(path) if path else None


def _file_of(path: str) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path``, None if there is none: one ``stat``, once
    per pair of engines compared (the vault caches the answer)."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino
