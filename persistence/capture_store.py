"""The capture store: the write-ahead move to ``capturing``, and the capture's outcome.

:meth:`CaptureStore.begin` moves an ``authorized`` payment to ``capturing`` with one
conditional update, before the provider is asked, so a crash leaves a payment that says a
capture may be under way (and the reconciler asks the provider), never a silent one. Of two
captures of one payment crossing, only one finds it ``authorized``. :meth:`CaptureStore.finish`
records the answer and its result event in one transaction.

A partial capture's amount is checked against the authorization and written with the move
to ``capturing`` (``captured_minor``), under the row's lock: whoever resolves the capture
later re-sends that amount, never another. A capture asking for more than is held, or one
naming another amount than the capture made or under way, is refused and changes nothing.

One owner per capture (see persistence.claims): the move to ``capturing`` claims the payment
for the worker that made it; anyone else (a redelivery, the capture reconciler) must take
the claim before asking the provider, and :meth:`CaptureStore.finish` applies only with the
holder's token. The locked read, the scope check and the move are every follow-up's
(persistence.follow_up).
"""

from __future__ import annotations

from datetime import datetime

from domain.captures import CapturePayment, capture_amount
from domain.error_info import ErrorInfo
from domain.errors import ErrorCode, PaygateError
from domain.payment_view import PaymentView
from domain.status import CAPTURED, PaymentStatus
from persistence.follow_up import (
    FollowUpBegin,
    FollowUpExisting,
    FollowUpRefused,
    FollowUpStarted,
    PaymentEventBuilder,
    RefusalEvent,
)
from persistence.follow_up_bulk import Decision, Existing, Refuse, Start
from persistence.follow_up_store import FollowUpStore

# A capture's begin: started (``capturing``), existing (under way, or captured), or
# refused. The types are every follow-up's.
CaptureStarted = FollowUpStarted
CaptureExisting = FollowUpExisting
CaptureRefused = FollowUpRefused
CaptureBegin = FollowUpBegin

__all__ = [
    "CaptureBegin",
    "CaptureExisting",
    "CaptureRefused",
    "CaptureStarted",
    "CaptureStore",
]


class CaptureStore(FollowUpStore):
    IN_FLIGHT = PaymentStatus.CAPTURING

    async def begin(self, command: CapturePayment, refusal_event: RefusalEvent) -> CaptureBegin:
        return await self._begin(command, refusal_event, capture_decision)

    async def finish(
        self,
        payment_request_id: str,
        *,
        claim: str,
        captured: bool,
        error: ErrorInfo | None,
        event: PaymentEventBuilder,
    ) -> bool:
        """``succeeded`` when ``captured``, else back to ``authorized`` with ``error``; the
        claim is released.

        Only from ``capturing`` and only for the claim's holder: returns False, changing
        nothing, otherwise."""
        status = PaymentStatus.SUCCEEDED if captured else PaymentStatus.AUTHORIZED
        # A capture that did not happen leaves the whole authorization, for any capture.
        amount = {} if captured else {"captured_minor": None}
        return await self._finish(
            payment_request_id, claim=claim, status=status, error=error, event=event, values=amount
        )

    async def capturing(self, updated_before: datetime, limit: int) -> list[PaymentView]:
        """Payments whose capture has had no answer since before ``updated_before``."""
        return await self._in_flight(updated_before, limit)


def capture_decision(command: CapturePayment, payment: PaymentView) -> Decision:
    """What ``command`` does to ``payment`` (locked, of its order and scope): the amount is
    checked against the locked row the move then writes."""
    error = _refusal(command, payment)
    if error is None and payment.status is PaymentStatus.AUTHORIZED:
        amount = capture_amount(payment.amount, command.amount)
        partial = amount.minor_units != payment.amount.minor_units
        return Start({"captured_minor": amount.minor_units if partial else None})
    if error is None:
        return Existing()
    return Refuse(error)


def _refusal(command: CapturePayment, payment: PaymentView) -> PaygateError | None:
    """Why this capture of ``payment`` changes nothing, or None: it may start (the payment
    is authorized) or it names the capture under way or made (a replay)."""
    under_way_or_made = payment.status is PaymentStatus.CAPTURING or payment.status in CAPTURED
    if payment.status is not PaymentStatus.AUTHORIZED and not under_way_or_made:
        return PaygateError(
            ErrorCode.PAYMENT_NOT_CAPTURABLE,
            f"the payment is {payment.status.value}; only an authorized payment can be captured",
        )
    try:
        amount = capture_amount(payment.amount, command.amount)
    except PaygateError as exc:
        return exc
    if payment.status is PaymentStatus.AUTHORIZED:
        return None
    if command.amount is None or amount == payment.captured_amount:
        return None
    return PaygateError(
        ErrorCode.IDEMPOTENCY_CONFLICT,
        f"the payment's capture is of {payment.captured_amount}, not {amount}: a payment is "
        "captured once",
        param="amount",
    )
