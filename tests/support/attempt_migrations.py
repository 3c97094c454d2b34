"""What the migration tests of ``provider_attempts`` and ``stray_charges`` (revisions 0018,
0019 and 0021) read around a step: moving the schema down or up on the test's own engine, a
table's columns and sweep stamps, and the stray sweep's partial index as the database
defines it (a table rebuilt by SQLite's batch mode must not lose the index's ``WHERE``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Table, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.outcome import Outcome
from domain.status import PaymentStatus
from persistence.migrate import downgrade_to, upgrade_to
from persistence.payment_store import PaymentStore
from persistence.stray_store import StrayCandidate, StrayStore
from tests.support.builders import create_payment
from tests.support.clock import Clock


async def migrate(engine: AsyncEngine, step: str, revision: str) -> None:
    """Runs alembic's ``step`` ("upgrade" or "downgrade") to ``revision`` as paygate runs
    one (persistence.migrate.upgrade_to, downgrade_to)."""
    if step == "downgrade":
        await downgrade_to(engine, revision)
    else:
        await upgrade_to(engine, revision)


async def attempt_columns(engine: AsyncEngine) -> set[str]:
    """The names of ``provider_attempts``' columns."""
    return await columns_of(engine, "provider_attempts")


async def columns_of(engine: AsyncEngine, table: str) -> set[str]:
    """The names of ``table``'s columns."""
    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync: {c["name"] for c in inspect(sync).get_columns(table)}
        )


async def rows_of(engine: AsyncEngine, *columns: Column[Any]) -> list[tuple[Any, ...]]:
    """Every row of ``columns`` (of one table), as tuples."""
    async with engine.connect() as conn:
        return [tuple(row) for row in await conn.execute(select(*columns))]


async def next_sweeps(engine: AsyncEngine, table: Table) -> list[object]:
    """Every ``next_sweep_at`` of ``table`` (``provider_attempts``, ``stray_charges``)."""
    async with engine.connect() as conn:
        return list(await conn.scalars(select(table.c.next_sweep_at)))


async def unverified_index(engine: AsyncEngine) -> str:
    """The sweep's index as the database defines it, lower-cased and without parentheses
    (PostgreSQL adds them), so one substring check fits both dialects."""
    query = (
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_provider_attempts_unverified'"
        if engine.dialect.name == "postgresql"
        else "SELECT sql FROM sqlite_master WHERE name = 'ix_provider_attempts_unverified'"
    )
    async with engine.connect() as conn:
        found = str(await conn.scalar(text(query)))
    return found.lower().replace("(", "").replace(")", "")


async def paid_candidate(
    handler: Any, store: PaymentStore, clock: Clock
) -> tuple[StrayStore, StrayCandidate]:
    """A stray store, and the first attempt of a payment just paid as the sweep would read
    it (generation 0), for a test to stamp, reopen or record before a step."""
    paid = create_payment()
    assert await handler.handle(paid) is Outcome.SUCCEEDED
    candidate = StrayCandidate(
        f"{paid.payment_request_id}-a1",
        paid.payment_request_id,
        "sandbox",
        paid.amount,
        PaymentStatus.SUCCEEDED,
        None,
    )
    return StrayStore(store.engine, store.writes, clock), candidate
