"""SQLite connections are kept for reuse under concurrent reads, not opened and closed per
checkout (each is a thread, a file open and the pragmas)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from persistence.engine import create_engine

pytestmark = pytest.mark.integration


async def test_concurrent_reads_reuse_their_connections(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'pool.db'}")
    opened: list[None] = []

    def on_connect(_dbapi: Any, _record: Any) -> None:
        opened.append(None)

    event.listen(engine.sync_engine, "connect", on_connect)
    # Three times SQLAlchemy's default pool of 5, which closed all but 5 on return.
    readers = 15

    async def one_round() -> None:
        all_in = asyncio.Event()
        inside: list[None] = []

        async def read() -> None:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
                inside.append(None)
                if len(inside) == readers:
                    all_in.set()
                # Every reader holds its connection until all of them hold one.
                await all_in.wait()

        await asyncio.gather(*(read() for _ in range(readers)))

    try:
        await one_round()
        assert len(opened) == readers
        # The second round of as many concurrent reads opens no connection at all.
        await one_round()
        await one_round()
        assert len(opened) == readers
    finally:
        await engine.dispose()
