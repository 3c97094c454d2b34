"""Handles one CancelPayment command (a void), exactly once in effect.

1. :meth:`CancelStore.begin` moves the payment from ``authorized`` to ``canceling``
   (write-ahead), refuses the cancel, or reports one already under way or done. A capture
   that began first makes it refuse (``payment_not_cancelable``); one that comes later is
   refused in turn: the two moves share one conditional update from ``authorized``.
2. The payment's provider is asked to void the authorization, under the payment's one
   cancel key, so a void sent twice (a redelivery, the reconciler) voids once.
3. The answer and its result event are committed together by :meth:`CancelStore.finish`:
   ``canceled``, or ``expired`` when the provider says the hold had run out first.

A provider that certainly did not void (unavailable, rate limited) is asked again with
back-off, up to the retry policy's attempts; then, like a refusal by the provider, the
payment goes back to ``authorized`` with the error, and may be canceled (or captured)
later. A timeout leaves it ``canceling`` for :meth:`resolve` (a redelivery, or the cancel
reconciler) to settle by asking the provider about the charge.

One owner per void (see persistence.claims), as for captures: only the holder of the
payment's claim asks the provider, sends the void or records its answer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from types import MappingProxyType
from typing import Final

from consumer.claim_holding import holding_claim
from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.ports import CancelWrites
from consumer.retrying import ClaimLost, GaveUp, call_with_retries
from domain.cancels import CancelPayment, cancel_key_for
from domain.clock import utc_now
from domain.error_info import ErrorInfo
from domain.errors import ErrorCode, PaygateError
from domain.events import cancel_event_id
from domain.payment_view import PaymentView
from domain.retry import RetryPolicy
from domain.status import PaymentStatus
from persistence.cancel_store import CancelExisting, CancelRefused, CancelStarted
from persistence.outbox import OutboxMessage
from providers.errors import ProviderError
from providers.port import CancelRequest, ChargeStatus
from providers.registry import Providers, UnknownProviderError
from telemetry.metrics import Metrics

log = logging.getLogger("paygate.consumer")

# What the provider's answer about the charge makes of a payment being canceled.
RELEASED_BY: Final = MappingProxyType(
    {ChargeStatus.CANCELED: PaymentStatus.CANCELED, ChargeStatus.EXPIRED: PaymentStatus.EXPIRED}
)
_OUTCOMES: Final = MappingProxyType(
    {PaymentStatus.CANCELED: Outcome.CANCELED, PaymentStatus.EXPIRED: Outcome.EXPIRED}
)


class CancelCommandHandler:
    def __init__(
        self,
        *,
        store: CancelWrites,
        providers: Providers,
        events: PaymentEvents,
        metrics: Metrics,
        retry_policy: RetryPolicy | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self._providers = providers
        self._events = events
        self._metrics = metrics
        self._retry_policy = retry_policy or RetryPolicy()
        self._clock = clock

    async def handle(self, command: CancelPayment) -> Outcome:
        begun = await self._store.begin(command, self._refusal_event)
        if isinstance(begun, CancelStarted):
            outcome = await self._as_owner(
                begun.payment.payment_request_id,
                begun.claim.token,
                self._send(begun.payment, begun.claim.token),
            )
        elif isinstance(begun, CancelRefused):
            outcome = Outcome.REFUSED
            if begun.payment is None:
                log.warning(
                    "cancel of an unknown payment refused",
                    extra={"payment_request_id": command.payment_request_id},
                )
        else:
            outcome = await self._handle_existing(begun)
        self._metrics.commands_consumed.labels("cancel", outcome.value).inc()
        log.info(
            "cancel command handled",
            extra={
                "payment_request_id": command.payment_request_id,
                "order_id": command.order_id,
                "outcome": outcome.value,
            },
        )
        return outcome

    async def _handle_existing(self, existing: CancelExisting) -> Outcome:
        payment = existing.payment
        if payment.status is PaymentStatus.CANCELING:
            claim = await self._store.claim(payment.payment_request_id)
            if claim is not None:
                return await self.resolve(payment, claim.token)
            return Outcome.OWNED_ELSEWHERE  # another worker holds the void
        # Released already: canceling again changes nothing; say so again, same event id.
        await self._store.enqueue(self._events.of_payment(payment))
        return Outcome.REPLAYED

    async def resolve(self, payment: PaymentView, claim: str) -> Outcome:
        """Settle a payment left ``canceling`` whose claim the caller holds: ask the provider
        what the charge is now."""
        return await self._as_owner(
            payment.payment_request_id, claim, self._resolve(payment, claim)
        )

    async def _resolve(self, payment: PaymentView, claim: str) -> Outcome:
        try:
            provider = self._providers.get(payment.provider or "")
            known = await provider.charge_by_reference(payment.provider_reference or "")
        except (UnknownProviderError, ProviderError) as exc:
            log.warning(
                "cancel not resolved: %s",
                exc,
                extra={"payment_request_id": payment.payment_request_id},
            )
            await self._store.release(payment.payment_request_id, claim)
            return Outcome.PENDING
        if known is not None and known.status in RELEASED_BY:
            return await self._released(payment, RELEASED_BY[known.status], claim)
        # Still authorized (or unknown to the provider): the void did not happen. Sending
        # it again under the same key cannot void twice.
        return await self._send(payment, claim, in_doubt=True)

    async def _as_owner(self, payment_id: str, claim: str, work: Awaitable[Outcome]) -> Outcome:
        """Run ``work`` holding ``claim`` (see consumer.claim_holding)."""
        return await holding_claim(work, lambda: self._store.release(payment_id, claim))

    async def _send(self, payment: PaymentView, claim: str, *, in_doubt: bool = False) -> Outcome:
        """Ask the provider to void, retrying what certainly did not arrive.

        ``in_doubt``: the void was sent before; an earlier call may still reach the
        provider, so when the retries run out the payment stays ``canceling`` for the
        reconciler, never back to ``authorized`` on a guess."""
        request = CancelRequest(
            cancel_key=cancel_key_for(payment.payment_request_id),
            payment_request_id=payment.payment_request_id,
            charge_reference=payment.provider_reference or "",
        )
        pid = payment.payment_request_id
        try:
            provider = self._providers.get(payment.provider or "")
            answer = await call_with_retries(
                lambda: provider.cancel(request),
                policy=self._retry_policy,
                still_owner=lambda: self._store.renew(pid, claim),
            )
        except UnknownProviderError as exc:
            log.error("cancel not sent: %s", exc, extra={"payment_request_id": pid})
            await self._store.release(pid, claim)
            return Outcome.PENDING
        except ProviderError as exc:
            if exc.outcome_unknown:
                # Stays canceling; resolve() settles it, under a claim of its own.
                await self._store.release(pid, claim)
                return Outcome.PENDING
            return await self._refused(payment, exc, claim)
        except PaygateError as exc:
            return await self._not_canceled(payment, ErrorInfo.from_error(exc), claim)
        if isinstance(answer, ClaimLost):
            return Outcome.OWNED_ELSEWHERE  # another worker has the void now
        if isinstance(answer, GaveUp):
            if in_doubt:
                await self._store.release(pid, claim)
                return Outcome.PENDING
            return await self._refused(payment, answer.error, claim)
        if answer.status in RELEASED_BY:
            return await self._released(payment, RELEASED_BY[answer.status], claim)
        error = answer.error or PaygateError(
            ErrorCode.PAYMENT_NOT_CANCELABLE, "the provider did not cancel the payment"
        )
        return await self._not_canceled(payment, ErrorInfo.from_error(error), claim)

    async def _refused(self, payment: PaymentView, exc: ProviderError, claim: str) -> Outcome:
        message = f"the provider could not cancel the payment: {exc.message}"
        return await self._not_canceled(payment, ErrorInfo(exc.code, message), claim)

    async def _released(self, payment: PaymentView, status: PaymentStatus, claim: str) -> Outcome:
        applied = await self._store.finish(
            payment.payment_request_id,
            claim=claim,
            status=status,
            error=None,
            event=self._events.of_payment,
        )
        return _OUTCOMES[status] if applied else Outcome.REPLAYED

    async def _not_canceled(self, payment: PaymentView, error: ErrorInfo, claim: str) -> Outcome:
        released = await self._released_at_provider(payment)
        if released is not None:
            # Refused because there is nothing left to void (the hold ran out, or someone
            # voided it at the provider): the payment is released all the same.
            return await self._released(payment, released, claim)

        def event(stored: PaymentView) -> OutboxMessage:
            return self._events.of_payment(
                stored,
                event_id=cancel_event_id(
                    stored.payment_request_id, "not_canceled", stored.updated_at
                ),
            )

        applied = await self._store.finish(
            payment.payment_request_id,
            claim=claim,
            status=PaymentStatus.AUTHORIZED,
            error=error,
            event=event,
        )
        return Outcome.AUTHORIZED if applied else Outcome.REPLAYED

    async def _released_at_provider(self, payment: PaymentView) -> PaymentStatus | None:
        """What the provider says the hold is now, if released; None if held or unknown."""
        try:
            provider = self._providers.get(payment.provider or "")
            known = await provider.charge_by_reference(payment.provider_reference or "")
        except (UnknownProviderError, ProviderError):
            return None
        return None if known is None else RELEASED_BY.get(known.status)

    def _refusal_event(self, payment: PaymentView, error: PaygateError) -> OutboxMessage:
        now = self._clock()
        return self._events.of_payment(
            payment,
            error=ErrorInfo.from_error(error),
            occurred_at=now,
            event_id=cancel_event_id(payment.payment_request_id, "refused", now),
        )
