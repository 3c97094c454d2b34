"""The capture handler's decision table, against the fake stores and a scripted provider.

Each case is one row of consumer/capture_handler.py: the provider's answer (or silence) to
a capture, and what must follow for the payment (``succeeded``, back to ``authorized``, or
still ``capturing``), its claim and its events. The same behaviour on real databases is in
tests/integration/test_captures.py.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from consumer.capture_handler import CaptureCommandHandler
from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from domain.captures import CapturePayment, capture_key_for
from domain.errors import ErrorCode, PaygateError
from domain.events import result_event_id
from domain.money import Money
from domain.retry import RetryPolicy
from domain.status import PaymentStatus
from providers.errors import ProviderError, ProviderTimeoutError, ProviderUnavailableError
from providers.port import ChargeOutcome, ChargeStatus
from providers.registry import Providers
from schemas.payments import PaymentMessages
from tests.support.builders import create_payment
from tests.support.fake_stores import FakeCaptureStore
from tests.support.scripted_provider import authorized, canceled, charged, declined

pytestmark = pytest.mark.unit

MESSAGES = PaymentMessages.bundled()
FAST = RetryPolicy(max_attempts=3, base_delay_s=0.001, max_delay_s=0.001)
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def unavailable() -> ProviderUnavailableError:
    return ProviderUnavailableError("scripted", "503 before processing")


def timeout() -> ProviderTimeoutError:
    return ProviderTimeoutError("scripted", "no answer in time")


class WorkerStopped(Exception):
    pass


@pytest.fixture
def store(db):
    return FakeCaptureStore(db)


def held_payment(db, status=PaymentStatus.AUTHORIZED, provider="scripted"):
    """A payment authorized as ``ch_1``: its money held, not taken yet."""
    command = dataclasses.replace(create_payment(), capture=False)
    return db.add_payment(command, status, provider=provider, provider_reference="ch_1")


@pytest.fixture
def payment(db):
    return held_payment(db)


@pytest.fixture
def handler(store, provider, metrics, clock):
    return CaptureCommandHandler(
        store=store,
        providers=Providers.of(provider),
        events=PaymentEvents(MESSAGES, "payments.results"),
        metrics=metrics,
        retry_policy=FAST,
        clock=clock,
    )


def capture_of(payment) -> CapturePayment:
    return CapturePayment.create(
        payment_request_id=payment.payment_request_id, order_id=payment.order_id, requested_at=NOW
    )


def events(store):
    return [MESSAGES.decode_result(message.payload) for message in store.outbox]


def consumed(metrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "paygate_commands_consumed_total", {"kind": "capture", "outcome": outcome}
    )
    return value or 0.0


async def timed_out(handler, provider, payment):
    """The capture as a worker left it whose call timed out: still ``capturing``."""
    provider.script("capture", timeout())
    assert await handler.handle(capture_of(payment)) is Outcome.PENDING
    provider.calls.clear()


# -- a new capture -------------------------------------------------------------------------------


async def test_a_capture_moves_to_capturing_first_then_captures_once_under_its_key(
    handler, store, provider, payment, metrics
):
    pid = payment.payment_request_id
    seen = []

    def while_capturing(request):
        row = store.row(pid)
        seen.append((row.view.status, row.claim.token is not None))
        return charged("ch_1")

    provider.script("capture", while_capturing)

    assert await handler.handle(capture_of(payment)) is Outcome.SUCCEEDED

    assert seen == [(PaymentStatus.CAPTURING, True)]
    (request,) = provider.requests
    assert (request.capture_key, request.charge_reference, request.amount) == (
        capture_key_for(pid),
        "ch_1",
        payment.amount,
    )
    row = store.row(pid)
    assert (row.view.status, row.claim.token) == (PaymentStatus.SUCCEEDED, None)
    (event,) = events(store)
    assert (event.event_id, event.status) == (
        result_event_id(pid, PaymentStatus.SUCCEEDED),
        PaymentStatus.SUCCEEDED,
    )
    assert consumed(metrics, "succeeded") == 1


@pytest.mark.parametrize(
    ("answers", "code"),
    [
        (
            [declined(error=PaygateError(ErrorCode.PAYMENT_NOT_CAPTURABLE, "expired"))],
            ErrorCode.PAYMENT_NOT_CAPTURABLE,
        ),
        ([authorized()], ErrorCode.PAYMENT_NOT_CAPTURABLE),  # answered, but not captured
        (
            [PaygateError(ErrorCode.PAYMENT_NOT_CAPTURABLE, "refused by the adapter")],
            ErrorCode.PAYMENT_NOT_CAPTURABLE,
        ),
        # Certainly not captured, three times: the retries are used up.
        ([unavailable(), unavailable(), unavailable()], ErrorCode.PROVIDER_UNAVAILABLE),
    ],
    ids=["declined", "still-authorized", "paygate-error", "retries-used-up"],
)
async def test_a_capture_not_made_puts_the_payment_back_to_authorized_with_the_error(
    handler, store, provider, payment, answers, code
):
    pid = payment.payment_request_id
    provider.script("capture", *answers)
    # Asked before recording "not captured": the provider still holds the authorization.
    provider.script("charge_by_reference", authorized())

    assert await handler.handle(capture_of(payment)) is Outcome.AUTHORIZED

    assert provider.called("capture") == [capture_key_for(pid)] * len(answers)
    view = store.row(pid).view
    assert (view.status, view.error.code) == (PaymentStatus.AUTHORIZED, code)
    (event,) = events(store)
    assert (event.status, event.error.code) == (PaymentStatus.AUTHORIZED, code)
    # News of its own, not the payment's first "authorized" event under the same id.
    assert event.event_id != result_event_id(pid, PaymentStatus.AUTHORIZED)


@pytest.mark.parametrize(
    ("held", "status"),
    [
        (canceled(), PaymentStatus.CANCELED),
        (ChargeOutcome(ChargeStatus.EXPIRED, "ch_1"), PaymentStatus.EXPIRED),
    ],
    ids=["voided-by-hand", "hold-ran-out"],
)
async def test_a_capture_refused_for_a_hold_released_at_the_provider_records_it_released(
    handler, store, provider, payment, metrics, held, status
):
    """Voided without paygate (in the provider's dashboard): nothing is held any more, so
    back to authorized would be false. The payment is what the provider holds, the capture
    refused payment_already_canceled."""
    pid = payment.payment_request_id
    provider.script("capture", PaygateError(ErrorCode.PAYMENT_NOT_CAPTURABLE, "released"))
    provider.script("charge_by_reference", held)

    assert await handler.handle(capture_of(payment)) is Outcome.REFUSED

    row = store.row(pid)
    assert (row.view.status, row.view.error.code, row.claim.token) == (
        status,
        ErrorCode.PAYMENT_ALREADY_CANCELED,
        None,
    )
    (event,) = events(store)
    assert (event.event_id, event.status, event.error.code, event.captured_amount) == (
        result_event_id(pid, status),
        status,
        ErrorCode.PAYMENT_ALREADY_CANCELED,
        None,
    )
    assert consumed(metrics, "refused") == 1


async def test_a_capture_refused_but_captured_by_hand_records_the_providers_amount(
    handler, store, provider, payment
):
    pid = payment.payment_request_id
    by_hand = Money(payment.amount.minor_units - 1, payment.amount.currency)
    provider.script("capture", PaygateError(ErrorCode.PAYMENT_NOT_CAPTURABLE, "captured"))
    provider.script(
        "charge_by_reference", ChargeOutcome(ChargeStatus.SUCCEEDED, "ch_1", captured=by_hand)
    )

    assert await handler.handle(capture_of(payment)) is Outcome.SUCCEEDED

    view = store.row(pid).view
    assert (view.status, view.error, view.captured_amount) == (
        PaymentStatus.SUCCEEDED,
        None,
        by_hand,
    )
    (event,) = events(store)
    assert (event.status, event.captured_amount) == (PaymentStatus.SUCCEEDED, by_hand)


async def test_a_capture_timeout_leaves_the_payment_capturing_and_the_claim_free(
    handler, store, provider, payment
):
    await timed_out(handler, provider, payment)

    row = store.row(payment.payment_request_id)
    assert (row.view.status, row.claim.token) == (PaymentStatus.CAPTURING, None)
    assert events(store) == []


async def test_a_refusal_that_certainly_did_not_arrive_is_sent_again_under_the_same_key(
    handler, store, provider, payment
):
    pid = payment.payment_request_id
    provider.script("capture", unavailable(), charged())

    assert await handler.handle(capture_of(payment)) is Outcome.SUCCEEDED

    assert provider.called("capture") == [capture_key_for(pid)] * 2
    assert store.called("renew") == [pid]


async def test_a_capture_whose_provider_is_not_configured_is_left_capturing(handler, store, db):
    gone = held_payment(db, provider="retired")

    assert await handler.handle(capture_of(gone)) is Outcome.PENDING

    row = store.row(gone.payment_request_id)
    assert (row.view.status, row.claim.token) == (PaymentStatus.CAPTURING, None)


# -- refused and replayed ----------------------------------------------------------------------


async def test_a_capture_of_an_unknown_payment_is_refused_without_an_event(
    handler, store, provider, payment, metrics
):
    unknown = CapturePayment.create(
        payment_request_id="pay_" + "0" * 32, order_id=payment.order_id, requested_at=NOW
    )

    assert await handler.handle(unknown) is Outcome.REFUSED

    assert (provider.calls, events(store)) == ([], [])
    assert consumed(metrics, "refused") == 1


async def test_a_capture_of_a_payment_that_is_not_authorized_is_refused_and_told(
    handler, store, db, provider
):
    failed = held_payment(db, status=PaymentStatus.FAILED)

    assert await handler.handle(capture_of(failed)) is Outcome.REFUSED

    assert provider.calls == []
    (event,) = events(store)
    assert (event.status, event.error.code) == (
        PaymentStatus.FAILED,
        ErrorCode.PAYMENT_NOT_CAPTURABLE,
    )


async def test_a_redelivered_capture_of_a_captured_payment_replays_without_a_call(
    handler, store, provider, payment, metrics
):
    provider.script("capture", charged())
    await handler.handle(capture_of(payment))

    assert await handler.handle(capture_of(payment)) is Outcome.REPLAYED

    assert len(provider.called("capture")) == 1
    first, again = events(store)
    assert again == first
    assert consumed(metrics, "replayed") == 1


# -- a capture in doubt: a redelivery resolves it by asking the provider -----------------------


@pytest.mark.parametrize(
    ("charge_answer", "sends", "outcome", "status"),
    [
        (charged("ch_1"), [], Outcome.SUCCEEDED, PaymentStatus.SUCCEEDED),
        # Still only authorized: the capture did not happen; the same key cannot capture twice.
        (authorized("ch_1"), [charged("ch_1")], Outcome.SUCCEEDED, PaymentStatus.SUCCEEDED),
        (None, [charged("ch_1")], Outcome.SUCCEEDED, PaymentStatus.SUCCEEDED),
        # Cannot tell now: the claim goes back, a later pass asks again.
        (unavailable(), [], Outcome.PENDING, PaymentStatus.CAPTURING),
    ],
    ids=["says-captured", "says-authorized-resent", "unknown-resent", "error"],
)
async def test_a_redelivered_capture_in_doubt_follows_the_providers_answer(
    handler, store, provider, payment, charge_answer, sends, outcome, status
):
    pid = payment.payment_request_id
    await timed_out(handler, provider, payment)
    provider.script("charge_by_reference", charge_answer)
    provider.script("capture", *sends)

    assert await handler.handle(capture_of(payment)) is outcome

    assert provider.called("charge_by_reference") == ["ch_1"]
    assert provider.called("capture") == [capture_key_for(pid)] * len(sends)
    row = store.row(pid)
    assert (row.view.status, row.claim.token) == (status, None)


async def test_retries_used_up_leave_a_capture_in_doubt_capturing_never_authorized(
    handler, store, provider, payment
):
    await timed_out(handler, provider, payment)
    provider.script("charge_by_reference", authorized("ch_1"))
    provider.script("capture", unavailable(), unavailable(), unavailable())

    # The timed-out call may still capture: going back to authorized would be a guess.
    assert await handler.handle(capture_of(payment)) is Outcome.PENDING

    row = store.row(payment.payment_request_id)
    assert (row.view.status, row.claim.token) == (PaymentStatus.CAPTURING, None)


@pytest.mark.parametrize(
    "refusal",
    [
        PaygateError(ErrorCode.INVALID_AMOUNT, "amount_too_large"),
        declined("ch_1"),
        ProviderError("scripted", "charge_already_captured"),
    ],
    ids=["paygate-error", "not-captured-answer", "provider-error"],
)
@pytest.mark.parametrize(
    "after", [authorized("ch_1"), None, unavailable()], ids=["held", "unknown", "unreadable"]
)
async def test_a_resent_capture_refused_while_the_first_is_in_doubt_stays_capturing(
    handler, store, provider, payment, refusal, after
):
    """The timed-out first send may still capture after this refusal: the charge read held
    (or unread) now is no proof it will stay so, so nothing goes back to authorized."""
    await timed_out(handler, provider, payment)
    events_before = len(store.outbox)
    provider.script("charge_by_reference", authorized("ch_1"), after)
    provider.script("capture", refusal)

    assert await handler.handle(capture_of(payment)) is Outcome.PENDING

    row = store.row(payment.payment_request_id)
    assert (row.view.status, row.claim.token) == (PaymentStatus.CAPTURING, None)
    assert len(store.outbox) == events_before  # nothing said that the first may contradict


async def test_a_first_capture_refused_while_the_charge_is_held_goes_back_to_authorized(
    handler, store, provider, payment
):
    """No earlier send: the refusal and the read are the last word."""
    provider.script("capture", ProviderError("scripted", "rejected"))
    provider.script("charge_by_reference", authorized("ch_1"))

    assert await handler.handle(capture_of(payment)) is Outcome.AUTHORIZED

    assert store.row(payment.payment_request_id).view.status is PaymentStatus.AUTHORIZED


# -- one owner per capture -----------------------------------------------------------------------


async def test_a_redelivery_of_a_capture_another_worker_holds_changes_nothing(
    handler, store, provider, payment, metrics
):
    await timed_out(handler, provider, payment)
    holder = store.take_over(payment.payment_request_id)

    assert await handler.handle(capture_of(payment)) is Outcome.OWNED_ELSEWHERE

    assert provider.calls == []
    assert store.row(payment.payment_request_id).claim.token == holder
    assert consumed(metrics, "owned_elsewhere") == 1


async def test_a_claim_lost_during_the_back_off_stops_the_worker_recording_nothing(
    handler, store, provider, payment
):
    pid = payment.payment_request_id
    provider.script("capture", unavailable())
    store.before("renew", lambda: store.take_over(pid))

    assert await handler.handle(capture_of(payment)) is Outcome.OWNED_ELSEWHERE

    assert provider.called("capture") == [capture_key_for(pid)]
    assert store.row(pid).view.status is PaymentStatus.CAPTURING
    assert events(store) == []


async def test_a_worker_stopped_mid_call_gives_the_claim_up(handler, store, provider, payment):
    provider.script("capture", WorkerStopped())

    with pytest.raises(WorkerStopped):
        await handler.handle(capture_of(payment))

    row = store.row(payment.payment_request_id)
    assert (row.view.status, row.claim.token) == (PaymentStatus.CAPTURING, None)


async def test_a_capture_from_another_client_scope_is_refused_not_found_and_told(
    handler, store, provider, payment, metrics
):
    foreign = dataclasses.replace(capture_of(payment), client_id="mallory")

    assert await handler.handle(foreign) is Outcome.REFUSED

    assert provider.calls == []
    (event,) = events(store)
    assert event.status is PaymentStatus.AUTHORIZED  # unchanged
    assert event.error is not None
    assert event.error.code is ErrorCode.NOT_FOUND
    assert store.row(payment.payment_request_id).view.status is PaymentStatus.AUTHORIZED
    assert consumed(metrics, "refused") == 1
