"""Settling by hand a refund paygate withholds: ``paygate reconcile settle REFUND_ID``.

The refund counterpart of consumer.payment_settlement, under the refund's claim taken as the
refund reconciler takes it (:meth:`RefundStore.claim`), with the same table: a refund that is
not withheld (final, another's now, still inside its provider's window) is refused with
``not_withheld`` and changed in no way; the provider is asked once more by the refund key
(``refund_status``, the reconciler's query) and an answer it now has is recorded through
RefundOutcomes, as the reconciler records it; only a refund the provider still holds nothing
of is failed, ``settled_by_operator`` with the operator's reason, which releases its
reservation of the payment's refundable amount.

Unlike a payment's attempt, no sweep asks the provider about a refund key afterwards: a
refund that the provider shows later despite this (its first call did land) is a refund paid
twice if the amount is refunded again. So it is failed only once no call of its key can
still reach the provider (from its window's end: domain.operator_settlement.failable_from;
withheld from the window less the margin, a late re-send may still be on its way), on the
provider's own list of the charge's refunds, which no index trails; after the failure
nothing sends the key again (the refund is final). Hence also the runbook's rule: fail it
only once the provider's dashboard shows nothing under the key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from consumer.claim_holding import holding_claim
from consumer.outcome import Outcome
from consumer.ports import RefundWrites
from consumer.refund_events import RefundEvents
from consumer.refund_outcomes import RefundOutcomes
from domain.clock import utc_now
from domain.errors import ErrorCode, PaygateError
from domain.operator_settlement import (
    Settled,
    check_reason,
    failable_from,
    is_withheld,
    may_fail,
    not_withheld,
    operator_failure,
)
from domain.payment_view import PaymentView
from domain.refund_view import RefundView
from providers.errors import ProviderError
from providers.registry import Providers, UnknownProviderError

log = logging.getLogger("paygate.operator")


class PaymentLookup(Protocol):
    async def get_payment(self, payment_id: str) -> PaymentView | None:
        """The payment as stored (its provider reference is the refund's charge)."""
        ...


class RefundSettlement:
    def __init__(
        self,
        *,
        store: RefundWrites,
        payments: PaymentLookup,
        providers: Providers,
        events: RefundEvents,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self._payments = payments
        self._providers = providers
        self._clock = clock
        self._outcomes = RefundOutcomes(store, events, clock)

    async def settle(self, refund_id: str, *, fail_reason: str | None = None) -> Settled:
        """As :meth:`PaymentSettlement.settle`, for the withheld refund ``refund_id``."""
        reason = None if fail_reason is None else check_reason(fail_reason)
        found = await self._store.get(refund_id)
        if found is None:
            raise PaygateError(ErrorCode.NOT_FOUND, f"no refund {refund_id}", param="id")
        claimed = await self._store.claim(refund_id)
        if claimed is None:
            why = (
                f"it is {found.status.value}"
                if found.status.is_final
                else "another worker holds it now"
            )
            raise not_withheld("refund", refund_id, why)
        # A refusal raised under the claim gives it back as it leaves (holding_claim).
        token = claimed.claim.token
        return await holding_claim(
            self._settle_claimed(claimed.refund, token, reason),
            lambda: self._store.release(refund_id, token),
        )

    async def _settle_claimed(self, refund: RefundView, token: str, reason: str | None) -> Settled:
        # ``refund`` as read under the claim, as the reconciler reads it: nobody else writes
        # it now.
        refund_id = refund.refund_id
        payment = await self._payments.get_payment(refund.payment_request_id)
        charge_reference = None if payment is None else payment.provider_reference
        if charge_reference is None:
            raise not_withheld("refund", refund_id, "its payment has no charge to refund")
        try:
            provider = self._providers.get(refund.provider or "")
        except UnknownProviderError as exc:
            raise PaygateError(ErrorCode.PROVIDER_UNAVAILABLE, str(exc)) from None
        if not is_withheld(refund.created_at, self._clock(), provider.idempotency_window):
            why = "its provider still honours its key: the reconciler re-sends it"
            raise not_withheld("refund", refund_id, why)
        try:
            known = await provider.refund_status(refund.refund_id, charge_reference)
        except ProviderError as exc:
            raise PaygateError(
                exc.code, f"no final answer from the provider: {exc.message}"
            ) from None
        if known is not None:
            outcome = await self._outcomes.answered(refund, known, claim=token)
            _recorded_or_refuse(outcome, refund_id)
            log.warning(
                "withheld refund settled by an operator from the provider's answer",
                extra={"refund_id": refund_id, "provider": provider.name, "outcome": outcome.value},
            )
            return Settled(
                "refund", refund_id, provider.name, "recorded_provider_answer", outcome.value
            )
        if reason is None:
            await self._store.release(refund_id, token)
            return Settled("refund", refund_id, provider.name, "left_withheld")
        window, lag = provider.idempotency_window, provider.refund_status_lag
        assert window is not None, "withheld: its provider prunes keys (is_withheld)"
        # Counted from created_at (the key's first send), as every re-send goes out only
        # while may_resend(created_at) holds, before the window's end; and refunds have no
        # abandon rule to count from a send that may not be the last (docs/reliability.md).
        # Plus the lag its provider declares for refund_status (zero for Stripe's list of
        # the charge's refunds): a refund made may not show in a lagging status until then.
        if not may_fail(refund.created_at, self._clock(), window, lag):
            until = failable_from(refund.created_at, window, lag).isoformat()
            why = (
                "a late re-send of its key may still reach its provider, or its refund not "
                f"show yet in the provider's status; its silence is final from {until}: run "
                "the command again then"
            )
            raise not_withheld("refund", refund_id, why)
        return await self._fail(refund, provider.name, reason, token)

    async def _fail(self, refund: RefundView, provider: str, reason: str, token: str) -> Settled:
        outcome = await self._outcomes.failed(
            refund, operator_failure("refund", reason), claim=token
        )
        _recorded_or_refuse(outcome, refund.refund_id)
        # The audit line. The reason was checked to hold no account number (check_reason).
        log.warning(
            "withheld refund failed by an operator: %s",
            reason,
            extra={
                "refund_id": refund.refund_id,
                "payment_request_id": refund.payment_request_id,
                "provider": provider,
                "refund_began_at": refund.created_at.isoformat(),
                "operator_reason": reason,
                "outcome": outcome.value,
            },
        )
        return Settled("refund", refund.refund_id, provider, "failed_by_operator", outcome.value)


def _recorded_or_refuse(outcome: Outcome, refund_id: str) -> None:
    """A recording that did not apply (``replayed``): the claim's lease ran out while the
    provider was asked and another worker took the refund over; nothing was written."""
    if outcome is Outcome.REPLAYED:
        raise not_withheld(
            "refund", refund_id, "another worker took it over while its provider was asked"
        )
