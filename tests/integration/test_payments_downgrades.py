"""Every downgrade that rebuilds ``payments`` runs on a database with payments in it.

SQLite's batch mode rebuilds a table to drop a column (0004, 0007, 0008, 0014 on
``payments``): it copies the rows to a new table and drops the old one, which SQLite
refuses with its foreign keys on while provider attempts and refunds refer to it. A
downgrade runs as the upgrade does (persistence.migrate.downgrade_to): foreign keys off
during the rebuild, checked before commit. Down to 0002 and back up, on SQLite and
PostgreSQL, every row stays and the refunded totals come back apart (0027's backfill).
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.money import Money
from domain.refunds import RefundStatus
from persistence.migrate import current_revision, head_revision, upgrade_to_head
from persistence.payment_store import PaymentStore
from persistence.refund_store import RefundStarted, RefundStore
from persistence.tables import payments, provider_attempts, refunds
from tests.integration.test_refund_store import _event, refund_of, succeeded_payment
from tests.support.attempt_migrations import columns_of, migrate

pytestmark = pytest.mark.integration

# What the downgrades to 0002 take from payments, one column per revision that drops some.
_DROPPED = {
    "claim_token",  # 0004
    "next_action_type",  # 0007
    "captured_minor",  # 0008
    "next_check_at",  # 0014
    "refunded_outside_minor",  # 0027
}


async def _count(engine: AsyncEngine, table) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)) or 0)


async def test_payments_down_to_0002_and_up_again_keeps_every_row(engine: AsyncEngine, clock):
    store = PaymentStore(engine, clock)
    refunds_store = RefundStore(engine, store.writes, clock)
    payment = await succeeded_payment(store)
    begun = await refunds_store.begin(refund_of(payment, Money(1_000, "EUR")), _event)
    assert isinstance(begun, RefundStarted)
    assert await refunds_store.finish(
        begun.refund.refund_id,
        claim=begun.claim.token,
        status=RefundStatus.SUCCEEDED,
        provider_reference="re_1",
        error=None,
        event=_event,
    )

    await migrate(engine, "downgrade", "0002")

    assert await current_revision(engine) == "0002"
    assert _DROPPED.isdisjoint(await columns_of(engine, "payments"))
    assert (await _count(engine, payments), await _count(engine, refunds)) == (1, 1)
    assert await _count(engine, provider_attempts) == 1

    await upgrade_to_head(engine)

    assert await current_revision(engine) == head_revision()
    async with engine.connect() as conn:
        row = (
            await conn.execute(select(payments.c.refunded_minor, payments.c.refunded_outside_minor))
        ).one()
    assert (row.refunded_minor, row.refunded_outside_minor) == (1_000, 0)
