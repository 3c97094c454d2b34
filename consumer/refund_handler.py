"""Handles one RefundPayment command, exactly once in effect.

1. :meth:`RefundStore.begin` reserves the amount and commits the refund before any provider
   call (write-ahead), refuses it, or reports what already exists for the refund id.
2. The payment's own provider is called with the refund id as its idempotency key. There is
   no failover: only the provider that charged can refund.
3. The answer and its result event are committed together by :meth:`RefundStore.finish`.

A provider that certainly did not process the call (unavailable, rate limited) is asked
again, with back-off and the same key, up to the retry policy's attempts; then the refund
fails with ``provider_unavailable`` and its reservation is released. A timeout leaves the
refund ``pending``: only the provider's answer, found by the refund reconciler or a
redelivery, settles it. A redelivered command finds its refund: a final one is re-published,
an open one is resolved by asking the provider, never by refunding blindly.

One owner per refund (see persistence.claims): only the holder of the refund's claim asks
the provider about it, sends it or records its answer; a duplicate that cannot take the
claim does nothing (``owned_elsewhere``). Every call goes out under the claim as
consumer.claimed_calls says: its place at the gate held, the claim confirmed after it
unless a fresh confirmation covers the call (a first send that did not wait long); a
question and the re-send after it each renew, so no other worker can have taken the refund
over, sent it and released the reservation meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

from consumer.claim_holding import holding_claim
from consumer.claimed_calls import HeldClaim, unless_taken_over
from consumer.outcome import Outcome
from consumer.ports import RefundWrites
from consumer.refund_events import RefundEvents
from consumer.refund_outcomes import RefundOutcomes
from consumer.resend_withhold import withheld
from consumer.retrying import ClaimLost, GaveUp, call_with_retries
from consumer.withheld_reports import WithheldReports
from domain.clock import utc_now
from domain.error_info import ErrorInfo
from domain.errors import ErrorCode, PaygateError
from domain.events import conflict_event_id
from domain.refund_view import RefundView
from domain.refunds import RefundPayment, RefundStatus
from domain.retry import RetryPolicy
from persistence.refund_store import (
    RefundExisting,
    RefundRefused,
    RefundStarted,
)
from providers.errors import ProviderError
from providers.port import RefundRequest
from providers.registry import Providers, UnknownProviderError
from telemetry.metrics import Metrics

log = logging.getLogger("paygate.consumer")


class RefundCommandHandler:
    def __init__(
        self,
        *,
        store: RefundWrites,
        providers: Providers,
        events: RefundEvents,
        metrics: Metrics,
        retry_policy: RetryPolicy | None = None,
        clock: Callable[[], datetime] = utc_now,
        ticks: Callable[[], float] = time.monotonic,
    ) -> None:
        """``ticks``: the monotonic clock a claim's freshness is measured by
        (consumer.claimed_calls)."""
        self._store = store
        self._ticks = ticks
        self._providers = providers
        self._events = events
        self._metrics = metrics
        self._retry_policy = retry_policy or RetryPolicy()
        self._clock = clock
        self._outcomes = RefundOutcomes(store, events, clock)
        self._withheld = WithheldReports(metrics, clock)

    async def handle(self, command: RefundPayment) -> Outcome:
        # Read before begin writes the claim with the refund: its first send is covered.
        written = self._ticks()
        begun = await self._store.begin(command, self._events.at(self._clock()))
        if isinstance(begun, RefundStarted):
            token = begun.claim.token
            held = self._held(begun.refund.refund_id, token)
            held.confirmed(written)
            outcome = await self._as_owner(
                begun.refund.refund_id,
                token,
                self._send(begun.refund, begun.charge_reference, token, held),
            )
        elif isinstance(begun, RefundRefused):
            outcome = Outcome.REFUSED
        else:
            outcome = await self._handle_existing(command, begun)
        self._metrics.commands_consumed.labels("refund", outcome.value).inc()
        log.info(
            "refund command handled",
            extra={
                "refund_id": command.refund_id,
                "payment_request_id": command.payment_request_id,
                "order_id": command.order_id,
                "outcome": outcome.value,
            },
        )
        return outcome

    async def _handle_existing(self, command: RefundPayment, existing: RefundExisting) -> Outcome:
        refund = existing.refund
        if not existing.same_parameters:
            await self._refuse_conflict(command, refund)
            return Outcome.CONFLICT
        if not refund.status.is_final and existing.charge_reference is not None:
            claimed = await self._store.claim(refund.refund_id)
            if claimed is not None:
                # Read again under the claim (nobody else writes it now), as the reconciler
                # does: begin's view may predate another worker's record of it, e.g. the
                # provider's reference of a pending refund, which a later answer keeps.
                return await self.resolve(
                    claimed.refund, existing.charge_reference, claimed.claim.token
                )
            # Another worker holds it: never send twice. Re-published only if it has
            # finished meanwhile; otherwise its owner publishes the outcome.
            replayed = await self._store.republish(
                refund.refund_id, self._events.replayed, final_only=True
            )
            return Outcome.OWNED_ELSEWHERE if replayed is None else Outcome.REPLAYED
        # The refund and its payment's totals as they are now, read under the lock refunds
        # settle under, in the transaction that queues the event (RefundStore.republish).
        await self._store.republish(refund.refund_id, self._events.replayed)
        return Outcome.REPLAYED

    async def _refuse_conflict(self, command: RefundPayment, refund: RefundView) -> None:
        # The stored refund is untouched; the event, under an id of its own, tells the
        # sender its command was refused.
        now = self._clock()
        refused = RefundView(
            refund_id=refund.refund_id,
            payment_request_id=command.payment_request_id,
            order_id=command.order_id,
            idempotency_key=command.idempotency_key,
            amount=command.amount,
            reason=command.reason,
            status=RefundStatus.FAILED,
            provider=None,
            provider_reference=None,
            error=ErrorInfo(
                ErrorCode.IDEMPOTENCY_CONFLICT,
                "this idempotency key was already used for a refund of this payment with "
                "other parameters",
            ),
            created_at=now,
            updated_at=now,
            parameters_hash=command.parameters_fingerprint(),
        )
        event_id = conflict_event_id(refund.refund_id, command.parameters_fingerprint())
        await self._store.enqueue(self._events.event(refused, None, now, event_id, refusal=True))

    async def resolve(self, refund: RefundView, charge_reference: str, claim: str) -> Outcome:
        """Settle an open refund whose claim the caller holds, by asking its provider; send
        it (same key) if the provider has no record of it.

        | provider says        | what happens                                         |
        | -------------------- | ---------------------------------------------------- |
        | succeeded / failed   | recorded; the reservation settles or is released     |
        | pending              | stays pending (the provider settles it later)        |
        | no record of the key | sent again with the same key: it never arrived, so   |
        |                      | this cannot refund twice; but only while the         |
        |                      | provider honours the key (domain.resend_window):     |
        |                      | past that, left pending for an operator              |
        | error                | claim released; left for a later pass                |
        """
        # Taken before this call: unconfirmed here, so the question renews it at the gate.
        held = self._held(refund.refund_id, claim)
        return await self._as_owner(
            refund.refund_id, claim, self._resolve(refund, charge_reference, claim, held)
        )

    def _held(self, refund_id: str, claim: str) -> HeldClaim:
        return HeldClaim.of_row(self._store, refund_id, claim, ticks=self._ticks)

    async def _resolve(
        self, refund: RefundView, charge_reference: str, claim: str, held: HeldClaim
    ) -> Outcome:
        try:
            provider = self._providers.get(refund.provider or "")
            known = await held.call(
                provider, lambda: provider.refund_status(refund.refund_id, charge_reference)
            )
        except (UnknownProviderError, ProviderError) as exc:
            # Cannot tell now: a redelivery or the reconciler asks again later.
            log.warning("open refund not resolved: %s", exc, extra={"refund_id": refund.refund_id})
            await self._store.release(refund.refund_id, claim)
            return Outcome.PENDING
        if known is not None:
            return await self._outcomes.answered(refund, known, claim=claim)
        # The refund key is written with the refund, just before its first call: its age
        # is the key's. A key the provider no longer honours could refund twice.
        if await withheld(
            operation="refund",
            subject_id=refund.refund_id,
            began_at=refund.created_at,
            now=self._clock(),
            provider=provider.name,
            window=provider.idempotency_window,
            reports=self._withheld,
            release=lambda: self._store.release(refund.refund_id, claim),
        ):
            return Outcome.PENDING
        return await self._send(refund, charge_reference, claim, held, in_doubt=True)

    async def _as_owner(self, refund_id: str, claim: str, work: Awaitable[Outcome]) -> Outcome:
        """Run ``work`` holding ``claim`` (see consumer.claim_holding); ``owned_elsewhere``
        once a call found the claim taken over (nothing sent, nothing to give up)."""
        return await holding_claim(
            unless_taken_over(work), lambda: self._store.release(refund_id, claim)
        )

    async def _send(
        self,
        refund: RefundView,
        charge_reference: str,
        claim: str,
        held: HeldClaim,
        *,
        in_doubt: bool = False,
    ) -> Outcome:
        """Call the refund's provider, retrying what certainly did not arrive.

        ``in_doubt``: the refund was sent before (a re-send after a timeout, a crash or a
        takeover); an earlier call may still reach the provider, so when the retries run out
        it stays pending, its amount reserved, until the provider answers. Never failed on a
        guess: that would release money the provider may refund after all."""
        assert refund.amount is not None, "a refund in processing has an amount"
        request = RefundRequest(
            refund_key=refund.refund_id,
            refund_id=refund.refund_id,
            payment_request_id=refund.payment_request_id,
            charge_reference=charge_reference,
            amount=refund.amount,
            reason=refund.reason,
        )
        try:
            provider = self._providers.get(refund.provider or "")
            answer = await call_with_retries(
                lambda: provider.refund(request),
                at=provider,
                policy=self._retry_policy,
                claim=held,
            )
        except UnknownProviderError as exc:
            log.error("refund not sent: %s", exc, extra={"refund_id": refund.refund_id})
            await self._store.release(refund.refund_id, claim)
            return Outcome.PENDING
        except ProviderError as exc:
            if exc.outcome_unknown:
                return await self._outcomes.unknown(refund, claim=claim)
            return await self._failed(refund, exc, claim)
        except PaygateError as exc:
            return await self._outcomes.failed(refund, ErrorInfo.from_error(exc), claim=claim)
        if isinstance(answer, ClaimLost):
            return Outcome.OWNED_ELSEWHERE  # another worker has the refund now
        if isinstance(answer, GaveUp):
            if in_doubt:
                # An earlier call of this key may still land: not a failure, not yet known.
                unreachable = ErrorInfo(
                    ErrorCode.PROVIDER_UNAVAILABLE,
                    "the provider could not be reached to settle an earlier call of this "
                    "refund; it stays pending until the provider confirms its outcome",
                )
                return await self._outcomes.unknown(refund, claim=claim, error=unreachable)
            return await self._failed(refund, answer.error, claim)
        return await self._outcomes.answered(refund, answer, claim=claim)

    async def _failed(self, refund: RefundView, exc: ProviderError, claim: str) -> Outcome:
        message = f"the provider could not process the refund: {exc.message}"
        return await self._outcomes.failed(refund, ErrorInfo(exc.code, message), claim=claim)
