"""Handles one CapturePayment command, exactly once in effect.

The skeleton (write-ahead move to ``capturing``, the provider asked under the capture's
one key, the answer and its event committed together, one owner per capture, timeouts
left for :meth:`resolve`) is every follow-up's: consumer.follow_up_handler. A capture adds
its amount: the provider is asked to capture the amount written with the move to
``capturing`` (all, or less: the provider releases the rest), and a re-send asks for it
again, never another.

A capture the provider refused because the authorization was released without paygate
(voided by hand in its dashboard, or its hold ran out) records the payment ``canceled``
(or ``expired``) and the capture refused ``payment_already_canceled``: nothing is held any
more, so ``authorized`` would be false. One the provider made all the same (a capture by
hand first) records what the provider says it captured, and what it says it has refunded
of that capture since (a capture and a refund by hand: domain.provider_refunds).
"""

from __future__ import annotations

from datetime import datetime
from types import MappingProxyType

from consumer.follow_up_handler import FollowUpHandler, ProviderCall
from consumer.outcome import Outcome
from consumer.ports import CaptureWrites
from domain.captures import CapturePayment, captured_at_provider, provider_capture_key
from domain.error_info import ErrorInfo
from domain.errors import ErrorCode
from domain.events import capture_event_id
from domain.money import Money
from domain.payment_view import PaymentView
from domain.provider_refunds import status_with_refunds
from domain.status import PaymentStatus
from persistence.follow_up import PaymentEventBuilder
from providers.port import CaptureRequest, ChargeStatus


class CaptureCommandHandler(FollowUpHandler[CaptureWrites]):
    NOUN = "capture"
    IN_FLIGHT = PaymentStatus.CAPTURING
    DONE_BY = MappingProxyType({ChargeStatus.SUCCEEDED: PaymentStatus.SUCCEEDED})
    OUTCOMES = MappingProxyType({PaymentStatus.SUCCEEDED: Outcome.SUCCEEDED})
    NOT_DONE = ErrorCode.PAYMENT_NOT_CAPTURABLE
    UNDONE = "not_captured"
    SETTLED_OTHERWISE = MappingProxyType(
        {ChargeStatus.CANCELED: PaymentStatus.CANCELED, ChargeStatus.EXPIRED: PaymentStatus.EXPIRED}
    )
    OTHERWISE = ErrorCode.PAYMENT_ALREADY_CANCELED

    async def handle(self, command: CapturePayment) -> Outcome:
        written = self._ticks()  # before begin writes the claim (FollowUpHandler._handle)
        begun = await self._store.begin(command, self._refusal_event)
        return await self._handle(command, begun, written)

    def _provider_call(self, payment: PaymentView) -> ProviderCall:
        # The amount written with the move to capturing: a re-send asks for it again.
        amount = payment.captured_amount
        request = CaptureRequest(
            capture_key=provider_capture_key(payment.payment_request_id, payment.amount, amount),
            payment_request_id=payment.payment_request_id,
            charge_reference=payment.provider_reference or "",
            amount=amount,
        )
        return lambda provider: provider.capture(request)

    async def _record_done(
        self,
        payment: PaymentView,
        status: PaymentStatus,
        claim: str,
        captured: Money | None,
        refunded_minor: int,
    ) -> bool:
        if captured is not None or refunded_minor:
            # Found made though the call was refused: the provider's amount, not ours (the
            # one asked, if it does not say), and what it refunded of it outside paygate.
            captured_minor = (
                payment.captured_minor
                if captured is None
                else captured_at_provider(payment.amount, captured)
            )
            taken = payment.amount.minor_units if captured_minor is None else captured_minor
            return await self._store.settle_as_provider_holds(
                payment.payment_request_id,
                claim=claim,
                status=status_with_refunds(taken, refunded_minor),
                captured_minor=captured_minor,
                refunded_minor=refunded_minor,
                error=None,
                event=self._events.of_payment,
            )
        return await self._store.finish(
            payment.payment_request_id,
            claim=claim,
            captured=True,
            error=None,
            event=self._events.of_payment,
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
        # Released: nothing captured, nothing refunded.
        return await self._store.settle_as_provider_holds(
            payment.payment_request_id,
            claim=claim,
            status=status,
            captured_minor=None,
            error=error,
            event=self._events.of_payment,
        )

    async def _record_not_done(
        self, payment: PaymentView, error: ErrorInfo, claim: str, event: PaymentEventBuilder
    ) -> bool:
        return await self._store.finish(
            payment.payment_request_id, claim=claim, captured=False, error=error, event=event
        )

    def _event_id(self, payment_request_id: str, what: str, occurred_at: datetime) -> str:
        return capture_event_id(payment_request_id, what, occurred_at)
