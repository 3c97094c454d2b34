"""The one skeleton of a command that follows up an authorization: a capture or a cancel.

1. The store's ``begin`` moves the payment from ``authorized`` to the in-flight status
   (write-ahead), refuses the command, or reports a follow-up already under way or done
   (persistence.follow_up).
2. The payment's provider is asked (capture, or void) under the follow-up's one key, so a
   call sent twice (a redelivery, the reconciler) acts once.
3. The answer and its result event are committed together by the store's ``finish``.

A provider that certainly did not act (unavailable, rate limited) is asked again with
back-off, up to the retry policy's attempts; then, like a refusal by the provider, the
payment goes back to ``authorized`` with the error, and may be followed up again later. A
timeout leaves it in flight for :meth:`FollowUpHandler.resolve` (a redelivery, or the
reconciler) to settle by asking the provider about the charge.

What the provider holds wins over what its answer to the call said: before recording that
the follow-up was not made, the charge is read (``charge_by_reference``). Made all the
same: recorded done. Settled the other way without paygate (a void that finds the charge
captured by hand in the provider's dashboard, a capture that finds it voided or expired):
recorded so, with the provider's captured amount, and the command refused with
``SETTLED_OTHERWISE``'s code; never back to ``authorized``, which would say money is held
that the provider has taken or released. Only a charge the provider still holds, or one
it could not be asked about, goes back to ``authorized`` -- and only after the first send.

A refused *re-send* (the call was sent before and its outcome is unknown: a timeout, a
crash after the write-ahead move) proves nothing about that earlier send, which may still
reach the provider and capture or void after the refusal and after the read. So a re-send
refused while the charge still reads held (or cannot be read) leaves the follow-up in
flight for the reconciler, exactly as a re-send whose retries ran out does: the next pass
reads the charge again and records what the earlier send did, or sends again. Going back
to ``authorized`` then would be a guess the earlier send may contradict.

One owner per follow-up (see persistence.claims): only the holder of the payment's claim
asks the provider, sends the call or records its answer; a duplicate that cannot take the
claim does nothing (``owned_elsewhere``). Every call goes out under the claim as
consumer.claimed_calls says: its place at the gate held, the claim confirmed after it
unless a fresh confirmation covers the call (a first send that did not wait long); the
question before a re-send, the re-send, and the read of the charge after a refusal each
renew.
This rule lives here once, for captures and voids alike; a subclass says only what differs:
its words, its in-flight status, which charge statuses mean done, the provider call and
how its store records the outcome.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import ClassVar, Generic, TypeVar

from consumer.claim_holding import holding_claim
from consumer.claimed_calls import HeldClaim, unless_taken_over
from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.ports import FollowUpWrites
from consumer.retrying import ClaimLost, GaveUp, call_with_retries
from domain.captures import captured_at_provider
from domain.clock import utc_now
from domain.error_info import ErrorInfo
from domain.errors import ErrorCode, PaygateError
from domain.money import Money
from domain.payment_view import PaymentView
from domain.provider_refunds import refunded_at_provider
from domain.retry import RetryPolicy
from domain.status import PaymentStatus
from persistence.follow_up import (
    FollowUpBegin,
    FollowUpCommand,
    FollowUpRefused,
    FollowUpStarted,
    PaymentEventBuilder,
)
from persistence.outbox import OutboxMessage
from providers.errors import ProviderError
from providers.port import ChargeOutcome, ChargeStatus, PaymentProvider
from providers.registry import Providers, UnknownProviderError
from telemetry.metrics import Metrics

log = logging.getLogger("paygate.consumer")

StoreT = TypeVar("StoreT", bound=FollowUpWrites)

# The provider call of one follow-up, its request built already.
ProviderCall = Callable[[PaymentProvider], Awaitable[ChargeOutcome]]


class FollowUpHandler(ABC, Generic[StoreT]):
    # The follow-up's word in logs, messages and the commands-consumed metric's label.
    NOUN: ClassVar[str]
    # The status a payment holds while the provider is asked (``capturing``...).
    IN_FLIGHT: ClassVar[PaymentStatus]
    # The charge statuses that mean the follow-up happened, and the payment status each
    # records; and the outcome each such status reports.
    DONE_BY: ClassVar[Mapping[ChargeStatus, PaymentStatus]]
    OUTCOMES: ClassVar[Mapping[PaymentStatus, Outcome]]
    # The error of a provider answer that says it did not act, without saying why.
    NOT_DONE: ClassVar[ErrorCode]
    # What an event of a follow-up undone says it was (``not_captured``...), in its id.
    UNDONE: ClassVar[str]
    # The charge statuses that say the provider settled the authorization the other way
    # without paygate (captured, or released, by hand), the payment status each records,
    # and the code the follow-up is refused with then.
    SETTLED_OTHERWISE: ClassVar[Mapping[ChargeStatus, PaymentStatus]]
    OTHERWISE: ClassVar[ErrorCode]

    def __init__(
        self,
        *,
        store: StoreT,
        providers: Providers,
        events: PaymentEvents,
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

    # What a subclass says.

    @abstractmethod
    def _provider_call(self, payment: PaymentView) -> ProviderCall:
        """The follow-up's provider call for ``payment``, its request built now."""

    @abstractmethod
    async def _record_done(
        self,
        payment: PaymentView,
        status: PaymentStatus,
        claim: str,
        captured: Money | None,
        refunded_minor: int,
    ) -> bool:
        """The store's ``finish`` for a follow-up that happened (``status``, from DONE_BY).
        ``captured``: for a capture found made though this call was refused, what the
        provider says it took (checked by captured_at_provider); None: what was asked.
        ``refunded_minor``: what the provider says it has refunded of that capture since,
        outside paygate (domain.provider_refunds); 0 for none."""

    @abstractmethod
    async def _record_otherwise(
        self,
        payment: PaymentView,
        status: PaymentStatus,
        captured: Money | None,
        error: ErrorInfo,
        claim: str,
        refunded_minor: int,
    ) -> bool:
        """The store's ``finish`` for an authorization the provider settled the other way
        (``status``, from SETTLED_OTHERWISE; ``captured``, checked by
        captured_at_provider, if captured: None means all of it; ``refunded_minor``, what
        the provider has refunded of it outside paygate), with the follow-up's refusal
        ``error``."""

    @abstractmethod
    async def _record_not_done(
        self, payment: PaymentView, error: ErrorInfo, claim: str, event: PaymentEventBuilder
    ) -> bool:
        """The store's ``finish`` back to ``authorized`` with ``error``."""

    @abstractmethod
    def _event_id(self, payment_request_id: str, what: str, occurred_at: datetime) -> str:
        """The id of an event of a follow-up that changed nothing (refused, or undone)."""

    async def _provider_holds(self, payment: PaymentView, held: HeldClaim) -> ChargeOutcome | None:
        """The charge as the provider holds it now, asked before recording that the
        follow-up was not made; None if the provider does not know it or cannot be asked."""
        try:
            provider = self._providers.get(payment.provider or "")
            reference = payment.provider_reference or ""
            return await held.call(provider, lambda: provider.charge_by_reference(reference))
        except (UnknownProviderError, ProviderError) as exc:
            log.warning(
                f"{self.NOUN} refused, and the charge could not be read: %s",
                exc,
                extra={"payment_request_id": payment.payment_request_id},
            )
            return None

    # The skeleton.

    async def _handle(
        self, command: FollowUpCommand, begun: FollowUpBegin, written: float
    ) -> Outcome:
        """``written``: the monotonic time read before ``begun`` was written (it wrote the
        claim of a follow-up started): its first send is covered."""
        if isinstance(begun, FollowUpStarted):
            pid, token = begun.payment.payment_request_id, begun.claim.token
            held = self._held(pid, token)
            held.confirmed(written)
            outcome = await self._as_owner(pid, token, self._send(begun.payment, token, held))
        elif isinstance(begun, FollowUpRefused):
            outcome = Outcome.REFUSED
            if begun.payment is None:
                # Nothing to tell the world about a payment that does not exist: the log
                # and the metric say it.
                log.warning(
                    f"{self.NOUN} of an unknown payment refused",
                    extra={"payment_request_id": command.payment_request_id},
                )
        else:
            outcome = await self._handle_existing(begun.payment)
        self._metrics.commands_consumed.labels(self.NOUN, outcome.value).inc()
        log.info(
            f"{self.NOUN} command handled",
            extra={
                "payment_request_id": command.payment_request_id,
                "order_id": command.order_id,
                "outcome": outcome.value,
            },
        )
        return outcome

    async def _handle_existing(self, payment: PaymentView) -> Outcome:
        if payment.status is self.IN_FLIGHT:
            claimed = await self._store.claim(payment.payment_request_id)
            if claimed is not None:
                # As it is now, under the claim: not as begin read it (see the store's claim).
                return await self.resolve(claimed.payment, claimed.claim.token)
            return Outcome.OWNED_ELSEWHERE  # another worker holds the follow-up
        # Done already: doing it again changes nothing; say so again, same event id.
        await self._store.republish(payment.payment_request_id, self._events.of_payment)
        return Outcome.REPLAYED

    async def resolve(self, payment: PaymentView, claim: str) -> Outcome:
        """Settle a payment left in flight whose claim the caller holds: ask the provider
        what the charge is now."""
        # Taken before this call: unconfirmed here, so the question renews it at the gate.
        held = self._held(payment.payment_request_id, claim)
        return await self._as_owner(
            payment.payment_request_id, claim, self._resolve(payment, claim, held)
        )

    def _held(self, payment_request_id: str, claim: str) -> HeldClaim:
        return HeldClaim.of_row(self._store, payment_request_id, claim, ticks=self._ticks)

    async def _resolve(self, payment: PaymentView, claim: str, held: HeldClaim) -> Outcome:
        try:
            provider = self._providers.get(payment.provider or "")
            reference = payment.provider_reference or ""
            known = await held.call(provider, lambda: provider.charge_by_reference(reference))
        except (UnknownProviderError, ProviderError) as exc:
            log.warning(
                f"{self.NOUN} not resolved: %s",
                exc,
                extra={"payment_request_id": payment.payment_request_id},
            )
            await self._store.release(payment.payment_request_id, claim)
            return Outcome.PENDING
        if known is not None and known.status in self.DONE_BY:
            return await self._made(payment, known, claim)
        if known is not None and known.status in self.SETTLED_OTHERWISE:
            return await self._settled_otherwise(payment, known, claim)
        # Still only authorized (or unknown to the provider): the follow-up did not happen.
        # Sending it again under the same key cannot act twice -- at any age, unlike a
        # charge or a refund re-send (domain.resend_window): a charge is captured or voided
        # at most once by the provider's own state machine, and charge_by_reference reads
        # the charge itself (no search index to lag), so a key pruned since cannot make
        # a second capture or void.
        return await self._send(payment, claim, held, in_doubt=True)

    async def _as_owner(self, payment_id: str, claim: str, work: Awaitable[Outcome]) -> Outcome:
        """Run ``work`` holding ``claim`` (see consumer.claim_holding); ``owned_elsewhere``
        once a call found the claim taken over (nothing sent, nothing to give up)."""
        return await holding_claim(
            unless_taken_over(work), lambda: self._store.release(payment_id, claim)
        )

    async def _send(
        self, payment: PaymentView, claim: str, held: HeldClaim, *, in_doubt: bool = False
    ) -> Outcome:
        """Ask the provider, retrying what certainly did not arrive.

        ``in_doubt``: the call was sent before; an earlier call may still reach the
        provider, so when the retries run out, or the provider refuses this send while the
        charge still reads held, the payment stays in flight for the reconciler, never
        back to ``authorized`` on a guess."""
        call = self._provider_call(payment)
        pid = payment.payment_request_id
        try:
            provider = self._providers.get(payment.provider or "")
            answer = await call_with_retries(
                lambda: call(provider),
                at=provider,
                policy=self._retry_policy,
                claim=held,
            )
        except UnknownProviderError as exc:
            log.error(f"{self.NOUN} not sent: %s", exc, extra={"payment_request_id": pid})
            await self._store.release(pid, claim)
            return Outcome.PENDING
        except ProviderError as exc:
            if exc.outcome_unknown:
                # Stays in flight; resolve() settles it, under a claim of its own.
                await self._store.release(pid, claim)
                return Outcome.PENDING
            return await self._refused(payment, exc, claim, held, in_doubt=in_doubt)
        except PaygateError as exc:
            return await self._not_done(
                payment, ErrorInfo.from_error(exc), claim, held, in_doubt=in_doubt
            )
        if isinstance(answer, ClaimLost):
            return Outcome.OWNED_ELSEWHERE  # another worker has the follow-up now
        if isinstance(answer, GaveUp):
            if in_doubt:
                await self._store.release(pid, claim)
                return Outcome.PENDING
            return await self._refused(payment, answer.error, claim, held)
        if answer.status in self.DONE_BY:
            return await self._done(payment, self.DONE_BY[answer.status], claim)
        error = answer.error or PaygateError(
            self.NOT_DONE, f"the provider did not {self.NOUN} the payment"
        )
        return await self._not_done(
            payment, ErrorInfo.from_error(error), claim, held, in_doubt=in_doubt
        )

    async def _refused(
        self,
        payment: PaymentView,
        exc: ProviderError,
        claim: str,
        held: HeldClaim,
        *,
        in_doubt: bool = False,
    ) -> Outcome:
        message = f"the provider could not {self.NOUN} the payment: {exc.message}"
        return await self._not_done(
            payment, ErrorInfo(exc.code, message), claim, held, in_doubt=in_doubt
        )

    async def _done(
        self,
        payment: PaymentView,
        status: PaymentStatus,
        claim: str,
        captured: Money | None = None,
        refunded_minor: int = 0,
    ) -> Outcome:
        applied = await self._record_done(payment, status, claim, captured, refunded_minor)
        return self.OUTCOMES[status] if applied else Outcome.REPLAYED

    async def _made(self, payment: PaymentView, known: ChargeOutcome, claim: str) -> Outcome:
        """Record a follow-up the provider's reading of the charge says was made (by
        paygate's call, or by hand): of the amount the provider says it captured, if any,
        and with what it says it has refunded of it since."""
        refunded_minor = self._recordable(payment, known)
        if refunded_minor is None:
            return await self._left_in_flight(payment, claim)
        status = self.DONE_BY[known.status]
        return await self._done(payment, status, claim, known.captured, refunded_minor)

    async def _settled_otherwise(
        self, payment: PaymentView, known: ChargeOutcome, claim: str
    ) -> Outcome:
        """Record what the provider holds: the authorization settled the other way."""
        status = self.SETTLED_OTHERWISE[known.status]
        refunded_minor = self._recordable(payment, known)
        if refunded_minor is None:
            return await self._left_in_flight(payment, claim)
        error = ErrorInfo.from_error(
            PaygateError(
                self.OTHERWISE,
                f"the provider had already settled the payment without paygate: it is "
                f"{status.value} there, so the {self.NOUN} was not made",
            )
        )
        log.warning(
            f"{self.NOUN} refused: the provider holds the payment {status.value}",
            extra={"payment_request_id": payment.payment_request_id},
        )
        applied = await self._record_otherwise(
            payment, status, known.captured, error, claim, refunded_minor
        )
        return Outcome.REFUSED if applied else Outcome.REPLAYED

    def _recordable(self, payment: PaymentView, known: ChargeOutcome) -> int | None:
        """What the provider says it has refunded of the charge (0: nothing), if its captured
        and refunded amounts are ones a capture of ``payment`` can have; None otherwise."""
        try:
            captured_at_provider(payment.amount, known.captured)  # raises if it cannot be
            if known.captured is None:
                # Unsaid: what the payment asked to take (all, or a partial capture's amount).
                taken_minor = payment.captured_amount.minor_units
            else:
                taken_minor = known.captured.minor_units
            return refunded_at_provider(
                taken_minor,
                payment.amount.currency,
                known.refunded,
                in_full=known.refunded_in_full,
            )
        except ValueError as exc:
            log.error(
                f"{self.NOUN}: the provider's captured or refunded amount is not one paygate "
                "can record: %s",
                exc,
                extra={"payment_request_id": payment.payment_request_id},
            )
            return None

    async def _left_in_flight(self, payment: PaymentView, claim: str) -> Outcome:
        """Nothing recorded on a guess: the payment stays in flight, for the reconciler
        (and an operator, whom the error log tells)."""
        await self._store.release(payment.payment_request_id, claim)
        return Outcome.PENDING

    async def _not_done(
        self,
        payment: PaymentView,
        error: ErrorInfo,
        claim: str,
        held: HeldClaim,
        *,
        in_doubt: bool = False,
    ) -> Outcome:
        """The provider did not make this call. ``in_doubt``: an earlier send of the
        follow-up's key has no known outcome; then only a charge read settled is recorded."""
        known = await self._provider_holds(payment, held)
        if known is not None and known.status in self.DONE_BY:
            return await self._made(payment, known, claim)
        if known is not None and known.status in self.SETTLED_OTHERWISE:
            return await self._settled_otherwise(payment, known, claim)
        if in_doubt:
            # The earlier send may still land after this refusal and this read: the charge
            # read held (or unread) is not the last word, so nothing is recorded on it.
            log.warning(
                f"{self.NOUN} re-sent and refused (%s) while an earlier send is in doubt; "
                "left in flight for the reconciler",
                error.code.value,
                extra={"payment_request_id": payment.payment_request_id},
            )
            return await self._left_in_flight(payment, claim)

        def event(stored: PaymentView) -> OutboxMessage:
            return self._events.of_payment(
                stored,
                event_id=self._event_id(stored.payment_request_id, self.UNDONE, stored.updated_at),
            )

        applied = await self._record_not_done(payment, error, claim, event)
        return Outcome.AUTHORIZED if applied else Outcome.REPLAYED

    def _refusal_event(self, payment: PaymentView, error: PaygateError) -> OutboxMessage:
        now = self._clock()
        message = self._events.of_payment(
            payment,
            error=ErrorInfo.from_error(error),
            occurred_at=now,
            event_id=self._event_id(payment.payment_request_id, "refused", now),
        )
        if error.code is ErrorCode.IDEMPOTENCY_CONFLICT:
            # A capture of another amount than the one made (a payment is captured once):
            # the command reused the payment's capture with other parameters. On the topic
            # the answer says where the payment stands (refusal false, its schema's rule for
            # refused captures); as a webhook it would read as the payment captured again,
            # under a new webhook id each time, so none is sent, as for every reused key.
            return dataclasses.replace(message, webhook=None)
        return message
