"""A bulk finish must not lock a refund another worker holds: that breaks the lock order.

Refund writes lock a refund's row before its payment's (persistence.refund_rows). A batch
that begins a refund of payment P holds P's row; if its bulk finish then locks every refund
it names, the row of a refund whose claim is another worker's included, it waits on that
worker, who holds the refund and is about to take P to settle it: a deadlock, which
PostgreSQL breaks after a second by failing one of the two (a caller's finish fails if its
batch held nothing else). A finish with a stale claim changes nothing (persistence.claims),
so it has no business locking the row. PostgreSQL only: SQLite has no row locks.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import event, select, text

import persistence.refund_finish as refund_finish
from domain.money import Money
from domain.refunds import RefundStatus
from persistence.payment_store import PaymentStore
from persistence.refund_store import RefundStarted
from persistence.tables import payments
from tests.integration.test_refund_bulk_readback import two_processes  # noqa: F401
from tests.integration.test_refund_store import _event, refund_of, succeeded_payment

pytestmark = pytest.mark.integration

_LOCK_WAITERS = text(
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


async def _finish(store, begun: RefundStarted, claim: str | None = None) -> bool:
    return await store.finish(
        begun.refund.refund_id,
        claim=claim or begun.claim.token,
        status=RefundStatus.SUCCEEDED,
        provider_reference=f"re-{begun.refund.refund_id}",
        error=None,
        event=_event,
    )


def _deadlocks(engines) -> list[str]:
    seen: list[str] = []
    for engine in engines:

        @event.listens_for(engine.sync_engine, "handle_error")
        def _error(context) -> None:
            if "deadlock" in str(context.original_exception).lower():
                seen.append(str(context.original_exception))

    return seen


async def test_a_stale_finish_in_a_batch_with_a_begin_does_not_deadlock_the_holder(
    two_processes,  # noqa: F811
    clock,
    monkeypatch,
):
    one, two = two_processes
    first_engine, second_engine = one._engine, two._engine
    payment = await succeeded_payment(PaymentStore(first_engine, clock))
    other = await succeeded_payment(PaymentStore(first_engine, clock))
    held = await two.begin(refund_of(payment, Money(3_000, "EUR")), _event)
    plain = await one.begin(refund_of(other, Money(1_000, "EUR")), _event)
    assert isinstance(held, RefundStarted)
    assert isinstance(plain, RefundStarted)
    deadlocks = _deadlocks([first_engine, second_engine])

    # Process 2, the holder, settles its refund: the refund's row is locked, and it waits
    # here before it takes the payment's.
    holding, resume = asyncio.Event(), asyncio.Event()
    original = refund_finish._moved_totals

    async def before_the_payment(conn, statement, payment_id, amount_minor):
        holding.set()
        await resume.wait()
        return await original(conn, statement, payment_id, amount_minor)

    monkeypatch.setattr(refund_finish, "_moved_totals", before_the_payment)
    holder = asyncio.ensure_future(_finish(two, held))
    await holding.wait()

    # Process 1, one batch: a new refund of the payment (its row locked), a finish of the
    # held refund with a stale claim, and another refund's finish (so finishes run in bulk).
    batch = asyncio.gather(
        one.begin(refund_of(payment, Money(2_000, "EUR")), _event),
        _finish(one, held, claim="a-claim-taken-over"),
        _finish(one, plain),
    )
    # Until the batch is done or waits on a row lock (a bounded wait on a condition). One
    # transaction per look: PostgreSQL keeps a transaction's view of pg_stat_activity.
    for _ in range(3_000):
        async with first_engine.connect() as conn:
            if batch.done() or (await conn.execute(_LOCK_WAITERS)).scalar_one() > 0:
                break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the batch neither finished nor waited on a lock")
    resume.set()
    begun, stale, settled = await batch
    assert await holder is True

    assert deadlocks == []
    assert isinstance(begun, RefundStarted)
    assert stale is False
    assert settled is True
    async with first_engine.connect() as conn:
        totals = (
            await conn.execute(
                select(payments.c.refunded_minor, payments.c.refund_reserved_minor).where(
                    payments.c.id == payment.payment_request_id
                )
            )
        ).one()
    assert tuple(totals) == (3_000, 2_000)
