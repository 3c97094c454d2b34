"""The stray-charge sweep (consumer/stray_charges.py) against a fake of its records.

Which attempts are candidates is the SQL store's query (tests/integration/test_stray_charges.py);
here each case lists its candidates and checks what the sweep asks the provider, records and
counts: verified, found and reversed (under its own key), reversal failed, or asked again next
pass.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from consumer.stray_charges import StraySweep
from domain.errors import ErrorCode, PaygateError
from domain.money import Money
from domain.refunds import RefundReason
from domain.status import PaymentStatus
from persistence.stray_store import STRAY_FAILED, STRAY_REVERSED, StrayCandidate
from providers.errors import (
    ProviderTimeoutError,
    ProviderUnavailableError,
    UnsupportedOperationError,
)
from providers.port import ChargeOutcome, ChargeStatus, RefundRequest
from providers.registry import Providers
from providers.stripe.transformers import StripeIdempotencyConflictError
from tests.support.fake_stores import FakeStrayRecords, Reversal
from tests.support.scripted_provider import (
    authorized,
    canceled,
    charged,
    declined,
    expired,
    refund_failed,
    refund_pending,
    refunded,
    requires_action,
)

pytestmark = pytest.mark.unit

SETTLE_AFTER = timedelta(minutes=5)
AMOUNT = Money(1_050, "EUR")


@pytest.fixture
def records(db, clock):
    return FakeStrayRecords(db, clock)


@pytest.fixture
def sweep(records, provider, metrics, clock):
    return StraySweep(
        store=records,
        providers=Providers.of(provider),
        metrics=metrics,
        settle_after=SETTLE_AFTER,
        clock=clock,
    )


def candidate(
    status: PaymentStatus = PaymentStatus.FAILED, reference: str | None = None, **changes
) -> StrayCandidate:
    listed = StrayCandidate("pay_1-a1", "pay_1", "scripted", AMOUNT, status, reference)
    return dataclasses.replace(listed, **changes)


def strays(metrics, result: str) -> float:
    value = metrics.registry.get_sample_value(
        "paygate_stray_charges_total", {"provider": "scripted", "result": result}
    )
    return value or 0.0


@pytest.mark.parametrize(
    ("listed", "answer"),
    [
        (candidate(), None),  # no charge under the key
        (candidate(), declined()),  # a decline holds no money
        (candidate(PaymentStatus.SUCCEEDED, "ch_own"), charged("ch_own")),  # the payment's own
        (candidate(PaymentStatus.AUTHORIZED, "ch_own"), authorized("ch_own")),
        # Released authorizations and trades closed unpaid hold no money.
        (candidate(PaymentStatus.CANCELED, "ch_own"), canceled("ch_own")),
        (candidate(PaymentStatus.EXPIRED, "ch_own"), expired("ch_own")),
    ],
    ids=["no-charge", "declined", "own-charge", "own-authorization", "canceled", "expired"],
)
async def test_an_attempt_holding_no_money_but_the_payments_own_is_verified_once(
    sweep, records, provider, metrics, listed, answer
):
    records.unexamined.append(listed)
    provider.script("charge_status", answer)

    report = await sweep.run_once()

    assert (report.checked, report.verified) == (1, 1)
    assert records.verified == [listed.attempt_key]
    assert provider.called("refund") == []
    assert (await sweep.run_once()).checked == 0  # never asked about again
    assert strays(metrics, "found") == 0


async def test_a_charge_the_payment_does_not_stand_on_is_recorded_and_reversed(
    sweep, records, provider, metrics
):
    # The payment succeeded as ch_own; its first attempt's key charged as well.
    listed = candidate(PaymentStatus.SUCCEEDED, "ch_own")
    records.unexamined.append(listed)
    provider.script("charge_status", charged("ch_stray"))
    provider.script("charge_by_reference", charged("ch_stray"))  # taken: refund it
    provider.script("refund", refunded("re_reversal"))

    report = await sweep.run_once()

    assert (report.found, report.reversed) == (1, 1)
    assert records.found[listed.attempt_key].stray_reference == "ch_stray"
    (request,) = provider.requests
    # A key of its own, so a reversal sent twice refunds once.
    assert provider.called("cancel") == []
    assert (request.refund_key, request.charge_reference, request.amount, request.reason) == (
        "pay_1-a1-reversal",
        "ch_stray",
        AMOUNT,
        RefundReason.DUPLICATE,
    )
    assert records.reversals == {listed.attempt_key: Reversal(STRAY_REVERSED, "re_reversal", None)}
    assert (strays(metrics, "found"), strays(metrics, "reversed")) == (1, 1)


async def test_a_charge_another_sweeper_recorded_first_is_left_to_it(sweep, records, provider):
    listed = candidate()
    records.unexamined.append(listed)
    provider.script("charge_status", charged("ch_stray"))
    records.before("record_found", lambda: records.found.setdefault(listed.attempt_key, listed))

    report = await sweep.run_once()

    assert report.verified == 1
    assert provider.called("refund") == []


async def test_a_charge_another_sweeper_recorded_first_is_counted_found_once(
    sweep, records, provider, metrics
):
    # Two sweepers (two processes) ask about one key and both hear of the charge; the
    # other records it first and counts it found. This one counted it too, before it knew:
    # found 2, reversed 1 for one charge, which reads as a stray charge left in place.
    listed = candidate()
    records.unexamined.append(listed)
    provider.script("charge_status", charged("ch_stray"))
    records.before("record_found", lambda: records.found.setdefault(listed.attempt_key, listed))

    await sweep.run_once()

    assert strays(metrics, "found") == 0  # the sweeper that recorded it counts it


async def test_a_key_reopened_while_it_was_asked_about_is_not_verified_and_asked_again(
    sweep, records, provider, metrics
):
    """The provider answers "no trade", then the payer pays and the signed notice reopens
    the key before the sweep's mark: the mark changes nothing and the next pass, asking
    again, finds and reverses the charge."""
    listed = candidate()
    records.unexamined.append(listed)

    async def paid_meanwhile(_key):
        # Answers None (no trade): what the provider said before the payer paid.
        assert await records.reopen(listed.attempt_key, listed.provider)

    provider.script("charge_status", paid_meanwhile, charged("ch_late"))
    provider.script("charge_by_reference", charged("ch_late"))
    provider.script("refund", refunded("re_late"))

    first = await sweep.run_once()

    assert (first.checked, first.verified, first.reopened) == (1, 0, 1)
    assert records.verified == []
    second = await sweep.run_once()
    assert (second.checked, second.found, second.reversed) == (1, 1, 1)
    assert provider.called("charge_status") == [listed.attempt_key] * 2
    assert records.reversals == {listed.attempt_key: Reversal(STRAY_REVERSED, "re_late", None)}
    assert strays(metrics, "found") == 1


async def test_a_key_reopened_after_its_mark_is_asked_again(sweep, records, provider):
    listed = candidate()
    records.unexamined.append(listed)
    provider.script("charge_status", None, charged("ch_late"))
    provider.script("charge_by_reference", charged("ch_late"))
    provider.script("refund", refunded("re_late"))
    assert (await sweep.run_once()).verified == 1

    assert await records.reopen(listed.attempt_key, listed.provider)
    report = await sweep.run_once()

    assert (report.checked, report.found, report.reversed) == (1, 1, 1)


@pytest.mark.parametrize(
    ("answer", "result", "reversal"),
    [
        (refund_pending(), "unanswered", None),
        (ProviderUnavailableError("scripted", "503"), "unanswered", None),
        (ProviderTimeoutError("scripted", "no answer"), "unanswered", None),
        (
            refund_failed(PaygateError(ErrorCode.REFUND_FAILED, "too old")),
            "reversal_failed",
            Reversal(STRAY_FAILED, None, "too old"),
        ),
        (refund_failed(), "reversal_failed", Reversal(STRAY_FAILED, None, "refused")),
        (
            UnsupportedOperationError("scripted", "no refunds"),
            "reversal_failed",
            Reversal(STRAY_FAILED, None, "no refunds"),
        ),
        (
            PaygateError(ErrorCode.REFUND_FAILED, "adapter refused"),
            "reversal_failed",
            Reversal(STRAY_FAILED, None, "adapter refused"),
        ),
    ],
    ids=["pending", "unavailable", "timeout", "failed", "failed-no-error", "unsupported", "error"],
)
async def test_a_reversal_not_made_is_asked_again_or_recorded_for_an_operator(
    sweep, records, provider, metrics, answer, result, reversal
):
    listed = candidate()
    records.unexamined.append(listed)
    provider.script("charge_status", charged("ch_stray"))
    provider.script("charge_by_reference", charged("ch_stray"))
    provider.script("refund", answer)

    report = await sweep.run_once()

    assert getattr(report, result) == 1
    assert records.reversals.get(listed.attempt_key) == reversal
    assert strays(metrics, "reversal_failed") == (1 if reversal else 0)


async def test_a_stray_charge_whose_reversal_was_unanswered_is_reversed_next_pass(
    sweep, records, provider
):
    listed = candidate()
    records.unexamined.append(listed)
    provider.script("charge_status", charged("ch_stray"))
    provider.script("charge_by_reference", charged("ch_stray"), charged("ch_stray"))
    provider.script("refund", ProviderUnavailableError("scripted", "503"), refunded())
    provider.script("refund_status", None)  # the first try never reached it
    assert (await sweep.run_once()).unanswered == 1

    report = await sweep.run_once()

    # Not asked about its charge again: the refund sent before is asked about by its key,
    # and since the provider never received it, the reversal goes out again, same key.
    assert (report.checked, report.reversed) == (1, 1)
    assert provider.called("charge_status") == [listed.attempt_key]
    assert provider.called("refund_status") == ["pay_1-a1-reversal"]
    assert provider.called("refund") == ["pay_1-a1-reversal"] * 2


@pytest.mark.parametrize(
    ("later", "result", "reversal"),
    [
        (refunded("re_9"), "reversed", Reversal(STRAY_REVERSED, "re_9", None)),
        (refund_pending(), "unanswered", None),
        (
            refund_failed(PaygateError(ErrorCode.REFUND_FAILED, "lost card")),
            "reversal_failed",
            Reversal(
                STRAY_FAILED,
                None,
                "the provider failed the reversal refund it had accepted: lost card",
            ),
        ),
    ],
    ids=["succeeded", "still-pending", "failed"],
)
async def test_a_reversal_left_pending_is_asked_about_by_its_key_not_read_from_the_charge(
    sweep, records, provider, metrics, later, result, reversal
):
    """The charge's refunded amount counts a pending refund: read from the charge, the next
    try would find nothing kept and record the charge reversed, whatever became of it."""
    listed = candidate()
    records.unexamined.append(listed)
    provider.script("charge_status", charged("ch_stray"))
    provider.script("charge_by_reference", charged("ch_stray"))
    provider.script("refund", refund_pending())
    provider.script("refund_status", later)
    assert (await sweep.run_once()).unanswered == 1

    report = await sweep.run_once()

    assert getattr(report, result) == 1
    assert records.reversals.get(listed.attempt_key) == reversal
    assert provider.called("refund_status") == ["pay_1-a1-reversal"]
    assert provider.called("charge_by_reference") == ["ch_stray"]  # the first try only
    assert strays(metrics, "reversal_failed") == (1 if result == "reversal_failed" else 0)


async def test_an_attempt_its_provider_cannot_answer_about_is_asked_again_next_pass(
    sweep, records, provider
):
    records.unexamined.append(candidate(provider="retired"))
    records.unexamined.append(candidate(attempt_key="pay_1-a2"))
    provider.script("charge_status", ProviderUnavailableError("scripted", "503"))

    report = await sweep.run_once()

    assert (report.checked, report.unanswered) == (2, 2)
    assert records.verified == []


async def test_a_trade_still_waiting_for_its_payer_is_asked_again_next_pass(
    sweep, records, provider, metrics
):
    records.unexamined.append(candidate(PaymentStatus.SUCCEEDED, "ch_own", attempt_key="pay_1-a1"))
    provider.script("charge_status", requires_action("ch_other"))

    report = await sweep.run_once()

    assert (report.checked, report.unanswered) == (1, 1)
    assert records.verified == []
    assert provider.called("refund") == []
    assert provider.called("cancel") == []
    assert strays(metrics, "found") == 0


async def test_a_stray_authorization_is_voided_not_refunded(sweep, records, provider, metrics):
    """Money held, not taken: a refund has nothing to return, a void releases the hold."""
    listed = candidate(PaymentStatus.AUTHORIZED, "ch_own")
    records.unexamined.append(listed)
    provider.script("charge_status", authorized("ch_stray"))
    provider.script(
        "charge_by_reference",
        authorized("ch_stray"),
        ProviderUnavailableError("scripted", "503"),
        authorized("ch_stray"),
    )
    provider.script("cancel", ProviderUnavailableError("scripted", "503"), canceled("ch_stray"))

    assert (await sweep.run_once()).unanswered == 1  # the void: 503
    assert (await sweep.run_once()).unanswered == 1  # asking about the charge: 503
    report = await sweep.run_once()

    assert (report.checked, report.reversed) == (1, 1)
    assert provider.called("refund") == []
    assert provider.called("cancel") == ["pay_1-a1-void-reversal"] * 2  # one key: voids once
    assert records.reversals == {listed.attempt_key: Reversal(STRAY_REVERSED, "ch_stray", None)}
    assert (strays(metrics, "found"), strays(metrics, "reversed")) == (1, 1)


async def test_a_stray_authorization_released_meanwhile_needs_no_reversal(
    sweep, records, provider, metrics
):
    listed = candidate()
    records.unexamined.append(listed)
    provider.script("charge_status", authorized("ch_stray"))
    provider.script("charge_by_reference", expired("ch_stray"))

    report = await sweep.run_once()

    assert report.reversed == 1
    assert provider.called("cancel") == provider.called("refund") == []
    assert records.reversals[listed.attempt_key].status == STRAY_REVERSED


def refunded_in_full(reference: str) -> ChargeOutcome:
    """Paid, then refunded in full at the provider (Alipay's closed paid trade)."""
    return ChargeOutcome(ChargeStatus.SUCCEEDED, reference, refunded_in_full=True)


async def test_a_stray_key_whose_charge_was_refunded_in_full_already_holds_no_money(
    sweep, records, provider, metrics
):
    """Nothing is kept, so nothing to reverse: a refund would be refused by the provider
    and reported as a reversal failed."""
    listed = candidate()
    records.unexamined.append(listed)
    provider.script("charge_status", refunded_in_full("ch_stray"))

    report = await sweep.run_once()

    assert (report.checked, report.verified, report.found) == (1, 1, 0)
    assert provider.called("refund") == []
    assert strays(metrics, "found") == 0


async def test_a_stray_charge_refunded_in_full_meanwhile_needs_no_reversal(
    sweep, records, provider, metrics
):
    listed = candidate()
    records.unexamined.append(listed)
    provider.script("charge_status", charged("ch_stray"))
    provider.script("charge_by_reference", refunded_in_full("ch_stray"))

    report = await sweep.run_once()

    assert report.reversed == 1
    assert provider.called("refund") == []
    assert records.reversals[listed.attempt_key].status == STRAY_REVERSED


async def test_a_stray_charge_refunded_in_part_outside_paygate_is_refunded_what_it_keeps(
    sweep, records, provider
):
    """Before, the sweep asked to refund the whole amount: more than the charge keeps, so
    the provider refused it and the rest of the stray charge stayed taken."""
    listed = candidate()
    records.unexamined.append(listed)
    provider.script("charge_status", charged("ch_stray"))
    partly = ChargeOutcome(
        ChargeStatus.SUCCEEDED, "ch_stray", captured=AMOUNT, refunded=Money(300, "EUR")
    )
    provider.script("charge_by_reference", partly)
    provider.script("refund", refunded("re_reversal"))

    assert (await sweep.run_once()).reversed == 1
    (request,) = [r for r in provider.requests if isinstance(r, RefundRequest)]
    assert request.amount == Money(750, "EUR")
    assert request.refund_key == "pay_1-a1-reversal-750"  # a key of its own for the amount


async def test_a_reversal_key_is_never_sent_again_with_another_amount(sweep, records, provider):
    """A reversal of the whole amount gets no answer (Stripe may keep an answer under its
    key); then 300 are refunded by hand, and the next try asks for the 750 the charge
    keeps. Under the same key Stripe refuses a key reused with other parameters
    (idempotency_error, an unknown outcome here): every try would fail the same way until
    Stripe forgets the key a day later, the money kept all that while. A key names one
    amount; the provider, which never refunds a charge beyond what it captured, keeps two
    keys from paying out more than the charge keeps."""
    listed = candidate()
    records.unexamined.append(listed)
    provider.script("charge_status", charged("ch_stray"))
    partly = ChargeOutcome(
        ChargeStatus.SUCCEEDED, "ch_stray", captured=AMOUNT, refunded=Money(300, "EUR")
    )
    provider.script("charge_by_reference", charged("ch_stray"), partly, partly)
    provider.script("refund", ProviderTimeoutError("scripted", "no answer"), refunded(), refunded())
    provider.script("refund_status", None)  # the whole amount's refund never reached it
    assert (await sweep.run_once()).unanswered == 1

    assert (await sweep.run_once()).reversed == 1

    sent = [(r.refund_key, r.amount) for r in provider.requests if isinstance(r, RefundRequest)]
    assert sent[0] == ("pay_1-a1-reversal", AMOUNT)  # the whole amount: the key as before
    amounts_by_key: dict[str, set[Money]] = {}
    for key, amount in sent:
        amounts_by_key.setdefault(key, set()).add(amount)
    assert all(len(amounts) == 1 for amounts in amounts_by_key.values()), sent
    assert sent[-1][1] == Money(750, "EUR")


@pytest.mark.parametrize(
    "answer",
    [
        ChargeOutcome(ChargeStatus.SUCCEEDED, "ch_stray", captured=AMOUNT, refunded=AMOUNT),
        # Less captured than the amount (a partial capture), all of it refunded.
        ChargeOutcome(
            ChargeStatus.SUCCEEDED,
            "ch_stray",
            captured=Money(500, "EUR"),
            refunded=Money(500, "EUR"),
        ),
    ],
    ids=["amount", "partial-capture"],
)
async def test_a_stray_charge_whose_refunds_reach_its_capture_needs_no_reversal(
    sweep, records, provider, answer
):
    listed = candidate()
    records.unexamined.append(listed)
    provider.script("charge_status", charged("ch_stray"))
    provider.script("charge_by_reference", answer)

    assert (await sweep.run_once()).reversed == 1
    assert provider.called("refund") == []
    assert records.reversals[listed.attempt_key].status == STRAY_REVERSED


async def test_a_stray_charge_whose_refunded_figure_is_impossible_is_left_to_an_operator(
    sweep, records, provider
):
    listed = candidate()
    records.unexamined.append(listed)
    provider.script("charge_status", charged("ch_stray"))
    provider.script(
        "charge_by_reference",
        ChargeOutcome(ChargeStatus.SUCCEEDED, "ch_stray", refunded=Money(300, "USD")),
    )

    assert (await sweep.run_once()).reversal_failed == 1
    assert provider.called("refund") == []
    assert records.reversals[listed.attempt_key].status == STRAY_FAILED


async def test_a_provider_that_cannot_say_what_the_charge_is_gets_a_refund(
    sweep, records, provider
):
    listed = candidate()
    records.unexamined.append(listed)
    provider.script("charge_status", charged("ch_stray"))
    provider.script("charge_by_reference", UnsupportedOperationError("scripted", "no lookup"))
    provider.script("refund", refunded("re_reversal"))

    assert (await sweep.run_once()).reversed == 1
    assert provider.called("refund") == ["pay_1-a1-reversal"]


def unanswered(metrics, provider: str, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "paygate_stray_unanswered_total", {"provider": provider, "reason": reason}
    )
    return value or 0.0


async def test_a_key_without_an_answer_moves_behind_a_newer_stray_charge(
    sweep, records, provider, metrics, clock
):
    # A page of one: the older key's provider is no longer configured.
    records.unexamined.append(candidate(provider="retired", attempt_created_at=clock.now))
    records.unexamined.append(candidate(attempt_key="pay_1-a2"))
    provider.script("charge_status", charged("ch_stray"))
    provider.script("charge_by_reference", charged("ch_stray"))
    provider.script("refund", refunded("re_reversal"))

    first = await sweep.run_once(limit=1)
    second = await sweep.run_once(limit=1)

    assert (first.checked, first.unanswered) == (1, 1)
    assert (second.checked, second.found, second.reversed) == (1, 1, 1)
    assert unanswered(metrics, "retired", "no_provider") == 1
    # Stamped before the question, held back for its age, at least the first pause.
    assert records.ask_again["pay_1-a1"] == clock.now + timedelta(minutes=1)


async def test_an_unanswered_question_is_counted_by_provider_and_reason(
    sweep, records, provider, metrics
):
    records.unexamined.append(candidate())
    provider.script("charge_status", ProviderTimeoutError("scripted", "no answer"))
    assert (await sweep.run_once()).unanswered == 1
    provider.script("charge_status", requires_action("ch_other"))
    assert (await sweep.run_once()).unanswered == 1

    assert unanswered(metrics, "scripted", "provider_error") == 1
    assert unanswered(metrics, "scripted", "awaiting_payer") == 1
    assert unanswered(metrics, "scripted", "no_provider") == 0


def test_the_pause_after_an_unanswered_question_must_be_within_its_cap(records, provider, metrics):
    with pytest.raises(ValueError, match="first pause"):
        StraySweep(
            store=records,
            providers=Providers.of(provider),
            metrics=metrics,
            settle_after=SETTLE_AFTER,
            recheck_first=timedelta(hours=2),
            recheck_cap=timedelta(hours=1),
        )


async def test_an_answer_that_cannot_be_read_does_not_end_the_pass(
    sweep, records, provider, metrics
):
    """An exception that is not a ProviderError (an adapter that cannot read the answer)
    is counted unanswered, and the pass goes on: before, it ended the sweep where it stood,
    and the reconciliation pass around it."""
    records.unexamined.append(candidate())
    records.unexamined.append(candidate(attempt_key="pay_1-a2"))
    provider.script("charge_status", RuntimeError("unreadable"), None)

    report = await sweep.run_once()

    assert (report.checked, report.unanswered, report.verified) == (2, 1, 1)
    assert records.verified == ["pay_1-a2"]
    assert unanswered(metrics, "scripted", "provider_error") == 1


def _refund_keys(provider) -> list[str]:
    return [r.refund_key for r in provider.requests if isinstance(r, RefundRequest)]


def _whole_key_refused():
    """Stripe's answer to a refund under a key a void was sent under before."""
    return StripeIdempotencyConflictError("scripted", "key first used on another endpoint")


async def test_a_whole_key_bound_to_a_void_refunds_under_its_own_once_nothing_was_refunded(
    sweep, records, provider, metrics
):
    """The key ``<attempt key>-reversal`` was a void's in an older release: a refund under
    it is refused, for ever as far as the sweep can wait. No refund under it is listed and
    the charge, read again, keeps its whole amount: refunded under a key no other refund
    can have had."""
    records.unexamined.append(candidate())
    provider.script("charge_status", charged("ch_stray"))
    provider.script("charge_by_reference", charged("ch_stray"), charged("ch_stray"))
    provider.script("refund", _whole_key_refused(), refunded("re_own_key"))
    provider.script("refund_status", None)

    report = await sweep.run_once()

    assert (report.found, report.reversed, report.unanswered) == (1, 1, 0)
    assert _refund_keys(provider) == ["pay_1-a1-reversal", "pay_1-a1-reversal-1050"]
    assert provider.called("refund_status") == ["pay_1-a1-reversal"]
    assert records.found["pay_1-a1"].reversal_key == "pay_1-a1-reversal-1050"
    assert records.reversals == {"pay_1-a1": Reversal(STRAY_REVERSED, "re_own_key", None)}
    assert provider.unanswered == {}


@pytest.mark.parametrize(
    ("under_the_key", "result"),
    [(refunded("re_old"), "reversed"), (refund_failed(), "reversal_failed")],
    ids=["succeeded", "failed"],
)
async def test_a_refund_found_under_the_refused_key_is_what_it_says_never_sent_again(
    sweep, records, provider, metrics, under_the_key, result
):
    records.unexamined.append(candidate())
    provider.script("charge_status", charged("ch_stray"))
    provider.script("charge_by_reference", charged("ch_stray"), charged("ch_stray"))
    provider.script("refund", _whole_key_refused())
    provider.script("refund_status", under_the_key)

    report = await sweep.run_once()

    assert getattr(report, result) == 1
    assert _refund_keys(provider) == ["pay_1-a1-reversal"]  # no second refund
    assert provider.unanswered == {}


@pytest.mark.parametrize(
    "read_again",
    [
        ChargeOutcome(
            ChargeStatus.SUCCEEDED, "ch_stray", captured=AMOUNT, refunded=Money(300, "EUR")
        ),
        canceled("ch_stray"),
        ProviderTimeoutError("scripted", "no answer"),
    ],
    ids=["refunded-in-part-meanwhile", "no-longer-captured", "no-answer"],
)
async def test_a_refused_whole_key_refunds_under_no_other_unless_the_charge_keeps_it_all(
    sweep, records, provider, metrics, read_again
):
    records.unexamined.append(candidate())
    provider.script("charge_status", charged("ch_stray"))
    provider.script("charge_by_reference", charged("ch_stray"), read_again)
    provider.script("refund", _whole_key_refused())
    provider.script("refund_status", None)

    report = await sweep.run_once()

    assert (report.reversed, report.reversal_failed, report.unanswered) == (0, 0, 1)
    assert _refund_keys(provider) == ["pay_1-a1-reversal"]  # the next pass reads afresh
    assert provider.unanswered == {}


async def test_a_refused_whole_key_a_provider_cannot_explain_is_left_to_an_operator(
    sweep, records, provider, metrics
):
    records.unexamined.append(candidate())
    provider.script("charge_status", charged("ch_stray"))
    provider.script("charge_by_reference", charged("ch_stray"))
    provider.script("refund", _whole_key_refused())
    provider.script("refund_status", UnsupportedOperationError("scripted", "cannot say"))

    report = await sweep.run_once()

    assert report.reversal_failed == 1
    assert _refund_keys(provider) == ["pay_1-a1-reversal"]
    (reversal,) = records.reversals.values()
    assert reversal.status == STRAY_FAILED
    assert "pay_1-a1-reversal" in str(reversal.error)


async def test_a_refused_key_of_a_part_is_never_replaced(sweep, records, provider, metrics):
    """Only the whole amount's key was ever a void's: a part's key refused is an unknown
    outcome, as before (asked again next pass under that key)."""
    records.unexamined.append(candidate())
    provider.script("charge_status", charged("ch_stray"))
    partly = ChargeOutcome(
        ChargeStatus.SUCCEEDED, "ch_stray", captured=AMOUNT, refunded=Money(300, "EUR")
    )
    provider.script("charge_by_reference", partly)
    provider.script("refund", _whole_key_refused())

    report = await sweep.run_once()

    assert report.unanswered == 1
    assert _refund_keys(provider) == ["pay_1-a1-reversal-750"]
    assert provider.called("refund_status") == []


async def test_a_stray_charge_another_sweeper_holds_the_claim_on_is_left_to_it(
    sweep, records, provider, metrics, clock
):
    """One sweeper at a time tries a reversal: one that finds the stray charge's claim held
    (another consumer process at it) sends nothing, until that claim's lease runs out."""
    listed = candidate()
    records.unexamined.append(listed)
    provider.script("charge_status", charged("ch_stray"))
    provider.script("charge_by_reference", ProviderTimeoutError("scripted", "slow"))
    assert (await sweep.run_once()).unanswered == 1  # found, its reversal unanswered
    assert await records.claim_reversal(listed.attempt_key) is not None  # another's now

    report = await sweep.run_once()

    assert (report.checked, report.claimed, report.reversed) == (1, 1, 0)
    assert provider.called("charge_by_reference") == ["ch_stray"]  # the first try only
    assert provider.called("refund") == []
    value = metrics.registry.get_sample_value(
        "paygate_stray_reversals_unanswered_total", {"provider": "scripted", "reason": "claimed"}
    )
    assert value == 1

    clock.now += timedelta(minutes=1)  # its holder died: the lease ran out
    provider.script("charge_by_reference", charged("ch_stray"))
    provider.script("refund", refunded("re_1"))
    assert (await sweep.run_once()).reversed == 1
    assert records.reversals[listed.attempt_key] == Reversal(STRAY_REVERSED, "re_1", None)
    assert listed.attempt_key not in records.claims  # released with the record


async def test_a_sweeper_whose_claim_was_taken_over_sends_and_records_nothing_more(
    sweep, records, provider, metrics, clock
):
    """Its lease ran out while it asked about the charge, and another sweeper took the claim
    over: it does not send the refund, nor record anything."""
    listed = candidate()
    records.unexamined.append(listed)
    provider.script("charge_status", charged("ch_stray"))

    def taken_over() -> None:
        clock.now += timedelta(minutes=1)
        records.claims[listed.attempt_key] = dataclasses.replace(
            records.claims[listed.attempt_key], token="another's"
        )

    records.before("renew_reversal", taken_over)

    report = await sweep.run_once()

    assert (report.found, report.reversed, report.unanswered) == (1, 0, 1)
    assert provider.called("charge_by_reference") == []
    assert provider.called("refund") == []
    assert records.reversals == {}
    value = metrics.registry.get_sample_value(
        "paygate_stray_reversals_unanswered_total",
        {"provider": "scripted", "reason": "concurrent"},
    )
    assert value == 1
