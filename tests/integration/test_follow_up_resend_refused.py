"""A capture or void re-sent while its first send is in doubt, the re-send refused.

The interleaving, step by step (no sleeps, no timing): the first capture (or void) is sent
and its answer is lost (a timeout: the payment stays ``capturing``); the reconciler reads
the charge (still held) and sends the call again under the same key; the provider refuses
that re-send (the sandbox's refusal, Stripe's ``amount_too_large`` or a rejected request,
each through its adapter's own error translation); and only then does the first send reach
the provider and capture (or void). The store must never say ``authorized`` while the
provider holds a capture or a void: a refused re-send proves nothing about the first send,
so the payment stays in flight until a read of the charge says what the first send did.

Through the real handlers, stores and reconcilers, on SQLite and PostgreSQL (the ``engine``
fixture), against the sandbox acquirer in process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import stripe
from sqlalchemy import select

from consumer.cancel_handler import CancelCommandHandler
from consumer.cancel_reconciler import CancelReconciler
from consumer.capture_handler import CaptureCommandHandler
from consumer.capture_reconciler import CaptureReconciler
from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from domain.cancels import CancelPayment
from domain.captures import CapturePayment
from domain.errors import ErrorCode, PaygateError
from domain.events import PaymentResult, result_event_id
from domain.money import Money, money_from_decimal
from domain.payments import CreatePayment
from domain.status import PaymentStatus
from persistence.cancel_store import CancelStore
from persistence.capture_store import CaptureStore
from persistence.tables import outbox
from providers.errors import ProviderError, ProviderTimeoutError
from providers.port import CancelRequest, CaptureRequest, ChargeOutcome, ChargeStatus
from providers.registry import Providers
from providers.routing import Router
from providers.sandbox.inprocess import InProcessSandboxProvider
from providers.stripe.transformers import error_from_stripe
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.builders import SUCCESS_CARD, create_payment

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()
EVENTS = PaymentEvents(MESSAGES, "payments.results")
AUTHORIZED = Money(10_000, "EUR")  # 100.00

Refusal = Callable[[], ProviderError | PaygateError]


def sandbox_refusal(code: ErrorCode) -> Refusal:
    """What the in-process sandbox adapter raises for an acquirer's 4xx refusal."""
    return lambda: PaygateError(code, "refused by the acquirer")


def stripe_refusal(code: str) -> Refusal:
    """What the Stripe adapter raises for Stripe's 400 with ``code``: its own translation."""

    def refusal() -> ProviderError | PaygateError:
        exc = stripe.InvalidRequestError(
            f"refused ({code})", param=None, code=code, http_status=400
        )
        return error_from_stripe(exc)

    return refusal


# Refusals a re-send can meet while the charge is still held, one per provider's wording.
CAPTURE_REFUSALS = {
    "sandbox-not-capturable": sandbox_refusal(ErrorCode.PAYMENT_NOT_CAPTURABLE),
    "stripe-amount-too-large": stripe_refusal("amount_too_large"),
    "stripe-charge-already-captured": stripe_refusal("charge_already_captured"),
}
CANCEL_REFUSALS = {
    "sandbox-not-cancelable": sandbox_refusal(ErrorCode.PAYMENT_NOT_CANCELABLE),
    "stripe-unexpected-state": stripe_refusal("payment_intent_unexpected_state"),
}


class FirstSendLandsLate(InProcessSandboxProvider):
    """The sandbox, but the first capture and the first void are held in the network: their
    caller times out, and they reach the acquirer only when the test calls :meth:`land`.
    Every later send of them is refused with ``refusal`` (it changes nothing)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__()
        self._refusal = refusal
        self._held: list[CaptureRequest | CancelRequest] = []
        self.refused = 0

    async def capture(self, request: CaptureRequest) -> ChargeOutcome:
        return await self._first_held(request)

    async def cancel(self, request: CancelRequest) -> ChargeOutcome:
        return await self._first_held(request)

    async def _first_held(self, request: CaptureRequest | CancelRequest) -> ChargeOutcome:
        if not self._held:
            self._held.append(request)
            raise ProviderTimeoutError(self.name, "no answer in time")
        self.refused += 1
        raise self._refusal()

    async def land(self) -> ChargeOutcome:
        """The first send reaches the acquirer now, as it was sent."""
        (request,) = self._held
        if isinstance(request, CaptureRequest):
            return await InProcessSandboxProvider.capture(self, request)
        return await InProcessSandboxProvider.cancel(self, request)

    async def holds(self, reference: str) -> ChargeOutcome:
        known = await self.charge_by_reference(reference)
        assert known is not None
        return known


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


def a_moment_later() -> datetime:
    # The write-ahead move is "older" than the pass, which takes it at once (min_age 0).
    return datetime.now(UTC) + timedelta(seconds=1)


async def assert_not_authorized_against(store, provider: FirstSendLandsLate, pid: str) -> None:
    """The invariant at every quiet point: never ``authorized`` while the provider holds the
    charge captured or released."""
    view = await store.get_payment(pid)
    held = await provider.holds(view.provider_reference or "")
    if held.status is not ChargeStatus.AUTHORIZED:
        assert view.status is not PaymentStatus.AUTHORIZED, (
            f"stored authorized while the provider holds the charge {held.status.value}"
        )


async def payment_events(engine, pid: str) -> list[PaymentResult]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(outbox.c.payload).order_by(outbox.c.id))).all()
    decoded = [MESSAGES.decode_any_result(row.payload) for row in rows]
    return [e for e in decoded if isinstance(e, PaymentResult) and e.payment_request_id == pid]


@pytest.mark.parametrize("refusal", list(CAPTURE_REFUSALS.values()), ids=list(CAPTURE_REFUSALS))
@pytest.mark.parametrize("amount", [None, Decimal("40.25")], ids=["all", "partial"])
async def test_a_refused_capture_resend_waits_for_the_first_send_it_cannot_rule_out(
    engine, store, refusal, amount
):
    provider = FirstSendLandsLate(refusal)
    async with provider:
        payment = await authorize(store, provider)
        pid = payment.payment_request_id
        captures = CaptureStore(engine, store.writes)
        handler = CaptureCommandHandler(
            store=captures, providers=Providers.of(provider), events=EVENTS, metrics=Metrics()
        )
        reconciler = CaptureReconciler(
            store=captures,
            handler=handler,
            metrics=Metrics(),
            min_age=timedelta(0),
            clock=a_moment_later,
        )
        command = CapturePayment.create(
            payment_request_id=pid,
            order_id=payment.order_id,
            requested_at=datetime.now(UTC),
            amount=amount,
        )

        # 1. The first capture is sent; its answer is lost.
        assert await handler.handle(command) is Outcome.PENDING
        await assert_not_authorized_against(store, provider, pid)
        # 2. The reconciler reads the charge (held), sends again, and is refused.
        assert await reconciler.run_once() == 1
        assert provider.refused == 1
        assert (await store.get_payment(pid)).status is PaymentStatus.CAPTURING
        await assert_not_authorized_against(store, provider, pid)
        # 3. The first send reaches the provider: it captures.
        landed = await provider.land()
        assert landed.status is ChargeStatus.SUCCEEDED
        await assert_not_authorized_against(store, provider, pid)
        # 4. The next pass reads what the first send did and records it.
        assert await reconciler.run_once() == 1
        await assert_not_authorized_against(store, provider, pid)

    taken = AUTHORIZED if amount is None else money_from_decimal(amount, "EUR")
    view = await store.get_payment(pid)
    assert (view.status, view.captured_amount, view.error) == (
        PaymentStatus.SUCCEEDED,
        taken,
        None,
    )
    assert view.refundable_minor == taken.minor_units
    events = await payment_events(engine, pid)
    # Nothing ever told the world the capture was not made.
    assert [e.status for e in events] == [PaymentStatus.AUTHORIZED, PaymentStatus.SUCCEEDED]
    assert events[-1].event_id == result_event_id(pid, PaymentStatus.SUCCEEDED)
    assert events[-1].captured_amount == taken


@pytest.mark.parametrize("refusal", list(CANCEL_REFUSALS.values()), ids=list(CANCEL_REFUSALS))
async def test_a_refused_cancel_resend_waits_for_the_first_send_it_cannot_rule_out(
    engine, store, refusal
):
    provider = FirstSendLandsLate(refusal)
    async with provider:
        payment = await authorize(store, provider)
        pid = payment.payment_request_id
        cancels = CancelStore(engine, store.writes)
        handler = CancelCommandHandler(
            store=cancels, providers=Providers.of(provider), events=EVENTS, metrics=Metrics()
        )
        reconciler = CancelReconciler(
            store=cancels,
            handler=handler,
            metrics=Metrics(),
            min_age=timedelta(0),
            clock=a_moment_later,
        )
        command = CancelPayment.create(
            payment_request_id=pid, order_id=payment.order_id, requested_at=datetime.now(UTC)
        )

        assert await handler.handle(command) is Outcome.PENDING
        assert await reconciler.run_once() == 1
        assert provider.refused == 1
        assert (await store.get_payment(pid)).status is PaymentStatus.CANCELING
        assert (await provider.land()).status is ChargeStatus.CANCELED
        await assert_not_authorized_against(store, provider, pid)
        assert await reconciler.run_once() == 1

    view = await store.get_payment(pid)
    assert (view.status, view.error) == (PaymentStatus.CANCELED, None)
    events = await payment_events(engine, pid)
    assert [e.status for e in events] == [PaymentStatus.AUTHORIZED, PaymentStatus.CANCELED]


async def test_a_first_send_refused_outright_still_goes_back_to_authorized(engine, store):
    """No earlier send in doubt: the refusal and the read (held) are the last word, and the
    payment may be captured again."""

    class RefusesCaptures(InProcessSandboxProvider):
        async def capture(self, request: CaptureRequest) -> ChargeOutcome:
            raise stripe_refusal("amount_too_large")()

    async with RefusesCaptures() as provider:
        payment = await authorize(store, provider)
        handler = CaptureCommandHandler(
            store=CaptureStore(engine, store.writes),
            providers=Providers.of(provider),
            events=EVENTS,
            metrics=Metrics(),
        )
        command = CapturePayment.create(
            payment_request_id=payment.payment_request_id,
            order_id=payment.order_id,
            requested_at=datetime.now(UTC),
        )
        assert await handler.handle(command) is Outcome.AUTHORIZED

    view = await store.get_payment(payment.payment_request_id)
    assert view.error is not None
    assert (view.status, view.error.code) == (PaymentStatus.AUTHORIZED, ErrorCode.INVALID_AMOUNT)
