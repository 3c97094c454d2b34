"""The three reconcilers against the fake stores: which rows they take up (old enough, nobody
holding them), that they claim each before acting, and what they count.

How a row is settled is the handlers' decision table (their own unit tests); here it is
enough that the reconciler hands each row it won to ``resolve`` and reports the result.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from consumer.capture_handler import CaptureCommandHandler
from consumer.capture_reconciler import CaptureReconciler
from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from consumer.payment_reconciler import PaymentReconciler
from consumer.refund_events import RefundEvents
from consumer.refund_handler import RefundCommandHandler
from consumer.refund_reconciler import RefundReconciler
from consumer.stray_charges import StraySweep
from domain.captures import CapturePayment
from domain.errors import ErrorCode
from domain.money import Money
from domain.refunds import RefundPayment, RefundStatus
from domain.retry import RetryPolicy
from domain.status import PaymentStatus
from providers.errors import ProviderTimeoutError, ProviderUnavailableError
from providers.registry import Providers
from providers.routing import Router
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.builders import create_payment, unique
from tests.support.fake_stores import (
    FakeCaptureStore,
    FakePaymentStore,
    FakeRefundStore,
    FakeStrayRecords,
)
from tests.support.scripted_provider import charged, refunded

pytestmark = pytest.mark.unit

ACCOUNT_KEY = b"unit-account-key"
MESSAGES = PaymentMessages.bundled()
EVENTS = PaymentEvents(MESSAGES, "payments.results")
FAST = RetryPolicy(max_attempts=2, base_delay_s=0.001, max_delay_s=0.001)
MIN_AGE = timedelta(minutes=1)
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def timeout() -> ProviderTimeoutError:
    return ProviderTimeoutError("scripted", "no answer in time")


def unavailable() -> ProviderUnavailableError:
    return ProviderUnavailableError("scripted", "503 before processing")


def counted(metrics, name: str, result: str) -> float:
    return metrics.registry.get_sample_value(name, {"result": result}) or 0.0


# -- in-doubt payments ---------------------------------------------------------------------------


@pytest.fixture
def payments(db):
    return FakePaymentStore(db)


@pytest.fixture
def payment_handler(payments, provider, clock):
    return PaymentCommandHandler(
        store=payments,
        providers=Providers.of(provider),
        router=Router.catch_all(provider.name),
        events=EVENTS,
        account_key=ACCOUNT_KEY,
        metrics=Metrics(),
        retry_policy=FAST,
        abandon_after=timedelta(hours=1),
        clock=clock,
    )


@pytest.fixture
def reconciler(payments, payment_handler, metrics, clock):
    return PaymentReconciler(
        store=payments, handler=payment_handler, metrics=metrics, min_age=MIN_AGE, clock=clock
    )


async def in_doubt(payment_handler, provider, clock):
    """A payment whose call timed out, old enough for the reconciler."""
    command = create_payment()
    provider.script("charge", timeout())
    assert await payment_handler.handle(command) is Outcome.PENDING
    provider.calls.clear()
    clock.now += MIN_AGE * 2
    return command


async def test_an_in_doubt_payment_nobody_holds_is_claimed_and_settled(
    reconciler, payments, payment_handler, provider, clock, metrics
):
    command = await in_doubt(payment_handler, provider, clock)
    pid = command.payment_request_id
    provider.script("charge_status", charged("ch_late"))

    report = await reconciler.run_once()

    assert (report.checked, report.resolved) == (1, 1)
    assert payments.called("claim") == [pid]
    assert payments.row(pid).view.status is PaymentStatus.SUCCEEDED
    assert counted(metrics, "paygate_reconciled_total", "resolved") == 1


async def test_payments_younger_than_min_age_or_held_by_a_live_owner_are_not_examined(
    reconciler, payments, payment_handler, provider, clock
):
    held = await in_doubt(payment_handler, provider, clock)
    payments.take_over(held.payment_request_id)
    provider.script("charge", timeout())
    assert await payment_handler.handle(create_payment()) is Outcome.PENDING  # too young

    report = await reconciler.run_once()

    assert report.checked == 0
    assert payments.called("claim") == []


async def test_a_payment_taken_between_the_query_and_the_claim_is_left_alone(
    reconciler, payments, payment_handler, provider, clock, metrics
):
    command = await in_doubt(payment_handler, provider, clock)
    payments.before("claim", lambda: payments.take_over(command.payment_request_id))

    report = await reconciler.run_once()

    assert (report.checked, report.owned_elsewhere) == (1, 1)
    assert provider.calls == []
    assert counted(metrics, "paygate_reconciled_total", "owned_elsewhere") == 1


async def test_a_provider_that_cannot_answer_leaves_the_payment_for_the_next_pass(
    reconciler, payments, payment_handler, provider, clock
):
    command = await in_doubt(payment_handler, provider, clock)
    provider.script("charge_status", unavailable())

    report = await reconciler.run_once()

    assert report.still_pending == 1
    assert payments.row(command.payment_request_id).claim.token is None
    provider.script("charge_status", charged())
    assert (await reconciler.run_once()).resolved == 1


async def test_an_attempt_never_received_is_resent_from_its_sealed_command(
    reconciler, payments, payment_handler, provider, clock
):
    command = await in_doubt(payment_handler, provider, clock)
    provider.script("charge_status", None)
    provider.script("charge", charged())

    assert (await reconciler.run_once()).resolved == 1

    (_, resent) = provider.requests
    # The reconciler has no command: the one sealed into the attempt carries the numbers.
    assert (resent.attempt_key, resent.payer, resent.amount) == (
        f"{command.payment_request_id}-a1",
        command.payer,
        command.amount,
    )


@pytest.mark.parametrize(
    ("age", "result", "status"),
    [
        (timedelta(minutes=5), "still_pending", PaymentStatus.PROCESSING),
        (timedelta(hours=2), "resolved", PaymentStatus.FAILED),
    ],
    ids=["younger-than-abandon-after", "older"],
)
async def test_an_attempt_without_a_sealed_command_is_failed_only_when_abandoned(
    reconciler, payments, provider, clock, age, result, status
):
    # Begun before attempts carried their sealed command, by a worker that died.
    command = create_payment()
    await payments.begin(
        command,
        provider="scripted",
        account_key=ACCOUNT_KEY,
        refusal_event=lambda *_: pytest.fail("not refused"),
    )
    clock.now += age
    provider.script("charge_status", None)

    report = await reconciler.run_once()

    assert getattr(report, result) == 1
    view = payments.row(command.payment_request_id).view
    assert view.status is status
    if status is PaymentStatus.FAILED:
        assert view.error.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert provider.called("charge") == []  # nothing to send it from


async def test_every_pass_ends_with_the_stray_charge_sweep(
    payments, payment_handler, provider, metrics, clock, db
):
    strays = FakeStrayRecords(db)
    sweep = StraySweep(
        store=strays,
        providers=Providers.of(provider),
        metrics=metrics,
        settle_after=timedelta(minutes=5),
        clock=clock,
    )
    reconciler = PaymentReconciler(
        store=payments,
        handler=payment_handler,
        metrics=metrics,
        min_age=MIN_AGE,
        sweep=sweep,
        clock=clock,
    )

    report = await reconciler.run_once()

    assert report.strays is not None
    assert strays.called("candidates") == [""]


# -- open refunds ------------------------------------------------------------------------------


@pytest.fixture
def refunds(db):
    return FakeRefundStore(db)


@pytest.fixture
def refund_handler(refunds, provider, clock):
    return RefundCommandHandler(
        store=refunds,
        providers=Providers.of(provider),
        events=RefundEvents(MESSAGES, "payments.results"),
        metrics=Metrics(),
        retry_policy=FAST,
        clock=clock,
    )


@pytest.fixture
def refund_reconciler(refunds, refund_handler, metrics, clock):
    return RefundReconciler(
        store=refunds, handler=refund_handler, metrics=metrics, min_age=MIN_AGE, clock=clock
    )


async def open_refund(db, refund_handler, provider, clock):
    payment = db.add_payment(
        create_payment(), PaymentStatus.SUCCEEDED, provider="scripted", provider_reference="ch_1"
    )
    command = RefundPayment.create(
        idempotency_key=unique("refund"),
        payment_request_id=payment.payment_request_id,
        order_id=payment.order_id,
        amount=Money(100, "EUR"),
        reason=None,
        requested_at=NOW,
    )
    provider.script("refund", timeout())
    assert await refund_handler.handle(command) is Outcome.PENDING
    provider.calls.clear()
    clock.now += MIN_AGE * 2
    return command


async def test_an_open_refund_nobody_holds_is_claimed_and_settled(
    refund_reconciler, refunds, refund_handler, db, provider, clock, metrics
):
    command = await open_refund(db, refund_handler, provider, clock)
    provider.script("refund_status", refunded())

    assert await refund_reconciler.run_once() == 1

    assert refunds.called("claim") == [command.refund_id]
    assert refunds.row(command.refund_id).view.status is RefundStatus.SUCCEEDED
    assert counted(metrics, "paygate_refunds_reconciled_total", "resolved") == 1


@pytest.mark.parametrize("why", ["held-by-a-live-owner", "too-young"])
async def test_refunds_held_by_a_live_owner_or_too_young_are_not_examined(
    refund_reconciler, refunds, refund_handler, db, provider, clock, why
):
    command = await open_refund(db, refund_handler, provider, clock)
    if why == "too-young":
        clock.now -= MIN_AGE * 2
    else:
        refunds.take_over(command.refund_id)

    assert await refund_reconciler.run_once() == 0

    assert refunds.called("claim") == []


@pytest.mark.parametrize(
    ("race", "status_answer", "result"),
    [
        ("taken-first", None, "owned_elsewhere"),
        (None, unavailable(), "still_pending"),
    ],
    ids=["taken-between-query-and-claim", "provider-cannot-answer"],
)
async def test_a_refund_the_reconciler_cannot_settle_is_counted_and_left(
    refund_reconciler,
    refunds,
    refund_handler,
    db,
    provider,
    clock,
    metrics,
    race,
    status_answer,
    result,
):
    command = await open_refund(db, refund_handler, provider, clock)
    if race:
        refunds.before("claim", lambda: refunds.take_over(command.refund_id))
    else:
        provider.script("refund_status", status_answer)

    assert await refund_reconciler.run_once() == 1

    assert refunds.row(command.refund_id).view.status is RefundStatus.PENDING
    assert counted(metrics, "paygate_refunds_reconciled_total", result) == 1


# -- captures left capturing -------------------------------------------------------------------


@pytest.fixture
def captures(db):
    return FakeCaptureStore(db)


@pytest.fixture
def capture_reconciler(captures, provider, clock):
    handler = CaptureCommandHandler(
        store=captures,
        providers=Providers.of(provider),
        events=EVENTS,
        metrics=Metrics(),
        retry_policy=FAST,
        clock=clock,
    )
    return CaptureReconciler(
        store=captures, handler=handler, metrics=Metrics(), min_age=MIN_AGE, clock=clock
    )


async def capturing(db, captures, provider, clock):
    """A payment whose capture timed out: ``capturing``, its claim free."""
    view = db.add_payment(
        dataclasses.replace(create_payment(), capture=False),
        PaymentStatus.AUTHORIZED,
        provider="scripted",
        provider_reference="ch_1",
    )
    command = CapturePayment.create(
        payment_request_id=view.payment_request_id, order_id=view.order_id, requested_at=NOW
    )
    begun = await captures.begin(command, lambda *_: pytest.fail("not refused"))
    await captures.release(view.payment_request_id, begun.claim.token)
    clock.now += MIN_AGE * 2
    return view.payment_request_id


async def test_captures_nobody_holds_are_settled_and_held_ones_left_to_their_owner(
    capture_reconciler, captures, db, provider, clock
):
    free = await capturing(db, captures, provider, clock)
    held = await capturing(db, captures, provider, clock)
    holder = captures.take_over(held)
    provider.script("charge_by_reference", charged("ch_1"))

    assert await capture_reconciler.run_once() == 1

    assert captures.called("claim") == [free]
    assert captures.row(free).view.status is PaymentStatus.SUCCEEDED
    assert (captures.row(held).view.status, captures.row(held).claim.token) == (
        PaymentStatus.CAPTURING,
        holder,
    )


async def test_a_capture_taken_between_the_query_and_the_claim_is_left_alone(
    capture_reconciler, captures, db, provider, clock
):
    pid = await capturing(db, captures, provider, clock)
    captures.before("claim", lambda: captures.take_over(pid))

    assert await capture_reconciler.run_once() == 1

    assert provider.calls == []
