"""One unreadable refund, capture or cancel does not stop its reconciliation pass, on SQLite
and PostgreSQL.

The attack: the provider's answer about one open refund (or one capture or void left in
flight) cannot be read (an adapter bug on a malformed answer: an exception that is not a
ProviderError). Before, the exception left the reconciler's ``run_once`` at that item, on
every pass: the refunds, captures or voids behind it in the page were never settled while
it stayed open (their money reserved, their orders blocked).

What must hold (consumer.pass_guard): the item that fails is counted ``failed``, logged,
and left open with its claim given back for a later pass; the others are settled.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from consumer.cancel_handler import CancelCommandHandler
from consumer.cancel_reconciler import CancelReconciler
from consumer.capture_handler import CaptureCommandHandler
from consumer.capture_reconciler import CaptureReconciler
from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.refund_events import RefundEvents
from consumer.refund_handler import RefundCommandHandler
from consumer.refund_reconciler import RefundReconciler
from domain.cancels import CancelPayment
from domain.captures import CapturePayment
from domain.refunds import RefundPayment, RefundStatus
from domain.retry import RetryPolicy
from domain.status import PaymentStatus
from persistence.cancel_store import CancelStore
from persistence.capture_store import CaptureStore
from persistence.payment_store import PaymentStore
from persistence.refund_store import RefundStore
from providers.port import ChargeOutcome, ChargeStatus
from providers.registry import Providers
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.builders import create_payment, unique
from tests.support.clock import Clock
from tests.support.faulty_acquirer import Acquirer, one_call_handler

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()
EVENTS = PaymentEvents(MESSAGES, "payments.results")
ONCE = RetryPolicy(max_attempts=1)


async def test_one_unreadable_refund_does_not_stop_the_others(engine):
    clock = Clock()
    store = PaymentStore(engine, clock)
    acquirer = Acquirer()
    metrics = Metrics()
    payments = one_call_handler(store, acquirer, clock, metrics)
    refund_store = RefundStore(engine, store.writes, clock)
    refunds = RefundCommandHandler(
        store=refund_store,
        providers=Providers.of(acquirer),
        events=RefundEvents(MESSAGES, "payments.results"),
        metrics=metrics,
        retry_policy=ONCE,
        clock=clock,
    )
    ids = []
    for _ in range(2):
        payment = create_payment()
        assert await payments.handle(payment) is Outcome.SUCCEEDED
        command = RefundPayment.create(
            idempotency_key=unique("refund"),
            payment_request_id=payment.payment_request_id,
            order_id=payment.order_id,
            amount=None,
            reason="requested_by_customer",
            requested_at=clock.now,
        )
        acquirer.timeout_once.add(command.refund_id)
        assert await refunds.handle(command) is Outcome.PENDING
        ids.append(command.refund_id)
        clock.now += timedelta(seconds=1)
    unreadable, settles = ids  # the first heads the reconciler's page
    acquirer.unreadable.add(unreadable)

    clock.now += timedelta(seconds=1)
    reconciler = RefundReconciler(
        store=refund_store, handler=refunds, metrics=metrics, min_age=timedelta(0), clock=clock
    )
    assert await reconciler.run_once() == 2

    settled = await refund_store.get(settles)
    assert settled is not None
    assert settled.status is RefundStatus.SUCCEEDED
    assert metrics.refunds_reconciled.labels("failed")._value.get() == 1
    left = await refund_store.get(unreadable)
    assert left is not None
    assert left.status is not RefundStatus.SUCCEEDED  # still open: asked again next pass
    assert await refund_store.claim(unreadable) is not None  # its claim was given back


@pytest.mark.parametrize("follow_up", ["capture", "cancel"])
async def test_one_unreadable_capture_or_cancel_does_not_stop_the_others(engine, follow_up):
    clock = Clock()
    store = PaymentStore(engine, clock)
    acquirer = Acquirer()
    metrics = Metrics()
    payments = one_call_handler(store, acquirer, clock, metrics)
    handler: CaptureCommandHandler | CancelCommandHandler
    reconciler: CaptureReconciler | CancelReconciler
    follow_ups: CaptureStore | CancelStore
    command_of: Callable[..., Any]  # the follow-up's command, built from the payment
    if follow_up == "capture":
        follow_ups = captures = CaptureStore(engine, store.writes, clock)
        handler = CaptureCommandHandler(
            store=captures,
            providers=Providers.of(acquirer),
            events=EVENTS,
            metrics=metrics,
            retry_policy=ONCE,
            clock=clock,
        )
        reconciler = CaptureReconciler(
            store=captures, handler=handler, metrics=metrics, min_age=timedelta(0), clock=clock
        )
        command_of = CapturePayment.create
        done = PaymentStatus.SUCCEEDED
    else:
        follow_ups = cancels = CancelStore(engine, store.writes, clock)
        handler = CancelCommandHandler(
            store=cancels,
            providers=Providers.of(acquirer),
            events=EVENTS,
            metrics=metrics,
            retry_policy=ONCE,
            clock=clock,
        )
        reconciler = CancelReconciler(
            store=cancels, handler=handler, metrics=metrics, min_age=timedelta(0), clock=clock
        )
        command_of = CancelPayment.create
        done = PaymentStatus.CANCELED
    ids = []
    for _ in range(2):
        payment = dataclasses.replace(create_payment(), capture=False)
        key = f"{payment.payment_request_id}-a1"
        acquirer.charges[key] = ChargeOutcome(ChargeStatus.AUTHORIZED, f"ch_{key}")
        assert await payments.handle(payment) is Outcome.AUTHORIZED
        # The capture (or void) times out: the payment stays in flight.
        acquirer.timeout_once.add(payment.payment_request_id)
        command: Any = command_of(
            payment_request_id=payment.payment_request_id,
            order_id=payment.order_id,
            requested_at=datetime.now(UTC),
        )
        assert await handler.handle(command) is Outcome.PENDING
        ids.append(payment.payment_request_id)
        clock.now += timedelta(seconds=1)
    unreadable, settles = ids  # the first heads the reconciler's page
    acquirer.unreadable.add(f"ch_{unreadable}-a1")

    clock.now += timedelta(seconds=1)
    assert await reconciler.run_once() == 2

    settled = await store.get_payment(settles)
    assert settled is not None
    assert settled.status is done
    assert metrics.follow_ups_reconciled.labels(follow_up, "failed")._value.get() == 1
    left = await store.get_payment(unreadable)
    assert left is not None
    assert left.status is handler.IN_FLIGHT  # asked again next pass
    assert await follow_ups.claim(unreadable) is not None  # its claim was given back
