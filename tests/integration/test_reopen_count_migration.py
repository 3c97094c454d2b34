"""Revision 0018 (``provider_attempts.reopen_count``) down and up on SQLite and PostgreSQL:
the downgrade keeps every attempt, the upgrade starts the attempts it finds at generation 0,
and the sweep's partial index stays partial both ways (a table rebuilt by SQLite's batch
mode must not lose the index's ``WHERE``)."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.outcome import Outcome
from persistence.migrate import alembic_config
from persistence.stray_store import StrayStore
from tests.support.builders import create_payment

pytestmark = pytest.mark.integration


async def _migrate(engine: AsyncEngine, step: str, revision: str) -> None:
    def run(connection):
        with connection.begin():
            getattr(command, step)(alembic_config(connection), revision)

    async with engine.connect() as conn:
        await conn.run_sync(run)


async def _columns(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync: {c["name"] for c in inspect(sync).get_columns("provider_attempts")}
        )


async def _unverified_index(engine: AsyncEngine) -> str:
    """The sweep's index as the database defines it."""
    query = (
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_provider_attempts_unverified'"
        if engine.dialect.name == "postgresql"
        else "SELECT sql FROM sqlite_master WHERE name = 'ix_provider_attempts_unverified'"
    )
    async with engine.connect() as conn:
        found = str(await conn.scalar(text(query)))
    return found.lower().replace("(", "").replace(")", "")  # PostgreSQL adds parentheses


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

    await _migrate(engine, "downgrade", "0017")

    assert "reopen_count" not in await _columns(engine)
    assert "where verified_at is null" in await _unverified_index(engine)
    async with engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM provider_attempts")) == 1

    await _migrate(engine, "upgrade", "0018")

    assert await _generations(engine) == [0]  # as every attempt of the release before
    assert "where verified_at is null" in await _unverified_index(engine)
