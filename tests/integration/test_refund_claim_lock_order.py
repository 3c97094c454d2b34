"""A take of a refund's claim locks the refund's row, so it declares it to the writer queue.

Every write takes its row locks before its batch's first operation, in one global order
(persistence.lock_order). An operation that locks a row it did not declare takes that lock
in the middle of its batch, after the locks of the whole batch: two processes whose batches
each hold one refund and then take the other's claim wait on each other, and PostgreSQL
breaks the cycle after ``deadlock_timeout`` by aborting one (SQLSTATE 40P01).

The case: refunds R1 (of payment P1) and R2 (of P2), each held by its worker. Process 1's
batch finishes R1 then takes R2's claim (a reconciler's look at a refund it found open);
process 2's batch finishes R2 then takes R1's. The steps are forced by hand: process 1
pauses in its finish, its locks taken, until process 2 waits on a lock. PostgreSQL only:
SQLite has no row locks (one writer holds the database).
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

import persistence.refund_store as refund_store
from domain.money import Money
from domain.refunds import RefundStatus
from persistence.payment_store import PaymentStore
from persistence.refund_store import RefundStarted
from persistence.tables import refunds
from tests.integration.test_refund_bulk_readback import two_processes  # noqa: F401
from tests.integration.test_refund_store import _event, refund_of, succeeded_payment
from tests.integration.test_writer_lock_order import _deadlocks, _until_a_lock_wait

pytestmark = pytest.mark.integration


async def test_batches_taking_each_others_refund_claims_do_not_deadlock(
    two_processes,  # noqa: F811
    clock,
    monkeypatch,
):
    one, two = two_processes
    first_engine, second_engine = one._engine, two._engine
    store = PaymentStore(first_engine, clock)
    first_payment, second_payment = await succeeded_payment(store), await succeeded_payment(store)
    r1 = await one.begin(refund_of(first_payment, Money(3_000, "EUR")), _event)
    r2 = await one.begin(refund_of(second_payment, Money(2_000, "EUR")), _event)
    assert isinstance(r1, RefundStarted)
    assert isinstance(r2, RefundStarted)
    deadlocks = _deadlocks([first_engine, second_engine])

    paused, resume = asyncio.Event(), asyncio.Event()
    original = refund_store.finish_one  # type: ignore[attr-defined]

    async def after_the_locks(conn, request):
        if conn.sync_engine is first_engine.sync_engine and not paused.is_set():
            paused.set()
            await resume.wait()
        return await original(conn, request)

    monkeypatch.setattr(refund_store, "finish_one", after_the_locks)

    def finish(store, started):
        return store.finish(
            started.refund.refund_id,
            claim=started.claim.token,
            status=RefundStatus.SUCCEEDED,
            provider_reference=f"re-{started.refund.refund_id}",
            error=None,
            event=_event,
        )

    first_batch = asyncio.gather(finish(one, r1), one.claim(r2.refund.refund_id))
    await paused.wait()
    second_batch = asyncio.gather(finish(two, r2), two.claim(r1.refund.refund_id))
    await _until_a_lock_wait(first_engine, second_batch)
    resume.set()
    first_finished, first_taken = await first_batch
    second_finished, second_taken = await second_batch

    assert deadlocks == []
    assert (first_finished, second_finished) == (True, True)
    # Each claim was taken while its refund's holder still held it, or after it was final.
    assert (first_taken, second_taken) == (None, None)
    async with first_engine.connect() as conn:
        statuses = dict(
            (
                await conn.execute(
                    select(refunds.c.id, refunds.c.status).where(
                        refunds.c.id.in_([r1.refund.refund_id, r2.refund.refund_id])
                    )
                )
            ).all()
        )
    assert set(statuses.values()) == {RefundStatus.SUCCEEDED.value}
