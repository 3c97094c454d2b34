"""Revision 0019 (``provider_attempts.next_sweep_at``) down and up on SQLite and PostgreSQL:
the downgrade keeps every attempt and its generation, the upgrade leaves every attempt
never asked (so each is read on the next pass, as before), and the sweep's partial index
stays partial both ways (a table rebuilt by SQLite's batch mode must not lose its ``WHERE``)."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from persistence.tables import provider_attempts
from tests.support.attempt_migrations import (
    attempt_columns,
    migrate,
    next_sweeps,
    paid_candidate,
    rows_of,
    unverified_index,
)

pytestmark = pytest.mark.integration

KEY, GENERATION = provider_attempts.c.attempt_key, provider_attempts.c.reopen_count


async def test_0019_down_keeps_the_attempts_and_up_leaves_them_never_asked(
    engine: AsyncEngine, handler, store, clock
) -> None:
    strays, read = await paid_candidate(handler, store, clock)
    key = read.attempt_key
    assert await strays.reopen(key, "sandbox")  # generation 1, to see it kept
    assert await strays.ask_again_at(dataclasses.replace(read, generation=1), clock.now)
    assert await next_sweeps(engine, provider_attempts) != [None]
    before = await rows_of(engine, KEY, GENERATION)

    await migrate(engine, "downgrade", "0018")

    assert "next_sweep_at" not in await attempt_columns(engine)
    assert await rows_of(engine, KEY, GENERATION) == before == [(key, 1)]
    assert "where verified_at is null" in await unverified_index(engine)

    await migrate(engine, "upgrade", "0019")

    # Read on the next pass, as before.
    assert await next_sweeps(engine, provider_attempts) == [None]
    assert await rows_of(engine, KEY, GENERATION) == before
    assert "where verified_at is null" in await unverified_index(engine)
