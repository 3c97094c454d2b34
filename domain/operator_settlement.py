"""The rules of settling by hand a call paygate withholds (``paygate reconcile settle``).

A payment (or refund) is *withheld* when its call is in doubt (pending, the attempt open, the
provider silent about its key) and older than its provider honours the key less the margin
(:func:`domain.resend_window.may_resend` false), or whose key was sent again the most it may
be (:func:`domain.resend_window.may_resend_again` false): paygate will neither send it again
nor fail it on the provider's silence (docs/runbook.md#paygateresendwithheld). Only such a
one may be settled by hand; anything else is the reconciler's and is refused with
``not_withheld``. One withheld by the bound at a provider that keeps its keys for good
(Alipay) is failed only after its provider closed the key
(consumer.payment_settlement, :func:`failable_after_last_send`).

A payment waiting for its payer is withheld too when paygate holds no action to show the
payer (``requires_action`` with no stored action, or in doubt while its provider answers
"waiting for the payer" without the action): the reconciler re-sends the key to learn the
action, and past the window withholds that re-send, so nothing but an operator ends it
(:func:`payment_refusal`). Its settlement, asked to fail it, asks the provider to close the
payer's trade first and records what the provider answers (closed: ``expired``; paid
meanwhile: ``succeeded``), so that a payer who does pay later cannot pay a payment recorded
as not paid. One whose payer was shown an action is the reconciler's: it follows the payer
and closes the trade once the action expires.

The operator's reason is stored with the failure (its message, ``settled_by_operator``) and
logged: it must be text any field may hold (domain.text) and must not look like it holds an
account number (a run of 12 or more digits, spaces and dashes between them allowed), which
neither a log nor the store may carry in clear.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from domain.error_info import ErrorInfo
from domain.errors import ErrorCode, PaygateError
from domain.next_action import NextAction
from domain.resend_window import RESEND_MARGIN, may_resend
from domain.search_lag import no_charge_final_at
from domain.status import PaymentStatus
from domain.text import check_text

REASON_MAX_LENGTH: Final = 500
# How long after an operator failed a payment the stray-charge sweep first asks about its
# key. The payment was withheld because the provider's status search showed nothing for a
# day; asked minutes later, a search still lagging would have the key marked verified for
# good. A day later any lag seen so far is over, and a charge that shows is reversed then
# (a provider's notice of it reopens the key, and it is asked at once).
SWEEP_HOLD: Final = timedelta(hours=24)
# 12 digits or more, perhaps grouped by single spaces or dashes: the shortest card numbers
# and most bank account numbers. An order number that long is refused too: say it otherwise.
_ACCOUNT_LIKE: Final = re.compile(r"\d(?:[ -]?\d){11,}")


def check_reason(reason: object) -> str:
    """``reason`` as the stored and logged text of an operator's failure, or a refusal
    (``invalid_request``, ``invalid_text``) naming the ``reason`` parameter."""
    text = check_text(reason, param="reason", max_length=REASON_MAX_LENGTH)
    if not text.strip():
        raise PaygateError(ErrorCode.INVALID_REQUEST, "reason must not be blank", param="reason")
    if _ACCOUNT_LIKE.search(text) is not None:
        raise PaygateError(
            ErrorCode.INVALID_REQUEST,
            "reason must not hold an account number (a run of 12 or more digits)",
            param="reason",
        )
    return text


# A payment call in doubt: it timed out (pending), or its worker died before any answer was
# recorded (processing, as begin wrote it).
IN_DOUBT: Final = frozenset({PaymentStatus.PENDING, PaymentStatus.PROCESSING})


def payment_refusal(status: PaymentStatus, stored_action: NextAction | None) -> str | None:
    """Why a payment in ``status`` (with ``stored_action``, the action stored with it) is
    not one settlement may act on, for its ``not_withheld`` message; None if it may be,
    once it is also past its provider's window (:func:`is_withheld`).

    In doubt, or waiting for its payer with no action stored: both are re-sent by the
    reconciler, so both are withheld past the window. Waiting with an action stored is not:
    the reconciler follows the payer until the action expires, then closes the trade."""
    if status in IN_DOUBT:
        return None
    if status is PaymentStatus.REQUIRES_ACTION:
        if stored_action is None:
            return None
        return "its payer was shown an action: the reconciler follows it until it expires"
    return f"it is {status.value}"


def payer_was_shown(stored: NextAction | None, answered: NextAction | None) -> bool:
    """Whether a payment whose provider waits for the payer has an action the payer could
    take: stored with the payment, or in the provider's answer (which the reconciler then
    records). Without one, the payment is withheld (:func:`payment_refusal`)."""
    return stored is not None or answered is not None


def is_withheld(began_at: datetime, now: datetime, window: timedelta | None) -> bool:
    """Whether a call in doubt since ``began_at`` is past what may be re-sent: never for a
    provider that honours its keys for good (``window`` None)."""
    return not may_resend(began_at, now, window)


def failable_from(
    began_at: datetime,
    window: timedelta,
    lag: timedelta,
    *,
    last_sent_at: datetime | None = None,
) -> datetime:
    """From when a withheld call begun at ``began_at`` may be failed on its provider's
    "nothing under the key": ``lag`` (its status search's, domain.search_lag, for a
    payment; its ``refund_status_lag`` for a refund) after the last moment a call of
    the key could reach the provider. That moment is the window's end: the key is re-sent
    only while ``may_resend`` holds, checked before every call, and the margin it keeps
    below the window covers the re-send's retries and a call the provider still reads after
    its sender timed out (domain.resend_window). Withheld from the margin's start, the call
    may have its provider's answer recorded at once; failed there, a late re-send that then
    lands is a charge under a payment recorded "nothing was charged" (the stray sweep finds
    it a day later), or a refund whose amount was released and refunded again (nothing
    looks at a refund key once it is failed).

    ``last_sent_at``: when the key was last sent, if known (a payment attempt's
    ``last_sent_at``). Under one window it changes nothing -- ``may_resend`` puts every send
    before the margin's start -- but a key re-sent under a longer window than the one its
    provider declares now (a release that shortened it) may land up to the margin after
    that send: the silence is final only ``lag`` after the later of the two."""
    last_arrival = began_at + window
    if last_sent_at is not None:
        last_arrival = max(last_arrival, last_sent_at + RESEND_MARGIN)
    return no_charge_final_at(last_arrival, lag)


def may_fail(
    began_at: datetime,
    now: datetime,
    window: timedelta,
    lag: timedelta,
    *,
    last_sent_at: datetime | None = None,
) -> bool:
    """Whether a withheld call begun at ``began_at`` may be failed at ``now`` on its
    provider's "nothing under the key" (see :func:`failable_from`)."""
    return now >= failable_from(began_at, window, lag, last_sent_at=last_sent_at)


def failable_after_last_send(last_sent_at: datetime, lag: timedelta) -> datetime:
    """From when a call withheld by the bound on re-sends, at a provider that keeps its keys
    for good, may be failed on its provider's "nothing under the key": no call of the key
    is still on its way (:data:`RESEND_MARGIN` after its last send, as for a window's end in
    :func:`failable_from`), and one that landed shows in the status answer (``lag``)."""
    return no_charge_final_at(last_sent_at + RESEND_MARGIN, lag)


def operator_failure(subject: str, reason: str, *, closed_at_provider: bool = False) -> ErrorInfo:
    """The error a payment (``subject`` "payment") or refund failed by hand is stored and
    published with. ``closed_at_provider``: the provider closed the key first (a payment
    withheld by the bound on re-sends, at a provider that keeps its keys for good)."""
    nothing = "charged" if subject == "payment" else "refunded"
    why = "the provider closed it" if closed_at_provider else "its idempotency window has passed"
    return ErrorInfo(
        ErrorCode.SETTLED_BY_OPERATOR,
        f"failed by an operator: the provider holds nothing under this {subject}'s key and "
        f"{why}; nothing was {nothing}. Reason: {reason}",
    )


def not_withheld(subject: str, subject_id: str, why: str) -> PaygateError:
    return PaygateError(
        ErrorCode.NOT_WITHHELD,
        f"{subject} {subject_id} is not withheld ({why}); nothing was changed",
    )


@dataclass(frozen=True, slots=True)
class Settled:
    """What ``paygate reconcile settle`` did to one payment or refund.

    ``action``: ``recorded_provider_answer`` (the provider now shows how the call ended, and
    that was recorded as the reconciler records it), ``failed_by_operator``,
    ``closed_by_operator`` (a payment whose provider waited for a payer paygate had no action
    for: the provider closed the trade on the operator's word, and its answer was recorded),
    or ``left_withheld`` (the provider still shows nothing, or waits for a payer who has no
    action, and no failure was asked for: nothing changed). ``outcome``: the stored outcome
    the recording came to."""

    subject: str
    subject_id: str
    provider: str
    action: str
    outcome: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "subject": self.subject,
            "id": self.subject_id,
            "provider": self.provider,
            "action": self.action,
            "outcome": self.outcome,
        }
