"""Two writer queues whose batches lock the same payment and refund rows must not deadlock.

Every write of payment and refund rows takes its row locks in one global order (payments in
id order, then refunds in id order: persistence.lock_order), whatever order the operations
of a batch come in. Here two processes' batches name the same payment P and its refund R in
opposite orders:

- process 1 (the refund's holder): a begin of another refund of P, then the finish of R;
- process 2 (a reconciler that found R's lease run out): a take of R's claim, then a begin
  of a refund of P.

Run each in the order it was queued, process 1 locks P then R and process 2 locks R then P:
a deadlock, which PostgreSQL breaks after a second by aborting one of them (SQLSTATE 40P01).
The steps are forced by hand: process 1 waits after its begin (P locked) until process 2
waits on a lock. PostgreSQL only: SQLite has no row locks (one writer holds the database).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import event, select, text

import persistence.refund_store as refund_store
from domain.money import Money
from domain.refunds import RefundStatus
from persistence.payment_store import PaymentStore
from persistence.refund_store import RefundStarted
from persistence.tables import payments, refunds
from tests.integration.test_refund_bulk_readback import two_processes  # noqa: F401
from tests.integration.test_refund_store import _event, refund_of, succeeded_payment

pytestmark = pytest.mark.integration

_LOCK_WAITERS = text(
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


def _deadlocks(engines: list[Any]) -> list[str]:
    seen: list[str] = []
    for engine in engines:

        @event.listens_for(engine.sync_engine, "handle_error")
        def _error(context: Any) -> None:
            if "deadlock" in str(context.original_exception).lower():
                seen.append(str(context.original_exception))

    return seen


async def _until_a_lock_wait(engine: Any, done: asyncio.Future[Any]) -> None:
    """Until ``done`` or some connection waits on a lock (a bounded wait on a condition).
    One transaction per look: PostgreSQL keeps a transaction's view of pg_stat_activity."""
    for _ in range(3_000):
        async with engine.connect() as conn:
            if done.done() or (await conn.execute(_LOCK_WAITERS)).scalar_one() > 0:
                return
        await asyncio.sleep(0.01)
    pytest.fail("neither finished nor waited on a lock")


async def test_batches_naming_a_payment_and_its_refund_in_opposite_orders_do_not_deadlock(
    two_processes,  # noqa: F811
    clock,
    monkeypatch,
):
    one, two = two_processes
    first_engine, second_engine = one._engine, two._engine
    payment = await succeeded_payment(PaymentStore(first_engine, clock))
    held = await one.begin(refund_of(payment, Money(3_000, "EUR")), _event)
    assert isinstance(held, RefundStarted)
    deadlocks = _deadlocks([first_engine, second_engine])

    # Process 1 pauses where its finish starts, after the begin before it in its batch.
    paused, resume = asyncio.Event(), asyncio.Event()
    original = refund_store.finish_one  # type: ignore[attr-defined]

    async def after_the_begin(conn, request):
        if conn.sync_engine is first_engine.sync_engine and not paused.is_set():
            paused.set()
            await resume.wait()
        return await original(conn, request)

    monkeypatch.setattr(refund_store, "finish_one", after_the_begin)
    first_batch = asyncio.gather(
        one.begin(refund_of(payment, Money(2_000, "EUR")), _event),
        one.finish(
            held.refund.refund_id,
            claim=held.claim.token,
            status=RefundStatus.SUCCEEDED,
            provider_reference="re-held",
            error=None,
            event=_event,
        ),
    )
    await paused.wait()

    # Process 2, one batch: the take of R's claim (R's row locked), then a begin of P.
    second_batch = asyncio.gather(
        two.claim(held.refund.refund_id),
        two.begin(refund_of(payment, Money(1_000, "EUR")), _event),
    )
    await _until_a_lock_wait(first_engine, second_batch)
    resume.set()
    begun_first, finished = await first_batch
    taken, begun_second = await second_batch

    assert deadlocks == []
    assert isinstance(begun_first, RefundStarted)
    assert finished is True
    # The holder finished first (or the take found R final): no second owner of R.
    assert taken is None
    assert isinstance(begun_second, RefundStarted)
    async with first_engine.connect() as conn:
        totals = (
            await conn.execute(
                select(payments.c.refunded_minor, payments.c.refund_reserved_minor).where(
                    payments.c.id == payment.payment_request_id
                )
            )
        ).one()
        count = len(
            (
                await conn.execute(
                    select(refunds.c.id).where(refunds.c.payment_id == payment.payment_request_id)
                )
            ).all()
        )
    assert tuple(totals) == (3_000, 3_000)
    assert count == 3
