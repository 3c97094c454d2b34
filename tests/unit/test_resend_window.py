"""An in-doubt call is re-sent under its key only while the provider still honours the key.

Past the provider's idempotency window (less domain.resend_window.RESEND_MARGIN) a re-send
of a first call that did land, but does not show yet in the provider's status answer,
would charge or refund twice: the handler then sends nothing, leaves the payment or refund
pending (claim released, attempt open) and tells operators (an error log line, the
``resends_withheld`` metric). The same on real databases, through the reconciler:
tests/integration/test_resend_window.py.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from consumer.refund_events import RefundEvents
from consumer.refund_handler import RefundCommandHandler
from domain.money import Money
from domain.refunds import RefundPayment, RefundStatus
from domain.resend_window import RESEND_MARGIN, may_resend, may_resend_again
from domain.retry import RetryPolicy
from domain.status import PaymentStatus
from persistence.attempts import ATTEMPT_UNKNOWN
from providers.errors import ProviderTimeoutError
from providers.registry import Providers
from providers.routing import Router
from schemas.payments import PaymentMessages
from tests.support.builders import create_payment, unique
from tests.support.fake_stores import FakePaymentStore, FakeRefundStore
from tests.support.scripted_provider import charged, refunded

pytestmark = pytest.mark.unit

ACCOUNT_KEY = b"unit-account-key"
MESSAGES = PaymentMessages.bundled()
FAST = RetryPolicy(max_attempts=3, base_delay_s=0.001, max_delay_s=0.001)
WINDOW = timedelta(hours=24)  # as Stripe's
# The last moment a re-send may go out, and the first it may not.
INSIDE = WINDOW - RESEND_MARGIN - timedelta(seconds=1)
PAST = WINDOW - RESEND_MARGIN


def timeout() -> ProviderTimeoutError:
    return ProviderTimeoutError("scripted", "no answer in time")


def withheld(metrics, operation: str) -> float:
    value = metrics.registry.get_sample_value(
        "paygate_resends_withheld_total", {"provider": "scripted", "operation": operation}
    )
    return value or 0.0


def test_the_rule_counts_from_the_call_and_leaves_a_margin_an_unbounded_key_never_runs_out():
    began = datetime(2026, 12, 1, tzinfo=UTC)
    assert may_resend(began, began + INSIDE, WINDOW)
    assert not may_resend(began, began + PAST, WINDOW)
    assert may_resend(began, began + timedelta(days=3650), None)


def test_only_a_key_kept_for_good_is_bounded_by_its_number_of_resends():
    # Alipay's keys never expire: the count is what ends their re-sends.
    assert may_resend_again(99, 100, None)
    assert not may_resend_again(100, 100, None)
    # Stripe's window bounds its re-sends; a count would withhold, for an operator who can
    # act only after the window, payments a short partial outage left in doubt.
    assert may_resend_again(100, 100, WINDOW)
    assert may_resend_again(10_000, 100, WINDOW)


# -- payments --------------------------------------------------------------------------------------


@pytest.fixture
def payments(db):
    return FakePaymentStore(db)


@pytest.fixture
def payment_handler(payments, provider, metrics, clock):
    provider.idempotency_window = WINDOW
    return PaymentCommandHandler(
        store=payments,
        providers=Providers.of(provider),
        router=Router.catch_all(provider.name),
        events=PaymentEvents(MESSAGES, "payments.results"),
        account_key=ACCOUNT_KEY,
        metrics=metrics,
        retry_policy=FAST,
        abandon_after=timedelta(hours=4),
        clock=clock,
    )


async def timed_out_payment(handler, provider):
    command = create_payment()
    provider.script("charge", timeout())
    assert await handler.handle(command) is Outcome.PENDING
    provider.calls.clear()
    return command


async def test_an_unseen_attempt_past_the_window_is_never_resent_and_stays_pending_for_an_operator(
    payment_handler, payments, provider, metrics, clock, caplog
):
    command = await timed_out_payment(payment_handler, provider)
    clock.now += PAST
    # The first call landed, but the provider's search does not show it yet.
    provider.script("charge_status", None)

    with caplog.at_level(logging.ERROR, logger="paygate.consumer"):
        assert await payment_handler.handle(command) is Outcome.PENDING

    # No charge call at all: the scripted provider would have raised on one.
    assert provider.called("charge") == []
    row = payments.row(command.payment_request_id)
    assert row.view.status is PaymentStatus.PENDING  # not failed on the provider's silence
    (attempt,) = row.attempts
    assert (attempt.status, attempt.finished_at) == (ATTEMPT_UNKNOWN, None)
    assert row.claim.token is None  # given back: a later pass (or an operator) takes it
    assert withheld(metrics, "payment") == 1
    assert [r.payment_request_id for r in caplog.records if r.levelno == logging.ERROR] == [
        command.payment_request_id
    ]


async def test_an_unseen_attempt_inside_the_window_is_resent_under_its_key(
    payment_handler, payments, provider, metrics, clock
):
    command = await timed_out_payment(payment_handler, provider)
    clock.now += INSIDE
    provider.script("charge_status", None)
    provider.script("charge", charged())

    assert await payment_handler.handle(command) is Outcome.SUCCEEDED

    assert provider.called("charge") == [f"{command.payment_request_id}-a1"]
    assert withheld(metrics, "payment") == 0


# -- refunds ---------------------------------------------------------------------------------------

PART = Money(3_000, "EUR")


@pytest.fixture
def refunds(db):
    return FakeRefundStore(db)


@pytest.fixture
def paid(db):
    return db.add_payment(
        create_payment(amount=Money(10_000, "EUR")),
        PaymentStatus.SUCCEEDED,
        provider="scripted",
        provider_reference="ch_1",
    )


@pytest.fixture
def refund_handler(refunds, provider, metrics, clock):
    provider.idempotency_window = WINDOW
    return RefundCommandHandler(
        store=refunds,
        providers=Providers.of(provider),
        events=RefundEvents(MESSAGES, "payments.results"),
        metrics=metrics,
        retry_policy=FAST,
        clock=clock,
    )


def refund_of(payment) -> RefundPayment:
    return RefundPayment.create(
        idempotency_key=unique("refund"),
        payment_request_id=payment.payment_request_id,
        order_id=payment.order_id,
        amount=PART,
        reason="requested_by_customer",
        requested_at=datetime.now(UTC),
    )


@pytest.mark.parametrize(
    ("age", "sends", "outcome", "withheld_count"),
    [(INSIDE, [refunded()], Outcome.SUCCEEDED, 0), (PAST, [], Outcome.PENDING, 1)],
    ids=["inside-the-window-resent", "past-the-window-withheld"],
)
async def test_an_unseen_refund_is_resent_only_inside_the_window(
    refund_handler, refunds, provider, metrics, clock, paid, age, sends, outcome, withheld_count
):
    command = refund_of(paid)
    provider.script("refund", timeout())
    assert await refund_handler.handle(command) is Outcome.PENDING
    provider.calls.clear()
    clock.now += age
    provider.script("refund_status", None)
    provider.script("refund", *sends)

    assert await refund_handler.handle(command) is outcome

    assert provider.called("refund") == [command.refund_id] * len(sends)
    row = refunds.row(command.refund_id)
    assert row.claim.token is None
    if not sends:
        assert row.view.status is RefundStatus.PENDING  # its amount still reserved
    assert withheld(metrics, "refund") == withheld_count
