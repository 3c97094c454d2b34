"""The stray-charge sweep: no charge paygate does not know about stays in place.

Claims make a second charge of one payment impossible for paygate's own workers (see
docs/reliability.md, "One owner per provider attempt"). This sweep is the defence in depth
behind that argument: it asks the provider about every attempt key that might hold money
the payment does not stand on (see persistence.stray_store for which), and

* no charge under the key: the attempt is marked verified and never asked about again --
  unless a provider's notice reopened the key since the pass read it (the payer paid after
  the provider answered): then the mark changes nothing (the store compares the key's check
  generation, see persistence.stray_store), the pass counts it ``reopened``, and the next
  pass asks again. The mark waits for the provider's search to have caught up, though
  (domain.search_lag): a provider whose status query may lag behind a charge
  (``status_search_lag``: Stripe's search, up to an hour behind in incidents) may not show
  one yet. So "no charge" is final only once the attempt was closed more than
  ``settle_after`` (a call of it still in flight has arrived by then) plus that lag ago;
  before, the key is left unverified (counted ``unsettled``; an attempt still open on a
  final payment is closed, which starts the count) and asked again, at the latest when
  the lag has passed. A key a notice reopened charged after its closing, when is not
  kept: from such a provider its "no charge" is never final, and it is asked again until
  the charge shows. Asked early on purpose: a charge that shows within the lag is found
  and reversed then, not an hour later; only the final "no" waits;
* the payment's own charge (its reference): verified likewise;
* a charge still waiting for its payer (``requires_action``): asked again later, as it
  holds nothing yet but may still be paid (a waiting payment's own open attempt is never a
  candidate: the payment is not final);
* a hold nobody asked for (the provider's error names it, ``held_reference``: a charge
  asked to capture at once that the provider only authorized, such as a Stripe
  PaymentIntent in ``requires_capture`` without a manual capture): not an outcome for a
  payment, but money held under the key, and nothing but its expiry, days later, would
  release it. The sweep takes it as the authorization it is for the payer: a stray charge
  unless the payment stands on it, voided below;
* no answer (a provider error or timeout, a provider no longer configured, an answer the
  adapter cannot read -- any exception but an outage, consumer.pass_guard, which goes on
  with the pass): asked again later, logged and counted in
  ``paygate_stray_unanswered_total`` (an alert fires when a provider leaves questions
  unanswered for hours);
* any other charge: a **stray charge**. It is recorded, logged at error level, counted in
  ``paygate_stray_charges_total{result="found"}`` (an alert fires on it), and reversed
  through the provider under a key of its own (``<attempt key>-reversal``), so a reversal
  sent twice reverses once: a captured charge with a refund of what it keeps (what it
  captured less what the provider says was refunded of it already, by hand outside
  paygate: a refund of the whole would be refused as more than remains), an authorization
  (money held, not taken) with a void (``cancel``), and one whose hold is already released
  or that was refunded in full already needs nothing. The reversal's answer is recorded
  and counted (``reversed`` or ``reversal_failed``); a try without an answer (a provider
  error or timeout, a refund the provider leaves pending) is counted in
  ``paygate_stray_reversals_unanswered_total`` and
  tried again later, under the same key for the same amount (a key per amount: a provider
  refuses a key used again with other parameters; an alert fires when a provider leaves
  reversals unanswered for hours). The key of each reversal refund is written down before
  it is sent (``StrayStore.note_reversal_key``), and the next try asks the provider about
  that refund before reading the charge: a charge's refunded amount counts a refund still
  pending, which may fail later (Stripe's card network can), so read from the charge alone
  a pending reversal was recorded ``reversed`` and, once it failed, the money stayed taken
  with nothing asking again. Now a pending one is asked again, a succeeded one is
  ``reversed``, a failed one ``reversal_failed`` (it alerts: an operator refunds it), and
  only a refund the provider never received lets the charge decide. A refund of the whole
  refused because its key was used before on another endpoint or with other parameters
  (voids shared it in older releases) goes under a key of its own once the provider shows
  that no refund under the refused one can have returned money
  (``StraySweep._refund_past_a_void``).

Before each question the key is stamped (persistence.stray_store.StrayStore.ask_again_at)
with when it may be asked again: the pause is the key's age, at least ``recheck_first`` and
at most ``recheck_cap`` (domain.waiting_checks), and for a key whose "no charge" would not be
final yet, no later than the moment it will be. A final answer marks the key, so the stamp
holds back only a key that got none (or none final), and only for a while: keys never asked
come first, then the longest due, so keys no provider answers (or whose lag is not over)
never hide a newer stray charge, and one dead provider's keys cost a question each per
pause, not a page per pass. A stray charge's
reversal is held back alike before each try (``StrayStore.reverse_again_at``), the pause
growing with the time since it was found, so reversals that get no answer never keep a
newer stray charge from being reversed.

One sweeper at a time reverses a stray charge: two consumer processes, or one pass
overlapping the next, may read the same one, and each would otherwise send its reversal
(void, refund, the question about a refund sent). The sweeper that records a stray charge
holds its claim (persistence.claims, as for payments and refunds) from that insert on;
another takes it before trying the reversal (``StrayStore.claim_reversal``), or, finding it
held, leaves the stray charge to its holder for this pass (counted ``claimed``), sending
nothing. The holder renews the claim before each call to the provider, once the call has
its place at the provider (providers.call_gate: the wait for it is bounded by no lease),
so a call is made only right after the database confirmed it still holds the claim; every
write of what it
learned carries the claim's token, so a sweeper whose lease ran out during a long call and
whose claim was taken over records nothing (counted ``concurrent``). Recording the answer
releases the claim; a try left without one releases it too, and a sweeper that dies keeps
it until its lease runs out. Expiry decides only when another may take over: the
reversal's keys are the same for every try, so the provider answers a reversal sent twice
once.

The sweep runs in every reconciliation pass (the consumer's and ``paygate reconcile``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TypeVar

from consumer.claim_holding import holding_claim
from consumer.pass_guard import unless_poisoned
from consumer.ports import StrayRecords
from domain.clock import utc_now
from domain.errors import ErrorCode, PaygateError
from domain.money import Money
from domain.refunds import RefundReason
from domain.search_lag import no_charge_final_at, no_charge_is_final
from domain.status import CAPTURED, HELD
from domain.waiting_checks import next_check_at
from persistence.claims import Claim
from persistence.stray_store import (
    STRAY_FAILED,
    STRAY_REVERSED,
    StrayCandidate,
)
from providers.call_gate import a_place_at
from providers.errors import ProviderError, UnsupportedOperationError
from providers.port import (
    CancelRequest,
    ChargeOutcome,
    ChargeStatus,
    PaymentProvider,
    ProviderRefundStatus,
    RefundOutcome,
    RefundRequest,
)
from providers.registry import Providers, UnknownProviderError
from telemetry.metrics import Metrics

log = logging.getLogger("paygate.reconciler")

T = TypeVar("T")

PAGE_SIZE = 200
_REVERSAL = "-reversal"
# How long a key without an answer waits before it is asked again: its age, within these.
RECHECK_FIRST = timedelta(minutes=1)
RECHECK_CAP = timedelta(hours=1)


@dataclass
class SweepReport:
    """Counts of one pass: every candidate checked once; one found is also counted as
    what its reversal did in the same pass (reversed, reversal_failed or unanswered);
    ``reopened``: answered "no charge" but reopened by a provider's notice before the
    mark, so left unverified for the next pass; ``unsettled``: answered "no charge" while
    the provider's search may still lag behind a charge of the key, so left unverified and
    asked again; ``claimed``: a stray charge whose reversal another sweeper holds the claim
    on, left to it (nothing sent)."""

    checked: int = 0
    verified: int = 0
    found: int = 0
    reversed: int = 0
    reversal_failed: int = 0
    unanswered: int = 0
    reopened: int = 0
    unsettled: int = 0
    claimed: int = 0


class _ClaimLost(Exception):
    """The sweeper's claim on a stray charge's reversal was taken over (its lease ran out):
    it must not call the provider about the reversal, nor record anything of it."""


def reversal_key(candidate: StrayCandidate, kept: Money) -> str:
    """The key a refund of ``kept`` of the stray charge is sent under: one per amount.

    What the charge keeps can change between tries (refunded by hand in part meanwhile),
    and a provider refuses a key used again with another amount (Stripe's
    idempotency_error, an unknown outcome here) until it forgets the key, a day later: the
    money would stay taken all that while. The same amount keeps its key, so a try sent
    twice refunds once; two keys never pay out more than the charge keeps, since a provider
    never refunds a charge beyond what it captured. The whole amount keeps the key it has
    always had (reversals already in flight go on under it)."""
    base = f"{candidate.attempt_key}{_REVERSAL}"
    return base if kept == candidate.amount else f"{base}-{kept.minor_units}"


def reversal_key_past_a_void(candidate: StrayCandidate) -> str:
    """The key a refund of the whole stray charge goes under when its usual key
    (:func:`reversal_key`, ``<attempt key>-reversal``) is bound to a void: before voids had
    a key of their own (:func:`void_key`) they were sent under it, and a provider binds a
    key to its first endpoint, so every refund under it is refused. The key
    :func:`reversal_key` gives a partial amount, spelled for the whole: never given to
    another refund (the whole amount has the plain key), so no refund can have been made
    under it but this one's, and :func:`attempt_of_reversal` still reads it."""
    return f"{candidate.attempt_key}{_REVERSAL}-{candidate.amount.minor_units}"


def _refund_key(candidate: StrayCandidate, kept: Money) -> str:
    """The key a refund of ``kept`` is sent under now: :func:`reversal_key`'s, but for the
    whole amount the key past the void (:func:`reversal_key_past_a_void`) once it is the
    key noted. A refund sent under it may still be on its way to the provider when the
    sweep tries again (and finds none under it, the charge keeping its whole amount): sent
    again under the same key, the provider answers that same refund; under the refused
    key, noted over it, nothing would ask about that refund again, and a charge read
    counting it pending would be recorded reversed, its failure later unseen."""
    past_the_void = reversal_key_past_a_void(candidate)
    if kept == candidate.amount and candidate.reversal_key == past_the_void:
        return past_the_void
    return reversal_key(candidate, kept)


def void_key(attempt_key: str) -> str:
    """The key of the void of a stray hold: never a refund's (:func:`reversal_key`). A
    provider binds a key to the endpoint it was first sent to, whatever that answered
    (Stripe answers another endpoint's request under it with an ``idempotency_error``):
    sharing the refund's key, a hold captured before its void was refused could never be
    refunded, every try answered that error. Ends like a reversal key, so a void sent under
    the key used before (``<attempt key>-reversal``) is not taken for the payment's own."""
    return f"{attempt_key}-void{_REVERSAL}"


def attempt_of_reversal(refund_key: str) -> str | None:
    """The attempt key whose stray charge a reversal refund's key (:func:`reversal_key`)
    reverses; None for a key that is no reversal's."""
    attempt_key, found, amount = refund_key.rpartition(_REVERSAL)
    if not found or not attempt_key or (amount and not _is_amount_suffix(amount)):
        return None
    return attempt_key


def _is_amount_suffix(text: str) -> bool:
    digits = text.removeprefix("-")
    return text.startswith("-") and digits.isascii() and digits.isdigit() and len(digits) <= 19


class StraySweep:
    def __init__(
        self,
        *,
        store: StrayRecords,
        providers: Providers,
        metrics: Metrics,
        settle_after: timedelta,
        clock: Callable[[], datetime] = utc_now,
        recheck_first: timedelta = RECHECK_FIRST,
        recheck_cap: timedelta = RECHECK_CAP,
    ) -> None:
        if recheck_first < timedelta(0) or recheck_cap < recheck_first:
            raise ValueError("the first pause must be at least 0 and at most the cap")
        self._store = store
        self._providers = providers
        self._metrics = metrics
        self._settle_after = settle_after
        self._clock = clock
        self._recheck_first = recheck_first
        self._recheck_cap = recheck_cap

    async def run_once(self, limit: int = PAGE_SIZE) -> SweepReport:
        report = SweepReport()
        # First, so the pass's read (and every later one) skips them: never candidates.
        await self._store.mark_own_charges(limit)
        for candidate in await self._store.candidates(self._clock() - self._settle_after, limit):
            report.checked += 1
            # Stamped before its question (or try), it is behind the others next pass.
            results = await unless_poisoned(
                self._examine(candidate),
                skipped=["unanswered"],
                what="stray-charge candidate not examined; asked again later",
                extra={"attempt_key": candidate.attempt_key, "provider": candidate.provider},
                after_skip=partial(self._unreadable, candidate),
            )
            for result in results:
                setattr(report, result, getattr(report, result) + 1)
        return report

    async def _examine(self, candidate: StrayCandidate) -> list[str]:
        """What became of the candidate: one result, or "found" and what its reversal did."""
        if candidate.stray_reference is not None:  # found by an earlier pass
            claim = await self._store.claim_reversal(candidate.attempt_key)
            if claim is None:
                return [self._claimed_elsewhere(candidate)]
            return [await self._reverse_holding(candidate, candidate.stray_reference, claim)]
        return await self._verify(candidate)

    async def _reverse_holding(
        self, candidate: StrayCandidate, reference: str, claim: Claim
    ) -> str:
        """Try the stray charge's reversal holding ``claim`` (see the module docstring),
        and give the claim up after a try that leaves the reversal under way (recording an
        answer gives it up with the record)."""
        candidate = dataclasses.replace(candidate, claim_token=claim.token)
        release = partial(self._store.release_reversal, candidate.attempt_key, claim.token)
        result = await holding_claim(self._reverse_unless_overtaken(candidate, reference), release)
        if result == "unanswered":
            await release()  # a no-op once the claim is another's
        return result

    async def _reverse_unless_overtaken(self, candidate: StrayCandidate, reference: str) -> str:
        try:
            return await self._reverse(candidate, reference)
        except _ClaimLost:
            return self._overtaken(candidate)

    async def _at_provider(
        self, candidate: StrayCandidate, call: Callable[[PaymentProvider], Awaitable[T]]
    ) -> T:
        """``call`` the candidate's provider about the reversal, holding the claim: renewed
        once the call has its place at the provider (the process's gate,
        providers.call_gate), right before it goes out. Renewed before the wait for the
        place, the claim could run out in it (the wait is bounded by no lease) and another
        sweeper's call be on its way when this one goes out."""
        provider = self._providers.get(candidate.provider)
        async with a_place_at(provider):
            await self._still_held(candidate)
            return await call(provider)

    async def _still_held(self, candidate: StrayCandidate) -> None:
        """Renew the claim right before a call to the provider about the reversal; raises
        :class:`_ClaimLost` (nothing sent) if it was taken over."""
        if not await self._store.renew_reversal(candidate.attempt_key, _token(candidate)):
            raise _ClaimLost(candidate.attempt_key)

    async def _verify(self, candidate: StrayCandidate) -> list[str]:
        # Before the question, whatever its answer: see the module docstring.
        await self._store.ask_again_at(candidate, self._next_question_at(candidate))
        asked_at = self._clock()  # the answer shows the provider's search as of then or later
        try:
            provider = self._providers.get(candidate.provider)
            known = await provider.charge_status(candidate.attempt_key)
        except ProviderError as exc:
            if exc.held_reference is None:
                return self._not_answered(candidate, exc)
            # Authorized though asked to capture at once (providers.errors): no outcome for
            # the payment, but money held under the key all the same. For the sweep it is
            # what it is for the payer, an authorization: voided unless the payment stands
            # on it, as nothing but its expiry would release it.
            known = ChargeOutcome(ChargeStatus.AUTHORIZED, exc.held_reference)
        except UnknownProviderError as exc:
            return self._not_answered(candidate, exc)
        if known is not None and known.status is ChargeStatus.REQUIRES_ACTION:
            # A trade (a QR code, a 3-D Secure page) still waiting for its payer holds no
            # money yet but may be paid: verified now, it would never be looked at again.
            self._metrics.stray_unanswered.labels(candidate.provider, "awaiting_payer").inc()
            return ["unanswered"]
        # A charge refunded in full at the provider already keeps nothing: no money to
        # reverse (and a refund of it would be refused, raising a false alert).
        charged = (
            known is not None
            and known.status in (ChargeStatus.SUCCEEDED, ChargeStatus.AUTHORIZED)
            and not known.nothing_kept
        )
        own = known is not None and self._is_the_payments_own(candidate, known.provider_reference)
        if not charged and not self._no_charge_is_final(candidate, asked_at, provider):
            # A charge of the key may not show in the provider's search yet: ask again (the
            # stamp above says when), mark nothing. A charge found is final at once (the key
            # holds one charge), the payment's own included.
            if candidate.attempt_finished_at is None:
                await self._store.close_unverified(candidate)
            # Counted, not alerted: every closed key of a lagging provider passes here.
            self._metrics.stray_unanswered.labels(candidate.provider, "search_lag").inc()
            return ["unsettled"]
        if known is None or not charged or own:
            if await self._store.mark_verified(candidate):
                return ["verified"]
            # The answer may predate the charge the reopen reported: asked again next pass.
            log.warning(
                "attempt reopened by a provider notice while it was asked about: not verified",
                extra={"attempt_key": candidate.attempt_key},
            )
            return ["reopened"]
        reference = known.provider_reference or ""
        log.error(
            "stray charge: the provider charged a key the payment does not stand on; reversing it",
            extra={
                "payment_request_id": candidate.payment_id,
                "attempt_key": candidate.attempt_key,
                "provider": candidate.provider,
                "provider_reference": reference,
            },
        )
        claim = await self._store.record_found(candidate, reference)
        if claim is None:
            return ["verified"]  # another sweeper recorded it first, counts and reverses it
        # Counted by the one sweeper that recorded it: "found" and "reversed" then match one
        # to one, so that a difference means a charge left in place.
        self._metrics.stray_charges.labels(candidate.provider, "found").inc()
        return ["found", await self._reverse_holding(candidate, reference, claim)]

    def _not_answered(
        self, candidate: StrayCandidate, exc: UnknownProviderError | ProviderError
    ) -> list[str]:
        """A question without an answer: asked again later (the stamp says when)."""
        log.warning(
            "attempt not verified at its provider: %s",
            exc,
            extra={"attempt_key": candidate.attempt_key, "provider": candidate.provider},
        )
        reason = "no_provider" if isinstance(exc, UnknownProviderError) else "provider_error"
        self._metrics.stray_unanswered.labels(candidate.provider, reason).inc()
        return ["unanswered"]

    def _hold_back_until(self, since: datetime) -> datetime:
        """When to ask again about something without an answer, waited for since ``since``:
        after as long as it has waited, within the first pause and the cap."""
        now = self._clock()
        at = next_check_at(now, since, None, first=self._recheck_first, cap=self._recheck_cap)
        return now if at is None else at  # None only with an expiry, never passed here

    def _next_question_at(self, candidate: StrayCandidate) -> datetime:
        now = self._clock()
        at = self._hold_back_until(candidate.attempt_created_at or now)
        # A key whose "no charge" is not final yet is asked again once it is, even when its
        # back-off would wait longer: so its verdict is not late by up to a back-off.
        final_at = self._final_at(candidate)
        return min(at, final_at) if final_at is not None and final_at > now else at

    def _final_at(self, candidate: StrayCandidate) -> datetime | None:
        """When a "no charge" about the candidate's key becomes final, if that is to wait;
        None if it is final at once (a provider without lag), the attempt is open (no such
        moment yet) or its provider is not configured (it answers nothing)."""
        if candidate.attempt_finished_at is None or candidate.generation > 0:
            return None
        try:
            lag = self._providers.get(candidate.provider).status_search_lag
        except UnknownProviderError:
            return None
        if lag == timedelta(0):
            return None
        return no_charge_final_at(self._last_possible_charge(candidate.attempt_finished_at), lag)

    def _no_charge_is_final(
        self, candidate: StrayCandidate, asked_at: datetime, provider: PaymentProvider
    ) -> bool:
        finished = candidate.attempt_finished_at
        # A reopened key (generation above 0): a provider's notice said it charged since it
        # closed, at a moment not kept; counted from the closing, the lag says nothing about
        # that charge, which a lagging search may not show yet. Its "no" is never final: it
        # is asked again (backed off, capped) until the charge shows and is reversed.
        reopened = candidate.generation > 0
        last = None if finished is None or reopened else self._last_possible_charge(finished)
        return no_charge_is_final(last, asked_at, provider.status_search_lag)

    def _last_possible_charge(self, finished_at: datetime) -> datetime:
        # A call of a closed attempt still in flight reaches the provider within settle_after.
        # Counted from the closing, not from the key's last send (provider_attempts.
        # last_sent_at), because no send of a key starts after its attempt closed: its first
        # send follows the begin (or failover) that opened it under the sender's claim; a
        # re-send or retry goes out only after a write that found the attempt open and the
        # claim still the sender's (PaymentStore.renew_sending); and every closing is ordered
        # after it -- made by the claim's holder, by a taker after the claim was lost (then
        # the stamp failed), or by this sweep only on a final payment, whose claim is gone.
        return finished_at + self._settle_after

    @staticmethod
    def _is_the_payments_own(candidate: StrayCandidate, reference: str | None) -> bool:
        stands_on_a_charge = candidate.payment_status in CAPTURED | HELD
        return (
            stands_on_a_charge
            and reference is not None
            and reference == (candidate.payment_reference)
        )

    async def _reverse(self, candidate: StrayCandidate, reference: str) -> str:
        # Before the try, whatever its answer: see the module docstring. A stray charge
        # found in this pass has no ``found_at`` read yet: found now.
        since = candidate.found_at or self._clock()
        if not await self._store.reverse_again_at(
            candidate.attempt_key, self._hold_back_until(since), token=_token(candidate)
        ):
            return self._overtaken(candidate)
        if candidate.reversal_key is not None:
            answered = await self._sent_reversal(candidate, candidate.reversal_key, reference)
            if answered is not None:
                return answered
        try:
            known = await self._at_provider(
                candidate, lambda provider: provider.charge_by_reference(reference)
            )
        except ProviderError as exc:
            if exc.held_reference == reference:
                # Held though asked to capture at once: released like any authorization.
                return await self._void(candidate, reference)
            if exc.retriable or exc.outcome_unknown:
                return self._unanswered(candidate, "provider_error")
            known = None  # it cannot say (unsupported): reverse as a capture, as before
        except UnknownProviderError as exc:
            return await self._reversal_failed(candidate, str(exc))
        if known is not None and known.status in (ChargeStatus.CANCELED, ChargeStatus.EXPIRED):
            return await self._reversed(candidate, reference)  # nothing is held any more
        if known is not None and known.status is ChargeStatus.AUTHORIZED:
            return await self._void(candidate, reference)
        return await self._refund_what_it_keeps(candidate, reference, known)

    async def _refund_what_it_keeps(
        self, candidate: StrayCandidate, reference: str, known: ChargeOutcome | None
    ) -> str:
        """Refund what the captured stray charge keeps (``known``: the provider's word on
        it, None when it cannot say)."""
        kept: Money | None = candidate.amount
        if known is not None:
            # Refunded in part by hand outside paygate: only the rest is reversed (a refund
            # of the whole would be refused as more than the charge keeps).
            try:
                kept = known.kept(candidate.amount)
            except ValueError as exc:
                return await self._reversal_failed(candidate, str(exc))
        if kept is None:
            # Refunded in full at the provider already: nothing is kept, and a refund of it
            # would be refused, raising a false alert.
            return await self._reversed(candidate, reference)
        return await self._refund(candidate, reference, kept)

    async def _sent_reversal(
        self, candidate: StrayCandidate, key: str, reference: str
    ) -> str | None:
        """What became of the reversal refund sent under ``key``, asked of the provider
        before the charge is read: the charge's refunded amount counts a refund still
        pending, which may yet fail, so "nothing kept" read there would record the charge
        reversed while its money may come back to the merchant. None: the provider never
        received that refund, so the charge decides (and a refund is sent again)."""
        try:
            answer = await self._at_provider(
                candidate, lambda provider: provider.refund_status(key, reference)
            )
        except UnsupportedOperationError:
            return None  # a provider that cannot say: its charge decides, as before
        except ProviderError as exc:
            if exc.retriable or exc.outcome_unknown:
                return self._unanswered(candidate, "provider_error")
            return await self._reversal_failed(candidate, str(exc.message))
        except UnknownProviderError as exc:
            return await self._reversal_failed(candidate, str(exc))
        if answer is None:
            return None
        return await self._answered_reversal(candidate, answer)

    async def _answered_reversal(self, candidate: StrayCandidate, answer: RefundOutcome) -> str:
        """What the provider's word on a reversal refund it received records."""
        if answer.status is ProviderRefundStatus.SUCCEEDED:
            return await self._reversed(candidate, answer.provider_reference)
        if answer.status is ProviderRefundStatus.PENDING:
            return self._unanswered(candidate, "pending")
        reason = answer.error.message if answer.error is not None else "failed"
        return await self._reversal_failed(
            candidate, f"the provider failed the reversal refund it had accepted: {reason}"
        )

    async def _void(self, candidate: StrayCandidate, reference: str) -> str:
        """Release a stray authorization: nothing was taken, so there is nothing to refund."""
        request = CancelRequest(
            cancel_key=void_key(candidate.attempt_key),
            payment_request_id=candidate.payment_id,
            charge_reference=reference,
        )
        try:
            answer = await self._at_provider(candidate, lambda provider: provider.cancel(request))
        except ProviderError as exc:
            if exc.retriable or exc.outcome_unknown:
                # The same key next time: a void sent twice voids once.
                return self._unanswered(candidate, "provider_error")
            return await self._void_refused(candidate, reference, str(exc.message))
        except UnknownProviderError as exc:
            return await self._reversal_failed(candidate, str(exc))
        except PaygateError as exc:
            return await self._void_refused(candidate, reference, str(exc))
        if answer.status in (ChargeStatus.CANCELED, ChargeStatus.EXPIRED):
            return await self._reversed(candidate, answer.provider_reference)
        return await self._void_refused(
            candidate, reference, f"the void answered {answer.status.value}"
        )

    async def _void_refused(self, candidate: StrayCandidate, reference: str, message: str) -> str:
        """A void refused, or answered captured: the hold may have been captured between
        the read and the void (Stripe refuses to cancel a PaymentIntent that succeeded).
        Read again: a charge captured now is refunded like any stray capture, on this pass;
        anything else is for an operator (``message``), as before. Without this, the race
        left the stray money taken for an operator though a refund of it was one call away."""
        try:
            known = await self._at_provider(
                candidate, lambda provider: provider.charge_by_reference(reference)
            )
        except ProviderError as exc:
            if exc.retriable or exc.outcome_unknown:
                # The next pass reads the charge first and refunds it if captured.
                return self._unanswered(candidate, "provider_error")
            return await self._reversal_failed(candidate, message)
        if known is not None and known.status in (ChargeStatus.CANCELED, ChargeStatus.EXPIRED):
            # Released already (a void sent before, under the key voids used to share with
            # the refund): nothing is held.
            return await self._reversed(candidate, reference)
        if known is None or known.status is not ChargeStatus.SUCCEEDED:
            return await self._reversal_failed(candidate, message)
        return await self._refund_what_it_keeps(candidate, reference, known)

    async def _reversed(self, candidate: StrayCandidate, reference: str | None) -> str:
        if not await self._store.record_reversal(
            candidate.attempt_key,
            STRAY_REVERSED,
            reference,
            None,
            noted=candidate.reversal_key,
            token=_token(candidate),
        ):
            return self._overtaken(candidate)
        self._metrics.stray_charges.labels(candidate.provider, "reversed").inc()
        log.error(
            "stray charge reversed",
            extra={
                "payment_request_id": candidate.payment_id,
                "attempt_key": candidate.attempt_key,
            },
        )
        return "reversed"

    async def _refund(
        self, candidate: StrayCandidate, reference: str, kept: Money, key: str | None = None
    ) -> str:
        """Refund what the stray charge keeps (``kept``: what it captured less what was
        refunded of it at the provider already, by hand outside paygate), under ``key``
        (by default :func:`_refund_key`'s)."""
        key = key or _refund_key(candidate, kept)
        # Written down before it is sent (a pass that dies after the send still asks about
        # it next time): see _sent_reversal. Only in place of the key this pass read (and
        # asked about) or wrote itself: another sweeper's key noted since may be a refund
        # in flight, which this pass's read of the charge predates.
        if not await self._store.note_reversal_key(
            candidate.attempt_key, key, replacing=candidate.reversal_key, token=_token(candidate)
        ):
            return self._overtaken(candidate)
        candidate = dataclasses.replace(candidate, reversal_key=key)
        request = RefundRequest(
            refund_key=key,
            refund_id=key,
            payment_request_id=candidate.payment_id,
            charge_reference=reference,
            amount=kept,
            reason=RefundReason.DUPLICATE,
        )
        try:
            answer = await self._at_provider(candidate, lambda provider: provider.refund(request))
        except (ProviderError, PaygateError) as exc:
            if exc.code is ErrorCode.IDEMPOTENCY_CONFLICT and key == reversal_key(
                candidate, candidate.amount
            ):
                return await self._refund_past_a_void(candidate, reference, kept)
            if isinstance(exc, PaygateError):
                return await self._reversal_failed(candidate, str(exc))
            if exc.retriable or exc.outcome_unknown:
                # The same key next time: a refund sent twice refunds once.
                return self._unanswered(candidate, "provider_error")
            return await self._reversal_failed(candidate, str(exc.message))
        except UnknownProviderError as exc:
            return await self._reversal_failed(candidate, str(exc))
        if answer.status is ProviderRefundStatus.SUCCEEDED:
            if not await self._store.record_reversal(
                candidate.attempt_key,
                STRAY_REVERSED,
                answer.provider_reference,
                None,
                noted=candidate.reversal_key,
                token=_token(candidate),
            ):
                return self._overtaken(candidate)
            self._metrics.stray_charges.labels(candidate.provider, "reversed").inc()
            log.error(
                "stray charge reversed",
                extra={"payment_request_id": candidate.payment_id, "attempt_key": key},
            )
            return "reversed"
        if answer.status is ProviderRefundStatus.PENDING:
            return self._unanswered(candidate, "pending")
        message = answer.error.message if answer.error is not None else "refused"
        return await self._reversal_failed(candidate, message)

    async def _refund_past_a_void(
        self, candidate: StrayCandidate, reference: str, kept: Money
    ) -> str:
        """The provider refused the refund of the whole stray charge under its key
        (``<attempt key>-reversal``) as used before with other parameters or on another
        endpoint: a release before voids had a key of their own sent the charge's void under
        it (refused, or raced by a capture), and every refund under that key is refused
        until the provider forgets it, a day later, the money taken all that while.

        Refunded under :func:`reversal_key_past_a_void` only once the provider shows that no
        refund under the refused key can have returned any money: it lists none under that
        key among the charge's refunds, and the charge, read again now, keeps its whole
        amount (no refund of it succeeded or is pending, whoever made it). A refund made
        under the refused key and not listed would have to have failed, returning nothing;
        and the provider never refunds a charge beyond what it keeps, so the new refund and
        any other cannot together return more than was taken. A refund found under the
        refused key is what it says (succeeded, pending or failed), as on any pass; a
        provider that cannot say leaves the charge for an operator."""
        old_key = reversal_key(candidate, candidate.amount)
        try:
            # Renewed before each question, not once for both: each takes up to the
            # provider timeout, which only one call is sure to fit in the lease.
            under_old_key = await self._at_provider(
                candidate, lambda provider: provider.refund_status(old_key, reference)
            )
            known = await self._at_provider(
                candidate, lambda provider: provider.charge_by_reference(reference)
            )
            still_kept = None if known is None else known.kept(candidate.amount)
        except UnsupportedOperationError:
            return await self._reversal_failed(
                candidate,
                f"the provider refuses the reversal key {old_key} (used before, by a void) "
                "and cannot say whether a refund was made under it",
            )
        except ProviderError as exc:
            if exc.retriable or exc.outcome_unknown:
                return self._unanswered(candidate, "provider_error")
            return await self._reversal_failed(candidate, str(exc.message))
        except (UnknownProviderError, ValueError) as exc:
            return await self._reversal_failed(candidate, str(exc))
        if under_old_key is not None:
            return await self._answered_reversal(candidate, under_old_key)
        if known is None or known.status is not ChargeStatus.SUCCEEDED or still_kept != kept:
            # The charge changed since it was read (refunded, released): the next pass reads
            # it afresh and decides.
            return self._unanswered(candidate, "provider_error")
        log.warning(
            "the stray charge's reversal key was used by a void before: refunded under its own",
            extra={"attempt_key": candidate.attempt_key, "refused_key": old_key},
        )
        return await self._refund(
            candidate, reference, kept, key=reversal_key_past_a_void(candidate)
        )

    async def _unreadable(self, candidate: StrayCandidate) -> None:
        """Counts a candidate whose examination raised (not an outage) as unanswered."""
        if candidate.stray_reference is not None:
            self._unanswered(candidate, "provider_error")
        else:
            self._metrics.stray_unanswered.labels(candidate.provider, "provider_error").inc()

    def _overtaken(self, candidate: StrayCandidate) -> str:
        """Another sweeper took this one's claim over (its lease ran out while it waited
        for the provider), or -- the defence behind the claim -- noted a reversal key or
        recorded the reversal since this pass read the stray charge: nothing more is sent,
        nothing of what this one learned is recorded, and the one holding the claim now (or
        the next pass) asks about the key noted then."""
        return self._unanswered(candidate, "concurrent")

    def _claimed_elsewhere(self, candidate: StrayCandidate) -> str:
        """Another sweeper holds the claim on the stray charge's reversal: left to it for
        this pass, nothing sent. Counted (not alerted): it is the holder's try that says
        whether the provider answers."""
        self._metrics.stray_reversals_unanswered.labels(candidate.provider, "claimed").inc()
        log.info(
            "stray charge reversal left to the sweeper holding its claim",
            extra={"attempt_key": candidate.attempt_key, "provider": candidate.provider},
        )
        return "claimed"

    def _unanswered(self, candidate: StrayCandidate, reason: str) -> str:
        """A reversal without an answer yet: counted, and tried again once it is due."""
        self._metrics.stray_reversals_unanswered.labels(candidate.provider, reason).inc()
        log.warning(
            "stray charge reversal not answered (%s); tried again later",
            reason,
            extra={
                "payment_request_id": candidate.payment_id,
                "attempt_key": candidate.attempt_key,
            },
        )
        return "unanswered"

    async def _reversal_failed(self, candidate: StrayCandidate, message: str) -> str:
        if not await self._store.record_reversal(
            candidate.attempt_key,
            STRAY_FAILED,
            None,
            message,
            noted=candidate.reversal_key,
            token=_token(candidate),
        ):
            return self._overtaken(candidate)
        self._metrics.stray_charges.labels(candidate.provider, "reversal_failed").inc()
        log.error(
            "stray charge NOT reversed: an operator must refund it: %s",
            message,
            extra={
                "payment_request_id": candidate.payment_id,
                "attempt_key": candidate.attempt_key,
            },
        )
        return "reversal_failed"


def _token(candidate: StrayCandidate) -> str:
    """The token of the claim the sweep holds on the candidate's reversal."""
    if candidate.claim_token is None:
        raise RuntimeError("a stray charge's reversal is tried only under its claim")
    return candidate.claim_token
