"""Handles one CancelPayment command (a void), exactly once in effect.

The skeleton (write-ahead move to ``canceling``, the provider asked under the payment's
one cancel key, the answer and its event committed together, one owner per void, timeouts
left for :meth:`resolve`) is every follow-up's: consumer.follow_up_handler. A capture that
began first makes a cancel refuse (``payment_not_cancelable``); one that comes later is
refused in turn: the two moves share one conditional update from ``authorized``.

A void ends ``canceled``, or ``expired`` when the provider says the hold had run out
first. A void the provider refused because there is nothing left to void (the hold ran
out, or someone voided it at the provider) releases the payment all the same.
"""

from __future__ import annotations

from datetime import datetime
from types import MappingProxyType
from typing import Final

from consumer.follow_up_handler import FollowUpHandler, ProviderCall
from consumer.outcome import Outcome
from consumer.ports import CancelWrites
from domain.cancels import CancelPayment, cancel_key_for
from domain.error_info import ErrorInfo
from domain.errors import ErrorCode
from domain.events import cancel_event_id
from domain.payment_view import PaymentView
from domain.status import PaymentStatus
from persistence.follow_up import PaymentEventBuilder
from providers.errors import ProviderError
from providers.port import CancelRequest, ChargeStatus
from providers.registry import UnknownProviderError

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

    async def handle(self, command: CancelPayment) -> Outcome:
        return await self._handle(command, await self._store.begin(command, self._refusal_event))

    def _provider_call(self, payment: PaymentView) -> ProviderCall:
        request = CancelRequest(
            cancel_key=cancel_key_for(payment.payment_request_id),
            payment_request_id=payment.payment_request_id,
            charge_reference=payment.provider_reference or "",
        )
        return lambda provider: provider.cancel(request)

    async def _record_done(self, payment: PaymentView, status: PaymentStatus, claim: str) -> bool:
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

    def _event_id(self, payment_request_id: str, what: str, occurred_at: datetime) -> str:
        return cancel_event_id(payment_request_id, what, occurred_at)

    async def _done_anyway(self, payment: PaymentView) -> PaymentStatus | None:
        """What the provider says the hold is now, if released; None if held or unknown."""
        try:
            provider = self._providers.get(payment.provider or "")
            known = await provider.charge_by_reference(payment.provider_reference or "")
        except (UnknownProviderError, ProviderError):
            return None
        return None if known is None else RELEASED_BY.get(known.status)
