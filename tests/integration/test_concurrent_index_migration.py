"""Revision 0030 indexes ``payments`` and ``refunds`` on PostgreSQL without blocking their
writes: each index is built ``CONCURRENTLY``, outside the upgrade's transaction.

A plain ``CREATE INDEX`` takes a lock that conflicts with every writer's and, queued behind
a transaction still writing the table, makes every later writer queue behind it too: on a
large database the writer queue stalls for the whole build. The test holds a writer's
transaction open on ``payments`` while the upgrade runs, and checks that another writer
still gets its lock at once (``NOWAIT``) while the build waits; then that an index an
interrupted concurrent build left invalid is built again, and that a caller holding its
own transaction around the revisions still gets them (built plainly, as on SQLite).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from persistence.engine import create_engine
from persistence.migrate import alembic_config, current_revision, upgrade_to
from tests.integration.test_writer_lock_order import _until_a_lock_wait

pytestmark = pytest.mark.integration

_INDEXES = ("ix_payments_provider_reference", "ix_refunds_provider_reference")
_VALID = text(
    "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
    "WHERE c.relname IN ('ix_payments_provider_reference', 'ix_refunds_provider_reference') "
    "ORDER BY c.relname"
)
_WRITERS_LOCK = text("LOCK TABLE payments IN ROW EXCLUSIVE MODE")


@pytest.fixture
async def engine_at_0029(fresh_postgres_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(fresh_postgres_database_url)
    await upgrade_to(engine, "0029")
    yield engine
    await engine.dispose()


async def _indexes(engine: AsyncEngine) -> list[tuple[str, bool]]:
    async with engine.connect() as conn:
        return [(row.relname, row.indisvalid) for row in await conn.execute(_VALID)]


async def _writing(conn: AsyncConnection) -> None:
    """``conn`` in a transaction holding the lock every insert or update of payments takes."""
    await conn.begin()
    await conn.execute(_WRITERS_LOCK)


async def test_0030_builds_its_indexes_without_blocking_writers(
    engine_at_0029: AsyncEngine, fresh_postgres_database_url: str
) -> None:
    upgrader = create_engine(fresh_postgres_database_url)
    try:
        async with engine_at_0029.connect() as writer:
            await _writing(writer)
            upgrading = asyncio.ensure_future(upgrade_to(upgrader, "0030"))
            await _until_a_lock_wait(engine_at_0029, upgrading)
            assert not upgrading.done()  # the build waits for the open writer

            # Another writer meanwhile: granted at once, not queued behind the build.
            async with engine_at_0029.connect() as other:
                await other.begin()
                await other.execute(text("LOCK TABLE payments IN ROW EXCLUSIVE MODE NOWAIT"))
                await other.commit()
            assert not upgrading.done()
            await writer.commit()
        await asyncio.wait_for(upgrading, 60)
    finally:
        await upgrader.dispose()

    assert await current_revision(engine_at_0029) == "0030"
    assert await _indexes(engine_at_0029) == [(name, True) for name in _INDEXES]


async def test_an_index_left_invalid_by_an_interrupted_build_is_built_again(
    engine_at_0029: AsyncEngine,
) -> None:
    # A concurrent build cancelled while it waits for a writer leaves its index behind,
    # invalid (never used by a query, still written by every insert).
    async with engine_at_0029.connect() as writer:
        await _writing(writer)
        async with engine_at_0029.connect() as building:
            await building.execution_options(isolation_level="AUTOCOMMIT")
            await building.execute(text("SET statement_timeout = '200ms'"))
            with pytest.raises(DBAPIError, match="statement timeout"):
                await building.execute(
                    text(
                        "CREATE INDEX CONCURRENTLY ix_payments_provider_reference "
                        "ON payments (provider_reference)"
                    )
                )
            await building.execute(text("RESET statement_timeout"))
        await writer.commit()
    assert await _indexes(engine_at_0029) == [("ix_payments_provider_reference", False)]

    await upgrade_to(engine_at_0029, "0030")

    assert await current_revision(engine_at_0029) == "0030"
    assert await _indexes(engine_at_0029) == [(name, True) for name in _INDEXES]


async def test_revisions_run_in_a_callers_transaction_build_the_indexes_plainly(
    engine_at_0029: AsyncEngine,
) -> None:
    def upgrade(connection) -> None:
        with connection.begin():
            command.upgrade(alembic_config(connection), "0030")

    async with engine_at_0029.connect() as conn:
        await conn.run_sync(upgrade)

    assert await current_revision(engine_at_0029) == "0030"
    assert await _indexes(engine_at_0029) == [(name, True) for name in _INDEXES]
