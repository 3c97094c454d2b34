"""Handles one CreatePayment command, exactly once in effect.

1. :meth:`PaymentStore.begin` commits the payment and its attempt before any provider
   call (write-ahead), or reports what already exists for the payment id.
2. The provider is called with the attempt key as its idempotency key.
3. The outcome and its result event are committed together (:class:`PaymentOutcomes`).

A redelivered command finds the payment: a final one is re-published (same event id),
an in-doubt one is resolved by asking the provider, never by charging blindly.

One owner per attempt (see persistence.claims): a worker calls the provider for a payment
only while it holds the payment's claim. A new payment is claimed by the insert that makes
it; a redelivered or duplicated command, or the reconciler, must *take* the claim, and a
worker that cannot (another is working on the payment) leaves it alone: outcome
``owned_elsewhere``, no provider call. Every later write (the outcome, the next attempt, a
retry's schedule) applies only while the claim is still the writer's, so a worker that lost
it -- a zombie resumed after its group moved on -- changes nothing, and a charge it learns
of under an attempt closed meanwhile is recorded as a stray charge, for the sweep to
reverse, never dropped.

Routing and failover: the router names the providers of a payment, in order; attempt 1
goes to the first. Only when a call *certainly did not charge* (a ``retriable`` error that
is not ``outcome_unknown``: connection refused, unavailable before processing) and another
provider follows does :meth:`PaymentStore.next_attempt` close that attempt as failed and
open the next one (write-ahead), which is then sent to the next provider. Never after a
timeout or any other unknown outcome: that payment stays pending for its own provider to
answer. An in-doubt attempt is only ever asked of the provider it was sent to.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Protocol

from consumer.claim_holding import holding_claim
from consumer.claimed_calls import HeldClaim, unless_taken_over
from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents, PaymentFacts
from consumer.payment_outcomes import PaymentOutcomes
from consumer.ports import PaymentWrites
from consumer.resend_withhold import withheld
from consumer.sealing import CommandSealer
from consumer.withheld_reports import WithheldReports
from domain.accounts import Account
from domain.clock import utc_now
from domain.error_info import ErrorInfo
from domain.errors import ErrorCode, PaygateError
from domain.events import conflict_event_id
from domain.next_action import NextAction
from domain.payment_view import PaymentView
from domain.payments import CreatePayment
from domain.resend_window import DEFAULT_RESEND_LIMIT, may_resend_again
from domain.retry import RetryPolicy
from domain.status import PaymentStatus
from domain.vaulted import AnyAccount, VaultedAccount
from persistence.group_commit import Bulk
from persistence.payment_begin import Existing, Refused, Started
from persistence.payment_claims import ClaimedAttempt
from providers.errors import ProviderError
from providers.port import ChargeOutcome, ChargeRequest, ChargeStatus
from providers.registry import Providers, UnknownProviderError
from providers.routing import Router
from telemetry.metrics import Metrics

log = logging.getLogger("paygate.consumer")


class AccountReveal(Protocol):
    async def reveal(self, account: VaultedAccount, *, client_id: str | None) -> Account:
        """The clear account, for one provider call (vault.Vault.reveal)."""
        ...


class PaymentCommandHandler:
    def __init__(
        self,
        *,
        store: PaymentWrites,
        providers: Providers,
        router: Router,
        events: PaymentEvents,
        account_key: bytes,
        metrics: Metrics,
        retry_policy: RetryPolicy | None = None,
        abandon_after: timedelta = timedelta(hours=1),
        clock: Callable[[], datetime] = utc_now,
        vault: AccountReveal | None = None,
        resend_limit: int = DEFAULT_RESEND_LIMIT,
        ticks: Callable[[], float] = time.monotonic,
    ) -> None:
        """``vault`` reveals vaulted accounts for the provider call; without it only
        commands with clear accounts can be charged (tests of the handler alone).
        ``resend_limit``: how often an in-doubt key may be sent again before it is withheld
        for an operator (domain.resend_window.may_resend_again). ``ticks``: the monotonic
        clock a claim's freshness is measured by (consumer.claimed_calls)."""
        self._store = store
        self._resend_limit = resend_limit
        self._ticks = ticks
        self._vault = vault
        self._providers = providers
        self._router = router
        for name in router.provider_names():
            providers.get(name)  # every routed provider must exist: fail at start, not later
        self._events = events
        self._account_key = account_key
        self._metrics = metrics
        self._abandon_after = abandon_after
        self._retry_policy = retry_policy or RetryPolicy()
        self._clock = clock
        self._recorder = PaymentOutcomes(store, events, clock)
        self._sealer = CommandSealer(account_key)
        self._withheld = WithheldReports(metrics, clock)

    async def handle(self, command: CreatePayment, along: Sequence[Bulk] = ()) -> Outcome:
        """Handle ``command``; ``along``: writes to commit with its begin (the vault rows of
        tokens the intake made for it: consumer.account_intake.AccountIntake.admit_along)."""
        route = self._router.route(command.payment_method.value, command.amount.currency)
        # Read before begin writes the claim with the payment: its first charge is covered.
        written = self._ticks()
        begun = await self._store.begin(
            command,
            provider=route[0],
            account_key=self._account_key,
            refusal_event=lambda refused, error, created_at: self._events.of_facts(
                PaymentFacts.of_command(refused, created_at),
                status=PaymentStatus.FAILED,
                provider=None,
                provider_reference=None,
                error=ErrorInfo.from_error(error),
                occurred_at=created_at,
            ),
            seal=self._sealer.seal,
            along=along,
        )
        if isinstance(begun, Started):
            # A key used again after it expired makes a payment of a later generation.
            command = command.of_generation(begun.generation)
            facts = PaymentFacts.of_command(command, begun.created_at)
            token = begun.claim.token
            held = self._held(command.payment_request_id, token)
            held.confirmed(written)
            outcome = await self._as_owner(
                command.payment_request_id,
                token,
                self._charge(command, facts, begun.attempt_key, route, token, held),
            )
        elif isinstance(begun, Refused):
            command = command.of_generation(begun.generation)
            outcome = Outcome.REFUSED
        else:
            outcome = await self._handle_existing(command, begun)
        self._metrics.commands_consumed.labels("payment", outcome.value).inc()
        log.info(
            "payment command handled",
            extra={
                "payment_request_id": command.payment_request_id,
                "order_id": command.order_id,
                "outcome": outcome.value,
                "payer": str(command.payer),
            },
        )
        return outcome

    async def _handle_existing(self, command: CreatePayment, existing: Existing) -> Outcome:
        payment = existing.payment
        if not existing.same_parameters:
            await self._refuse_conflict(command, payment.payment_request_id)
            return Outcome.CONFLICT
        if existing.open_attempt_key is not None:
            claimed = await self._store.claim(payment.payment_request_id)
            if claimed is not None:
                # As it is under the claim: begin's view may be older (see ClaimedAttempt).
                return await self.resolve(claimed.payment, claimed, command)
            current = await self._store.get_payment(payment.payment_request_id)
            if current is None or not current.status.is_final:
                # Another worker holds the claim: the payment is its to finish (or, if it
                # dies, the reconciler's). Calling the provider here could charge twice.
                log.info(
                    "payment in another worker's hands; left to it",
                    extra={"payment_request_id": payment.payment_request_id},
                )
                return Outcome.OWNED_ELSEWHERE
        # Say again where the payment stands, as it stands now (persistence.payment_replay).
        await self._store.republish(payment.payment_request_id, self._events.of_payment)
        return Outcome.REPLAYED

    async def _refuse_conflict(self, command: CreatePayment, payment_id: str) -> None:
        # The stored payment is untouched; the event tells the sender its command was
        # refused, under an event id of its own.
        now = self._clock()
        facts = dataclasses.replace(
            PaymentFacts.of_command(command, now), payment_request_id=payment_id
        )
        await self._store.enqueue(
            self._events.of_facts(
                facts,
                status=PaymentStatus.FAILED,
                provider=None,
                provider_reference=None,
                error=ErrorInfo(
                    ErrorCode.IDEMPOTENCY_CONFLICT,
                    "this idempotency key was already used for this order with other parameters",
                ),
                occurred_at=now,
                event_id=conflict_event_id(
                    payment_id, command.parameters_fingerprint(self._account_key)
                ),
                refusal=True,
            )
        )

    async def resolve(
        self, payment: PaymentView, claimed: ClaimedAttempt, command: CreatePayment | None = None
    ) -> Outcome:
        """Settle the open attempt the caller has just claimed, by asking its provider.

        The decision table (the reconciler's too):

        | provider says          | what happens                                            |
        | ---------------------- | ------------------------------------------------------- |
        | charged / authorized   | recorded: succeeded / authorized                        |
        | declined / expired     | recorded: failed / expired                              |
        | waiting for the payer  | recorded: requires_action (if not yet); claim released; |
        |                        | once its action expired, the provider is asked to close |
        |                        | it (close_charge) and what it answers is recorded       |
        | no record of the key   | re-sent with the same key (it never arrived, so this    |
        |                        | cannot charge twice) while the attempt is inside its    |
        |                        | provider's idempotency window (domain.resend_window);   |
        |                        | past it, never re-sent: left pending for an operator    |
        |                        | (error log, resends_withheld metric, alert); failed as  |
        |                        | never received only if it cannot be re-sent (no sealed  |
        |                        | command, or accounts the vault no longer opens) and is  |
        |                        | older than abandon_after plus the provider's search lag;|
        |                        | re-sent resend_limit times already: withheld likewise   |
        |                        | (resend_limit_reached metric, alert)                    |
        | error / not configured | claim released; left pending for a later pass           |

        ``command`` is the command as redelivered (the reconciler has none): the sender
        asks again. A re-send is made from the command sealed into the attempt (the first
        delivery's, whose tokens its begin stored), from ``command`` only when the attempt
        holds none that opens.
        """
        # Taken before this call: unconfirmed here, so the question renews it at the gate.
        held = self._held(payment.payment_request_id, claimed.claim.token)
        return await self._as_owner(
            payment.payment_request_id,
            claimed.claim.token,
            self._resolve(payment, claimed, command, held),
        )

    def _held(self, payment_id: str, claim: str) -> HeldClaim:
        return HeldClaim.of_row(self._store, payment_id, claim, ticks=self._ticks)

    async def _as_owner(self, payment_id: str, claim: str, work: Awaitable[Outcome]) -> Outcome:
        """Run ``work`` holding ``claim`` (see consumer.claim_holding); ``owned_elsewhere``
        once a call found the claim taken over (nothing sent, nothing to give up)."""
        return await holding_claim(
            unless_taken_over(work), lambda: self._store.release(payment_id, claim)
        )

    async def _resolve(
        self,
        payment: PaymentView,
        claimed: ClaimedAttempt,
        command: CreatePayment | None,
        held: HeldClaim,
    ) -> Outcome:
        token = claimed.claim.token
        provider_name = claimed.provider
        facts = PaymentFacts.of_stored(payment)
        try:
            provider = self._providers.get(provider_name)
            key = claimed.attempt_key
            known = await held.call(provider, lambda: provider.charge_status(key))
        except (UnknownProviderError, ProviderError) as exc:
            # Only the attempt's own provider can tell; never guess, never send it elsewhere.
            log.warning(
                "in-doubt payment not resolved: %s",
                exc,
                extra={"payment_request_id": payment.payment_request_id},
            )
            await self._store.release(payment.payment_request_id, token)
            return Outcome.PENDING
        waiting = known is not None and known.status is ChargeStatus.REQUIRES_ACTION
        # A status answer need not repeat the action (Alipay's query does not return the QR
        # code): the one stored with the payment says what the payer was shown, and when.
        action = payment.next_action or (known.next_action if known is not None else None)
        unknown_yet = known is None and payment.status is PaymentStatus.REQUIRES_ACTION
        if action is not None and (waiting or unknown_yet):
            # Also when the provider has no trade yet: the payer has not opened the page
            # the action points to. Re-sending would only make another action.
            return await self._still_waiting(
                payment, claimed, known, action, command is not None, held
            )
        if waiting:
            known = None  # waiting, but no action known: re-sent (same key) to learn it
        if known is not None:
            return await self._recorder.charged(
                facts, claimed.attempt_key, known, provider=provider_name, claim=token
            )
        if claimed.sealed_request is not None:
            # The call re-sent is the one sealed into the attempt, a redelivered command's
            # only where none opens: a re-send repeats the first call, and a redelivery's
            # accounts may name tokens never stored (its begin found the payment and wrote
            # none of them: persistence.payment_begin).
            sealed = self._sealer.unseal(claimed.sealed_request, payment.payment_request_id)
            command = sealed or command
        if command is None:
            return await self._unsendable(payment, facts, claimed)
        if not may_resend_again(
            claimed.resends,
            self._resend_limit,
            self._providers.get(provider_name).idempotency_window,
        ):
            # Sent again that often, and the provider still holds nothing under the key:
            # each re-send was answered with no known outcome, and the next would be too.
            # Never failed on that either (a call of the key may yet be taken): withheld for
            # an operator, counted and alerted (PaygateResendLimitReached).
            self._withheld.limit_reached(
                "payment", payment.payment_request_id, provider_name, claimed.resends
            )
            await self._store.release(payment.payment_request_id, token)
            return Outcome.PENDING
        if payment.next_retry_at is not None and payment.next_retry_at > self._clock():
            # A retry was scheduled before its worker stopped: keep to its back-off.
            await asyncio.sleep((payment.next_retry_at - self._clock()).total_seconds())
            if not await self._store.renew(payment.payment_request_id, token):
                return Outcome.OWNED_ELSEWHERE
        # The provider never received the attempt, so sending it now (same key) cannot
        # charge twice. Failover may go on to the providers after it in today's route.
        command = command.of_generation(claimed.generation)
        route = self._router.route(command.payment_method.value, command.amount.currency)
        rest = route[route.index(provider_name) + 1 :] if provider_name in route else []
        return await self._charge(
            command,
            facts,
            claimed.attempt_key,
            [provider_name, *rest],
            token,
            held,
            in_doubt_since=claimed.started_at,
            last_sent_at=claimed.last_sent_at,
        )

    async def _still_waiting(
        self,
        payment: PaymentView,
        claimed: ClaimedAttempt,
        known: ChargeOutcome | None,
        action: NextAction,
        redelivered: bool,
        held: HeldClaim,
    ) -> Outcome:
        """The provider still waits for the payer (``known``: its answer, None if it has no
        trade yet). Before ``action`` expires that is news only to a payment that did not
        know it yet (its first call timed out); after, the provider is asked to close the
        charge, so that the payer can no longer pay a payment this service calls expired."""
        token = claimed.claim.token
        facts = PaymentFacts.of_stored(payment)
        if action.expired_at(self._clock()):
            try:
                provider = self._providers.get(claimed.provider)
                key = claimed.attempt_key
                closed = await held.call(provider, lambda: provider.close_charge(key))
            except (UnknownProviderError, ProviderError) as exc:
                log.warning(
                    "expired payment not closed: %s",
                    exc,
                    extra={"payment_request_id": payment.payment_request_id},
                )
                await self._store.release(payment.payment_request_id, token)
                return Outcome.PENDING
            if closed is not None and closed.status is not ChargeStatus.REQUIRES_ACTION:
                return await self._recorder.charged(
                    facts, claimed.attempt_key, closed, provider=claimed.provider, claim=token
                )
            await self._store.release(payment.payment_request_id, token)
            return Outcome.PENDING
        if payment.status is not PaymentStatus.REQUIRES_ACTION and known is not None:
            return await self._recorder.charged(
                facts,
                claimed.attempt_key,
                dataclasses.replace(known, next_action=action),
                provider=claimed.provider,
                claim=token,
            )
        await self._store.release(payment.payment_request_id, token)
        if redelivered:
            # The sender asks again: tell it again where the payment stands (same event id).
            await self._store.republish(payment.payment_request_id, self._events.of_payment)
            return Outcome.REPLAYED
        return Outcome.PENDING

    async def _unsendable(
        self, payment: PaymentView, facts: PaymentFacts, claimed: ClaimedAttempt
    ) -> Outcome:
        """An attempt the provider never received, with no command to re-send it from (it
        was begun before attempts carried their sealed command)."""
        return await self._abandon_when_old(
            facts,
            claimed.attempt_key,
            ErrorInfo(
                ErrorCode.PROVIDER_UNAVAILABLE,
                "the provider never received the payment; nothing was charged",
            ),
            provider=claimed.provider,
            claim=claimed.claim.token,
            last_sent_at=claimed.last_sent_at,
        )

    async def _abandon_when_old(
        self,
        facts: PaymentFacts,
        attempt_key: str,
        error: ErrorInfo,
        *,
        provider: str,
        claim: str,
        last_sent_at: datetime,
    ) -> Outcome:
        """An attempt in doubt that cannot be re-sent now: the provider had no record of it
        when just asked, but an earlier call of its key may still arrive. Left pending (the
        claim released, the attempt open) until ``abandon_after`` plus the provider's
        search lag has passed since its key was *last sent* (``last_sent_at``: the latest
        re-send or retry, stamped before it went out; the attempt's creation if there was
        none): by ``abandon_after`` every call of the key has arrived, and a charge it made
        shows in the provider's status answer only that lag later (domain.search_lag).
        Counted from the attempt's beginning instead, a re-send hours later that landed
        would be hidden by the lag and the payment failed with the money taken. Only then,
        the provider's silence being final, failed with ``error``."""
        lag = self._providers.get(provider).status_search_lag
        if self._clock() - last_sent_at < self._abandon_after + lag:
            log.warning(
                "in-doubt payment cannot be re-sent; left pending: %s",
                error.message,
                extra={"payment_request_id": facts.payment_request_id},
            )
            await self._store.release(facts.payment_request_id, claim)
            return Outcome.PENDING
        return await self._recorder.failed(
            facts, attempt_key, error, provider=provider, claim=claim
        )

    async def _charge(
        self,
        command: CreatePayment,
        facts: PaymentFacts,
        attempt_key: str,
        route: list[str],
        claim: str,
        held: HeldClaim,
        *,
        in_doubt_since: datetime | None = None,
        last_sent_at: datetime | None = None,
    ) -> Outcome:
        """Send the open attempt to ``route[0]``; fail over along ``route`` while allowed,
        then retry the last provider with the same key, with back-off, while the policy
        allows.

        ``in_doubt_since``: the attempt, begun then, was sent before, by this or another
        worker (a re-send after a timeout, a crash or a takeover). An earlier call of its
        key may still reach the provider, so refusals of this worker's own calls prove
        nothing: when the retries run out, the payment stays pending for the reconciler,
        never failed; nor is it failed when its accounts cannot be read for the re-send
        (see :meth:`_charge_one`).

        Retries at one provider never change the key: the provider's idempotency then
        makes every copy of the call one charge, whoever sends it, whenever it arrives
        (a former owner's call still in flight included). Only failover opens a new key,
        and only for an attempt opened under the caller's own claim (see
        :meth:`PaymentStore.next_attempt`). The caller holds ``claim``; ``held`` says
        whether a fresh confirmation of it covers the next call (consumer.claimed_calls).

        ``last_sent_at``: when the key was last sent before this (with ``in_doubt_since``).
        Every call of a key but its first (a re-send, a retry) is stamped first
        (:meth:`PaymentStore.renew_sending`), so the provider's silence is counted from it.
        """
        provider_name, *rest = route
        in_doubt = in_doubt_since is not None
        # The key's last send, empty while it has never been sent (its first call is next).
        sent: list[datetime] = [] if last_sent_at is None else [last_sent_at]
        calls = 1
        while True:
            outcome = await self._charge_one(
                command, facts, attempt_key, provider_name, claim, held, in_doubt_since, sent
            )
            if isinstance(outcome, Outcome):
                return outcome
            error = outcome
            next_key = None
            if rest:
                opened = held.mark()
                next_key = await self._store.next_attempt(
                    command.payment_request_id, attempt_key, rest[0], claim=claim
                )
                if next_key is not None:
                    held.confirmed(opened)  # written under the claim: its first send is covered
            if next_key is not None:
                log.warning(
                    "provider certainly did not charge; failing over: %s",
                    error.message,
                    extra={
                        "payment_request_id": command.payment_request_id,
                        "from_provider": provider_name,
                        "to_provider": rest[0],
                    },
                )
                self._metrics.provider_failovers.labels(provider_name, rest[0]).inc()
                attempt_key = next_key
                provider_name, *rest = rest
                sent = []  # a new key: its first call is sent at its creation
            elif await self._wait_to_retry(command, provider_name, error, calls, claim):
                rest = []  # failover is over: from now on only this key, at this provider
            elif in_doubt:
                return await self._recorder.still_in_doubt(
                    facts, attempt_key, provider=provider_name, claim=claim
                )
            else:
                # No retry left (or the claim was lost meanwhile: then this records
                # nothing).
                return await self._recorder.provider_error(
                    facts, attempt_key, error, provider=provider_name, claim=claim
                )
            calls += 1

    async def _wait_to_retry(
        self,
        command: CreatePayment,
        provider_name: str,
        error: ProviderError,
        calls: int,
        claim: str,
    ) -> bool:
        """Wait out the back-off before calling ``provider_name`` again with the same key.

        The schedule is written to the store first (checking the claim), so a worker that
        dies while waiting leaves it for the next owner to honour. False when the retries
        are used up, the payment moved on or the claim was lost meanwhile.
        """
        if not self._retry_policy.may_retry_after(calls):
            return False
        delay = self._retry_policy.delay_s(calls, error.retry_after)
        at = self._clock() + timedelta(seconds=delay)
        if not await self._store.schedule_retry(command.payment_request_id, at, claim=claim):
            return False
        log.warning(
            "provider certainly did not charge; retrying in %.2fs: %s",
            delay,
            error.message,
            extra={"payment_request_id": command.payment_request_id, "attempt": calls},
        )
        self._metrics.provider_retries.labels(provider_name).inc()
        await asyncio.sleep(delay)
        return await self._store.renew(command.payment_request_id, claim)

    async def _charge_one(
        self,
        command: CreatePayment,
        facts: PaymentFacts,
        attempt_key: str,
        provider_name: str,
        claim: str,
        held: HeldClaim,
        in_doubt_since: datetime | None,
        sent: list[datetime],
    ) -> Outcome | ProviderError:
        """Charge one provider and record the outcome; a certainly-not-charged error is
        returned, unrecorded, for the caller to fail over or record.

        A re-send (``in_doubt_since`` set) goes out only while the provider still honours
        the key (checked before every call, back-off retries included): past that, a first
        call that landed unseen would be charged again.

        ``sent``: when the key was last sent (empty: never, this is its first call, made at
        the attempt's creation). Any later call is stamped in the store first, under the
        claim (write-ahead), and ``sent`` updated; the stamp is made after the checks that
        may keep the call from going out, so an attempt that cannot be sent is not kept
        young by calls never made."""
        provider = self._providers.get(provider_name)
        pid = facts.payment_request_id
        if in_doubt_since is not None and await withheld(
            operation="payment",
            subject_id=pid,
            began_at=in_doubt_since,
            now=self._clock(),
            provider=provider_name,
            window=provider.idempotency_window,
            reports=self._withheld,
            release=lambda: self._store.release(pid, claim),
        ):
            # Never failed on the provider's silence either: its first call may have landed.
            return Outcome.PENDING
        try:
            # Just in time: the numbers exist in clear only in this request, in memory.
            payer = await self._clear(command.payer, command.client_id)
            payee = await self._clear(command.payee, command.client_id)
        except PaygateError as exc:
            # Deleted, expired or unreadable since the intake checked it: nothing is sent.
            error = ErrorInfo.from_error(exc)
            if in_doubt_since is not None:
                # Nothing is sent *now*, but an earlier call of this key may still charge:
                # failing the payment would lift its order's protection on a guess.
                return await self._abandon_when_old(
                    facts,
                    attempt_key,
                    error,
                    provider=provider_name,
                    claim=claim,
                    last_sent_at=sent[-1] if sent else in_doubt_since,
                )
            return await self._recorder.failed(
                facts, attempt_key, error, provider=provider_name, claim=claim
            )
        request = ChargeRequest(
            attempt_key=attempt_key,
            payment_request_id=command.payment_request_id,
            amount=command.amount,
            payment_method=command.payment_method,
            payer=payer,
            payee=payee,
            metadata=command.metadata,
            capture=command.capture,
        )
        started = time.perf_counter()

        async def send() -> ChargeOutcome:
            nonlocal started
            sent.append(self._clock())
            started = time.perf_counter()
            return await provider.charge(request)

        # The key sent before: this send is stamped before it goes out, the claim renewed
        # in the same write, once the send has its place at the gate. A first send (its time
        # is the attempt's creation) renews only if its claim's confirmation is no longer
        # fresh (consumer.claimed_calls); a claim found taken over ends the work
        # (owned_elsewhere), nothing sent.
        stamp: Callable[[], Awaitable[bool]] | None = None
        if sent:
            stamp = partial(self._store.renew_sending, pid, attempt_key, claim=claim)
        stamped = stamp is not None  # this call counted in the store (renew_sending)
        try:
            charged = await held.call(provider, send, confirm=stamp)
        except ProviderError as exc:
            self._observe(provider_name, started, "unknown" if exc.outcome_unknown else "error")
            if exc.retriable and not exc.outcome_unknown:
                if stamped:
                    # Certainly never taken (refused connection, open circuit breaker):
                    # not one of the re-sends the bound counts (may_resend_again).
                    await self._store.uncount_unsent(pid, attempt_key)
                return exc  # certainly not charged: the caller may fail over
            return await self._recorder.provider_error(
                facts, attempt_key, exc, provider=provider_name, claim=claim
            )
        except PaygateError as exc:
            self._observe(provider_name, started, "error")
            return await self._recorder.failed(
                facts, attempt_key, ErrorInfo.from_error(exc), provider=provider_name, claim=claim
            )
        self._observe(provider_name, started, charged.status.value)
        return await self._recorder.charged(
            facts, attempt_key, charged, provider=provider_name, claim=claim
        )

    async def _clear(self, account: AnyAccount, client_id: str | None) -> Account:
        if isinstance(account, Account):
            return account  # sealed before the vault existed, or a test's own command
        if isinstance(account, VaultedAccount) and self._vault is not None:
            return await self._vault.reveal(account, client_id=client_id)
        raise TypeError(f"a {type(account).__name__} reached the provider call unvaulted")

    def _observe(self, provider_name: str, started: float, outcome: str) -> None:
        self._metrics.provider_call_seconds.labels(provider_name, outcome).observe(
            time.perf_counter() - started
        )
