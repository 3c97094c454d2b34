"""Revision 0021 (``stray_charges.next_sweep_at``) down and up on SQLite and PostgreSQL: the
downgrade keeps every stray charge and where its reversal stands, and the upgrade leaves
every reversal under way never tried (so each is tried on the next pass, as before)."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.outcome import Outcome
from domain.status import PaymentStatus
from persistence.stray_store import STRAY_REVERSING, StrayCandidate, StrayStore
from tests.support.attempt_migrations import migrate
from tests.support.builders import create_payment

pytestmark = pytest.mark.integration


async def _strays(engine: AsyncEngine) -> list[tuple]:
    async with engine.connect() as conn:
        result = await conn.execute(text("SELECT attempt_key, status FROM stray_charges"))
        return [tuple(row) for row in result]


async def _next_sweep(engine: AsyncEngine) -> list:
    async with engine.connect() as conn:
        return list(await conn.scalars(text("SELECT next_sweep_at FROM stray_charges")))


async def test_0021_down_keeps_the_stray_charges_and_up_leaves_them_never_tried(
    engine: AsyncEngine, handler, store, clock
) -> None:
    paid = create_payment()
    assert await handler.handle(paid) is Outcome.SUCCEEDED
    strays = StrayStore(store.engine, store.writes, clock)
    key = f"{paid.payment_request_id}-a1"
    found = StrayCandidate(
        key, paid.payment_request_id, "sandbox", paid.amount, PaymentStatus.SUCCEEDED, None
    )
    assert await strays.record_found(found, "ch_stray")
    assert await strays.reverse_again_at(key, clock.now)
    assert await _next_sweep(engine) != [None]
    before = await _strays(engine)

    await migrate(engine, "downgrade", "0019")

    async with engine.connect() as conn:
        columns = await conn.run_sync(
            lambda sync: {c["name"] for c in inspect(sync).get_columns("stray_charges")}
        )
    assert "next_sweep_at" not in columns
    assert await _strays(engine) == before == [(key, STRAY_REVERSING)]

    await migrate(engine, "upgrade", "0021")

    assert await _next_sweep(engine) == [None]  # tried on the next pass, as before
    assert await _strays(engine) == before
