"""Published outbox rows are pruned after the retention; unpublished ones never are."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select

from persistence.database import Database
from persistence.tables import outbox

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


async def test_only_old_published_rows_are_pruned(engine):
    rows = {
        "old-published": NOW - timedelta(days=8),
        "new-published": NOW - timedelta(days=1),
        "old-unpublished": None,
    }
    async with engine.begin() as conn:
        for event_id, published_at in rows.items():
            await conn.execute(
                insert(outbox).values(
                    event_id=event_id,
                    topic="t",
                    message_key="k",
                    payload=b"x",
                    created_at=NOW - timedelta(days=9),
                    published_at=published_at,
                )
            )
    assert await Database(engine).outbox.prune(NOW - timedelta(days=7)) == 1
    async with engine.connect() as conn:
        left = set((await conn.execute(select(outbox.c.event_id))).scalars())
    assert left == {"new-published", "old-unpublished"}
