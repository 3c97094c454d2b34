"""Revision 0018 (``provider_attempts.reopen_count``) down and up on SQLite and PostgreSQL:
the downgrade keeps every attempt, the upgrade starts the attempts it finds at generation 0,
and the sweep's partial index stays partial both ways (a table rebuilt by SQLite's batch
mode must not lose the index's ``WHERE``)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.outcome import Outcome
from persistence.stray_store import StrayStore
from tests.support.attempt_migrations import attempt_columns, migrate, unverified_index
from tests.support.builders import create_payment

pytestmark = pytest.mark.integration


async def _generations(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as conn:
        return list(await conn.scalars(text("SELECT reopen_count FROM provider_attempts")))


async def test_0018_down_keeps_the_attempts_and_up_starts_them_at_generation_0(
    engine: AsyncEngine, handler, store, clock
) -> None:
    paid = create_payment()
    assert await handler.handle(paid) is Outcome.SUCCEEDED
    strays = StrayStore(store.engine, store.writes, clock)
    assert await strays.reopen(f"{paid.payment_request_id}-a1", "sandbox")
    assert await _generations(engine) == [1]

    await migrate(engine, "downgrade", "0017")

    assert "reopen_count" not in await attempt_columns(engine)
    assert "where verified_at is null" in await unverified_index(engine)
    async with engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM provider_attempts")) == 1

    await migrate(engine, "upgrade", "0018")

    assert await _generations(engine) == [0]  # as every attempt of the release before
    assert "where verified_at is null" in await unverified_index(engine)
