"""Turns a provider's answer (or silence) into a stored status plus its result event.

Shared by the command handler and the reconciler, so both map answers the same way:

| provider answer                      | payment   | attempt   |
| ------------------------------------ | --------- | --------- |
| charge succeeded                     | succeeded | succeeded |
| paid, then refunded in full outside paygate (Alipay's closed paid trade) | refunded | succeeded |
| authorized (asked not to capture)    | authorized | succeeded |
| charge declined                      | failed    | declined  |
| certainly not charged (unavailable)  | failed    | failed    |
| no answer in time (outcome unknown)  | pending   | unknown (stays open, in doubt) |
| the payer must act first             | requires_action | requires_action (stays open) |
| the payer never acted; trade closed  | expired   | declined  |

Every method takes ``provider``: the provider of the attempt (its ``provider`` column),
which the result event names, and ``claim``: the caller's claim token on the payment, without
which nothing is recorded (see persistence.claims).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents, PaymentFacts
from consumer.ports import PaymentWrites
from domain.error_info import ErrorInfo
from domain.errors import ErrorCode, PaygateError
from domain.next_action import NextAction
from domain.status import PaymentStatus
from persistence.attempts import (
    ATTEMPT_DECLINED,
    ATTEMPT_FAILED,
    ATTEMPT_REQUIRES_ACTION,
    ATTEMPT_SUCCEEDED,
    ATTEMPT_UNKNOWN,
)
from providers.errors import ProviderError
from providers.port import ChargeOutcome, ChargeStatus

_CHARGED = {
    ChargeStatus.SUCCEEDED: PaymentStatus.SUCCEEDED,
    ChargeStatus.AUTHORIZED: PaymentStatus.AUTHORIZED,
}


class PaymentOutcomes:
    def __init__(
        self,
        store: PaymentWrites,
        events: PaymentEvents,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._events = events
        self._clock = clock

    async def charged(
        self,
        facts: PaymentFacts,
        attempt_key: str,
        charged: ChargeOutcome,
        *,
        provider: str,
        claim: str,
    ) -> Outcome:
        if charged.status in (ChargeStatus.SUCCEEDED, ChargeStatus.AUTHORIZED):
            # Refunded in full at the provider before paygate heard of the charge: the
            # payment's true end is refunded (all of it returned), never succeeded.
            refunded = charged.refunded_in_full
            return await self._finish(
                facts,
                attempt_key,
                PaymentStatus.REFUNDED if refunded else _CHARGED[charged.status],
                ATTEMPT_SUCCEEDED,
                charged.provider_reference,
                None,
                provider,
                claim,
            )
        if charged.status is ChargeStatus.REQUIRES_ACTION:
            # The claim goes with this write: nobody works on a payment waiting for its
            # payer; the notification or the reconciler claims it again to finish it.
            return await self._finish(
                facts,
                attempt_key,
                PaymentStatus.REQUIRES_ACTION,
                ATTEMPT_REQUIRES_ACTION,
                charged.provider_reference,
                None,
                provider,
                claim,
                next_action=charged.next_action,
            )
        if charged.status is ChargeStatus.EXPIRED:
            expiry = ErrorInfo(
                ErrorCode.PAYMENT_EXPIRED,
                "the payer did not complete the payment in time; nothing was charged",
            )
            return await self._finish(
                facts,
                attempt_key,
                PaymentStatus.EXPIRED,
                ATTEMPT_DECLINED,
                charged.provider_reference,
                expiry,
                provider,
                claim,
            )
        error = charged.error or PaygateError(
            ErrorCode.PAYMENT_DECLINED, "the provider declined the payment"
        )
        return await self._finish(
            facts,
            attempt_key,
            PaymentStatus.FAILED,
            ATTEMPT_DECLINED,
            charged.provider_reference,
            ErrorInfo.from_error(error),
            provider,
            claim,
        )

    async def provider_error(
        self,
        facts: PaymentFacts,
        attempt_key: str,
        exc: ProviderError,
        *,
        provider: str,
        claim: str,
    ) -> Outcome:
        if exc.outcome_unknown:
            error = ErrorInfo(
                ErrorCode.PROVIDER_TIMEOUT,
                "the provider did not answer in time; the payment stays pending until the "
                "provider confirms its outcome",
            )
            return await self._finish(
                facts,
                attempt_key,
                PaymentStatus.PENDING,
                ATTEMPT_UNKNOWN,
                None,
                error,
                provider,
                claim,
            )
        error = ErrorInfo(exc.code, f"the provider could not process the payment: {exc.message}")
        return await self.failed(facts, attempt_key, error, provider=provider, claim=claim)

    async def still_in_doubt(
        self, facts: PaymentFacts, attempt_key: str, *, provider: str, claim: str
    ) -> Outcome:
        """The provider refused this worker's re-sends, but an earlier call with the key may
        still arrive: pending, for the reconciler to settle from the provider's answer."""
        error = ErrorInfo(
            ErrorCode.PROVIDER_UNAVAILABLE,
            "the provider could not be reached to settle an earlier call of this payment; it "
            "stays pending until the provider confirms its outcome",
        )
        return await self._finish(
            facts, attempt_key, PaymentStatus.PENDING, ATTEMPT_UNKNOWN, None, error, provider, claim
        )

    async def failed(
        self,
        facts: PaymentFacts,
        attempt_key: str,
        error: ErrorInfo,
        *,
        provider: str,
        claim: str,
    ) -> Outcome:
        return await self._finish(
            facts, attempt_key, PaymentStatus.FAILED, ATTEMPT_FAILED, None, error, provider, claim
        )

    async def _finish(
        self,
        facts: PaymentFacts,
        attempt_key: str,
        status: PaymentStatus,
        attempt_status: str,
        provider_reference: str | None,
        error: ErrorInfo | None,
        provider: str,
        claim: str,
        *,
        next_action: NextAction | None = None,
    ) -> Outcome:
        event = self._events.of_facts(
            facts,
            status=status,
            provider=provider,
            provider_reference=provider_reference,
            error=error,
            occurred_at=self._clock(),
            next_action=next_action,
        )
        applied = await self._store.finish(
            facts.payment_request_id,
            attempt_key,
            claim=claim,
            status=status,
            attempt_status=attempt_status,
            provider_reference=provider_reference,
            error=error,
            event=event,
            next_action=next_action,
        )
        if applied:
            return Outcome(status.value)
        if status is PaymentStatus.PENDING:
            # Not known yet (a second timeout) is pending; a late timeout of a payment whose
            # outcome was recorded meanwhile is a replay of that outcome.
            current = await self._store.get_payment(facts.payment_request_id)
            if current is not None and not current.status.charge_known:
                return Outcome.PENDING
        return Outcome.REPLAYED
