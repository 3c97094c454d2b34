"""Client scope at the store, on SQLite and PostgreSQL: a refund, capture or cancel must name its
payment's client scope, else it is refused ``not_found`` as if the payment did not exist,
with a result event, and nothing changes."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from consumer.refund_events import RefundEvents
from domain.cancels import CancelPayment
from domain.captures import CapturePayment
from domain.error_info import ErrorInfo
from domain.errors import ErrorCode, PaygateError
from domain.events import PaymentResult, RefundResult
from domain.money import Money
from domain.payments import CreatePayment
from domain.refunds import RefundPayment, RefundStatus
from domain.status import PaymentStatus
from persistence.cancel_store import CancelRefused, CancelStore
from persistence.capture_store import CaptureStore
from persistence.follow_up import FollowUpRefused, FollowUpStarted
from persistence.payment_store import PaymentStore
from persistence.refund_store import RefundExisting, RefundRefused, RefundStarted, RefundStore
from persistence.tables import outbox, refunds
from providers.registry import Providers
from providers.routing import Router
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.builders import create_payment, unique

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
REFUND_EVENTS = RefundEvents(MESSAGES, "payments.results")
PAYMENT_EVENTS = PaymentEvents(MESSAGES, "payments.results")

# Every scope against every other: two API clients and the upstream services (None).
SCOPES = ["alice", "bob", None]
MISMATCHES = [(a, b) for a in SCOPES for b in SCOPES if a != b]


def _refund_event(view, standing):
    return REFUND_EVENTS.at(NOW)(view, standing)


def _capture_refusal(payment, error: PaygateError):
    return PAYMENT_EVENTS.of_payment(
        payment, error=ErrorInfo.from_error(error), occurred_at=NOW, event_id=unique("evt")
    )


@pytest.fixture
def payment_handler(store: PaymentStore, provider):
    return PaymentCommandHandler(
        store=store,
        providers=Providers.of(provider),
        router=Router.catch_all(provider.name),
        events=PAYMENT_EVENTS,
        account_key=b"k",
        metrics=Metrics(),
    )


async def _paid(handler, client_id: str | None, *, capture: bool = True) -> CreatePayment:
    command = dataclasses.replace(create_payment(), client_id=client_id, capture=capture)
    await handler.handle(command)
    return command


def _refund(payment: CreatePayment, client_id: str | None, key: str = "r-1") -> RefundPayment:
    return RefundPayment.create(
        idempotency_key=key,
        payment_request_id=payment.payment_request_id,
        order_id=payment.order_id,
        amount=Money(1_000, payment.amount.currency),
        reason=None,
        requested_at=NOW,
        client_id=client_id,
    )


def _capture(payment: CreatePayment, client_id: str | None) -> CapturePayment:
    return CapturePayment.create(
        payment_request_id=payment.payment_request_id,
        order_id=payment.order_id,
        requested_at=NOW,
        client_id=client_id,
    )


def _cancel(payment: CreatePayment, client_id: str | None) -> CancelPayment:
    return CancelPayment.create(
        payment_request_id=payment.payment_request_id,
        order_id=payment.order_id,
        requested_at=NOW,
        client_id=client_id,
    )


async def _results(engine) -> list[PaymentResult | RefundResult]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(outbox.c.payload).order_by(outbox.c.id))).all()
    return [MESSAGES.decode_any_result(r.payload) for r in rows]


async def _refund_rows(engine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(refunds))).scalar_one())


@pytest.mark.parametrize(("owner", "asker"), MISMATCHES)
async def test_a_refund_from_another_scope_is_refused_like_an_unknown_payment(
    payment_handler, store, engine, owner, asker
):
    refund_store = RefundStore(engine, store.writes)
    payment = await _paid(payment_handler, owner)
    unknown = dataclasses.replace(
        _refund(payment, asker), payment_request_id="pay_" + "0" * 32, idempotency_key="r-0"
    )
    as_unknown = await refund_store.begin(unknown, _refund_event)
    before = await _results(engine)

    begun = await refund_store.begin(_refund(payment, asker), _refund_event)

    assert isinstance(begun, RefundRefused)
    assert isinstance(as_unknown, RefundRefused)
    assert begun.refund is None  # nothing stored under the other client's payment
    assert (begun.error.code, begun.error.message, begun.error.param) == (
        as_unknown.error.code,
        as_unknown.error.message,
        as_unknown.error.param,
    )
    assert begun.error.code is ErrorCode.NOT_FOUND
    (event,) = (await _results(engine))[len(before) :]
    assert isinstance(event, RefundResult)
    assert event.status is RefundStatus.FAILED
    assert event.error is not None
    assert event.error.code is ErrorCode.NOT_FOUND
    # The same event an unknown payment's refund gets: no status or totals of the payment.
    assert (event.payment_status, event.payment_refunded_minor, event.provider) == (
        None,
        None,
        None,
    )
    assert await _refund_rows(engine) == 0
    view = await store.get_payment(payment.payment_request_id)
    assert view is not None
    assert (view.status, view.refund_reserved_minor) == (PaymentStatus.SUCCEEDED, 0)


async def test_a_replayed_refund_key_from_another_scope_does_not_replay_the_refund(
    payment_handler, store, engine
):
    refund_store = RefundStore(engine, store.writes)
    payment = await _paid(payment_handler, "alice")
    assert isinstance(
        await refund_store.begin(_refund(payment, "alice"), _refund_event), RefundStarted
    )

    again = await refund_store.begin(_refund(payment, "bob"), _refund_event)

    assert isinstance(again, RefundRefused)
    assert again.error.code is ErrorCode.NOT_FOUND
    assert isinstance(
        await refund_store.begin(_refund(payment, "alice"), _refund_event), RefundExisting
    )


@pytest.mark.parametrize("scope", SCOPES)
async def test_a_refund_in_its_payments_scope_goes_ahead(payment_handler, store, engine, scope):
    refund_store = RefundStore(engine, store.writes)
    payment = await _paid(payment_handler, scope)
    assert isinstance(
        await refund_store.begin(_refund(payment, scope), _refund_event), RefundStarted
    )


# A capture and a cancel share the begin's scope check (persistence.follow_up).
FOLLOW_UPS = [
    pytest.param(CaptureStore, _capture, id="capture"),
    pytest.param(CancelStore, _cancel, id="cancel"),
]


@pytest.mark.parametrize(("store_class", "follow_up"), FOLLOW_UPS)
@pytest.mark.parametrize(("owner", "asker"), MISMATCHES)
async def test_a_follow_up_from_another_scope_is_refused_not_found_and_changes_nothing(
    payment_handler, store, engine, clock, owner, asker, store_class, follow_up
):
    follow_ups = store_class(engine, store.writes, clock)
    payment = await _paid(payment_handler, owner, capture=False)
    unknown = dataclasses.replace(follow_up(payment, asker), payment_request_id="pay_" + "0" * 32)
    as_unknown = await follow_ups.begin(unknown, _capture_refusal)
    before = await _results(engine)
    begun = await follow_ups.begin(follow_up(payment, asker), _capture_refusal)

    assert isinstance(begun, FollowUpRefused)
    assert isinstance(as_unknown, FollowUpRefused)
    assert (begun.error.code, begun.error.message, begun.error.param) == (
        as_unknown.error.code,
        as_unknown.error.message,
        as_unknown.error.param,
    )
    assert begun.error.code is ErrorCode.NOT_FOUND
    (event,) = (await _results(engine))[len(before) :]
    assert isinstance(event, PaymentResult)
    assert event.payment_request_id == payment.payment_request_id
    assert event.status is PaymentStatus.AUTHORIZED
    assert event.error is not None
    assert event.error.code is ErrorCode.NOT_FOUND
    view = await store.get_payment(payment.payment_request_id)
    assert view is not None
    assert view.status is PaymentStatus.AUTHORIZED

    # The payment's own scope can still capture or cancel it.
    assert isinstance(
        await follow_ups.begin(follow_up(payment, owner), _capture_refusal), FollowUpStarted
    )


@pytest.mark.parametrize(("owner", "asker"), MISMATCHES)
async def test_a_cancel_from_another_scope_is_not_found_before_the_payment_status_is_told(
    payment_handler, store, engine, clock, owner, asker
):
    """A payment that is not cancelable (here succeeded) still answers another scope
    not_found, never payment_not_cancelable: the status must not leak across scopes."""
    cancels = CancelStore(engine, store.writes, clock)
    payment = await _paid(payment_handler, owner)

    begun = await cancels.begin(_cancel(payment, asker), _capture_refusal)

    assert isinstance(begun, CancelRefused)
    assert begun.error.code is ErrorCode.NOT_FOUND
    own = await cancels.begin(_cancel(payment, owner), _capture_refusal)
    assert isinstance(own, CancelRefused)
    assert own.error.code is ErrorCode.PAYMENT_NOT_CANCELABLE
