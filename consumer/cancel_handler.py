"""Handles one CancelPayment command (a void), exactly once in effect.

The skeleton (write-ahead move to ``canceling``, the provider asked under the payment's
one cancel key, the answer and its event committed together, one owner per void, timeouts
left for :meth:`resolve`) is every follow-up's: consumer.follow_up_handler. A capture that
began first makes a cancel refuse (``payment_not_cancelable``); one that comes later is
refused in turn: the two moves share one conditional update from ``authorized``.

A void ends ``canceled``, or ``expired`` when the provider says the hold had run out
first. A void the provider refused because there is nothing left to void (the hold ran
out, or someone voided it at the provider) releases the payment all the same. One refused
because the charge was captured without paygate (by hand in the provider's dashboard)
records the payment ``succeeded``, of the amount the provider says it captured, and the
cancel refused ``payment_already_captured``: the money was taken, whatever paygate asked.
A charge captured and then refunded by hand, in full or in part, is recorded ``refunded``
or ``partially_refunded``, the refunded total the provider's (domain.provider_refunds).
"""

from __future__ import annotations

from datetime import datetime
from types import MappingProxyType
from typing import Final

from consumer.follow_up_handler import FollowUpHandler, ProviderCall
from consumer.outcome import Outcome
from consumer.ports import CancelWrites
from domain.cancels import CancelPayment, cancel_key_for
from domain.captures import captured_at_provider
from domain.error_info import ErrorInfo
from domain.errors import ErrorCode
from domain.events import cancel_event_id
from domain.money import Money
from domain.payment_view import PaymentView
from domain.provider_refunds import status_with_refunds
from domain.status import PaymentStatus
from persistence.follow_up import PaymentEventBuilder
from providers.port import CancelRequest, ChargeStatus

# What the provider's answer about the charge makes of a payment being canceled.
RELEASED_BY: Final = MappingProxyType(
    {ChargeStatus.CANCELED: PaymentStatus.CANCELED, ChargeStatus.EXPIRED: PaymentStatus.EXPIRED}
)


class CancelCommandHandler(FollowUpHandler[CancelWrites]):
    NOUN = "cancel"
    IN_FLIGHT = PaymentStatus.CANCELING
    DONE_BY = RELEASED_BY
    OUTCOMES = MappingProxyType(
        {PaymentStatus.CANCELED: Outcome.CANCELED, PaymentStatus.EXPIRED: Outcome.EXPIRED}
    )
    NOT_DONE = ErrorCode.PAYMENT_NOT_CANCELABLE
    UNDONE = "not_canceled"
    SETTLED_OTHERWISE = MappingProxyType({ChargeStatus.SUCCEEDED: PaymentStatus.SUCCEEDED})
    OTHERWISE = ErrorCode.PAYMENT_ALREADY_CAPTURED

    async def handle(self, command: CancelPayment) -> Outcome:
        written = self._ticks()  # before begin writes the claim (FollowUpHandler._handle)
        begun = await self._store.begin(command, self._refusal_event)
        return await self._handle(command, begun, written)

    def _provider_call(self, payment: PaymentView) -> ProviderCall:
        request = CancelRequest(
            cancel_key=cancel_key_for(payment.payment_request_id),
            payment_request_id=payment.payment_request_id,
            charge_reference=payment.provider_reference or "",
        )
        return lambda provider: provider.cancel(request)

    async def _record_done(
        self,
        payment: PaymentView,
        status: PaymentStatus,
        claim: str,
        captured: Money | None,
        refunded_minor: int,
    ) -> bool:
        # Released: nothing captured, whatever ``captured`` (always None for a release).
        return await self._store.finish(
            payment.payment_request_id,
            claim=claim,
            status=status,
            error=None,
            event=self._events.of_payment,
        )

    async def _record_not_done(
        self, payment: PaymentView, error: ErrorInfo, claim: str, event: PaymentEventBuilder
    ) -> bool:
        return await self._store.finish(
            payment.payment_request_id,
            claim=claim,
            status=PaymentStatus.AUTHORIZED,
            error=error,
            event=event,
        )

    async def _record_otherwise(
        self,
        payment: PaymentView,
        status: PaymentStatus,
        captured: Money | None,
        error: ErrorInfo,
        claim: str,
        refunded_minor: int,
    ) -> bool:
        captured_minor = captured_at_provider(payment.amount, captured)
        taken = payment.amount.minor_units if captured_minor is None else captured_minor
        return await self._store.settle_as_provider_holds(
            payment.payment_request_id,
            claim=claim,
            # Captured, and perhaps refunded by hand since: refunded in part, or in full.
            status=status_with_refunds(taken, refunded_minor),
            captured_minor=captured_minor,
            refunded_minor=refunded_minor,
            error=error,
            event=self._events.of_payment,
        )

    def _event_id(self, payment_request_id: str, what: str, occurred_at: datetime) -> str:
        return cancel_event_id(payment_request_id, what, occurred_at)
