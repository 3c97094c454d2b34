"""An authorization settled at the provider without paygate, then followed up by paygate.

Someone captures a held payment by hand in the provider's dashboard (all of it, or part),
and then paygate's cancel reaches the provider: the provider refuses the void, the money is
taken. paygate must record what the provider holds (``succeeded``, of the amount the provider
captured), answer the cancel refused ``payment_already_captured``, and say so in a result
event, the webhook and the REST read alike; never put the payment back to ``authorized``.
The reverse: a capture that finds the hold voided by hand records the payment ``canceled``
(``payment_already_canceled``), never ``authorized``.

Through the real handlers and stores (SQLite and PostgreSQL), against the sandbox acquirer
in process and against Stripe through the real SDK (stripe-mock behind a front that refuses
the call as Stripe does: tests/support/stripe_front.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from consumer.authorization_expiry import AuthorizationExpiry
from consumer.cancel_handler import CancelCommandHandler
from consumer.cancel_reconciler import CancelReconciler
from consumer.capture_handler import CaptureCommandHandler
from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from domain.cancels import CancelPayment
from domain.captures import CapturePayment
from domain.errors import ErrorCode
from domain.events import PaymentResult, result_event_id
from domain.money import Money
from domain.payments import CreatePayment
from domain.status import PaymentStatus
from domain.webhook_events import payment_webhook
from http_facade.responses import payment_body
from persistence.cancel_store import CancelStore
from persistence.capture_store import CaptureStore
from persistence.expiry_store import ExpiryStore
from persistence.tables import outbox
from providers.charge_only import ChargeOnlyProvider
from providers.errors import ProviderTimeoutError
from providers.port import CancelRequest, ChargeOutcome, ChargeRequest, ChargeStatus
from providers.registry import Providers
from providers.routing import Router
from providers.sandbox.inprocess import InProcessSandboxProvider
from providers.sandbox.refund_records import SandboxCaptureParams
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


def cancel_handler(engine, store, provider) -> CancelCommandHandler:
    return CancelCommandHandler(
        store=CancelStore(engine, store.writes),
        providers=Providers.of(provider),
        events=EVENTS,
        metrics=Metrics(),
    )


def capture_handler(engine, store, provider) -> CaptureCommandHandler:
    return CaptureCommandHandler(
        store=CaptureStore(engine, store.writes),
        providers=Providers.of(provider),
        events=EVENTS,
        metrics=Metrics(),
    )


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


async def authorize(store, provider, amount: Money = AUTHORIZED) -> CreatePayment:
    handler = PaymentCommandHandler(
        store=store,
        providers=Providers.of(provider),
        router=Router.catch_all(provider.name),
        events=EVENTS,
        account_key=b"k",
        metrics=Metrics(),
    )
    command = dataclasses.replace(
        create_payment(payer_number=SUCCESS_CARD, amount=amount), capture=False
    )
    assert await handler.handle(command) is Outcome.AUTHORIZED
    return command


async def last_event(engine, payment_id: str) -> PaymentResult:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(outbox.c.payload).order_by(outbox.c.id))).all()
    events = [MESSAGES.decode_any_result(row.payload) for row in rows]
    mine = [
        e for e in events if isinstance(e, PaymentResult) and e.payment_request_id == payment_id
    ]
    return mine[-1]


async def assert_recorded_captured(
    engine, store, payment: CreatePayment, captured: Money, refused: ErrorCode
) -> None:
    """The store, the result event, its webhook and the REST read all say: captured, of
    ``captured``, the follow-up refused with ``refused``."""
    pid = payment.payment_request_id
    view = await store.get_payment(pid)
    assert view.error is not None
    assert (view.status, view.captured_amount, view.error.code) == (
        PaymentStatus.SUCCEEDED,
        captured,
        refused,
    )
    assert view.refundable_minor == captured.minor_units
    event = await last_event(engine, pid)
    assert event.error is not None
    assert (event.event_id, event.status, event.captured_amount, event.error.code) == (
        result_event_id(pid, PaymentStatus.SUCCEEDED),
        PaymentStatus.SUCCEEDED,
        captured,
        refused,
    )
    assert event.payment_result is True
    webhook = payment_webhook(event)
    assert webhook is not None
    assert webhook.type == "payment.succeeded"
    data = json.loads(webhook.body)["data"]
    rest = payment_body(view, [])
    assert data["status"] == rest["status"] == "succeeded"
    assert data["capturedAmount"] == rest["capturedAmount"] == str(captured.to_decimal())
    assert data["error"]["code"] == rest["error"]["code"] == refused.value  # type: ignore[index]


async def assert_recorded_released(
    engine, store, payment: CreatePayment, status: PaymentStatus
) -> None:
    pid = payment.payment_request_id
    view = await store.get_payment(pid)
    assert view.error is not None
    assert (view.status, view.error.code) == (status, ErrorCode.PAYMENT_ALREADY_CANCELED)
    assert view.refundable_minor == 0
    event = await last_event(engine, pid)
    assert event.error is not None
    assert (event.event_id, event.status, event.captured_amount, event.error.code) == (
        result_event_id(pid, status),
        status,
        None,
        ErrorCode.PAYMENT_ALREADY_CANCELED,
    )
    webhook = payment_webhook(event)
    assert webhook is not None
    assert webhook.type == f"payment.{status.value}"
    assert payment_body(view, [])["status"] == status.value


# --- the sandbox ---------------------------------------------------------------------------


@pytest.fixture
async def sandbox() -> AsyncIterator[InProcessSandboxProvider]:
    async with InProcessSandboxProvider() as provider:
        yield provider


async def capture_by_hand(sandbox: InProcessSandboxProvider, store, payment, amount: Money):
    """Someone captures the charge at the acquirer, not through paygate."""
    reference = (await store.get_payment(payment.payment_request_id)).provider_reference
    await sandbox.acquirer.capture("dashboard", SandboxCaptureParams(reference, amount))


@pytest.mark.parametrize("by_hand", [AUTHORIZED, Money(4025, "EUR")], ids=["all", "partial"])
async def test_a_cancel_of_a_charge_captured_by_hand_records_it_captured(
    engine, store, sandbox, by_hand
):
    payment = await authorize(store, sandbox)
    await capture_by_hand(sandbox, store, payment, by_hand)

    outcome = await cancel_handler(engine, store, sandbox).handle(cancel_of(payment))

    assert outcome is Outcome.REFUSED
    await assert_recorded_captured(
        engine, store, payment, by_hand, ErrorCode.PAYMENT_ALREADY_CAPTURED
    )
    # A cancel sent again is a replay of the payment as it is: still captured.
    again = await cancel_handler(engine, store, sandbox).handle(cancel_of(payment))
    assert again is Outcome.REFUSED
    assert (await store.get_payment(payment.payment_request_id)).status is PaymentStatus.SUCCEEDED


def expiry_sweep(engine, store, provider) -> AuthorizationExpiry:
    return AuthorizationExpiry(
        store=ExpiryStore(engine, store.writes),
        providers=Providers.of(provider),
        events=EVENTS,
        min_age=timedelta(0),
        clock=lambda: datetime.now(UTC) + timedelta(seconds=1),
    )


async def assert_found_captured(engine, store, payment: CreatePayment, captured: Money) -> None:
    """Nobody's command was refused: the payment is what the provider holds, no error."""
    pid = payment.payment_request_id
    view = await store.get_payment(pid)
    assert (view.status, view.captured_amount, view.error) == (
        PaymentStatus.SUCCEEDED,
        captured,
        None,
    )
    event = await last_event(engine, pid)
    assert (event.event_id, event.status, event.captured_amount, event.error) == (
        result_event_id(pid, PaymentStatus.SUCCEEDED),
        PaymentStatus.SUCCEEDED,
        captured,
        None,
    )
    assert payment_body(view, [])["capturedAmount"] == str(captured.to_decimal())


async def test_the_expiry_sweep_finds_an_authorization_captured_by_hand(engine, store, sandbox):
    """Nobody follows the payment up: left authorized, it would say money is held that was
    taken (and a cancel would be sent for it)."""
    payment = await authorize(store, sandbox)
    await capture_by_hand(sandbox, store, payment, Money(2500, "EUR"))

    assert await expiry_sweep(engine, store, sandbox).run_once() == 1

    await assert_found_captured(engine, store, payment, Money(2500, "EUR"))
    # Found once: the next pass has nothing left to find.
    assert await expiry_sweep(engine, store, sandbox).run_once() == 0


class TimingOutVoids(InProcessSandboxProvider):
    """The sandbox, but a void's answer is lost: the cancel is left in doubt."""

    async def cancel(self, request: CancelRequest) -> ChargeOutcome:
        raise ProviderTimeoutError(self.name, "no answer in time")


async def test_a_cancel_in_doubt_finds_the_charge_captured_by_hand_and_records_it(engine, store):
    """The reconciler's path: the void timed out (``canceling``), the charge was captured by
    hand meanwhile. Reading the charge says captured: recorded so, not voided again."""
    async with TimingOutVoids() as sandbox:
        payment = await authorize(store, sandbox)
        handler = cancel_handler(engine, store, sandbox)
        assert await handler.handle(cancel_of(payment)) is Outcome.PENDING
        await capture_by_hand(sandbox, store, payment, Money(700, "EUR"))

        reconciler = CancelReconciler(
            store=CancelStore(engine, store.writes),
            handler=handler,
            metrics=Metrics(),
            min_age=timedelta(0),
            # A moment later: the void's write-ahead move is "older" than the pass.
            clock=lambda: datetime.now(UTC) + timedelta(seconds=1),
        )
        assert await reconciler.run_once() == 1

        await assert_recorded_captured(
            engine, store, payment, Money(700, "EUR"), ErrorCode.PAYMENT_ALREADY_CAPTURED
        )


async def test_a_capture_of_a_hold_voided_by_hand_records_it_canceled(engine, store, sandbox):
    payment = await authorize(store, sandbox)
    reference = (await store.get_payment(payment.payment_request_id)).provider_reference
    await sandbox.acquirer.cancel(reference or "")  # in the dashboard, not through paygate

    outcome = await capture_handler(engine, store, sandbox).handle(capture_of(payment))

    assert outcome is Outcome.REFUSED
    await assert_recorded_released(engine, store, payment, PaymentStatus.CANCELED)


# --- Stripe, through the SDK ---------------------------------------------------------------

# The PaymentIntent paygate authorized (``capture_method=manual``) of 100.00 EUR.
INTENT: Mapping[str, Any] = {
    **SUCCEEDED_PAYMENT_INTENT,
    "amount": AUTHORIZED.minor_units,
    "capture_method": "manual",
}
# As the Dashboard leaves it after a capture by hand of 60.00 of it.
CAPTURED_BY_HAND: Mapping[str, Any] = {**INTENT, "status": "succeeded", "amount_received": 6000}
# As the Dashboard leaves it after a cancel by hand.
VOIDED_BY_HAND: Mapping[str, Any] = {
    **INTENT,
    "status": "canceled",
    "cancellation_reason": "requested_by_customer",
    "amount_received": 0,
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
def captured_by_hand_mock() -> Iterator[str]:
    with run_stripe_mock({"resources": {"payment_intent": CAPTURED_BY_HAND}}) as url:
        yield url


@pytest.fixture(scope="module")
def voided_by_hand_mock() -> Iterator[str]:
    with run_stripe_mock({"resources": {"payment_intent": VOIDED_BY_HAND}}) as url:
        yield url


@contextlib.asynccontextmanager
async def stripe_at(url: str) -> AsyncIterator[StripeProvider]:
    provider = StripeProvider(TEST_API_KEY, api_base=url)
    await provider.start()
    try:
        yield provider
    finally:
        await provider.stop()


async def test_a_stripe_cancel_refused_as_captured_records_the_amount_stripe_captured(
    engine, store, captured_by_hand_mock
):
    payment = await authorize(store, StripeAuthorizer())
    refusal = unexpected_state_error("cancel", CAPTURED_BY_HAND)
    front = stripe_front(captured_by_hand_mock, {"/cancel": refusal})
    async with front as url, stripe_at(url) as stripe_provider:
        outcome = await cancel_handler(engine, store, stripe_provider).handle(cancel_of(payment))

    assert outcome is Outcome.REFUSED
    await assert_recorded_captured(
        engine, store, payment, Money(6000, "EUR"), ErrorCode.PAYMENT_ALREADY_CAPTURED
    )


async def test_the_expiry_sweep_reads_stripes_amount_received_for_a_capture_by_hand(
    engine, store, captured_by_hand_mock
):
    payment = await authorize(store, StripeAuthorizer())
    async with stripe_at(captured_by_hand_mock) as stripe_provider:
        assert await expiry_sweep(engine, store, stripe_provider).run_once() == 1
    await assert_found_captured(engine, store, payment, Money(6000, "EUR"))


async def test_a_stripe_capture_refused_as_canceled_records_the_payment_canceled(
    engine, store, voided_by_hand_mock
):
    payment = await authorize(store, StripeAuthorizer())
    refusal = unexpected_state_error("capture", VOIDED_BY_HAND)
    front = stripe_front(voided_by_hand_mock, {"/capture": refusal})
    async with front as url, stripe_at(url) as stripe_provider:
        outcome = await capture_handler(engine, store, stripe_provider).handle(capture_of(payment))

    assert outcome is Outcome.REFUSED
    await assert_recorded_released(engine, store, payment, PaymentStatus.CANCELED)
