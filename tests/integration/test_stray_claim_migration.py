"""Revision 0029 (``stray_charges.claim_token``/``claim_expires_at``) down and up on SQLite
(where the columns are dropped by copying the table) and PostgreSQL: the downgrade keeps
every stray charge, where its reversal stands and its noted key; the upgrade leaves every
reversal under way unclaimed, so the first sweeper to come takes it."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from persistence.stray_store import STRAY_REVERSED, STRAY_REVERSING
from persistence.tables import stray_charges
from tests.support.attempt_migrations import columns_of, migrate, paid_candidate, rows_of

pytestmark = pytest.mark.integration


async def test_0029_down_keeps_the_stray_charges_and_up_leaves_them_unclaimed(
    engine: AsyncEngine, handler, store, clock
) -> None:
    strays, found = await paid_candidate(handler, store, clock)
    key = found.attempt_key
    claim = await strays.record_found(found, "pi_stray")
    assert claim is not None
    assert await strays.note_reversal_key(key, f"{key}-reversal", replacing=None, token=claim.token)
    assert await rows_of(engine, stray_charges.c.claim_token) == [(claim.token,)]
    kept = (
        stray_charges.c.attempt_key,
        stray_charges.c.status,
        stray_charges.c.provider_reference,
        stray_charges.c.reversal_key,
    )
    before = await rows_of(engine, *kept)
    assert before == [(key, STRAY_REVERSING, "pi_stray", f"{key}-reversal")]

    await migrate(engine, "downgrade", "0028")

    columns = await columns_of(engine, "stray_charges")
    assert "claim_token" not in columns
    assert "claim_expires_at" not in columns
    assert await rows_of(engine, *kept) == before

    await migrate(engine, "upgrade", "0029")

    assert await rows_of(engine, *kept) == before
    assert await rows_of(engine, stray_charges.c.claim_token, stray_charges.c.claim_expires_at) == [
        (None, None)
    ]
    # Unclaimed: a sweeper takes it at once, a second cannot, and the holder records.
    taken = await strays.claim_reversal(key)
    assert taken is not None
    assert await strays.claim_reversal(key) is None
    assert not await strays.record_reversal(
        key, STRAY_REVERSED, "re_1", None, noted=f"{key}-reversal", token=claim.token
    )
    assert await strays.record_reversal(
        key, STRAY_REVERSED, "re_1", None, noted=f"{key}-reversal", token=taken.token
    )
    assert await rows_of(engine, stray_charges.c.status, stray_charges.c.claim_token) == [
        (STRAY_REVERSED, None)
    ]
