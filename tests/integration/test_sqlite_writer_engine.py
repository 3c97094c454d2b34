"""The writer queue's own SQLite engine: it waits for another connection's write lock in
short tries, and changes nothing else (same file, same durability, same transactions).

The lock is held by a connection of the main engine, as another process's writer holds it;
what the tries look like in time is not asserted (no timing in tests), only what they do.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from paygate.database import open_database
from paygate.settings import Settings
from persistence.engine import (
    SqliteSynchronous,
    create_engine,
    create_writer_engine,
    write_transaction,
)
from persistence.group_commit import GroupCommit

pytestmark = pytest.mark.integration


def _url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'paygate.db'}"


async def _table(engine: AsyncEngine) -> None:
    async with write_transaction(engine) as conn:
        await conn.execute(text("CREATE TABLE t (n INTEGER)"))


async def _rows(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as conn:
        return list((await conn.execute(text("SELECT n FROM t ORDER BY n"))).scalars())


def _writer(url: str, gives_up_after_s: float = 30.0) -> AsyncEngine:
    writer = create_writer_engine(
        url,
        sqlite_synchronous=SqliteSynchronous.FULL,
        lock_poll_ms=1,
        gives_up_after_s=gives_up_after_s,
    )
    assert writer is not None
    return writer


def test_none_on_postgresql_or_when_off() -> None:
    url = "postgresql+asyncpg://u:p@127.0.0.1/paygate"
    full = SqliteSynchronous.FULL
    assert create_writer_engine(url, sqlite_synchronous=full, lock_poll_ms=1) is None
    sqlite = "sqlite+aiosqlite:///paygate.db"
    assert (
        create_writer_engine(sqlite, sqlite_synchronous=SqliteSynchronous.FULL, lock_poll_ms=0)
        is None
    )
    with pytest.raises(ValueError, match="lock_poll_ms"):
        create_writer_engine(sqlite, sqlite_synchronous=SqliteSynchronous.FULL, lock_poll_ms=-1)


async def test_a_write_waits_for_the_lock_another_connection_holds_then_commits(
    tmp_path: Path,
) -> None:
    url = _url(tmp_path)
    main, writer = create_engine(url), _writer(url)
    try:
        await _table(main)
        writes = GroupCommit(writer)

        async def insert(n: int) -> None:
            async def operation(conn) -> None:
                await conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})

            await writes.run(operation)

        async with write_transaction(main) as holder:
            await holder.execute(text("INSERT INTO t VALUES (1)"))
            waiting = asyncio.create_task(insert(2))
            # Many short tries come and go while the lock is held; none gets through.
            for _ in range(20):
                await asyncio.sleep(0.005)
                assert not waiting.done()
        await waiting
        assert await _rows(main) == [1, 2]
        # The writer's connections stay usable after their failed tries.
        await insert(3)
        assert await _rows(main) == [1, 2, 3]
    finally:
        await writer.dispose()
        await main.dispose()


async def test_a_lock_never_released_fails_the_write_as_before_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    url = _url(tmp_path)
    main, writer = create_engine(url), _writer(url, gives_up_after_s=0.05)
    try:
        await _table(main)
        async with write_transaction(main) as holder:
            await holder.execute(text("INSERT INTO t VALUES (1)"))
            with pytest.raises(OperationalError, match="database is locked"):
                async with write_transaction(writer) as conn:
                    await conn.execute(text("INSERT INTO t VALUES (2)"))
        assert await _rows(main) == [1]
        async with write_transaction(writer) as conn:
            await conn.execute(text("INSERT INTO t VALUES (3)"))
        assert await _rows(main) == [1, 3]
    finally:
        await writer.dispose()
        await main.dispose()


async def test_an_error_other_than_the_lock_is_not_tried_again(tmp_path: Path) -> None:
    url = _url(tmp_path)
    main, writer = create_engine(url), _writer(url)
    try:
        await _table(main)
        # Opened read-only: BEGIN IMMEDIATE fails at once with SQLITE_READONLY, not BUSY.
        readonly = _writer(f"sqlite+aiosqlite:///file:{tmp_path / 'paygate.db'}?mode=ro&uri=true")
        try:
            with pytest.raises(OperationalError) as raised:
                async with write_transaction(readonly) as conn:
                    await conn.execute(text("INSERT INTO t VALUES (1)"))
            assert "readonly" in str(raised.value)
        finally:
            await readonly.dispose()
    finally:
        await writer.dispose()
        await main.dispose()


@pytest.mark.parametrize("chosen", list(SqliteSynchronous))
async def test_the_writer_keeps_the_durability_and_wal_the_settings_choose(
    tmp_path: Path, chosen: SqliteSynchronous
) -> None:
    settings = Settings(
        database_url=_url(tmp_path), sqlite_synchronous=chosen, sqlite_write_lock_poll_ms=2
    )
    db = await open_database(settings)
    try:
        assert db._writer_engine is not None
        # The writer queue runs on it: its connection reports the pragmas.
        pragmas = await db.writes.run(_pragmas_of)
        synchronous = {SqliteSynchronous.NORMAL: 1, SqliteSynchronous.FULL: 2}[chosen]
        assert pragmas == (synchronous, "wal", 2)
    finally:
        await db.close()
        await db.close()  # safe twice, the writer's engine too


async def _pragmas_of(conn) -> tuple[int, str, int]:
    synchronous = (await conn.execute(text("PRAGMA synchronous"))).scalar_one()
    journal = (await conn.execute(text("PRAGMA journal_mode"))).scalar_one()
    busy = (await conn.execute(text("PRAGMA busy_timeout"))).scalar_one()
    return synchronous, journal, busy


async def test_by_default_the_writer_queue_writes_on_the_main_engine(tmp_path: Path) -> None:
    db = await open_database(Settings(database_url=_url(tmp_path)))
    try:
        assert db._writer_engine is None
        assert (await db.writes.run(_pragmas_of))[2] == 30_000
    finally:
        await db.close()
