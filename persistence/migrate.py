"""Schema versions: the Alembic revisions in ``persistence/migrations``, run on async engines.

Every process calls :func:`upgrade_to_head` at start (through
``persistence.engine.create_schema``), and operators can run it ahead of a rollout with
``paygate db upgrade``. It is safe when several processes start at once: the whole upgrade
is one transaction that first takes a lock, a PostgreSQL advisory lock or SQLite's write
lock, so the others wait and then find the schema at head. On PostgreSQL the lock is the
session's and the transaction Alembic's own, so that a revision can build an index
``CONCURRENTLY`` outside it (0030): the revisions before such a step are committed first.

A database made by ``metadata.create_all`` before migrations existed has the tables but no
``alembic_version`` table. It is compared with the schemas it can have been made with (the
frozen baseline of revision 0001, or the current tables) and stamped with that revision, so
the upgrade continues from there instead of creating tables that exist. A schema that
matches neither is refused with the differences listed, never altered by guesswork.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, inspect, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

# Imported for their side effect: they add the api_keys, outbox_lease, rate_limit_buckets,
# vault and webhook tables to ``metadata``.
import persistence.api_key_tables
import persistence.outbox_lease_tables
import persistence.rate_limit_tables
import persistence.vault_tables
import persistence.webhook_tables  # noqa: F401
from persistence.engine import WRITE_OPTION
from persistence.migrations import baseline_tables
from persistence.tables import metadata

log = logging.getLogger(__name__)


class _OnlyUpgrades(logging.Filter):
    """Alembic says at INFO which dialect it drives, every time any process starts; only
    the revisions it runs are news worth a log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage().startswith("Running ")


logging.getLogger("alembic.runtime.migration").addFilter(_OnlyUpgrades())

SCRIPT_LOCATION = "persistence:migrations"
BASELINE_REVISION = "0001"
# pg_advisory_xact_lock key of the upgrade: "paygate" in ASCII, as a 64-bit integer.
ADVISORY_LOCK_KEY = int.from_bytes(b"paygate", "big")
# Alembic config attribute (set by env.py): whether the revisions run inside a transaction
# their caller holds, which a revision cannot step out of (0030's concurrent builds).
IN_CALLERS_TRANSACTION = "paygate_in_callers_transaction"


class UnrecognisedSchemaError(RuntimeError):
    """The database has paygate tables but no version, and they match no known schema."""


def head_metadata() -> MetaData:
    """The tables the code expects: what the newest revision must produce."""
    return metadata


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, made in code: no alembic.ini is needed at runtime.

    ``env.py`` runs the migrations on ``connection`` (inside the caller's transaction).
    """
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "persistence/migrations/versions has no revision"
    return head


async def upgrade_to_head(engine: AsyncEngine) -> None:
    """Bring the database to the newest revision (a no-op when it is there already)."""
    await upgrade_to(engine, "head")


async def upgrade_to(engine: AsyncEngine, revision: str) -> None:
    """Bring the database up to ``revision``, as every process does to the head at start
    (tests stop at a revision on the way)."""
    async with engine.connect() as conn:
        # On SQLite, BEGIN then takes the write lock at once: a second process waits there.
        await conn.execution_options(**{WRITE_OPTION: True})
        if conn.dialect.name != "postgresql":
            await conn.run_sync(_upgrade, revision)
            return
        async with _session_lock(conn):
            await conn.run_sync(_upgrade_postgresql, revision)


async def downgrade_to(engine: AsyncEngine, revision: str) -> None:
    """Bring the database down to ``revision``, as :func:`upgrade_to_head` brings it up: in
    one transaction under the same lock, with SQLite's foreign keys off while batch mode
    rebuilds a table others refer to (``payments``, ``webhook_endpoints``), checked before
    commit. With them on, SQLite refuses to drop the old copy of ``payments`` while a
    provider attempt or a refund refers to it, so no downgrade that rebuilds it could run on
    a database with payments."""
    async with engine.connect() as conn:
        await conn.execution_options(**{WRITE_OPTION: True})
        if conn.dialect.name != "postgresql":
            await conn.run_sync(_downgrade, revision)
            return
        # The upgrade's lock, waited for as it waits: never inside a statement while an
        # upgrade builds an index concurrently (see _session_lock).
        async with _session_lock(conn):
            await conn.run_sync(_downgrade, revision)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The database's revision; None for an empty or never-stamped database."""
    async with engine.connect() as conn:
        return await conn.run_sync(_current_revision)


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _upgrade(connection: Connection, revision: str) -> None:
    with _sqlite_foreign_keys_off(connection), connection.begin():
        before = _stamp_if_created_without_migrations(connection)
        command.upgrade(alembic_config(connection), revision)
        if before != head_revision():
            _check_foreign_keys(connection)


def _upgrade_postgresql(connection: Connection, revision: str) -> None:
    """The upgrade on PostgreSQL, under :func:`_session_lock`: the revisions run in one
    transaction that Alembic begins (env.py), not one held around it, so that a revision
    can step out of it for a statement PostgreSQL runs only outside a transaction (0030's
    ``CREATE INDEX CONCURRENTLY``, in Alembic's ``autocommit_block``, which commits the
    revisions before it first)."""
    with connection.begin():
        _stamp_if_created_without_migrations(connection)
    command.upgrade(alembic_config(connection), revision)


@contextlib.asynccontextmanager
async def _session_lock(conn: AsyncConnection) -> AsyncIterator[None]:
    """The upgrade's lock on PostgreSQL: a session advisory lock, held across the commits
    of a revision that steps out of the transaction (a transaction's lock would go with the
    first). A second process waits here, then finds the schema at head; a downgrade's
    transaction lock on the same key excludes it too.

    Waited for by trying, between tries in no transaction: a session waiting on a lock
    inside a statement holds a snapshot, which a ``CREATE INDEX CONCURRENTLY`` run by the
    holder waits to see end, while it waits for the holder: a deadlock."""
    while not await conn.scalar(_TRY_LOCK, {"key": ADVISORY_LOCK_KEY}):
        await conn.rollback()
        await asyncio.sleep(_LOCK_RETRY_S)
    await conn.commit()
    try:
        yield
    finally:
        try:
            await conn.rollback()
            released = await conn.scalar(_UNLOCK, {"key": ADVISORY_LOCK_KEY})
            await conn.commit()
            if not released:
                # Not this session's to release: a pooler in transaction mode between paygate
                # and PostgreSQL ran the lock on another server session (docs/migrations.md).
                log.error("the upgrade lock was not held by the upgrade's session")
        except Exception:
            # A session that cannot say unlock is closed: its lock goes with it, rather than
            # back to the pool holding the lock every later upgrade waits for.
            log.warning("upgrade lock not released; its connection is closed", exc_info=True)
            await conn.invalidate()


_TRY_LOCK = text("SELECT pg_try_advisory_lock(:key)")
_UNLOCK = text("SELECT pg_advisory_unlock(:key)")
_LOCK_RETRY_S = 0.05


def _downgrade(connection: Connection, revision: str) -> None:
    with _sqlite_foreign_keys_off(connection), connection.begin():
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
            )
        command.downgrade(alembic_config(connection), revision)
        _check_foreign_keys(connection)


def _stamp_if_created_without_migrations(connection: Connection) -> str | None:
    """Stamp a database made by ``create_all``; return the revision the upgrade starts at."""
    context = MigrationContext.configure(connection)
    current = context.get_current_revision()
    if current is not None:
        return current
    known = set(baseline_tables.metadata.tables) | set(head_metadata().tables)
    if not known & set(inspect(connection).get_table_names()):
        return None  # an empty database: the revisions build it from the start
    candidates = ((BASELINE_REVISION, baseline_tables.metadata), (head_revision(), head_metadata()))
    differences: dict[str, list[Any]] = {}
    for revision, tables in candidates:
        differences[revision] = schema_differences(connection, tables)
        if not differences[revision]:
            log.info("schema made before migrations; stamping revision %s", revision)
            context.stamp(ScriptDirectory.from_config(alembic_config()), revision)
            return revision
    raise UnrecognisedSchemaError(
        "the database has paygate tables but no alembic_version, and they match no known "
        f"schema; differences from each: {differences}"
    )


def schema_differences(connection: Connection, tables: MetaData) -> list[Any]:
    """What Alembic's autogenerate would change to make the database match ``tables``.

    Tables that ``tables`` does not define are left out (another application's, or
    alembic_version). Server defaults are not compared: revision 0002 gives the refund
    totals a server default of 0 that ``persistence/tables.py`` does not declare.
    """
    names = set(tables.tables)

    def include_name(name: str | None, type_: str, _parent: Any) -> bool:
        return type_ != "table" or name in names

    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "include_name": include_name}
    )
    differences: list[Any] = compare_metadata(context, tables)
    return differences


@contextlib.contextmanager
def _sqlite_foreign_keys_off(connection: Connection) -> Iterator[None]:
    """SQLite: foreign keys off while batch mode rebuilds a table others refer to.

    With them on, dropping the old copy of ``payments`` would check (and fail on) the
    provider attempts and refunds that refer to it, whether the rebuild adds a column or
    drops one (an upgrade or a downgrade). The pragma is ignored inside a transaction, so it is
    set on the driver's connection before BEGIN; :func:`_check_foreign_keys` checks the
    result before commit, when a revision ran (it reads every table).
    """
    if connection.dialect.name != "sqlite":
        yield
        return
    _sqlite_pragma(connection, "PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        _sqlite_pragma(connection, "PRAGMA foreign_keys=ON")


def _sqlite_pragma(connection: Connection, statement: str) -> None:
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(statement)
    finally:
        cursor.close()


def _check_foreign_keys(connection: Connection) -> None:
    if connection.dialect.name != "sqlite":
        return
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        raise RuntimeError(f"the migration left rows with dangling foreign keys: {broken}")


async def create_schema(engine: AsyncEngine, attempts: int = 5) -> None:
    """Bring the schema to the newest migration (see :mod:`persistence.migrate`).

    Safe from several processes at once: the upgrade runs under a lock, and a database made
    by ``create_all`` before migrations existed is recognised and upgraded in place. Only a
    database that stays busy or unreachable (``OperationalError``) is tried again, up to
    ``attempts`` times; a failing migration is not.
    """
    for attempt in range(1, attempts + 1):
        try:
            await upgrade_to_head(engine)
            return
        except OperationalError:
            if attempt == attempts:
                raise
            await asyncio.sleep(0.2 * attempt)
