"""Revision 0028 (``stray_charges.reversal_key``) down and up on SQLite (where the column is
dropped by copying the table) and PostgreSQL: the downgrade keeps every stray charge and
where its reversal stands, and the upgrade leaves every reversal under way with no key
(tried as before 0028: the charge's amounts decide)."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from persistence.stray_store import STRAY_REVERSED, STRAY_REVERSING
from persistence.tables import stray_charges
from tests.support.attempt_migrations import columns_of, migrate, paid_candidate, rows_of

pytestmark = pytest.mark.integration


async def test_0028_down_keeps_the_stray_charges_and_up_leaves_them_without_a_key(
    engine: AsyncEngine, handler, store, clock
) -> None:
    strays, found = await paid_candidate(handler, store, clock)
    key = found.attempt_key
    claim = await strays.record_found(found, "pi_stray")
    assert claim is not None
    assert await strays.note_reversal_key(key, f"{key}-reversal", replacing=None, token=claim.token)
    assert await rows_of(engine, stray_charges.c.reversal_key) == [(f"{key}-reversal",)]
    kept = (
        stray_charges.c.attempt_key,
        stray_charges.c.status,
        stray_charges.c.provider_reference,
        stray_charges.c.amount_minor,
    )
    before = await rows_of(engine, *kept)
    assert before == [(key, STRAY_REVERSING, "pi_stray", found.amount.minor_units)]

    await migrate(engine, "downgrade", "0027")

    assert "reversal_key" not in await columns_of(engine, "stray_charges")
    assert await rows_of(engine, *kept) == before

    await migrate(engine, "upgrade", "0028")

    assert await rows_of(engine, *kept) == before
    assert await rows_of(engine, stray_charges.c.reversal_key) == [(None,)]
    # The table works as before (with the later revisions the store writes too): its
    # reversal is recorded, and a key noted again.
    await migrate(engine, "upgrade", "head")
    claim = await strays.claim_reversal(key)
    assert claim is not None
    assert await strays.note_reversal_key(key, f"{key}-reversal", replacing=None, token=claim.token)
    assert await strays.record_reversal(
        key, STRAY_REVERSED, "re_1", None, noted=f"{key}-reversal", token=claim.token
    )
    assert await rows_of(engine, stray_charges.c.status) == [(STRAY_REVERSED,)]
