"""A charge answer that arrives after the payment moved past its charge changes nothing.

domain.status now lets a charge's finish (persistence.payment_finish) move a payment to
``succeeded`` from ``authorized``/``capturing``/``canceling`` and to ``refunded`` from any
status that waits on the provider, and a finish to ``refunded`` sets the refunded total to
all that was captured. Those moves are for the claim's holder only, and a charge claim is
only ever taken while the payment waits on its provider (persistence.payment_claims): so a
charge worker whose claim is gone -- a late answer, a redelivery, the reconciler taken over
-- must not turn an authorization into a capture, nor a payment with partial refunds into
one refunded in full (which would also stop the rest of it ever being refunded). On SQLite
and PostgreSQL.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from consumer.payment_events import PaymentEvents
from consumer.refund_events import RefundEvents
from domain.money import Money
from domain.refunds import RefundPayment, RefundStatus
from domain.status import PaymentStatus
from persistence.payment_begin import Started
from persistence.payment_store import PaymentStore
from persistence.refund_store import RefundStarted, RefundStore
from schemas.payments import PaymentMessages
from tests.support.builders import ACCOUNT_KEY, create_payment, unexpected_refusal, unique
from tests.support.clock import Clock

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()
EVENTS = PaymentEvents(MESSAGES, "payments.results")
REFUND_EVENTS = RefundEvents(MESSAGES, "payments.results")
NOW = datetime(2026, 12, 7, 0, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)
# What a worker whose claim is gone may still report about the charge.
LATE_ANSWERS = (
    (PaymentStatus.SUCCEEDED, "succeeded"),
    (PaymentStatus.REFUNDED, "succeeded"),
    (PaymentStatus.AUTHORIZED, "succeeded"),
)


def _refund_event(view, standing):
    return REFUND_EVENTS.at(NOW)(view, standing)


async def _charged(store: PaymentStore, clock: Clock, command, status: PaymentStatus):
    """The payment charged by the reconciler after it took the first owner's claim over:
    two charge owners now gone (the first, and the reconciler once it finished)."""
    first = await store.begin(
        command, provider="sandbox", account_key=ACCOUNT_KEY, refusal_event=unexpected_refusal
    )
    assert isinstance(first, Started)
    clock.now += LEASE * 2
    taken = await store.claim(command.payment_request_id)
    assert taken is not None
    assert await _finish(store, command, first.attempt_key, taken.claim.token, status, "succeeded")
    return first.attempt_key, (first.claim.token, taken.claim.token)


async def _finish(store, command, attempt_key, claim, status, attempt_status) -> bool:
    payment = await store.get_payment(command.payment_request_id)
    assert payment is not None
    return await store.finish(
        command.payment_request_id,
        attempt_key,
        claim=claim,
        status=status,
        attempt_status=attempt_status,
        provider_reference="ch_1",
        error=None,
        event=EVENTS.of_payment(payment),
    )


async def test_late_charge_answers_leave_an_authorization_authorized(engine):
    clock = Clock()
    store = PaymentStore(engine, clock, claim_lease=LEASE)
    command = dataclasses.replace(create_payment(), capture=False)
    key, gone = await _charged(store, clock, command, PaymentStatus.AUTHORIZED)

    for token in gone:
        for status, attempt_status in LATE_ANSWERS:
            assert not await _finish(store, command, key, token, status, attempt_status)

    view = await store.get_payment(command.payment_request_id)
    assert view is not None
    assert (view.status, view.captured_minor, view.refunded_minor) == (
        PaymentStatus.AUTHORIZED,
        None,
        0,
    )


async def test_late_charge_answers_leave_partial_refunds_as_recorded(engine):
    clock = Clock()
    store = PaymentStore(engine, clock, claim_lease=LEASE)
    refunds = RefundStore(engine, store.writes, clock, claim_lease=LEASE)
    command = create_payment(amount=Money(1_000, "EUR"))
    pid = command.payment_request_id
    key, gone = await _charged(store, clock, command, PaymentStatus.SUCCEEDED)
    partial = await refunds.begin(_refund(command, Money(300, "EUR")), _refund_event)
    assert isinstance(partial, RefundStarted)
    assert await refunds.finish(
        partial.refund.refund_id,
        claim=partial.claim.token,
        status=RefundStatus.SUCCEEDED,
        provider_reference="re_1",
        error=None,
        event=_refund_event,
    )

    for token in gone:
        for status, attempt_status in LATE_ANSWERS:
            assert not await _finish(store, command, key, token, status, attempt_status)

    view = await store.get_payment(pid)
    assert view is not None
    assert (view.status, view.refunded_minor, view.refundable_minor) == (
        PaymentStatus.PARTIALLY_REFUNDED,
        300,
        700,
    )
    # The rest can still be returned: all of it, not a minor unit more.
    rest = await refunds.begin(_refund(command, None), _refund_event)
    assert isinstance(rest, RefundStarted)
    assert rest.refund.amount == Money(700, "EUR")


def _refund(command, amount: Money | None) -> RefundPayment:
    return RefundPayment.create(
        idempotency_key=unique("refund-key"),
        payment_request_id=command.payment_request_id,
        order_id=command.order_id,
        amount=amount,
        reason="requested_by_customer",
        requested_at=NOW,
    )
