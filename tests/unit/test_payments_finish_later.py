"""Payments that finish later: the handler and the reconciler against the fake store and a
scripted provider.

A charge answered ``requires_action`` is recorded with its next action, its attempt kept
open and no claim held; a redelivery tells the sender again and charges nothing; the
reconciler's query finishes it (succeeded, failed) or, once the action expired, closes it at
the provider and records what that says (expired, or the payment the payer made just in
time). The same on real databases: tests/integration/test_payments_finish_later_store.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from consumer.payment_reconciler import PaymentReconciler
from domain.errors import ErrorCode
from domain.events import result_event_id
from domain.next_action import NextActionType
from domain.order_protection import refusal_for_new_payment
from domain.retry import RetryPolicy
from domain.status import PaymentStatus
from persistence.attempts import ATTEMPT_DECLINED, ATTEMPT_REQUIRES_ACTION, ATTEMPT_SUCCEEDED
from providers.errors import ProviderTimeoutError, ProviderUnavailableError
from providers.port import ChargeOutcome, ChargeStatus
from providers.registry import Providers
from providers.routing import Router
from schemas.payments import PaymentMessages
from tests.support.builders import create_payment
from tests.support.fake_stores import FakePaymentStore
from tests.support.scripted_provider import charged, declined, expired, requires_action

pytestmark = pytest.mark.unit

MESSAGES = PaymentMessages.bundled()
EVENTS = PaymentEvents(MESSAGES, "payments.results")
MIN_AGE = timedelta(seconds=30)
TTL = timedelta(minutes=15)


@pytest.fixture
def store(db):
    return FakePaymentStore(db)


@pytest.fixture
def handler(store, provider, metrics, clock):
    return PaymentCommandHandler(
        store=store,
        providers=Providers.of(provider),
        router=Router({"*": [provider.name]}),
        events=EVENTS,
        account_key=b"unit-account-key",
        metrics=metrics,
        retry_policy=RetryPolicy(max_attempts=2, base_delay_s=0.001, max_delay_s=0.001),
        clock=clock,
    )


@pytest.fixture
def reconciler(store, handler, metrics, clock):
    return PaymentReconciler(
        store=store, handler=handler, metrics=metrics, min_age=MIN_AGE, clock=clock
    )


def events(store):
    return [MESSAGES.decode_result(message.payload) for message in store.outbox]


async def waiting_payment(handler, store, provider, clock):
    """A payment whose charge was answered requires_action; its command."""
    command = create_payment()
    provider.script("charge", requires_action("ch_3ds", expires_at=clock.now + TTL))
    assert await handler.handle(command) is Outcome.REQUIRES_ACTION
    provider.calls.clear()
    clock.now += MIN_AGE * 2  # old enough for the reconciler
    return command


async def test_a_payment_needing_action_is_stored_with_it_open_and_unclaimed(
    handler, store, provider, clock
):
    command = await waiting_payment(handler, store, provider, clock)
    row = store.row(command.payment_request_id)
    assert row.view.status is PaymentStatus.REQUIRES_ACTION
    assert row.view.provider_reference == "ch_3ds"
    action = row.view.next_action
    assert action is not None
    assert action.type is NextActionType.REDIRECT_URL
    assert action.url == "https://acs.example/3ds/ch_1"
    # Nobody holds it: the payer acts, then a notification or the reconciler finishes it.
    assert row.claim.token is None
    (attempt,) = row.attempts
    assert (attempt.status, attempt.finished_at) == (ATTEMPT_REQUIRES_ACTION, None)
    # The attempt holds no reference: a reference on an attempt marks a charge made.
    assert attempt.provider_reference is None
    (event,) = events(store)
    assert event.status is PaymentStatus.REQUIRES_ACTION
    assert event.next_action is not None
    assert (event.next_action.type, event.next_action.url) == (action.type, action.url)
    # Avro keeps milliseconds.
    assert abs(event.next_action.expires_at - action.expires_at) < timedelta(milliseconds=1)
    assert not event.payment_result


async def test_a_redelivery_tells_again_and_charges_nothing(handler, store, provider, clock):
    command = await waiting_payment(handler, store, provider, clock)
    provider.script("charge_status", requires_action("ch_3ds", expires_at=clock.now + TTL))

    assert await handler.handle(command) is Outcome.REPLAYED

    assert provider.called("charge") == []
    assert store.row(command.payment_request_id).claim.token is None
    first, again = events(store)
    assert (
        again.event_id
        == first.event_id
        == result_event_id(command.payment_request_id, PaymentStatus.REQUIRES_ACTION)
    )


@pytest.mark.parametrize(
    ("answer", "status", "attempt_status"),
    [
        (charged("ch_3ds"), PaymentStatus.SUCCEEDED, ATTEMPT_SUCCEEDED),
        (declined("ch_3ds"), PaymentStatus.FAILED, ATTEMPT_DECLINED),
    ],
)
async def test_the_reconciler_finishes_it_as_the_provider_says(
    handler, reconciler, store, provider, clock, answer, status, attempt_status
):
    command = await waiting_payment(handler, store, provider, clock)
    provider.script("charge_status", answer)

    report = await reconciler.run_once()

    assert (report.checked, report.resolved) == (1, 1)
    row = store.row(command.payment_request_id)
    assert (row.view.status, row.view.next_action, row.claim.token) == (status, None, None)
    (attempt,) = row.attempts
    assert attempt.status == attempt_status
    assert attempt.finished_at is not None
    assert [e.status for e in events(store)] == [PaymentStatus.REQUIRES_ACTION, status]
    assert events(store)[-1].next_action is None


async def test_while_the_payer_may_still_act_the_reconciler_changes_nothing(
    handler, reconciler, store, provider, clock
):
    command = await waiting_payment(handler, store, provider, clock)
    provider.script("charge_status", requires_action("ch_3ds", expires_at=clock.now + TTL))

    report = await reconciler.run_once()

    assert (report.checked, report.still_pending) == (1, 1)
    assert provider.called("close_charge") == []
    row = store.row(command.payment_request_id)
    assert (row.view.status, row.claim.token) == (PaymentStatus.REQUIRES_ACTION, None)
    assert len(events(store)) == 1


async def test_once_expired_the_reconciler_closes_it_and_records_expired(
    handler, reconciler, store, provider, clock
):
    command = await waiting_payment(handler, store, provider, clock)
    clock.now += TTL
    provider.script("charge_status", requires_action("ch_3ds", expires_at=clock.now - MIN_AGE))
    provider.script("close_charge", expired("ch_3ds"))

    await reconciler.run_once()

    assert provider.called("close_charge") == [f"{command.payment_request_id}-a1"]
    row = store.row(command.payment_request_id)
    assert row.view.status is PaymentStatus.EXPIRED
    assert row.view.error is not None
    assert row.view.error.code is ErrorCode.PAYMENT_EXPIRED
    assert row.attempts[0].finished_at is not None
    last = events(store)[-1]
    assert (last.status, last.error.code if last.error else None) == (
        PaymentStatus.EXPIRED,
        ErrorCode.PAYMENT_EXPIRED,
    )
    # An expired order may be paid again, by a new attempt only.
    refusal = refusal_for_new_payment([PaymentStatus.EXPIRED], new_attempt=False)
    assert refusal is not None
    assert refusal.code is ErrorCode.NEW_ATTEMPT_REQUIRED
    assert refusal_for_new_payment([PaymentStatus.EXPIRED], new_attempt=True) is None


async def test_a_payer_who_paid_as_it_was_closed_keeps_the_payment(
    handler, reconciler, store, provider, clock
):
    command = await waiting_payment(handler, store, provider, clock)
    clock.now += TTL
    provider.script("charge_status", requires_action("ch_3ds", expires_at=clock.now - MIN_AGE))
    provider.script("close_charge", charged("ch_3ds"))

    await reconciler.run_once()

    assert store.row(command.payment_request_id).view.status is PaymentStatus.SUCCEEDED


@pytest.mark.parametrize(
    "close_answer",
    [ProviderUnavailableError("scripted", "down"), requires_action("ch_3ds")],
)
async def test_a_close_that_does_not_land_leaves_it_for_the_next_pass(
    handler, reconciler, store, provider, clock, close_answer
):
    command = await waiting_payment(handler, store, provider, clock)
    clock.now += TTL
    provider.script("charge_status", requires_action("ch_3ds", expires_at=clock.now - MIN_AGE))
    provider.script("close_charge", close_answer)

    report = await reconciler.run_once()

    assert report.still_pending == 1
    row = store.row(command.payment_request_id)
    assert (row.view.status, row.claim.token) == (PaymentStatus.REQUIRES_ACTION, None)


async def test_a_timed_out_charge_the_provider_holds_for_the_payer_becomes_requires_action(
    handler, reconciler, store, provider, clock
):
    command = create_payment()
    provider.script("charge", ProviderTimeoutError("scripted", "no answer in time"))
    assert await handler.handle(command) is Outcome.PENDING
    clock.now += MIN_AGE * 2
    provider.script("charge_status", requires_action("ch_3ds", expires_at=clock.now + TTL))

    await reconciler.run_once()

    row = store.row(command.payment_request_id)
    assert row.view.status is PaymentStatus.REQUIRES_ACTION
    assert row.view.next_action is not None
    assert provider.called("charge") == [f"{command.payment_request_id}-a1"]  # never re-sent


def test_an_order_waiting_for_its_payer_is_not_charged_by_another_payment():
    refusal = refusal_for_new_payment([PaymentStatus.REQUIRES_ACTION], new_attempt=True)
    assert refusal is not None
    assert refusal.code is ErrorCode.ORDER_ALREADY_PAID


async def test_a_status_answer_without_the_action_uses_the_stored_one(
    handler, reconciler, store, provider, clock
):
    # Alipay's query says WAIT_BUYER_PAY but not the QR code: the stored action decides.
    command = await waiting_payment(handler, store, provider, clock)
    provider.script("charge_status", ChargeOutcome(ChargeStatus.REQUIRES_ACTION, "ch_3ds"))

    assert (await reconciler.run_once()).still_pending == 1

    clock.now += TTL
    provider.script("charge_status", ChargeOutcome(ChargeStatus.REQUIRES_ACTION, "ch_3ds"))
    provider.script("close_charge", expired("ch_3ds"))
    await reconciler.run_once()
    assert store.row(command.payment_request_id).view.status is PaymentStatus.EXPIRED


async def test_a_trade_the_payer_never_opened_is_left_alone_then_closed_once_expired(
    handler, reconciler, store, provider, clock
):
    # A redirect whose page nobody opened: the provider has no trade under the key yet.
    command = await waiting_payment(handler, store, provider, clock)
    provider.script("charge_status", None)

    assert (await reconciler.run_once()).still_pending == 1
    assert provider.called("charge") == []  # not re-sent: that would only make another action

    clock.now += TTL
    provider.script("charge_status", None)
    provider.script("close_charge", expired(None))
    await reconciler.run_once()
    assert store.row(command.payment_request_id).view.status is PaymentStatus.EXPIRED


async def test_a_timed_out_charge_whose_action_already_expired_is_closed_and_expires(
    handler, reconciler, store, provider, clock
):
    command = create_payment()
    provider.script("charge", ProviderTimeoutError("scripted", "no answer in time"))
    assert await handler.handle(command) is Outcome.PENDING
    clock.now += TTL
    provider.script("charge_status", requires_action("ch_3ds", expires_at=clock.now - MIN_AGE))
    provider.script("close_charge", expired("ch_3ds"))

    await reconciler.run_once()

    assert store.row(command.payment_request_id).view.status is PaymentStatus.EXPIRED
