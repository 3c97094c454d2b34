"""An authorization captured and then refunded by hand at the provider, before paygate
learns of the capture.

Someone captures a held payment in the provider's dashboard and refunds it there, all of it
or part. paygate then reads the charge (a cancel refused as captured, a capture found made,
their reconcilers, the authorization-expiry sweep) and must record what the provider holds:
``refunded`` (nothing kept) or ``partially_refunded``, its refunded total the provider's,
so that a refund through paygate returns at most what remains; and no refund row of its own
(domain.provider_refunds). Before, the payment was recorded ``succeeded`` with nothing
refunded: a client would be told the money is kept, and could ask to refund it again.

Through the real handlers and stores (SQLite and PostgreSQL), against the sandbox acquirer
in process, and against Stripe through the real SDK (stripe-mock answering the
PaymentIntent with its charge expanded, ``amount_refunded`` set).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from consumer.authorization_expiry import AuthorizationExpiry
from consumer.cancel_handler import CancelCommandHandler
from consumer.capture_handler import CaptureCommandHandler
from consumer.capture_reconciler import CaptureReconciler
from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from consumer.refund_events import RefundEvents
from consumer.refund_handler import RefundCommandHandler
from domain.cancels import CancelPayment
from domain.captures import CapturePayment
from domain.errors import ErrorCode
from domain.events import PaymentResult, result_event_id
from domain.money import Money
from domain.payments import CreatePayment
from domain.refunds import RefundPayment
from domain.status import PaymentStatus
from domain.webhook_events import payment_webhook
from http_facade.responses import payment_body
from persistence.cancel_store import CancelStore
from persistence.capture_store import CaptureStore
from persistence.expiry_store import ExpiryStore
from persistence.refund_store import RefundStore
from persistence.tables import outbox, refunds
from providers.charge_only import ChargeOnlyProvider
from providers.errors import ProviderTimeoutError
from providers.port import CaptureRequest, ChargeOutcome, ChargeRequest, ChargeStatus
from providers.registry import Providers
from providers.routing import Router
from providers.sandbox.inprocess import InProcessSandboxProvider
from providers.sandbox.refund_records import SandboxCaptureParams, SandboxRefundParams
from providers.stripe import StripeProvider
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.builders import SUCCESS_CARD, create_payment
from tests.support.stripe_front import stripe_front, unexpected_state_error
from tests.support.stripe_mock import SUCCEEDED_PAYMENT_INTENT, TEST_API_KEY, run_stripe_mock

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()
EVENTS = PaymentEvents(MESSAGES, "payments.results")
AUTHORIZED = Money(10_000, "EUR")  # 100.00


def a_moment_later() -> datetime:
    # The write-ahead move (or the authorization) is "older" than the pass.
    return datetime.now(UTC) + timedelta(seconds=1)


async def authorize(store, provider) -> CreatePayment:
    handler = PaymentCommandHandler(
        store=store,
        providers=Providers.of(provider),
        router=Router.catch_all(provider.name),
        events=EVENTS,
        account_key=b"k",
        metrics=Metrics(),
    )
    command = dataclasses.replace(
        create_payment(payer_number=SUCCESS_CARD, amount=AUTHORIZED), capture=False
    )
    assert await handler.handle(command) is Outcome.AUTHORIZED
    return command


def cancel_of(payment: CreatePayment) -> CancelPayment:
    return CancelPayment.create(
        payment_request_id=payment.payment_request_id,
        order_id=payment.order_id,
        requested_at=datetime.now(UTC),
    )


def capture_of(payment: CreatePayment) -> CapturePayment:
    return CapturePayment.create(
        payment_request_id=payment.payment_request_id,
        order_id=payment.order_id,
        requested_at=datetime.now(UTC),
    )


def refund_handler(engine, store, provider) -> RefundCommandHandler:
    return RefundCommandHandler(
        store=RefundStore(engine, store.writes),
        providers=Providers.of(provider),
        events=RefundEvents(MESSAGES, "payments.results"),
        metrics=Metrics(),
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


async def last_event(engine, payment_id: str) -> PaymentResult:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(outbox.c.payload).order_by(outbox.c.id))).all()
    events = [MESSAGES.decode_any_result(row.payload) for row in rows]
    mine = [
        e for e in events if isinstance(e, PaymentResult) and e.payment_request_id == payment_id
    ]
    return mine[-1]


async def refund_rows(engine, payment_id: str) -> int:
    async with engine.connect() as conn:
        query = select(func.count()).select_from(refunds).where(refunds.c.payment_id == payment_id)
        return int((await conn.execute(query)).scalar_one())


async def assert_recorded_refunded(
    engine,
    store,
    payment: CreatePayment,
    *,
    captured: Money,
    refunded: Money,
    error: ErrorCode | None,
) -> None:
    """The store, the result event, its webhook and the REST read all say: captured of
    ``captured``, ``refunded`` of it returned at the provider; no refund row of paygate's."""
    pid = payment.payment_request_id
    status = (
        PaymentStatus.REFUNDED
        if refunded.minor_units == captured.minor_units
        else PaymentStatus.PARTIALLY_REFUNDED
    )
    view = await store.get_payment(pid)
    assert (view.status, view.captured_amount, view.refunded_minor) == (
        status,
        captured,
        refunded.minor_units,
    )
    assert (None if view.error is None else view.error.code) is error
    assert view.refundable_minor == captured.minor_units - refunded.minor_units
    assert await refund_rows(engine, pid) == 0  # nothing that reads as paygate's own refund
    event = await last_event(engine, pid)
    assert (event.event_id, event.status, event.captured_amount) == (
        result_event_id(pid, status),
        status,
        captured,
    )
    webhook = payment_webhook(event)
    assert webhook is not None
    assert webhook.type == f"payment.{status.value}"
    data = json.loads(webhook.body)["data"]
    rest = payment_body(view, [])
    assert data["status"] == rest["status"] == status.value
    assert data["capturedAmount"] == rest["capturedAmount"] == str(captured.to_decimal())


# --- the sandbox ---------------------------------------------------------------------------


@pytest.fixture
async def sandbox() -> AsyncIterator[InProcessSandboxProvider]:
    async with InProcessSandboxProvider() as provider:
        yield provider


async def capture_and_refund_by_hand(
    sandbox: InProcessSandboxProvider, store, payment, captured: Money, refunded: Money
) -> None:
    """Someone captures the charge at the acquirer and refunds it there, not via paygate."""
    reference = (await store.get_payment(payment.payment_request_id)).provider_reference or ""
    await sandbox.acquirer.capture("dashboard", SandboxCaptureParams(reference, captured))
    params = SandboxRefundParams(
        charge_id=reference,
        amount=refunded,
        refund_reference="dashboard-refund",
        payment_reference=payment.payment_request_id,
        reason=None,
    )
    await sandbox.acquirer.refund("dashboard-refund", params)


CASES = {
    "all-refunded": (AUTHORIZED, AUTHORIZED),
    "part-refunded": (AUTHORIZED, Money(2500, "EUR")),
    "partial-capture-all-refunded": (Money(4025, "EUR"), Money(4025, "EUR")),
}


@pytest.mark.parametrize(("captured", "refunded"), list(CASES.values()), ids=list(CASES))
async def test_a_cancel_that_finds_the_charge_captured_and_refunded_by_hand_records_it(
    engine, store, sandbox, captured, refunded
):
    payment = await authorize(store, sandbox)
    await capture_and_refund_by_hand(sandbox, store, payment, captured, refunded)
    handler = CancelCommandHandler(
        store=CancelStore(engine, store.writes),
        providers=Providers.of(sandbox),
        events=EVENTS,
        metrics=Metrics(),
    )

    assert await handler.handle(cancel_of(payment)) is Outcome.REFUSED

    await assert_recorded_refunded(
        engine,
        store,
        payment,
        captured=captured,
        refunded=refunded,
        error=ErrorCode.PAYMENT_ALREADY_CAPTURED,
    )


async def test_a_refund_through_paygate_returns_only_what_the_provider_still_holds(
    engine, store, sandbox
):
    payment = await authorize(store, sandbox)
    await capture_and_refund_by_hand(sandbox, store, payment, AUTHORIZED, Money(6000, "EUR"))
    handler = CancelCommandHandler(
        store=CancelStore(engine, store.writes),
        providers=Providers.of(sandbox),
        events=EVENTS,
        metrics=Metrics(),
    )
    assert await handler.handle(cancel_of(payment)) is Outcome.REFUSED
    refunds_handler = refund_handler(engine, store, sandbox)

    # 40.00 remain: more is refused in paygate's own transaction, the provider not asked.
    too_much = refund_of(payment, "r1", Money(4001, "EUR"))
    assert await refunds_handler.handle(too_much) is Outcome.REFUSED
    assert await refunds_handler.handle(refund_of(payment, "r2", None)) is Outcome.SUCCEEDED

    view = await store.get_payment(payment.payment_request_id)
    assert (view.status, view.refunded_minor, view.refundable_minor) == (
        PaymentStatus.REFUNDED,
        AUTHORIZED.minor_units,
        0,
    )
    assert await sandbox.acquirer.refunded_of(view.provider_reference or "") == 10_000


async def test_the_expiry_sweep_finds_an_authorization_captured_and_refunded_by_hand(
    engine, store, sandbox
):
    payment = await authorize(store, sandbox)
    await capture_and_refund_by_hand(sandbox, store, payment, AUTHORIZED, Money(2500, "EUR"))
    sweep = AuthorizationExpiry(
        store=ExpiryStore(engine, store.writes),
        providers=Providers.of(sandbox),
        events=EVENTS,
        min_age=timedelta(0),
        clock=a_moment_later,
    )

    assert await sweep.run_once() == 1

    await assert_recorded_refunded(
        engine, store, payment, captured=AUTHORIZED, refunded=Money(2500, "EUR"), error=None
    )
    assert await sweep.run_once() == 0  # found once


class TimingOutCaptures(InProcessSandboxProvider):
    """The sandbox, but a capture's answer is lost before it reaches the acquirer."""

    async def capture(self, request: CaptureRequest) -> ChargeOutcome:
        raise ProviderTimeoutError(self.name, "no answer in time")


async def test_a_capture_in_doubt_finds_the_charge_captured_and_refunded_by_hand(engine, store):
    """The capture reconciler's path: the charge reads captured (made), and refunded in
    full since: recorded ``refunded``, no error (the capture itself stands)."""
    async with TimingOutCaptures() as sandbox:
        payment = await authorize(store, sandbox)
        captures = CaptureStore(engine, store.writes)
        handler = CaptureCommandHandler(
            store=captures, providers=Providers.of(sandbox), events=EVENTS, metrics=Metrics()
        )
        assert await handler.handle(capture_of(payment)) is Outcome.PENDING
        await capture_and_refund_by_hand(sandbox, store, payment, AUTHORIZED, AUTHORIZED)
        reconciler = CaptureReconciler(
            store=captures,
            handler=handler,
            metrics=Metrics(),
            min_age=timedelta(0),
            clock=a_moment_later,
        )
        assert await reconciler.run_once() == 1

    await assert_recorded_refunded(
        engine, store, payment, captured=AUTHORIZED, refunded=AUTHORIZED, error=None
    )


# --- Stripe, through the SDK ---------------------------------------------------------------

INTENT: Mapping[str, Any] = {
    **SUCCEEDED_PAYMENT_INTENT,
    "amount": AUTHORIZED.minor_units,
    "capture_method": "manual",
}
# As the Dashboard leaves it after a capture by hand of 60.00 and a refund of 15.00 of it.
CAPTURED_BY_HAND: Mapping[str, Any] = {**INTENT, "status": "succeeded", "amount_received": 6000}
REFUNDED_CHARGE: Mapping[str, Any] = {
    "id": SUCCEEDED_PAYMENT_INTENT["latest_charge"],
    "object": "charge",
    "amount": 6000,
    "amount_captured": 6000,
    "amount_refunded": 1500,
    "captured": True,
    "currency": "eur",
    "payment_intent": SUCCEEDED_PAYMENT_INTENT["id"],
    "refunded": False,
    "status": "succeeded",
}


class StripeAuthorizer(ChargeOnlyProvider):
    """Records the payment authorized as the PaymentIntent ``INTENT`` under the name
    ``stripe``, as the Stripe adapter would have (stripe-mock answers one state only)."""

    @property
    def name(self) -> str:
        return "stripe"

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        outcome = ChargeOutcome(ChargeStatus.AUTHORIZED, INTENT["id"])
        self.outcomes[request.attempt_key] = outcome
        return outcome


@pytest.fixture(scope="module")
def refunded_by_hand_mock() -> Iterator[str]:
    resources = {"payment_intent": CAPTURED_BY_HAND, "charge": REFUNDED_CHARGE}
    with run_stripe_mock({"resources": resources}) as url:
        yield url


@contextlib.asynccontextmanager
async def stripe_at(url: str) -> AsyncIterator[StripeProvider]:
    provider = StripeProvider(TEST_API_KEY, api_base=url)
    await provider.start()
    try:
        yield provider
    finally:
        await provider.stop()


async def test_a_stripe_charge_read_reports_its_amount_refunded(refunded_by_hand_mock):
    async with stripe_at(refunded_by_hand_mock) as stripe_provider:
        known = await stripe_provider.charge_by_reference(INTENT["id"])
    assert known is not None
    assert (known.status, known.captured, known.refunded) == (
        ChargeStatus.SUCCEEDED,
        Money(6000, "EUR"),
        Money(1500, "EUR"),
    )


async def test_a_stripe_cancel_refused_as_captured_records_what_stripe_refunded(
    engine, store, refunded_by_hand_mock
):
    payment = await authorize(store, StripeAuthorizer())
    refusal = unexpected_state_error("cancel", CAPTURED_BY_HAND)
    front = stripe_front(refunded_by_hand_mock, {"/cancel": refusal})
    async with front as url, stripe_at(url) as stripe_provider:
        handler = CancelCommandHandler(
            store=CancelStore(engine, store.writes),
            providers=Providers.of(stripe_provider),
            events=EVENTS,
            metrics=Metrics(),
        )
        assert await handler.handle(cancel_of(payment)) is Outcome.REFUSED

    await assert_recorded_refunded(
        engine,
        store,
        payment,
        captured=Money(6000, "EUR"),
        refunded=Money(1500, "EUR"),
        error=ErrorCode.PAYMENT_ALREADY_CAPTURED,
    )
