"""The rest of an authorization's life: partial capture, cancel (void), expiry. Through the
handlers, the stores on SQLite and PostgreSQL, and the sandbox acquirer in process, whose
clock the test moves (its holds expire)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from consumer.authorization_expiry import AuthorizationExpiry
from consumer.cancel_handler import CancelCommandHandler
from consumer.cancel_reconciler import CancelReconciler
from consumer.capture_handler import CaptureCommandHandler
from consumer.capture_reconciler import CaptureReconciler
from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from consumer.refund_events import RefundEvents
from consumer.refund_handler import RefundCommandHandler
from domain.cancels import CancelPayment
from domain.captures import CapturePayment, capture_key_for
from domain.errors import ErrorCode
from domain.events import PaymentResult
from domain.money import Money
from domain.payments import CreatePayment
from domain.refunds import RefundPayment
from domain.status import PaymentStatus
from persistence.cancel_store import CancelStarted, CancelStore
from persistence.capture_store import CaptureStarted, CaptureStore
from persistence.expiry_store import ExpiryStore
from persistence.refund_store import RefundStore
from persistence.tables import outbox
from providers.registry import Providers
from providers.routing import Router
from providers.sandbox.acquirer import SandboxAcquirer
from providers.sandbox.config import SandboxConfig
from providers.sandbox.inprocess import InProcessSandboxProvider
from providers.sandbox.ledger import MemoryLedger
from providers.sandbox.records import SandboxStatus
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.builders import SUCCESS_CARD, create_payment

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()
EVENTS = PaymentEvents(MESSAGES, "payments.results")
AUTHORIZED = Money(10_000, "EUR")  # 100.00
HOLD = timedelta(hours=1)


@pytest.fixture
async def provider(clock) -> AsyncIterator[InProcessSandboxProvider]:
    """The sandbox in process on the test's clock, holding authorizations for ``HOLD``."""
    acquirer = SandboxAcquirer(
        MemoryLedger(), SandboxConfig(authorization_hold_s=HOLD.total_seconds()), clock=clock
    )
    async with InProcessSandboxProvider(acquirer) as started:
        yield started


@pytest.fixture
def payments(store, provider, clock):
    return PaymentCommandHandler(
        store=store,
        providers=Providers.of(provider),
        router=Router.catch_all(provider.name),
        events=EVENTS,
        account_key=b"k",
        metrics=Metrics(),
        clock=clock,
    )


@pytest.fixture
def captures(engine, store, clock):
    return CaptureStore(engine, store.writes, clock)


@pytest.fixture
def cancels(engine, store, clock):
    return CancelStore(engine, store.writes, clock)


@pytest.fixture
def capture_handler(captures, provider, clock):
    return CaptureCommandHandler(
        store=captures, providers=Providers.of(provider), events=EVENTS, metrics=Metrics()
    )


@pytest.fixture
def cancel_handler(cancels, provider, clock):
    return CancelCommandHandler(
        store=cancels,
        providers=Providers.of(provider),
        events=EVENTS,
        metrics=Metrics(),
        clock=clock,
    )


@pytest.fixture
def expiry(engine, store, provider, clock):
    return AuthorizationExpiry(
        store=ExpiryStore(engine, store.writes, clock),
        providers=Providers.of(provider),
        events=EVENTS,
        min_age=timedelta(0),
        clock=lambda: clock.now + timedelta(seconds=1),
    )


@pytest.fixture
def refunds(engine, store, provider):
    return RefundCommandHandler(
        store=RefundStore(engine, store.writes),
        providers=Providers.of(provider),
        events=RefundEvents(MESSAGES, "payments.results"),
        metrics=Metrics(),
    )


async def authorized(payments) -> CreatePayment:
    command = dataclasses.replace(
        create_payment(payer_number=SUCCESS_CARD, amount=AUTHORIZED), capture=False
    )
    assert await payments.handle(command) is Outcome.AUTHORIZED
    return command


def capture_of(payment: CreatePayment, amount: str | None = None) -> CapturePayment:
    return CapturePayment.create(
        payment_request_id=payment.payment_request_id,
        order_id=payment.order_id,
        requested_at=datetime.now(UTC),
        amount=None if amount is None else Decimal(amount),
    )


def cancel_of(payment: CreatePayment) -> CancelPayment:
    return CancelPayment.create(
        payment_request_id=payment.payment_request_id,
        order_id=payment.order_id,
        requested_at=datetime.now(UTC),
    )


def refund_of(payment: CreatePayment, key: str, amount: Money | None) -> RefundPayment:
    return RefundPayment.create(
        idempotency_key=key,
        payment_request_id=payment.payment_request_id,
        order_id=payment.order_id,
        amount=amount,
        reason=None,
        requested_at=datetime.now(UTC),
    )


async def events_of(engine, payment_id: str) -> list[PaymentResult]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(outbox.c.payload).order_by(outbox.c.id))).all()
    events = [MESSAGES.decode_any_result(r.payload) for r in rows]
    return [
        e for e in events if isinstance(e, PaymentResult) and e.payment_request_id == payment_id
    ]


async def only_charge(provider: InProcessSandboxProvider):
    (charge,) = await provider.acquirer.charges()
    return charge


# --- partial capture -------------------------------------------------------------------------


async def test_a_partial_capture_takes_that_much_once_and_bounds_the_refunds(
    payments, capture_handler, refunds, store, provider
):
    payment = await authorized(payments)
    assert await capture_handler.handle(capture_of(payment, "40.25")) is Outcome.SUCCEEDED
    view = await store.get_payment(payment.payment_request_id)
    assert view.status is PaymentStatus.SUCCEEDED
    assert view.captured_amount == Money(4025, "EUR")
    assert view.amount == AUTHORIZED  # what was authorized stays what it was
    assert view.refundable_minor == 4025
    charge = await only_charge(provider)
    assert (charge.status, charge.captured_minor) == (SandboxStatus.SUCCEEDED, 4025)
    assert charge.capture_key == capture_key_for(payment.payment_request_id, 4025)

    # Replays: the same amount, or none; another amount is a conflict, and nothing moves.
    assert await capture_handler.handle(capture_of(payment, "40.25")) is Outcome.REPLAYED
    assert await capture_handler.handle(capture_of(payment)) is Outcome.REPLAYED
    assert await capture_handler.handle(capture_of(payment, "50")) is Outcome.REFUSED
    assert (await only_charge(provider)).captured_minor == 4025

    # Refunds: at most what was captured, checked inside the store's transaction.
    too_much = refund_of(payment, "r1", Money(4026, "EUR"))
    assert await refunds.handle(too_much) is Outcome.REFUSED
    assert await refunds.handle(refund_of(payment, "r2", None)) is Outcome.SUCCEEDED
    view = await store.get_payment(payment.payment_request_id)
    assert (view.status, view.refunded_minor) == (PaymentStatus.REFUNDED, 4025)


async def test_a_capture_above_the_authorization_is_refused_and_changes_nothing(
    payments, capture_handler, store, provider, engine
):
    payment = await authorized(payments)
    before = await store.get_payment(payment.payment_request_id)
    assert await capture_handler.handle(capture_of(payment, "100.01")) is Outcome.REFUSED
    assert await capture_handler.handle(capture_of(payment, "1.001")) is Outcome.REFUSED
    after = await store.get_payment(payment.payment_request_id)
    assert after == before  # still authorized, untouched: no write-ahead move happened
    assert (await only_charge(provider)).status is SandboxStatus.AUTHORIZED
    refused = [e.error.code for e in await events_of(engine, payment.payment_request_id) if e.error]
    assert refused == [ErrorCode.CAPTURE_EXCEEDS_AUTHORIZED, ErrorCode.INVALID_AMOUNT]
    # All of it is still capturable, exactly.
    assert await capture_handler.handle(capture_of(payment, "100.00")) is Outcome.SUCCEEDED
    charge = await only_charge(provider)
    assert charge.captured_minor == AUTHORIZED.minor_units
    # The whole amount goes under the payment's one legacy key.
    assert charge.capture_key == capture_key_for(payment.payment_request_id)


async def test_a_partial_capture_left_capturing_is_resent_for_the_same_amount(
    payments, capture_handler, captures, store, provider, clock
):
    payment = await authorized(payments)
    begun = await captures.begin(capture_of(payment, "12.5"), lambda p, e: EVENTS.of_payment(p))
    assert isinstance(begun, CaptureStarted)  # then the consumer died
    clock.now += timedelta(seconds=31)
    reconciler = CaptureReconciler(
        store=captures,
        handler=capture_handler,
        metrics=Metrics(),
        min_age=timedelta(0),
        clock=lambda: clock.now + timedelta(seconds=1),
    )
    assert await reconciler.run_once() == 1
    view = await store.get_payment(payment.payment_request_id)
    assert (view.status, view.captured_minor) == (PaymentStatus.SUCCEEDED, 1250)
    assert (await only_charge(provider)).captured_minor == 1250


# --- cancel ------------------------------------------------------------------------------------


async def test_cancel_releases_the_hold_once_and_then_nothing_can_be_captured(
    payments, cancel_handler, capture_handler, refunds, store, provider, engine
):
    payment = await authorized(payments)
    assert await cancel_handler.handle(cancel_of(payment)) is Outcome.CANCELED
    view = await store.get_payment(payment.payment_request_id)
    assert (view.status, view.payment_result, view.error) == (PaymentStatus.CANCELED, False, None)
    assert (await only_charge(provider)).status is SandboxStatus.CANCELED

    assert await cancel_handler.handle(cancel_of(payment)) is Outcome.REPLAYED
    assert await capture_handler.handle(capture_of(payment)) is Outcome.REFUSED
    assert await refunds.handle(refund_of(payment, "r1", None)) is Outcome.REFUSED
    assert (await store.get_payment(payment.payment_request_id)).status is PaymentStatus.CANCELED
    statuses = [e.status for e in await events_of(engine, payment.payment_request_id)]
    assert statuses[:2] == [PaymentStatus.AUTHORIZED, PaymentStatus.CANCELED]
    # The order is not paid: a new attempt may charge it.
    again = dataclasses.replace(create_payment(order_id=payment.order_id), new_attempt=True)
    assert await payments.handle(again) is Outcome.SUCCEEDED


async def test_a_captured_payment_cannot_be_canceled(
    payments, cancel_handler, capture_handler, store, provider, engine
):
    payment = await authorized(payments)
    assert await capture_handler.handle(capture_of(payment, "10")) is Outcome.SUCCEEDED
    assert await cancel_handler.handle(cancel_of(payment)) is Outcome.REFUSED
    assert (await store.get_payment(payment.payment_request_id)).status is PaymentStatus.SUCCEEDED
    last = (await events_of(engine, payment.payment_request_id))[-1]
    assert last.error is not None
    assert last.error.code is ErrorCode.PAYMENT_NOT_CANCELABLE
    assert (await only_charge(provider)).status is SandboxStatus.SUCCEEDED


async def test_a_cancel_left_canceling_by_a_crash_is_settled_by_the_reconciler(
    payments, cancel_handler, cancels, store, provider, clock
):
    payment = await authorized(payments)
    begun = await cancels.begin(cancel_of(payment), lambda p, e: EVENTS.of_payment(p))
    assert isinstance(begun, CancelStarted)  # then the consumer died
    reconciler = CancelReconciler(
        store=cancels,
        handler=cancel_handler,
        metrics=Metrics(),
        min_age=timedelta(0),
        clock=lambda: clock.now + timedelta(seconds=1),
    )
    assert await reconciler.run_once() == 0  # the dead consumer's claim still stands
    clock.now += timedelta(seconds=31)
    assert await reconciler.run_once() == 1
    assert (await store.get_payment(payment.payment_request_id)).status is PaymentStatus.CANCELED
    assert (await only_charge(provider)).status is SandboxStatus.CANCELED
    assert await reconciler.run_once() == 0


async def test_a_void_the_provider_made_before_a_crash_is_found_and_recorded(
    payments, cancel_handler, cancels, store, provider, clock
):
    payment = await authorized(payments)
    begun = await cancels.begin(cancel_of(payment), lambda p, e: EVENTS.of_payment(p))
    assert isinstance(begun, CancelStarted)
    await provider.acquirer.cancel(begun.payment.provider_reference or "")  # answer lost
    assert await cancel_handler.handle(cancel_of(payment)) is Outcome.OWNED_ELSEWHERE
    clock.now += timedelta(seconds=31)
    assert await cancel_handler.handle(cancel_of(payment)) is Outcome.CANCELED
    assert (await store.get_payment(payment.payment_request_id)).status is PaymentStatus.CANCELED


# --- expiry ------------------------------------------------------------------------------------


async def test_an_authorization_whose_hold_ends_becomes_expired(
    payments, expiry, capture_handler, store, provider, clock, engine
):
    payment = await authorized(payments)
    assert await expiry.run_once() == 0  # still held
    assert (await store.get_payment(payment.payment_request_id)).status is PaymentStatus.AUTHORIZED

    clock.now += HOLD
    assert await expiry.run_once() == 1
    view = await store.get_payment(payment.payment_request_id)
    assert (view.status, view.payment_result) == (PaymentStatus.EXPIRED, False)
    assert (await only_charge(provider)).status is SandboxStatus.EXPIRED
    assert (await events_of(engine, payment.payment_request_id))[-1].status is (
        PaymentStatus.EXPIRED
    )
    assert await expiry.run_once() == 0
    assert await capture_handler.handle(capture_of(payment)) is Outcome.REFUSED


async def test_a_capture_after_the_hold_ended_is_refused_by_the_provider_and_recorded_expired(
    payments, expiry, capture_handler, store, clock
):
    payment = await authorized(payments)
    clock.now += HOLD
    # The capture comes before the expiry pass: the provider refuses it, nothing is taken,
    # and the provider says the hold ended: the payment is what the provider holds, never
    # authorized again (nothing is held).
    assert await capture_handler.handle(capture_of(payment)) is Outcome.REFUSED
    view = await store.get_payment(payment.payment_request_id)
    assert view.status is PaymentStatus.EXPIRED
    assert view.error is not None
    assert view.error.code is ErrorCode.PAYMENT_ALREADY_CANCELED
    assert await expiry.run_once() == 0


async def test_a_cancel_after_the_hold_ended_records_it_expired(
    payments, cancel_handler, store, clock
):
    payment = await authorized(payments)
    clock.now += HOLD
    assert await cancel_handler.handle(cancel_of(payment)) is Outcome.EXPIRED
    assert (await store.get_payment(payment.payment_request_id)).status is PaymentStatus.EXPIRED


async def test_a_hold_voided_at_the_provider_is_found_canceled(payments, expiry, store, provider):
    payment = await authorized(payments)
    view = await store.get_payment(payment.payment_request_id)
    await provider.acquirer.cancel(view.provider_reference or "")  # someone, not paygate
    assert await expiry.run_once() == 1
    assert (await store.get_payment(payment.payment_request_id)).status is PaymentStatus.CANCELED


async def test_the_expiry_sweep_never_overwrites_a_capture_under_way(
    payments, expiry, captures, store, provider, clock
):
    payment = await authorized(payments)
    begun = await captures.begin(capture_of(payment), lambda p, e: EVENTS.of_payment(p))
    assert isinstance(begun, CaptureStarted)
    clock.now += HOLD
    # Capturing is not authorized: the sweep does not even look at it.
    assert await expiry.run_once() == 0
    assert (await store.get_payment(payment.payment_request_id)).status is PaymentStatus.CAPTURING
