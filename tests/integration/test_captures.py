"""Authorize, then capture: through the handlers, the store on SQLite and PostgreSQL, the
sandbox in process."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from consumer.capture_handler import CaptureCommandHandler
from consumer.capture_reconciler import CaptureReconciler
from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from consumer.refund_events import RefundEvents
from consumer.refund_handler import RefundCommandHandler
from domain.captures import CapturePayment, capture_key_for
from domain.errors import ErrorCode
from domain.events import PaymentResult
from domain.money import Money
from domain.refunds import RefundPayment
from domain.status import PaymentStatus
from persistence.capture_store import CaptureStarted, CaptureStore
from persistence.refund_store import RefundStore
from persistence.tables import outbox
from providers.port import CaptureRequest
from providers.registry import Providers
from providers.routing import Router
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.builders import DECLINED_CARD, SUCCESS_CARD, create_payment

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()
EVENTS = PaymentEvents(MESSAGES, "payments.results")
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture
def captures(engine, store, clock):
    return CaptureStore(engine, store.writes, clock)


@pytest.fixture
def payments(store, provider):
    return PaymentCommandHandler(
        store=store,
        providers=Providers.of(provider),
        router=Router.catch_all(provider.name),
        events=EVENTS,
        account_key=b"k",
        metrics=Metrics(),
    )


@pytest.fixture
def capture_handler(captures, provider):
    return CaptureCommandHandler(
        store=captures, providers=Providers.of(provider), events=EVENTS, metrics=Metrics()
    )


def capture_of(payment) -> CapturePayment:
    return CapturePayment.create(
        payment_request_id=payment.payment_request_id,
        order_id=payment.order_id,
        requested_at=NOW,
    )


async def authorized(payments, card: str = SUCCESS_CARD):
    command = dataclasses.replace(create_payment(payer_number=card), capture=False)
    outcome = await payments.handle(command)
    return command, outcome


async def events_of(engine, payment_id) -> list[PaymentResult]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(outbox.c.payload).order_by(outbox.c.id))).all()
    events = [MESSAGES.decode_any_result(r.payload) for r in rows]
    return [
        e for e in events if isinstance(e, PaymentResult) and e.payment_request_id == payment_id
    ]


async def test_authorize_then_capture_takes_the_money_once(
    payments, capture_handler, store, provider, engine
):
    command, outcome = await authorized(payments)
    assert outcome is Outcome.AUTHORIZED
    view = await store.get_payment(command.payment_request_id)
    assert view.status is PaymentStatus.AUTHORIZED
    assert view.payment_result is False  # held, not taken
    (charge,) = await provider.acquirer.charges()
    assert charge.status.value == "authorized"

    assert await capture_handler.handle(capture_of(command)) is Outcome.SUCCEEDED
    view = await store.get_payment(command.payment_request_id)
    assert (view.status, view.payment_result) == (PaymentStatus.SUCCEEDED, True)
    (charge,) = await provider.acquirer.charges()
    assert charge.status.value == "succeeded"
    assert charge.captured_minor == command.amount.minor_units

    # Captured already: a second capture replays, the provider captures nothing more.
    assert await capture_handler.handle(capture_of(command)) is Outcome.REPLAYED
    statuses = [e.status for e in await events_of(engine, command.payment_request_id)]
    assert statuses[:2] == [PaymentStatus.AUTHORIZED, PaymentStatus.SUCCEEDED]
    assert set(statuses[2:]) <= {PaymentStatus.SUCCEEDED}


async def test_an_authorized_payment_is_not_refundable_and_protects_its_order(
    payments, engine, store, provider
):
    command, _ = await authorized(payments)
    refunds = RefundCommandHandler(
        store=RefundStore(engine, store.writes),
        providers=Providers.of(provider),
        events=RefundEvents(MESSAGES, "payments.results"),
        metrics=Metrics(),
    )
    refund = RefundPayment.create(
        idempotency_key="r1",
        payment_request_id=command.payment_request_id,
        order_id=command.order_id,
        amount=Money(100, "EUR"),
        reason=None,
        requested_at=NOW,
    )
    assert await refunds.handle(refund) is Outcome.REFUSED
    again = create_payment(order_id=command.order_id)
    assert await payments.handle(dataclasses.replace(again, new_attempt=True)) is Outcome.REFUSED


async def test_only_an_authorized_payment_can_be_captured(payments, capture_handler, store, engine):
    declined = create_payment(payer_number=DECLINED_CARD)
    assert await payments.handle(declined) is Outcome.FAILED
    assert await capture_handler.handle(capture_of(declined)) is Outcome.REFUSED
    last = (await events_of(engine, declined.payment_request_id))[-1]
    assert last.status is PaymentStatus.FAILED
    assert last.error is not None
    assert last.error.code is ErrorCode.PAYMENT_NOT_CAPTURABLE
    # The stored payment is untouched by the refused capture.
    stored = await store.get_payment(declined.payment_request_id)
    assert stored.error.code is ErrorCode.PAYMENT_DECLINED

    unknown = CapturePayment.create(
        payment_request_id="pay_" + "0" * 32, order_id="nope", requested_at=NOW
    )
    assert await capture_handler.handle(unknown) is Outcome.REFUSED


async def test_a_capture_left_capturing_by_a_crash_is_settled_by_the_reconciler(
    payments, capture_handler, captures, store, provider, clock
):
    command, _ = await authorized(payments)
    # The consumer moved it to capturing, then died before asking the provider.
    begun = await captures.begin(capture_of(command), lambda p, e: EVENTS.of_payment(p))
    assert isinstance(begun, CaptureStarted)
    assert (await store.get_payment(command.payment_request_id)).status is (PaymentStatus.CAPTURING)
    reconciler = CaptureReconciler(
        store=captures,
        handler=capture_handler,
        metrics=Metrics(),
        min_age=timedelta(0),
        clock=lambda: clock.now + timedelta(seconds=1),
    )
    assert await reconciler.run_once() == 0  # the dead consumer's claim still stands
    clock.now += timedelta(seconds=31)
    assert await reconciler.run_once() == 1
    assert (await store.get_payment(command.payment_request_id)).status is (PaymentStatus.SUCCEEDED)
    (charge,) = await provider.acquirer.charges()
    assert charge.captured_minor == command.amount.minor_units
    assert await reconciler.run_once() == 0


async def test_a_capture_the_provider_made_before_a_crash_is_found_not_made_again(
    payments, capture_handler, captures, store, provider, clock
):
    command, _ = await authorized(payments)
    begun = await captures.begin(capture_of(command), lambda p, e: EVENTS.of_payment(p))
    assert isinstance(begun, CaptureStarted)
    payment = begun.payment
    # The capture reached the provider; the answer was lost with the consumer.
    await provider.capture(
        CaptureRequest(
            capture_key=capture_key_for(payment.payment_request_id),
            payment_request_id=payment.payment_request_id,
            charge_reference=payment.provider_reference or "",
            amount=payment.amount,
        )
    )
    assert await capture_handler.handle(capture_of(command)) is Outcome.OWNED_ELSEWHERE
    clock.now += timedelta(seconds=31)  # the dead consumer's claim has expired
    assert await capture_handler.handle(capture_of(command)) is Outcome.SUCCEEDED
    (charge,) = await provider.acquirer.charges()
    assert charge.captured_minor == command.amount.minor_units
