"""The cancel store: the write-ahead move to ``canceling``, and the void's outcome.

:meth:`CancelStore.begin` moves an ``authorized`` payment to ``canceling`` with one
conditional update, before the provider is asked, so a crash leaves a payment that says a
void may be under way (and the reconciler asks the provider), never a silent one. A capture
begins with the same conditional update from ``authorized`` (persistence.follow_up), so
of a cancel and a capture of one payment crossing, exactly one finds it ``authorized``: the
other is refused, whatever the timing. :meth:`CancelStore.finish` records the answer and its
result event in one transaction.

One owner per void (see persistence.claims): the move to ``canceling`` claims the payment
for the worker that made it; anyone else (a redelivery, the cancel reconciler) must take
the claim before asking the provider, and :meth:`CancelStore.finish` applies only with the
holder's token.

A cancel names its payment's client scope (domain.client_scope): one naming another scope
is refused ``not_found`` with a result event, in the begin's transaction, before any status
check, exactly as a capture is (persistence.follow_up).
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from domain.cancels import CancelPayment
from domain.error_info import ErrorInfo
from domain.errors import ErrorCode, PaygateError
from domain.payment_view import PaymentView
from domain.status import RELEASED, PaymentStatus
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

# Where a void's answer may take a payment: released, or back to authorized (not voided).
CANCEL_OUTCOMES: Final = frozenset(
    {PaymentStatus.CANCELED, PaymentStatus.EXPIRED, PaymentStatus.AUTHORIZED}
)

# A void's begin: started (``canceling``), existing (under way, or the hold is released:
# ``canceled``, ``expired``), or refused. The types are every follow-up's.
CancelStarted = FollowUpStarted
CancelExisting = FollowUpExisting
CancelRefused = FollowUpRefused
CancelBegin = FollowUpBegin

__all__ = [
    "CANCEL_OUTCOMES",
    "CancelBegin",
    "CancelExisting",
    "CancelRefused",
    "CancelStarted",
    "CancelStore",
    "PaymentEventBuilder",
    "not_cancelable",
]


class CancelStore(FollowUpStore):
    IN_FLIGHT = PaymentStatus.CANCELING

    async def begin(self, command: CancelPayment, refusal_event: RefusalEvent) -> CancelBegin:
        return await self._begin(command, refusal_event, cancel_decision)

    async def finish(
        self,
        payment_request_id: str,
        *,
        claim: str,
        status: PaymentStatus,
        error: ErrorInfo | None,
        event: PaymentEventBuilder,
    ) -> bool:
        """``status`` is ``canceled`` or ``expired`` (released), or ``authorized`` with
        ``error`` (not voided); the claim is released.

        Only from ``canceling`` and only for the claim's holder: returns False, changing
        nothing, otherwise."""
        if status not in CANCEL_OUTCOMES:
            raise ValueError(f"a void does not end {status.value}")
        return await self._finish(
            payment_request_id, claim=claim, status=status, error=error, event=event
        )

    async def canceling(self, updated_before: datetime, limit: int) -> list[PaymentView]:
        """Payments whose void has had no answer since before ``updated_before``."""
        return await self._in_flight(updated_before, limit)


def cancel_decision(command: CancelPayment, payment: PaymentView) -> Decision:
    """What ``command`` does to ``payment`` (locked, of its order and scope)."""
    if payment.status is PaymentStatus.AUTHORIZED:
        return Start()
    if payment.status is PaymentStatus.CANCELING or payment.status in RELEASED:
        return Existing()
    return Refuse(not_cancelable(payment.status))


def not_cancelable(status: PaymentStatus) -> PaygateError:
    return PaygateError(
        ErrorCode.PAYMENT_NOT_CANCELABLE,
        f"the payment is {status.value}; only an authorized payment can be canceled",
    )
