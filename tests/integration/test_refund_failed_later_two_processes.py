"""Two facade processes (two engines and writer queues on one PostgreSQL database) record
Stripe's ``refund.failed`` of one succeeded refund at once, while one of them also begins a
new refund of the same payment: the first, paused with the rows locked, takes the refund
back; the other waits on the locks and then finds it failed (``already``), and the new
refund is reserved against the total as it fell. No deadlock, one fall, one event."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

import persistence.refund_store as refund_store
from domain.error_info import ErrorInfo
from domain.errors import ErrorCode
from domain.events import refund_event_id
from domain.money import Money
from domain.refunds import RefundStatus
from persistence.payment_store import PaymentStore
from persistence.refund_store import LateFailure, RefundStarted
from persistence.tables import outbox, payments, refunds
from tests.integration.test_refund_bulk_readback import two_processes  # noqa: F401
from tests.integration.test_refund_store import _event, refund_of, succeeded_payment
from tests.integration.test_writer_lock_order import _deadlocks, _until_a_lock_wait

pytestmark = pytest.mark.integration

ERROR = ErrorInfo(ErrorCode.REFUND_FAILED_AFTER_SUCCESS, "failed after it succeeded")


async def test_two_processes_take_a_refund_back_once_beside_a_new_refund(
    two_processes,  # noqa: F811
    clock,
    monkeypatch,
):
    one, two = two_processes
    first_engine, second_engine = one._engine, two._engine
    payment = await succeeded_payment(PaymentStore(first_engine, clock))
    started = await one.begin(refund_of(payment, Money(4_000, "EUR")), _event)
    assert isinstance(started, RefundStarted)
    refund_id = started.refund.refund_id
    assert await one.finish(
        refund_id,
        claim=started.claim.token,
        status=RefundStatus.SUCCEEDED,
        provider_reference="re_1",
        error=None,
        event=_event,
    )
    deadlocks = _deadlocks([first_engine, second_engine])

    paused, resume = asyncio.Event(), asyncio.Event()
    original = refund_store.fail_succeeded  # type: ignore[attr-defined]

    async def with_the_rows_locked(conn, request):
        if conn.sync_engine is first_engine.sync_engine and not paused.is_set():
            paused.set()
            await resume.wait()
        return await original(conn, request)

    monkeypatch.setattr(refund_store, "fail_succeeded", with_the_rows_locked)

    def fail(store):
        return store.fail_after_success(
            refund_id,
            provider="sandbox",
            provider_reference="re_1",
            amount=Money(4_000, "EUR"),
            error=ERROR,
            event=_event,
        )

    first = asyncio.ensure_future(fail(one))
    await paused.wait()
    second = asyncio.gather(fail(two), two.begin(refund_of(payment, Money(10_000, "EUR")), _event))
    await _until_a_lock_wait(first_engine, second)
    resume.set()
    recorded = await first
    already, begun = await second

    assert deadlocks == []
    assert (recorded, already) == (LateFailure.RECORDED, LateFailure.ALREADY)
    # The whole capture is refundable again, once: the new refund of all of it is reserved.
    assert isinstance(begun, RefundStarted)
    async with first_engine.connect() as conn:
        row = (
            await conn.execute(select(payments).where(payments.c.id == payment.payment_request_id))
        ).one()
        failed = (
            await conn.execute(select(refunds.c.status).where(refunds.c.id == refund_id))
        ).scalar_one()
        failed_events = (
            await conn.execute(
                select(func.count())
                .select_from(outbox)
                .where(outbox.c.event_id == refund_event_id(refund_id, RefundStatus.FAILED))
            )
        ).scalar_one()
    assert (row.refunded_minor, row.refund_reserved_minor, row.status) == (0, 10_000, "succeeded")
    assert failed == RefundStatus.FAILED.value
    assert failed_events == 1  # one fall, one event
