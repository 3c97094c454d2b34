"""SQLite connections sync every commit (``synchronous=FULL``) unless configured otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from paygate.database import engine_for
from paygate.settings import Settings
from persistence.engine import SqliteSynchronous, create_engine

pytestmark = pytest.mark.integration

# What `PRAGMA synchronous` reads back.
_PRAGMA_VALUE = {SqliteSynchronous.NORMAL: 1, SqliteSynchronous.FULL: 2}


async def _pragmas(engine) -> tuple[int, str]:
    try:
        async with engine.connect() as conn:
            synchronous = (await conn.execute(text("PRAGMA synchronous"))).scalar_one()
            journal = (await conn.execute(text("PRAGMA journal_mode"))).scalar_one()
            return synchronous, journal
    finally:
        await engine.dispose()


async def test_an_engine_is_full_by_default(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'paygate.db'}")
    assert await _pragmas(engine) == (_PRAGMA_VALUE[SqliteSynchronous.FULL], "wal")


@pytest.mark.parametrize("chosen", list(SqliteSynchronous))
async def test_the_setting_reaches_every_connection(
    tmp_path: Path, chosen: SqliteSynchronous
) -> None:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'paygate.db'}",
        sqlite_synchronous=chosen,
    )
    assert await _pragmas(engine_for(settings)) == (_PRAGMA_VALUE[chosen], "wal")
