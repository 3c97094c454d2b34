"""Revision 0021 (``stray_charges.next_sweep_at``) down and up on SQLite and PostgreSQL: the
downgrade keeps every stray charge and where its reversal stands, and the upgrade leaves
every reversal under way never tried (so each is tried on the next pass, as before)."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from persistence.stray_store import STRAY_REVERSING
from persistence.tables import stray_charges
from tests.support.attempt_migrations import (
    columns_of,
    migrate,
    next_sweeps,
    paid_candidate,
    rows_of,
)

pytestmark = pytest.mark.integration


async def test_0021_down_keeps_the_stray_charges_and_up_leaves_them_never_tried(
    engine: AsyncEngine, handler, store, clock
) -> None:
    strays, found = await paid_candidate(handler, store, clock)
    key = found.attempt_key
    claim = await strays.record_found(found, "ch_stray")
    assert claim is not None
    assert await strays.reverse_again_at(key, clock.now, token=claim.token)
    assert await next_sweeps(engine, stray_charges) != [None]
    before = await rows_of(engine, stray_charges.c.attempt_key, stray_charges.c.status)

    await migrate(engine, "downgrade", "0019")

    assert "next_sweep_at" not in await columns_of(engine, "stray_charges")
    assert (
        await rows_of(engine, stray_charges.c.attempt_key, stray_charges.c.status)
        == before
        == [(key, STRAY_REVERSING)]
    )

    await migrate(engine, "upgrade", "0021")

    # Tried on the next pass, as before.
    assert await next_sweeps(engine, stray_charges) == [None]
    assert await rows_of(engine, stray_charges.c.attempt_key, stray_charges.c.status) == before
