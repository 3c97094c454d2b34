"""The refund store on real databases: reservations, totals, refusals, the invariant."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from consumer.refund_events import RefundEvents
from domain.errors import ErrorCode
from domain.money import Money
from domain.refunds import RefundPayment, RefundStatus
from domain.status import PaymentStatus
from persistence.attempts import ATTEMPT_SUCCEEDED
from persistence.engine import create_engine
from persistence.outbox import OutboxMessage
from persistence.payment_begin import Started
from persistence.payment_store import PaymentStore
from persistence.refund_store import RefundExisting, RefundRefused, RefundStarted, RefundStore
from persistence.tables import outbox, payments
from schemas.payments import PaymentMessages
from tests.support.builders import create_payment, unexpected_refusal, unique

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()
EVENTS = RefundEvents(MESSAGES, "payments.results")
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _event(_view, _standing):
    return EVENTS.at(NOW)(_view, _standing)


CAPTURED = Money(10_000, "EUR")


async def succeeded_payment(store: PaymentStore, amount: Money = CAPTURED):
    command = create_payment(amount=amount)
    begun = await store.begin(
        command, provider="sandbox", account_key=b"k", refusal_event=unexpected_refusal
    )
    assert isinstance(begun, Started)
    await store.finish(
        command.payment_request_id,
        begun.attempt_key,
        claim=begun.claim.token,
        status=PaymentStatus.SUCCEEDED,
        attempt_status=ATTEMPT_SUCCEEDED,
        provider_reference="ch_test",
        error=None,
        event=OutboxMessage(unique("evt"), "payments.results", command.order_id, b""),
    )
    return command


def refund_of(payment, amount: Money | None, key: str | None = None, **overrides):
    fields: dict[str, Any] = {
        "idempotency_key": key or unique("refund-key"),
        "payment_request_id": payment.payment_request_id,
        "order_id": payment.order_id,
        "amount": amount,
        "reason": "requested_by_customer",
        "requested_at": NOW,
    }
    fields.update(overrides)
    return RefundPayment.create(**fields)


@pytest.fixture
def refunds(engine, store):
    return RefundStore(engine, store.writes)


async def _refund_events(engine, refund_id):
    async with engine.connect() as conn:
        rows = (await conn.execute(select(outbox.c.payload))).all()
    events = [MESSAGES.decode_any_result(r.payload) for r in rows if r.payload]
    return [e for e in events if getattr(e, "refund_id", None) == refund_id]


async def test_partial_then_full_refund_moves_the_payment_and_reports_it(store, refunds, engine):
    payment = await succeeded_payment(store)
    first = await refunds.begin(refund_of(payment, Money(3_000, "EUR")), _event)
    assert isinstance(first, RefundStarted)
    assert first.charge_reference == "ch_test"
    assert first.refund.status is RefundStatus.PROCESSING
    view = await store.get_payment(payment.payment_request_id)
    assert (view.refunded_minor, view.refund_reserved_minor) == (0, 3_000)
    assert view.refundable_minor == 7_000

    assert await refunds.finish(
        first.refund.refund_id,
        claim=first.claim.token,
        status=RefundStatus.SUCCEEDED,
        provider_reference="re_1",
        error=None,
        event=_event,
    )
    view = await store.get_payment(payment.payment_request_id)
    assert view.status is PaymentStatus.PARTIALLY_REFUNDED
    assert (view.refunded_minor, view.refund_reserved_minor) == (3_000, 0)
    (event,) = await _refund_events(engine, first.refund.refund_id)
    assert event.status is RefundStatus.SUCCEEDED
    assert event.payment_status is PaymentStatus.PARTIALLY_REFUNDED
    assert (event.amount_minor, event.payment_refunded_minor) == (3_000, 3_000)

    # No amount: all that remains.
    rest = await refunds.begin(refund_of(payment, None), _event)
    assert isinstance(rest, RefundStarted)
    assert rest.refund.amount == Money(7_000, "EUR")
    await refunds.finish(
        rest.refund.refund_id,
        claim=rest.claim.token,
        status=RefundStatus.SUCCEEDED,
        provider_reference="re_2",
        error=None,
        event=_event,
    )
    view = await store.get_payment(payment.payment_request_id)
    assert view.status is PaymentStatus.REFUNDED
    assert (view.refunded_minor, view.refundable_minor) == (10_000, 0)
    assert [r.status for r in await refunds.of_payment(payment.payment_request_id)] == [
        RefundStatus.SUCCEEDED,
        RefundStatus.SUCCEEDED,
    ]


async def test_a_failed_refund_releases_its_reservation(store, refunds, engine):
    payment = await succeeded_payment(store)
    begun = await refunds.begin(refund_of(payment, Money(4_000, "EUR")), _event)
    assert isinstance(begun, RefundStarted)
    assert await refunds.finish(
        begun.refund.refund_id,
        claim=begun.claim.token,
        status=RefundStatus.FAILED,
        provider_reference=None,
        error=None,
        event=_event,
    )
    view = await store.get_payment(payment.payment_request_id)
    assert view.status is PaymentStatus.SUCCEEDED
    assert (view.refunded_minor, view.refund_reserved_minor) == (0, 0)
    # The event reports the totals the release left (its UPDATE returns them).
    (event,) = await _refund_events(engine, begun.refund.refund_id)
    assert event.status is RefundStatus.FAILED
    assert (event.payment_status, event.payment_refunded_minor) == (PaymentStatus.SUCCEEDED, 0)
    # Finishing again changes nothing, whoever tries.
    assert await refunds.claim(begun.refund.refund_id) is None  # final: nothing to claim
    assert not await refunds.finish(
        begun.refund.refund_id,
        claim=begun.claim.token,
        status=RefundStatus.SUCCEEDED,
        provider_reference=None,
        error=None,
        event=_event,
    )
    assert (await store.get_payment(payment.payment_request_id)).refunded_minor == 0


async def test_a_pending_refund_keeps_its_reservation_until_settled(store, refunds):
    payment = await succeeded_payment(store)
    begun = await refunds.begin(refund_of(payment, Money(2_500, "EUR")), _event)
    refund_id = begun.refund.refund_id
    token = begun.claim.token
    assert await refunds.finish(
        refund_id,
        claim=token,
        status=RefundStatus.PENDING,
        provider_reference="re_p",
        error=None,
        event=_event,
    )
    # Pending released the claim: its former holder records nothing more.
    assert not await refunds.finish(
        refund_id,
        claim=token,
        status=RefundStatus.PENDING,
        provider_reference="re_p",
        error=None,
        event=_event,
    )
    view = await store.get_payment(payment.payment_request_id)
    assert (view.status, view.refund_reserved_minor) == (PaymentStatus.SUCCEEDED, 2_500)
    (open_refund,) = await refunds.open_refunds(datetime.now(UTC).replace(year=2100), 10)
    assert open_refund.refund.refund_id == refund_id
    assert open_refund.charge_reference == "ch_test"
    settler = await refunds.claim(refund_id)
    assert settler is not None
    assert await refunds.claim(refund_id) is None  # one holder at a time
    assert await refunds.finish(
        refund_id,
        claim=settler.claim.token,
        status=RefundStatus.SUCCEEDED,
        provider_reference="re_p",
        error=None,
        event=_event,
    )
    view = await store.get_payment(payment.payment_request_id)
    assert (view.refunded_minor, view.refund_reserved_minor) == (2_500, 0)
    assert await refunds.open_refunds(datetime.now(UTC).replace(year=2100), 10) == []


@pytest.mark.parametrize(
    ("amount", "code"),
    [
        (Money(10_001, "EUR"), ErrorCode.REFUND_EXCEEDS_CAPTURED),
        (Money(100, "USD"), ErrorCode.CURRENCY_MISMATCH),
    ],
)
async def test_refusals_are_stored_failed_and_reserve_nothing(store, refunds, engine, amount, code):
    payment = await succeeded_payment(store)
    refused = await refunds.begin(refund_of(payment, amount), _event)
    assert isinstance(refused, RefundRefused)
    assert refused.error.code is code
    assert refused.refund is not None
    stored = await refunds.get(refused.refund.refund_id)
    assert stored.status is RefundStatus.FAILED
    assert stored.error.code is code
    view = await store.get_payment(payment.payment_request_id)
    assert (view.refunded_minor, view.refund_reserved_minor) == (0, 0)
    (event,) = await _refund_events(engine, refused.refund.refund_id)
    assert event.error.code is code


async def test_a_payment_that_did_not_succeed_is_not_refundable(store, refunds):
    command = create_payment()
    await store.begin(
        command, provider="sandbox", account_key=b"k", refusal_event=unexpected_refusal
    )
    refused = await refunds.begin(refund_of(command, Money(100, "EUR")), _event)
    assert isinstance(refused, RefundRefused)
    assert refused.error.code is ErrorCode.PAYMENT_NOT_REFUNDABLE


async def test_an_unknown_payment_or_another_orders_payment_is_not_found(store, refunds, engine):
    payment = await succeeded_payment(store)
    other_order = refund_of(payment, Money(100, "EUR"), order_id=unique("order"))
    refused = await refunds.begin(other_order, _event)
    assert isinstance(refused, RefundRefused)
    assert refused.error.code is ErrorCode.NOT_FOUND
    assert refused.refund is None
    assert await refunds.get(other_order.refund_id) is None
    (event,) = await _refund_events(engine, other_order.refund_id)
    assert event.error.code is ErrorCode.NOT_FOUND
    assert event.payment_status is None


async def test_nothing_left_to_refund_is_refused(store, refunds):
    payment = await succeeded_payment(store)
    full = await refunds.begin(refund_of(payment, None), _event)
    await refunds.finish(
        full.refund.refund_id,
        claim=full.claim.token,
        status=RefundStatus.SUCCEEDED,
        provider_reference="re",
        error=None,
        event=_event,
    )
    again = await refunds.begin(refund_of(payment, None), _event)
    assert isinstance(again, RefundRefused)
    assert again.error.code is ErrorCode.REFUND_EXCEEDS_CAPTURED
    assert again.refund is not None
    assert again.refund.amount is None


async def test_same_key_replays_or_conflicts(store, refunds):
    payment = await succeeded_payment(store)
    command = refund_of(payment, Money(1_000, "EUR"), key="same-key")
    first = await refunds.begin(command, _event)
    assert isinstance(first, RefundStarted)
    replay = await refunds.begin(command, _event)
    assert isinstance(replay, RefundExisting)
    assert replay.same_parameters
    assert replay.refund.refund_id == first.refund.refund_id
    other = refund_of(payment, Money(2_000, "EUR"), key="same-key")
    conflict = await refunds.begin(other, _event)
    assert isinstance(conflict, RefundExisting)
    assert not conflict.same_parameters
    view = await store.get_payment(payment.payment_request_id)
    assert view.refund_reserved_minor == 1_000


async def test_twenty_concurrent_refunds_never_exceed_the_captured_amount(database_url, engine):
    """Each refund comes through its own store, connection and transaction, all at once."""
    store = PaymentStore(engine)
    payment = await succeeded_payment(store, Money(10_000, "EUR"))
    engines = [create_engine(database_url) for _ in range(4)]
    stores = [RefundStore(e, PaymentStore(e).writes) for e in engines]
    try:
        commands = [refund_of(payment, Money(1_500, "EUR")) for _ in range(20)]
        begun = await asyncio.gather(
            *(stores[i % len(stores)].begin(c, _event) for i, c in enumerate(commands))
        )
        started = [b for b in begun if isinstance(b, RefundStarted)]
        refused = [b for b in begun if isinstance(b, RefundRefused)]
        # 6 x 1500 fit in 10000; a 7th would not.
        assert len(started) == 6
        assert len(refused) == 14
        assert {r.error.code for r in refused} == {ErrorCode.REFUND_EXCEEDS_CAPTURED}
        # Settle them all concurrently, half succeeded and half failed.
        await asyncio.gather(
            *(
                stores[i % len(stores)].finish(
                    b.refund.refund_id,
                    claim=b.claim.token,
                    status=RefundStatus.SUCCEEDED if i % 2 else RefundStatus.FAILED,
                    provider_reference=None,
                    error=None,
                    event=_event,
                )
                for i, b in enumerate(started)
            )
        )
    finally:
        for e in engines:
            await e.dispose()
    async with engine.connect() as conn:
        row = (
            await conn.execute(select(payments).where(payments.c.id == payment.payment_request_id))
        ).one()
    assert row.refunded_minor == 3 * 1_500
    assert row.refund_reserved_minor == 0
    assert row.status == PaymentStatus.PARTIALLY_REFUNDED.value
    stored = await RefundStore(engine, store.writes).of_payment(payment.payment_request_id)
    succeeded = sum(
        r.amount.minor_units
        for r in stored
        if r.amount is not None and r.status is RefundStatus.SUCCEEDED
    )
    assert succeeded == row.refunded_minor <= row.amount_minor


async def test_refunds_of_many_payments_come_in_one_answer(store, refunds):
    first, second = await succeeded_payment(store), await succeeded_payment(store)
    begun = await refunds.begin(refund_of(first, Money(100, "EUR")), _event)
    assert isinstance(begun, RefundStarted)
    found = await refunds.of_payments(
        [first.payment_request_id, second.payment_request_id, "pay_" + "0" * 32]
    )
    assert [r.refund_id for r in found[first.payment_request_id]] == [begun.refund.refund_id]
    assert found[second.payment_request_id] == []
    assert found["pay_" + "0" * 32] == []
    assert await refunds.of_payments([]) == {}


async def test_a_payment_and_its_refunds_are_read_together(store, refunds):
    paid, other = await succeeded_payment(store), await succeeded_payment(store)
    first = await refunds.begin(refund_of(paid, Money(100, "EUR"), key="first"), _event)
    second = await refunds.begin(refund_of(paid, Money(200, "EUR"), key="second"), _event)
    assert isinstance(first, RefundStarted)
    assert isinstance(second, RefundStarted)

    found = await store.payment_with_refunds(paid.payment_request_id)

    assert found is not None
    view, its_refunds = found
    assert view == await store.get_payment(paid.payment_request_id)
    # The same refunds, in the same order, as the read for a page of payments gives.
    assert (
        its_refunds
        == (await refunds.of_payments([paid.payment_request_id]))[paid.payment_request_id]
    )
    assert {r.refund_id for r in its_refunds} == {first.refund.refund_id, second.refund.refund_id}
    assert await store.payment_with_refunds(other.payment_request_id) == (
        await store.get_payment(other.payment_request_id),
        [],
    )
    assert await store.payment_with_refunds("pay_" + "0" * 32) is None
