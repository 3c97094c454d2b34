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
from persistence.refund_store import RefundStore
from providers.port import ChargeOutcome, ChargeStatus
from providers.registry import Providers
from schemas.payments import PaymentMessages
from tests.support.builders import create_payment, unique
from tests.support.faulty_acquirer import Bench

pytestmark = pytest.mark.integration

MESSAGES = PaymentMessages.bundled()

# Per kind: its store, handler, reconciler and events.
KINDS: dict[str, tuple[Any, Any, Any, Any]] = {
    "capture": (
        CaptureStore,
        CaptureCommandHandler,
        CaptureReconciler,
        PaymentEvents(MESSAGES, "payments.results"),
    ),
    "cancel": (
        CancelStore,
        CancelCommandHandler,
        CancelReconciler,
        PaymentEvents(MESSAGES, "payments.results"),
    ),
    "refund": (
        RefundStore,
        RefundCommandHandler,
        RefundReconciler,
        RefundEvents(MESSAGES, "payments.results"),
    ),
}


def _over(bench: Bench, kind: str) -> tuple[Any, Any, Any]:
    """The kind's store, handler (one provider call per command) and reconciler."""
    store_type, handler_type, reconciler_type, events = KINDS[kind]
    store = store_type(bench.engine, bench.store.writes, bench.clock)
    handler = handler_type(
        store=store,
        providers=Providers.of(bench.acquirer),
        events=events,
        metrics=bench.metrics,
        retry_policy=RetryPolicy(max_attempts=1),
        clock=bench.clock,
    )
    reconciler = reconciler_type(
        store=store,
        handler=handler,
        metrics=bench.metrics,
        min_age=timedelta(0),
        clock=bench.clock,
    )
    return store, handler, reconciler


async def test_one_unreadable_refund_does_not_stop_the_others(engine):
    bench = Bench(engine)
    refunds, handler, reconciler = _over(bench, "refund")
    ids = []
    for _ in range(2):
        payment = create_payment()
        assert await bench.payments.handle(payment) is Outcome.SUCCEEDED
        command = RefundPayment.create(
            idempotency_key=unique("refund"),
            payment_request_id=payment.payment_request_id,
            order_id=payment.order_id,
            amount=None,
            reason="requested_by_customer",
            requested_at=bench.clock.now,
        )
        bench.acquirer.timeout_once.add(command.refund_id)
        assert await handler.handle(command) is Outcome.PENDING
        ids.append(command.refund_id)
        bench.clock.now += timedelta(seconds=1)
    unreadable, settles = ids  # the first heads the reconciler's page
    bench.acquirer.unreadable.add(unreadable)

    bench.clock.now += timedelta(seconds=1)
    assert await reconciler.run_once() == 2

    settled = await refunds.get(settles)
    assert settled is not None
    assert settled.status is RefundStatus.SUCCEEDED
    assert bench.metrics.refunds_reconciled.labels("failed")._value.get() == 1
    left = await refunds.get(unreadable)
    assert left is not None
    assert left.status is not RefundStatus.SUCCEEDED  # still open: asked again next pass
    assert await refunds.claim(unreadable) is not None  # its claim was given back


@pytest.mark.parametrize(
    ("follow_up", "command_type", "done"),
    [
        ("capture", CapturePayment, PaymentStatus.SUCCEEDED),
        ("cancel", CancelPayment, PaymentStatus.CANCELED),
    ],
)
async def test_one_unreadable_capture_or_cancel_does_not_stop_the_others(
    engine, follow_up, command_type, done
):
    bench = Bench(engine)
    follow_ups, handler, reconciler = _over(bench, follow_up)
    ids = []
    for _ in range(2):
        payment = dataclasses.replace(create_payment(), capture=False)
        key = f"{payment.payment_request_id}-a1"
        bench.acquirer.charges[key] = ChargeOutcome(ChargeStatus.AUTHORIZED, f"ch_{key}")
        assert await bench.payments.handle(payment) is Outcome.AUTHORIZED
        # The capture (or void) times out: the payment stays in flight.
        bench.acquirer.timeout_once.add(payment.payment_request_id)
        command = command_type.create(
            payment_request_id=payment.payment_request_id,
            order_id=payment.order_id,
            requested_at=datetime.now(UTC),
        )
        assert await handler.handle(command) is Outcome.PENDING
        ids.append(payment.payment_request_id)
        bench.clock.now += timedelta(seconds=1)
    unreadable, settles = ids  # the first heads the reconciler's page
    bench.acquirer.unreadable.add(f"ch_{unreadable}-a1")

    bench.clock.now += timedelta(seconds=1)
    assert await reconciler.run_once() == 2

    settled = await bench.store.get_payment(settles)
    assert settled is not None
    assert settled.status is done
    assert bench.metrics.follow_ups_reconciled.labels(follow_up, "failed")._value.get() == 1
    left = await bench.store.get_payment(unreadable)
    assert left is not None
    assert left.status is handler.IN_FLIGHT  # asked again next pass
    assert await follow_ups.claim(unreadable) is not None  # its claim was given back
