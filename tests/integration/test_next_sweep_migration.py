"""Revision 0019 (``provider_attempts.next_sweep_at``) down and up on SQLite and PostgreSQL:
the downgrade keeps every attempt and its generation, the upgrade leaves every attempt
never asked (so each is read on the next pass, as before), and the sweep's partial index
stays partial both ways (a table rebuilt by SQLite's batch mode must not lose its ``WHERE``)."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.outcome import Outcome
from domain.status import PaymentStatus
from persistence.stray_store import StrayCandidate, StrayStore
from tests.support.attempt_migrations import attempt_columns, migrate, unverified_index
from tests.support.builders import create_payment

pytestmark = pytest.mark.integration


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

    await migrate(engine, "downgrade", "0018")

    assert "next_sweep_at" not in await attempt_columns(engine)
    assert await _rows(engine) == before == [(key, 1)]
    assert "where verified_at is null" in await unverified_index(engine)

    await migrate(engine, "upgrade", "0019")

    assert await _next_sweep(engine) == [None]  # read on the next pass, as before
    assert await _rows(engine) == before
    assert "where verified_at is null" in await unverified_index(engine)
