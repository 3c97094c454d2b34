"""The rules of settling a withheld call by hand (domain.operator_settlement)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.errors import ErrorCode, PaygateError
from domain.next_action import NextAction, NextActionType
from domain.operator_settlement import (
    REASON_MAX_LENGTH,
    check_reason,
    failable_from,
    is_withheld,
    may_fail,
    operator_failure,
    payer_was_shown,
    payment_refusal,
)
from domain.resend_window import RESEND_MARGIN
from domain.status import PaymentStatus

pytestmark = pytest.mark.unit

BEGAN = datetime(2026, 12, 1, tzinfo=UTC)
WINDOW = timedelta(hours=24)


def test_withheld_from_the_window_less_the_margin_never_for_keys_kept_for_good() -> None:
    assert not is_withheld(BEGAN, BEGAN + WINDOW - RESEND_MARGIN - timedelta(seconds=1), WINDOW)
    assert is_withheld(BEGAN, BEGAN + WINDOW - RESEND_MARGIN, WINDOW)
    assert not is_withheld(BEGAN, BEGAN + timedelta(days=3650), None)


def test_failed_on_a_lagging_search_only_its_lag_after_the_windows_end() -> None:
    lag = timedelta(hours=2)
    # The last re-send may start just before the window less the margin and charge: a
    # search lagging by ``lag`` shows that charge by the window's end plus the lag.
    assert failable_from(BEGAN, WINDOW, lag) == BEGAN + WINDOW + lag
    assert not may_fail(BEGAN, BEGAN + WINDOW - RESEND_MARGIN, WINDOW, lag)
    assert not may_fail(BEGAN, BEGAN + WINDOW + lag - timedelta(seconds=1), WINDOW, lag)
    assert may_fail(BEGAN, BEGAN + WINDOW + lag, WINDOW, lag)


def test_a_key_sent_after_its_windows_margin_counts_from_that_send() -> None:
    lag = timedelta(hours=2)
    # Every send under the window precedes the margin's start: nothing changes.
    inside = BEGAN + WINDOW - RESEND_MARGIN - timedelta(seconds=1)
    assert failable_from(BEGAN, WINDOW, lag, last_sent_at=inside) == BEGAN + WINDOW + lag
    # A key re-sent under a longer window than the one declared now may land up to the
    # margin after that send: its silence is final only the lag after that.
    late = BEGAN + WINDOW
    assert failable_from(BEGAN, WINDOW, lag, last_sent_at=late) == late + RESEND_MARGIN + lag
    assert not may_fail(
        BEGAN, late + RESEND_MARGIN + lag - timedelta(seconds=1), WINDOW, lag, last_sent_at=late
    )
    assert may_fail(BEGAN, late + RESEND_MARGIN + lag, WINDOW, lag, last_sent_at=late)


def test_without_lag_failed_from_the_windows_end_not_the_margins_start() -> None:
    # Withheld from the margin's start, but a re-send begun just before it may still reach
    # the provider until the window's end (its retries, a call read after it timed out).
    assert is_withheld(BEGAN, BEGAN + WINDOW - RESEND_MARGIN, WINDOW)
    assert not may_fail(BEGAN, BEGAN + WINDOW - timedelta(seconds=1), WINDOW, timedelta(0))
    assert may_fail(BEGAN, BEGAN + WINDOW, WINDOW, timedelta(0))


@pytest.mark.parametrize(
    "reason",
    [
        "dashboard shows nothing under the key; ticket OPS-1234",
        "order 12345678901 checked",  # 11 digits: an order number, not an account
        "x" * REASON_MAX_LENGTH,
    ],
)
def test_a_reason_is_kept_as_given(reason: str) -> None:
    assert check_reason(reason) == reason


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        ("card 4242424242424242 not charged", ErrorCode.INVALID_REQUEST),
        ("card 4242 4242 4242 4242 not charged", ErrorCode.INVALID_REQUEST),
        ("iban part 1234-5678-9012", ErrorCode.INVALID_REQUEST),
        ("", ErrorCode.INVALID_REQUEST),
        ("   ", ErrorCode.INVALID_REQUEST),
        ("x" * (REASON_MAX_LENGTH + 1), ErrorCode.INVALID_REQUEST),
        ("line\nbreak", ErrorCode.INVALID_TEXT),
        (None, ErrorCode.INVALID_REQUEST),
    ],
    ids=["card", "grouped-card", "dashed", "empty", "blank", "too-long", "control", "none"],
)
def test_a_reason_that_could_carry_an_account_number_or_nothing_is_refused(
    reason: object, code: ErrorCode
) -> None:
    with pytest.raises(PaygateError) as refused:
        check_reason(reason)
    assert (refused.value.code, refused.value.param) == (code, "reason")
    assert "4242" not in refused.value.message  # the refusal never repeats the value


def test_the_failure_names_the_code_and_carries_the_reason() -> None:
    error = operator_failure("refund", "nothing at the provider")
    assert error.code is ErrorCode.SETTLED_BY_OPERATOR
    assert error.message.endswith("Reason: nothing at the provider")
    assert "nothing was refunded" in error.message


ACTION = NextAction(
    NextActionType.REDIRECT_URL, BEGAN + timedelta(minutes=15), url="https://pay.example/t/1"
)


@pytest.mark.parametrize("status", [PaymentStatus.PENDING, PaymentStatus.PROCESSING])
def test_a_payment_in_doubt_may_be_settled(status: PaymentStatus) -> None:
    assert payment_refusal(status, None) is None


def test_a_payment_waiting_for_a_payer_who_has_no_action_may_be_settled() -> None:
    # The reconciler re-sends its key to learn the action, and withholds that past the
    # window: only an operator ends it.
    assert payment_refusal(PaymentStatus.REQUIRES_ACTION, None) is None


def test_a_payment_whose_payer_was_shown_an_action_is_the_reconcilers() -> None:
    why = payment_refusal(PaymentStatus.REQUIRES_ACTION, ACTION)
    assert why is not None
    assert "shown an action" in why


@pytest.mark.parametrize(
    "status",
    sorted(
        set(PaymentStatus)
        - {PaymentStatus.PENDING, PaymentStatus.PROCESSING, PaymentStatus.REQUIRES_ACTION}
    ),
)
def test_any_other_payment_is_refused_by_its_status(status: PaymentStatus) -> None:
    assert payment_refusal(status, None) == f"it is {status.value}"


def test_a_payer_was_shown_an_action_stored_or_answered() -> None:
    assert payer_was_shown(ACTION, None)
    assert payer_was_shown(None, ACTION)
    assert not payer_was_shown(None, None)
