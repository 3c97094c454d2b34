"""The refund handler's decision table, against the fake stores and a scripted provider.

Each case is one row of the tables in consumer/refund_handler.py and
consumer/refund_outcomes.py: the provider's answer (or silence), and what must follow for the
refund, the payment's reservation and refunded total, the claim and the events. The same
behaviour on real databases is in tests/integration/test_refund_handler.py.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from consumer.outcome import Outcome
from consumer.refund_events import RefundEvents
from consumer.refund_handler import RefundCommandHandler
from domain.errors import ErrorCode, PaygateError
from domain.events import conflict_event_id, refund_event_id
from domain.money import Money
from domain.refunds import RefundPayment, RefundStatus
from domain.retry import RetryPolicy
from domain.status import PaymentStatus
from providers.errors import (
    ProviderTimeoutError,
    ProviderUnavailableError,
    UnsupportedOperationError,
)
from providers.registry import Providers
from schemas.payments import PaymentMessages
from tests.support.builders import create_payment, unique
from tests.support.fake_stores import FakeRefundStore
from tests.support.scripted_provider import refund_failed, refund_pending, refunded

pytestmark = pytest.mark.unit

MESSAGES = PaymentMessages.bundled()
FAST = RetryPolicy(max_attempts=3, base_delay_s=0.001, max_delay_s=0.001)
CAPTURED = Money(10_000, "EUR")
PART = Money(3_000, "EUR")
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def unavailable() -> ProviderUnavailableError:
    return ProviderUnavailableError("scripted", "503 before processing")


def timeout() -> ProviderTimeoutError:
    return ProviderTimeoutError("scripted", "no answer in time")


class WorkerStopped(Exception):
    pass


@pytest.fixture
def store(db):
    return FakeRefundStore(db)


@pytest.fixture
def payment(db):
    """A succeeded payment of 100.00 EUR charged as ``ch_1`` by the scripted provider."""
    return db.add_payment(
        create_payment(amount=CAPTURED),
        PaymentStatus.SUCCEEDED,
        provider="scripted",
        provider_reference="ch_1",
    )


@pytest.fixture
def handler(store, provider, metrics, clock):
    return RefundCommandHandler(
        store=store,
        providers=Providers.of(provider),
        events=RefundEvents(MESSAGES, "payments.results"),
        metrics=metrics,
        retry_policy=FAST,
        clock=clock,
    )


def refund_of(payment, amount: Money | None = PART, key: str | None = None):
    return RefundPayment.create(
        idempotency_key=key or unique("refund"),
        payment_request_id=payment.payment_request_id,
        order_id=payment.order_id,
        amount=amount,
        reason="requested_by_customer",
        requested_at=NOW,
    )


def events(store):
    return [MESSAGES.decode_any_result(message.payload) for message in store.outbox]


def totals(db, payment):
    """(status, refunded, reserved) of the payment."""
    view = db.payments[payment.payment_request_id].view
    return view.status, view.refunded_minor, view.refund_reserved_minor


def consumed(metrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "paygate_commands_consumed_total", {"kind": "refund", "outcome": outcome}
    )
    return value or 0.0


async def timed_out(handler, provider, command):
    """The refund as a worker left it whose call timed out: pending, its amount reserved."""
    provider.script("refund", timeout())
    assert await handler.handle(command) is Outcome.PENDING
    provider.calls.clear()


# -- a new refund --------------------------------------------------------------------------------


async def test_a_new_refund_is_reserved_claimed_then_sent_once_under_its_id(
    handler, store, db, provider, payment, metrics
):
    command = refund_of(payment)
    seen = []

    def while_refunding(request):
        row = store.row(command.refund_id)
        seen.append((row.view.status, row.claim.token is not None, totals(db, payment)))
        return refunded("re_1")

    provider.script("refund", while_refunding)

    assert await handler.handle(command) is Outcome.SUCCEEDED

    assert seen == [(RefundStatus.PROCESSING, True, (PaymentStatus.SUCCEEDED, 0, 3_000))]
    (request,) = provider.requests
    assert (request.refund_key, request.charge_reference, request.amount) == (
        command.refund_id,
        "ch_1",
        Money(3_000, "EUR"),
    )
    row = store.row(command.refund_id)
    assert (row.view.status, row.view.provider_reference, row.claim.token) == (
        RefundStatus.SUCCEEDED,
        "re_1",
        None,
    )
    assert totals(db, payment) == (PaymentStatus.PARTIALLY_REFUNDED, 3_000, 0)
    (event,) = events(store)
    assert event.event_id == refund_event_id(command.refund_id, RefundStatus.SUCCEEDED)
    assert (event.payment_status, event.payment_refunded_minor) == (
        PaymentStatus.PARTIALLY_REFUNDED,
        3_000,
    )
    assert consumed(metrics, "succeeded") == 1


@pytest.mark.parametrize(
    ("answer", "outcome", "status", "code", "reserved"),
    [
        (
            refund_failed(PaygateError(ErrorCode.REFUND_FAILED, "too old")),
            Outcome.FAILED,
            RefundStatus.FAILED,
            ErrorCode.REFUND_FAILED,
            0,
        ),
        (refund_failed(None), Outcome.FAILED, RefundStatus.FAILED, ErrorCode.REFUND_FAILED, 0),
        # Accepted, settles later: the amount stays reserved.
        (refund_pending(), Outcome.PENDING, RefundStatus.PENDING, None, 3_000),
        # May have refunded: pending, the amount reserved, until the provider answers.
        (timeout(), Outcome.PENDING, RefundStatus.PENDING, ErrorCode.PROVIDER_TIMEOUT, 3_000),
        (
            PaygateError(ErrorCode.REFUND_FAILED, "refused by the adapter"),
            Outcome.FAILED,
            RefundStatus.FAILED,
            ErrorCode.REFUND_FAILED,
            0,
        ),
        (
            UnsupportedOperationError("scripted", "no refunds"),
            Outcome.FAILED,
            RefundStatus.FAILED,
            ErrorCode.INTERNAL_ERROR,
            0,
        ),
    ],
    ids=["failed", "failed-without-error", "pending", "timeout", "paygate-error", "unsupported"],
)
async def test_what_the_provider_says_to_a_new_refund_settles_or_keeps_the_reservation(
    handler, store, db, provider, payment, answer, outcome, status, code, reserved
):
    command = refund_of(payment)
    provider.script("refund", answer)

    assert await handler.handle(command) is outcome

    assert provider.called("refund") == [command.refund_id]
    view = store.row(command.refund_id).view
    assert (view.status, None if view.error is None else view.error.code) == (status, code)
    assert totals(db, payment) == (PaymentStatus.SUCCEEDED, 0, reserved)
    assert store.row(command.refund_id).claim.token is None
    assert [e.status for e in events(store)] == [status]


async def test_a_refusal_that_certainly_did_not_arrive_is_sent_again_under_the_same_key(
    handler, store, provider, payment
):
    command = refund_of(payment)
    provider.script("refund", unavailable(), refunded())

    assert await handler.handle(command) is Outcome.SUCCEEDED

    assert provider.called("refund") == [command.refund_id] * 2
    assert store.called("renew") == [command.refund_id]  # ownership checked before the re-send


async def test_retries_used_up_fail_a_first_time_refund_and_release_its_amount(
    handler, store, db, provider, payment
):
    command = refund_of(payment)
    provider.script("refund", unavailable(), unavailable(), unavailable())

    assert await handler.handle(command) is Outcome.FAILED

    assert provider.called("refund") == [command.refund_id] * 3
    view = store.row(command.refund_id).view
    assert view.error.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert totals(db, payment) == (PaymentStatus.SUCCEEDED, 0, 0)


async def test_a_refund_whose_provider_is_not_configured_is_left_pending_not_sent(
    handler, store, db
):
    gone = db.add_payment(
        create_payment(amount=CAPTURED),
        PaymentStatus.SUCCEEDED,
        provider="retired",
        provider_reference="ch_9",
    )
    command = refund_of(gone)

    assert await handler.handle(command) is Outcome.PENDING

    row = store.row(command.refund_id)
    assert (row.view.status, row.claim.token) == (RefundStatus.PROCESSING, None)


# -- refused, conflicting, replayed --------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda p: refund_of(p, Money(10_001, "EUR")), ErrorCode.REFUND_EXCEEDS_CAPTURED),
        (lambda p: refund_of(p, Money(100, "USD")), ErrorCode.CURRENCY_MISMATCH),
        (
            lambda p: RefundPayment.create(
                idempotency_key=unique("refund"),
                payment_request_id="pay_" + "0" * 32,
                order_id=p.order_id,
                amount=None,
                reason=None,
                requested_at=NOW,
            ),
            ErrorCode.NOT_FOUND,
        ),
    ],
    ids=["above-captured", "other-currency", "unknown-payment"],
)
async def test_a_refused_refund_is_told_and_never_sent(
    handler, store, db, provider, payment, metrics, make, code
):
    assert await handler.handle(make(payment)) is Outcome.REFUSED

    assert provider.calls == []
    assert totals(db, payment) == (PaymentStatus.SUCCEEDED, 0, 0)
    (event,) = events(store)
    assert (event.status, event.error.code) == (RefundStatus.FAILED, code)
    assert consumed(metrics, "refused") == 1


async def test_a_key_reused_with_other_parameters_is_a_conflict_that_changes_nothing(
    handler, store, db, provider, payment
):
    command = refund_of(payment, key="refund-1")
    provider.script("refund", refunded())
    await handler.handle(command)
    other = refund_of(payment, Money(500, "EUR"), key="refund-1")

    assert await handler.handle(other) is Outcome.CONFLICT

    assert provider.called("refund") == [command.refund_id]
    assert totals(db, payment) == (PaymentStatus.PARTIALLY_REFUNDED, 3_000, 0)
    conflict = events(store)[-1]
    assert conflict.event_id == conflict_event_id(command.refund_id, other.parameters_fingerprint())
    assert (conflict.status, conflict.error.code, conflict.amount_minor) == (
        RefundStatus.FAILED,
        ErrorCode.IDEMPOTENCY_CONFLICT,
        500,
    )
    # The event says so itself (RefundResult v2), and the refund's own events do not.
    assert conflict.refusal is True
    assert not any(event.refusal for event in events(store)[:-1])


async def test_a_redelivered_final_refund_replays_its_event_without_a_call(
    handler, store, provider, payment, metrics
):
    command = refund_of(payment)
    provider.script("refund", refunded())
    await handler.handle(command)

    assert await handler.handle(command) is Outcome.REPLAYED

    assert provider.called("refund") == [command.refund_id]
    first, again = events(store)
    assert again.event_id == first.event_id
    assert again.payment_refunded_minor == 3_000
    assert consumed(metrics, "replayed") == 1


# -- an open refund: a redelivery resolves it by asking the provider ----------------------------


@pytest.mark.parametrize(
    ("status_answer", "sends", "outcome", "status", "refunded_minor"),
    [
        (refunded("re_late"), [], Outcome.SUCCEEDED, RefundStatus.SUCCEEDED, 3_000),
        (refund_failed(), [], Outcome.FAILED, RefundStatus.FAILED, 0),
        (refund_pending(), [], Outcome.PENDING, RefundStatus.PENDING, 0),
        # No record of the key: it never arrived, so sending it again cannot refund twice.
        (None, [refunded("re_resent")], Outcome.SUCCEEDED, RefundStatus.SUCCEEDED, 3_000),
        # Cannot tell now: the claim goes back, a later pass asks again.
        (unavailable(), [], Outcome.PENDING, RefundStatus.PENDING, 0),
    ],
    ids=["says-succeeded", "says-failed", "says-pending", "unknown-key-resent", "error"],
)
async def test_a_redelivered_open_refund_follows_the_providers_answer(
    handler, store, db, provider, payment, status_answer, sends, outcome, status, refunded_minor
):
    command = refund_of(payment)
    await timed_out(handler, provider, command)
    provider.script("refund_status", status_answer)
    provider.script("refund", *sends)

    assert await handler.handle(command) is outcome

    assert provider.called("refund_status") == [command.refund_id]
    assert provider.called("refund") == [command.refund_id] * len(sends)
    row = store.row(command.refund_id)
    assert (row.view.status, row.claim.token) == (status, None)
    assert db.payments[payment.payment_request_id].view.refunded_minor == refunded_minor


async def test_retries_used_up_leave_an_open_refund_pending_with_its_amount_reserved(
    handler, store, db, provider, payment
):
    command = refund_of(payment)
    provider.script("refund", WorkerStopped())  # its first owner stopped mid-call
    with pytest.raises(WorkerStopped):
        await handler.handle(command)
    provider.script("refund_status", None)
    provider.script("refund", unavailable(), unavailable(), unavailable())

    # That first call may still arrive: failing the refund would release money the
    # provider may refund after all.
    assert await handler.handle(command) is Outcome.PENDING

    view = store.row(command.refund_id).view
    # Pending, not failed: an earlier call may still land (the provider could not be reached).
    assert (view.status, view.error.code) == (RefundStatus.PENDING, ErrorCode.PROVIDER_UNAVAILABLE)
    assert totals(db, payment) == (PaymentStatus.SUCCEEDED, 0, 3_000)


# -- one owner per refund ------------------------------------------------------------------------


async def test_a_redelivery_of_a_refund_another_worker_holds_changes_nothing(
    handler, store, provider, payment, metrics
):
    command = refund_of(payment)
    await timed_out(handler, provider, command)
    holder = store.take_over(command.refund_id)
    outbox_before = len(store.outbox)

    assert await handler.handle(command) is Outcome.OWNED_ELSEWHERE

    assert provider.calls == []
    assert store.row(command.refund_id).claim.token == holder
    assert len(store.outbox) == outbox_before
    assert consumed(metrics, "owned_elsewhere") == 1


async def test_a_redelivery_of_a_refund_its_holder_finished_meanwhile_replays_it_as_it_is(
    handler, store, provider, payment
):
    # Open at begin; its holder records the provider's answer before the claim is asked
    # for, so the claim is refused and the refund, now final, is re-published as it is.
    command = refund_of(payment)
    await timed_out(handler, provider, command)
    holder = store.take_over(command.refund_id)

    async def holder_records_success() -> None:
        assert await store.finish(
            command.refund_id,
            claim=holder,
            status=RefundStatus.SUCCEEDED,
            provider_reference="re_late",
            error=None,
            event=RefundEvents(MESSAGES, "payments.results").at(NOW),
        )

    store.before("claim", holder_records_success)

    assert await handler.handle(command) is Outcome.REPLAYED

    assert provider.calls == []
    settled, again = events(store)[-2:]
    assert again.event_id == settled.event_id
    assert (again.status, again.provider_reference, again.payment_refunded_minor) == (
        RefundStatus.SUCCEEDED,
        "re_late",
        3_000,
    )


async def test_a_claim_lost_during_the_back_off_stops_the_worker_recording_nothing(
    handler, store, db, provider, payment
):
    command = refund_of(payment)
    provider.script("refund", unavailable())
    store.before("renew", lambda: store.take_over(command.refund_id))

    assert await handler.handle(command) is Outcome.OWNED_ELSEWHERE

    assert provider.called("refund") == [command.refund_id]  # never sent again
    assert store.row(command.refund_id).view.status is RefundStatus.PROCESSING
    assert totals(db, payment) == (PaymentStatus.SUCCEEDED, 0, 3_000)  # still its owner's
    assert events(store) == []


async def test_a_worker_stopped_mid_call_gives_the_claim_up(handler, store, provider, payment):
    command = refund_of(payment)
    provider.script("refund", WorkerStopped())

    with pytest.raises(WorkerStopped):
        await handler.handle(command)

    assert store.row(command.refund_id).claim.token is None


async def test_a_redelivery_resolves_the_refund_as_it_is_under_its_claim(
    handler, store, provider, payment
):
    # Its begin reads the refund processing, without a provider reference; before its
    # claim, another worker records the provider's pending answer and its reference. The
    # provider's later answer (failed, no reference) must not erase that reference, as a
    # resolve from begin's view did.
    command = refund_of(payment)
    provider.script("refund", WorkerStopped())
    with pytest.raises(WorkerStopped):
        await handler.handle(command)

    async def another_worker_records_pending() -> None:
        claimed = await store.claim(command.refund_id)
        assert claimed is not None
        assert await store.finish(
            command.refund_id,
            claim=claimed.claim.token,
            status=RefundStatus.PENDING,
            provider_reference="re_pending",
            error=None,
            event=RefundEvents(MESSAGES, "payments.results").at(NOW),
        )

    store.before("claim", another_worker_records_pending)
    provider.script("refund_status", refund_failed())

    assert await handler.handle(command) is Outcome.FAILED

    view = store.row(command.refund_id).view
    assert (view.status, view.provider_reference) == (RefundStatus.FAILED, "re_pending")


async def test_a_refund_from_another_client_scope_is_refused_like_an_unknown_payment(
    handler, store, db, provider, payment, metrics
):
    foreign = dataclasses.replace(refund_of(payment), client_id="mallory")

    assert await handler.handle(foreign) is Outcome.REFUSED

    assert provider.calls == []
    (event,) = events(store)
    assert event.status is RefundStatus.FAILED
    assert event.error is not None
    assert event.error.code is ErrorCode.NOT_FOUND
    assert (event.payment_status, event.payment_refunded_minor) == (None, None)
    assert foreign.refund_id not in db.refunds
    assert totals(db, payment) == (PaymentStatus.SUCCEEDED, 0, 0)
    assert consumed(metrics, "refused") == 1
