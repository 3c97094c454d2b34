"""PostgreSQL's read-back of a bulk refund write must tell the batch's own write from
another transaction's.

asyncpg does not count an executemany, so persistence.refund_rows.set_totals reads the
totals back after its compare-and-set. Comparing values alone cannot tell "we moved them"
from "another writer left the same values": two batches reserving the same sum on one
payment, both from the totals they read before either wrote, land on equal totals, and the
second would commit its refunds on the first one's reservation (an over-refund). The row
locks keep that interleaving out today; the read-back exists to catch it should the lock
ever not be held, so here the lock is taken away and the interleaving forced: process 1
reads, process 2 reserves and commits, process 1 writes. PostgreSQL only: on SQLite the
database lock makes this interleaving impossible, and the driver counts the rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import bindparam, select

import persistence.group_commit as group_commit
import persistence.refund_begin as refund_begin
from domain.money import Money
from persistence.engine import create_engine
from persistence.migrate import create_schema
from persistence.payment_store import PaymentStore
from persistence.refund_store import RefundStarted, RefundStore
from persistence.tables import payments, refunds
from tests.integration.test_refund_store import _event, refund_of, succeeded_payment

pytestmark = pytest.mark.integration

# The batch's locked read of its payments, without the lock.
_UNLOCKED = (
    select(payments)
    .where(payments.c.id.in_(bindparam("payment_ids", expanding=True)))
    .order_by(payments.c.id)
)


async def _no_locks(conn: object, locks: object) -> None:
    return None


@pytest.fixture
async def two_processes(postgres_database_url: str, clock) -> AsyncIterator[list[RefundStore]]:
    """Two engines and writer queues on one database, as two consumer processes have."""
    first, second = create_engine(postgres_database_url), create_engine(postgres_database_url)
    await create_schema(first)
    try:
        yield [
            RefundStore(first, PaymentStore(first, clock).writes),
            RefundStore(second, PaymentStore(second, clock).writes),
        ]
    finally:
        await first.dispose()
        await second.dispose()


async def test_equal_totals_left_by_another_transaction_are_not_taken_for_the_batchs(
    two_processes, clock, postgres_database_url, monkeypatch
):
    one, two = two_processes
    engine = one._engine
    payment = await succeeded_payment(PaymentStore(engine, clock))
    monkeypatch.setattr(refund_begin, "_PAYMENTS_LOCKED", _UNLOCKED)
    # And the locks every batch takes up front (persistence.lock_order).
    monkeypatch.setattr(group_commit, "take_locks", _no_locks)
    read, resume = asyncio.Event(), asyncio.Event()
    original = refund_begin._reserve_many

    async def after_the_read(conn, paid, reserved):
        # Process 1's batch waits here, its totals read, until process 2 has committed.
        if not read.is_set():
            read.set()
            await resume.wait()
        await original(conn, paid, reserved)

    monkeypatch.setattr(refund_begin, "_reserve_many", after_the_read)
    first = asyncio.gather(
        *(one.begin(refund_of(payment, Money(2_500, "EUR")), _event) for _ in range(3))
    )
    await read.wait()
    second = await asyncio.gather(
        *(two.begin(refund_of(payment, Money(2_500, "EUR")), _event) for _ in range(3))
    )
    resume.set()
    answers = [*second, *await first]

    started = sum(
        a.refund.amount.minor_units
        for a in answers
        if isinstance(a, RefundStarted) and a.refund.amount is not None
    )
    async with engine.connect() as conn:
        reserved = (
            await conn.execute(
                select(payments.c.refund_reserved_minor).where(
                    payments.c.id == payment.payment_request_id
                )
            )
        ).scalar_one()
        stored_open = sum(
            row.amount_minor
            for row in await conn.execute(
                select(refunds.c.amount_minor)
                .where(refunds.c.payment_id == payment.payment_request_id)
                .where(refunds.c.status == "processing")
            )
        )
    assert started <= 10_000, "no more than was captured is being refunded"
    assert (reserved, stored_open) == (started, started)
