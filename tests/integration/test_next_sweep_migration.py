"""Revision 0019 (``provider_attempts.next_sweep_at``) down and up on SQLite and PostgreSQL:
the downgrade keeps every attempt and its generation, the upgrade leaves every attempt
never asked (so each is read on the next pass, as before), and the sweep's partial index
stays partial both ways (a table rebuilt by SQLite's batch mode must not lose its ``WHERE``)."""

from __future__ import annotations

import dataclasses

import pytest
from alembic import command
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.outcome import Outcome
from domain.status import PaymentStatus
from persistence.migrate import alembic_config
from persistence.stray_store import StrayCandidate, StrayStore
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


async def _rows(engine: AsyncEngine) -> list[tuple]:
    async with engine.connect() as conn:
        result = await conn.execute(text("SELECT attempt_key, reopen_count FROM provider_attempts"))
        return [tuple(row) for row in result]


async def _next_sweep(engine: AsyncEngine) -> list:
    async with engine.connect() as conn:
        return list(await conn.scalars(text("SELECT next_sweep_at FROM provider_attempts")))


async def test_0019_down_keeps_the_attempts_and_up_leaves_them_never_asked(
    engine: AsyncEngine, handler, store, clock
) -> None:
    paid = create_payment()
    assert await handler.handle(paid) is Outcome.SUCCEEDED
    strays = StrayStore(store.engine, store.writes, clock)
    key = f"{paid.payment_request_id}-a1"
    assert await strays.reopen(key, "sandbox")  # generation 1, to see it kept
    read = StrayCandidate(
        key, paid.payment_request_id, "sandbox", paid.amount, PaymentStatus.SUCCEEDED, None
    )
    assert await strays.ask_again_at(dataclasses.replace(read, generation=1), clock.now)
    assert await _next_sweep(engine) != [None]
    before = await _rows(engine)

    await _migrate(engine, "downgrade", "0018")

    assert "next_sweep_at" not in await _columns(engine)
    assert await _rows(engine) == before == [(key, 1)]
    assert "where verified_at is null" in await _unverified_index(engine)

    await _migrate(engine, "upgrade", "0019")

    assert await _next_sweep(engine) == [None]  # read on the next pass, as before
    assert await _rows(engine) == before
    assert "where verified_at is null" in await _unverified_index(engine)
