"""Settling by hand a payment paygate withholds: ``paygate reconcile settle PAYMENT_ID``.

The rules are domain.operator_settlement's; this applies them under the payment's claim,
taken exactly as the reconciler takes it (:meth:`PaymentStore.claim`), so the settlement
cannot race a reconciler pass or a consumer worker: whoever holds the claim is the only one
that asks the provider or records an outcome, and the other side leaves the payment alone
(the reconciler as ``owned_elsewhere``, this command with ``not_withheld``).

| found under the claim                          | what happens                           |
| ---------------------------------------------- | -------------------------------------- |
| no such payment                                | ``not_found``                          |
| claim not free (final, or another's now)       | ``not_withheld``; nothing changed      |
| not pending/processing/requires_action without | claim released; ``not_withheld``       |
| a stored action, or still re-sendable (inside  |                                        |
| its window and under PAYGATE_RESEND_LIMIT)     |                                        |
| the provider's status query fails              | claim released; its code (nothing)     |
| the provider shows how the charge ended        | recorded as the reconciler records it  |
|                                                | (PaymentOutcomes: outbox event, hooks) |
| the provider waits for the payer, who was      | claim released; ``not_withheld``       |
| shown an action (stored, or in the answer)     |                                        |
| the provider waits for the payer, no action    | claim released; ``left_withheld``      |
| known, no failure asked                        |                                        |
| the provider waits for the payer, no action    | the provider closes the trade          |
| known, failure asked                           | (close_charge); its answer recorded    |
|                                                | (``closed_by_operator``: expired, or   |
|                                                | succeeded if paid meanwhile); audit    |
|                                                | line. A close that fails, or leaves it |
|                                                | waiting: claim released, its code      |
| the provider holds nothing, no failure asked   | claim released; ``left_withheld``      |
| the provider holds nothing, failure asked, but | claim released; ``not_withheld``: a    |
| the window's end plus its search's lag has not | late re-send may still land or not     |
| passed (operator_settlement.may_fail)          | show yet (domain.search_lag)           |
| the provider holds nothing, failure asked      | failed ``settled_by_operator`` with    |
|                                                | the reason; audit line                 |
| withheld by the bound on re-sends at a         | not before its last send is            |
| provider that keeps keys for good (Alipay),    | RESEND_MARGIN + lag old; then the      |
| nothing under the key, failure asked           | provider closes the key (close_charge) |
|                                                | and, unless that reveals a charge      |
|                                                | (recorded), failed by the operator     |
| the claim's lease ran out meanwhile (a worker  | nothing recorded (the store checks the |
| took it over)                                  | claim); ``not_withheld``               |

A payment failed by hand keeps its attempt key *unverified*: the attempt is closed as
``failed`` with ``verified_at`` unset, so the stray-charge sweep (consumer.stray_charges)
asks the provider about the key, and again until it answers; a charge that surfaces later
under the key (the first call did land, the provider's search lagged) is then found and
reversed. Its first question is held back by domain.operator_settlement.SWEEP_HOLD (a day),
so that a search still lagging does not have the key marked verified for good minutes
after the failure; a provider's notice of a charge under it still has it asked at once.
The failure lifts the order's protection: that is what the operator asked for, on the
provider's own word that it holds nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol

from consumer.claim_holding import holding_claim
from consumer.claimed_calls import ClaimTakenOver, HeldClaim
from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents, PaymentFacts
from consumer.payment_outcomes import PaymentOutcomes
from consumer.ports import PaymentWrites
from domain.clock import utc_now
from domain.errors import ErrorCode, PaygateError
from domain.operator_settlement import (
    SWEEP_HOLD,
    Settled,
    check_reason,
    failable_after_last_send,
    failable_from,
    is_withheld,
    may_fail,
    not_withheld,
    operator_failure,
    payer_was_shown,
    payment_refusal,
)
from domain.resend_window import DEFAULT_RESEND_LIMIT, may_resend_again
from persistence.payment_claims import ClaimedAttempt
from providers.errors import ProviderError, UnsupportedOperationError
from providers.port import ChargeStatus, PaymentProvider
from providers.registry import Providers, UnknownProviderError

log = logging.getLogger("paygate.operator")


class SweepHold(Protocol):
    async def hold_first_question(self, attempt_key: str, until: datetime) -> bool:
        """Keep the stray sweep from asking about the key before ``until``
        (persistence.stray_store.StrayStore.hold_first_question)."""
        ...


class PaymentSettlement:
    def __init__(
        self,
        *,
        store: PaymentWrites,
        providers: Providers,
        events: PaymentEvents,
        strays: SweepHold,
        clock: Callable[[], datetime] = utc_now,
        resend_limit: int = DEFAULT_RESEND_LIMIT,
        ticks: Callable[[], float] = time.monotonic,
    ) -> None:
        """``ticks``: the monotonic clock a claim's freshness is measured by
        (consumer.claimed_calls)."""
        self._store = store
        self._ticks = ticks
        self._resend_limit = resend_limit
        self._strays = strays
        self._providers = providers
        self._clock = clock
        self._recorder = PaymentOutcomes(store, events, clock)

    async def settle(self, payment_id: str, *, fail_reason: str | None = None) -> Settled:
        """Settle the withheld payment ``payment_id``: record the provider's answer if it now
        has one, else fail it with ``fail_reason`` if given. Raises PaygateError, having
        changed nothing, for anything but a withheld payment (see the module's table)."""
        reason = None if fail_reason is None else check_reason(fail_reason)
        payment = await self._store.get_payment(payment_id)
        if payment is None:
            raise PaygateError(ErrorCode.NOT_FOUND, f"no payment {payment_id}", param="id")
        written = self._ticks()  # before the claim is written: its first call is covered
        claimed = await self._store.claim(payment_id)
        if claimed is None:
            why = (
                f"it is {payment.status.value}"
                if payment.status.charge_known
                else "another worker holds it now, or its attempt is not open"
            )
            raise not_withheld("payment", payment_id, why)
        token = claimed.claim.token
        # A refusal raised under the claim gives it back as it leaves (holding_claim).
        # Every provider call under the claim as consumer.claimed_calls says: the question
        # is covered by the claim just taken, a close after it renews the claim first, so a
        # settlement whose claim was taken over meanwhile sends nothing more.
        held = HeldClaim.of_row(self._store, payment_id, token, ticks=self._ticks)
        held.confirmed(written)
        return await holding_claim(
            _unless_taken_over(payment_id, self._settle_claimed(claimed, reason, held)),
            lambda: self._store.release(payment_id, token),
        )

    async def _settle_claimed(
        self, claimed: ClaimedAttempt, reason: str | None, held: HeldClaim
    ) -> Settled:
        payment = claimed.payment
        payment_id = payment.payment_request_id
        token = claimed.claim.token
        try:
            provider = self._providers.get(claimed.provider)
        except UnknownProviderError as exc:
            raise PaygateError(ErrorCode.PROVIDER_UNAVAILABLE, str(exc)) from None
        why = payment_refusal(payment.status, payment.next_action)
        limit_reached = not may_resend_again(
            claimed.resends, self._resend_limit, provider.idempotency_window
        )
        if (
            why is None
            and not limit_reached
            and not is_withheld(claimed.started_at, self._clock(), provider.idempotency_window)
        ):
            why = "its provider still honours its key: the reconciler re-sends it"
        if why is not None:
            raise not_withheld("payment", payment_id, why)
        try:
            key = claimed.attempt_key
            known = await held.call(provider, lambda: provider.charge_status(key))
        except ProviderError as exc:
            raise PaygateError(
                exc.code, f"no final answer from the provider: {exc.message}"
            ) from None
        facts = PaymentFacts.of_stored(payment)
        if known is not None and known.status is ChargeStatus.REQUIRES_ACTION:
            if payer_was_shown(payment.next_action, known.next_action):
                why = "its provider waits for the payer, who was shown an action"
                raise not_withheld("payment", payment_id, why)
            return await self._close_unshown(claimed, provider, reason, held)
        if known is not None:
            outcome = await self._recorder.charged(
                facts, claimed.attempt_key, known, provider=claimed.provider, claim=token
            )
            _recorded_or_refuse(outcome, payment_id)
            log.warning(
                "withheld payment settled by an operator from the provider's answer",
                extra={
                    "payment_request_id": payment_id,
                    "provider": claimed.provider,
                    "attempt_key": claimed.attempt_key,
                    "outcome": outcome.value,
                },
            )
            return Settled(
                "payment", payment_id, claimed.provider, "recorded_provider_answer", outcome.value
            )
        if reason is None:
            await self._store.release(payment_id, token)
            return Settled("payment", payment_id, claimed.provider, "left_withheld")
        window, lag = provider.idempotency_window, provider.status_search_lag
        if window is None:
            # Withheld by the bound on re-sends (a provider that keeps keys for good is never
            # past a window): ended by closing the key at the provider first.
            return await self._close_then_fail(claimed, provider, reason, held)
        # Counted from the window's end, which every re-send precedes (may_resend), and
        # from the key's last send too, should a re-send ever have gone out later.
        sent = claimed.last_sent_at
        if not may_fail(claimed.started_at, self._clock(), window, lag, last_sent_at=sent):
            until = failable_from(claimed.started_at, window, lag, last_sent_at=sent).isoformat()
            why = (
                "a late re-send of its key may still reach its provider, or its charge not "
                f"show yet in the provider's status search; its silence is final from "
                f"{until}: run the command again then"
            )
            raise not_withheld("payment", payment_id, why)
        return await self._fail(
            claimed,
            reason,
            closed_at_provider=False,
            audit="withheld payment failed by an operator: %s",
            detail={"attempt_began_at": claimed.started_at.isoformat()},
        )

    async def _close_then_fail(
        self, claimed: ClaimedAttempt, provider: PaymentProvider, reason: str, held: HeldClaim
    ) -> Settled:
        """A payment withheld by the bound on re-sends at a provider that keeps its keys for
        good (Alipay), which holds nothing under the key: failed only once no trade can be
        paid under it any more.

        1. Its last send must be :data:`RESEND_MARGIN` plus the provider's search lag old
           (domain.operator_settlement.failable_after_last_send): no call of the key is
           still on its way, and one that landed shows in the status answer just read.
        2. The provider is asked to close the key (``close_charge``: Alipay's
           ``alipay.trade.close``, documented to close an unpaid trade so that it can no
           longer be paid; a key with no trade answers ``ACQ.TRADE_NOT_EXIST``). A close
           that fails, or a trade still waiting, changes nothing.
        3. A charge it reveals (paid meanwhile) is recorded; otherwise the payment is failed
           ``settled_by_operator`` with the reason, its attempt left unverified so that the
           stray-charge sweep asks about the key again a day later (SWEEP_HOLD) and reverses
           any charge that shows then.

        Never "failed while a trade may still be paid": the failure follows the provider's
        own "no trade" and its close, never a guess."""
        payment_id = claimed.payment.payment_request_id
        token = claimed.claim.token
        now = self._clock()
        until = failable_after_last_send(claimed.last_sent_at, provider.status_search_lag)
        if now < until:
            why = (
                "its key was sent last at "
                f"{claimed.last_sent_at.isoformat()}; a call of it may still reach its "
                f"provider until {until.isoformat()}: run the command again then"
            )
            raise not_withheld("payment", payment_id, why)
        try:
            key = claimed.attempt_key
            closed = await held.call(provider, lambda: provider.close_charge(key))
        except UnsupportedOperationError:
            # A provider without payer actions: no charge of it waits to be closed, and
            # its "nothing under the key", past the margin, is final as it stands.
            closed = None
        except ProviderError as exc:
            raise PaygateError(
                exc.code, f"the provider did not close the payment's key: {exc.message}"
            ) from None
        if closed is not None and closed.status is ChargeStatus.REQUIRES_ACTION:
            raise PaygateError(
                ErrorCode.PROVIDER_UNAVAILABLE,
                "the provider did not confirm the payment's key closed (it answered "
                f"{closed.status.value}); nothing was changed: run the command again",
            )
        # None: the provider never received the charge (the port's close_charge), as its
        # status query said; the sandbox's ledger answers so for a key it never saw. Read
        # as "not closed", a payment withheld at such a provider could never be ended.
        facts = PaymentFacts.of_stored(claimed.payment)
        if closed is not None and closed.status in (
            ChargeStatus.SUCCEEDED,
            ChargeStatus.AUTHORIZED,
        ):
            outcome = await self._recorder.charged(
                facts, claimed.attempt_key, closed, provider=claimed.provider, claim=token
            )
            _recorded_or_refuse(outcome, payment_id)
            return Settled(
                "payment", payment_id, claimed.provider, "recorded_provider_answer", outcome.value
            )
        return await self._fail(
            claimed,
            reason,
            closed_at_provider=True,
            audit="withheld payment's key closed at its provider and failed by an operator: %s",
            detail={"resends": claimed.resends},
        )

    async def _fail(
        self,
        claimed: ClaimedAttempt,
        reason: str,
        *,
        closed_at_provider: bool,
        audit: str,
        detail: dict[str, object],
    ) -> Settled:
        """Fail the withheld payment ``settled_by_operator`` with ``reason``, write the audit
        line (``audit``, with ``detail`` beside the common fields) as soon as the failure is
        committed, and hold the stray sweep's first question about its key back. The reason
        was checked to hold no account number (check_reason)."""
        payment_id = claimed.payment.payment_request_id
        outcome = await self._recorder.failed(
            PaymentFacts.of_stored(claimed.payment),
            claimed.attempt_key,
            operator_failure("payment", reason, closed_at_provider=closed_at_provider),
            provider=claimed.provider,
            claim=claimed.claim.token,
        )
        _recorded_or_refuse(outcome, payment_id)
        log.warning(
            audit,
            reason,
            extra={
                "payment_request_id": payment_id,
                "provider": claimed.provider,
                "attempt_key": claimed.attempt_key,
                **detail,
                "operator_reason": reason,
                "outcome": outcome.value,
            },
        )
        await self._hold_the_sweep(claimed.attempt_key)
        return Settled("payment", payment_id, claimed.provider, "failed_by_operator", outcome.value)

    async def _close_unshown(
        self,
        claimed: ClaimedAttempt,
        provider: PaymentProvider,
        reason: str | None,
        held: HeldClaim,
    ) -> Settled:
        """The provider waits for a payer paygate never had an action to show: without a
        failure asked, nothing changes; with one, the provider closes the trade and what it
        answers is recorded, as the reconciler records the close of an expired action."""
        payment_id = claimed.payment.payment_request_id
        token = claimed.claim.token
        if reason is None:
            await self._store.release(payment_id, token)
            return Settled("payment", payment_id, claimed.provider, "left_withheld")
        try:
            key = claimed.attempt_key
            closed = await held.call(provider, lambda: provider.close_charge(key))
        except ProviderError as exc:
            raise PaygateError(
                exc.code, f"the provider did not close the payer's trade: {exc.message}"
            ) from None
        if closed is None or closed.status is ChargeStatus.REQUIRES_ACTION:
            raise PaygateError(
                ErrorCode.PROVIDER_UNAVAILABLE,
                "the provider did not confirm the payer's trade closed (it answered "
                f"{'no trade' if closed is None else closed.status.value}); nothing was "
                "changed: run the command again",
            )
        outcome = await self._recorder.charged(
            PaymentFacts.of_stored(claimed.payment),
            claimed.attempt_key,
            closed,
            provider=claimed.provider,
            claim=token,
        )
        _recorded_or_refuse(outcome, payment_id)
        log.warning(
            "withheld payment's trade closed by an operator: %s",
            reason,
            extra={
                "payment_request_id": payment_id,
                "provider": claimed.provider,
                "attempt_key": claimed.attempt_key,
                "operator_reason": reason,
                "outcome": outcome.value,
            },
        )
        return Settled("payment", payment_id, claimed.provider, "closed_by_operator", outcome.value)

    async def _hold_the_sweep(self, attempt_key: str) -> None:
        """After the failure is committed: a hold not written only makes the sweep ask
        sooner, as it does about any failed attempt; the command still reports the failure
        it made, which is what the operator must know."""
        try:
            await self._strays.hold_first_question(attempt_key, self._clock() + SWEEP_HOLD)
        except Exception:
            log.warning(
                "stray sweep not held back for an operator-failed key; it asks sooner",
                exc_info=True,
                extra={"attempt_key": attempt_key},
            )


def _recorded_or_refuse(outcome: Outcome, payment_id: str) -> None:
    """A recording that did not apply (``replayed``): the claim's lease ran out while the
    provider was asked and another worker took the payment over; nothing was written."""
    if outcome is Outcome.REPLAYED:
        raise not_withheld(
            "payment", payment_id, "another worker took it over while its provider was asked"
        )


async def _unless_taken_over(payment_id: str, work: Awaitable[Settled]) -> Settled:
    """``await work``; refused ``not_withheld`` if a provider call found the claim taken over
    (consumer.claimed_calls.ClaimTakenOver): nothing more was sent, another worker has it."""
    try:
        return await work
    except ClaimTakenOver:
        why = "another worker took it over while it was being settled"
        raise not_withheld("payment", payment_id, why) from None
