"""Handles one CreatePayment command, exactly once in effect.

1. :meth:`PaymentStore.begin` commits the payment and its attempt before any provider
   call (write-ahead), or reports what already exists for the payment id.
2. The provider is called with the attempt key as its idempotency key.
3. The outcome and its result event are committed together (:class:`OutcomeRecorder`).

A redelivered command finds the payment: a final one is re-published (same event id),
an in-doubt one is resolved by asking the provider, never by charging blindly.

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
from collections.abc import Callable
from datetime import datetime, timedelta

from consumer.outcome_recorder import Outcome, OutcomeRecorder
from consumer.results import PaymentFacts, ResultEvents
from domain.clock import utc_now
from domain.commands import CreatePayment
from domain.error_info import ErrorInfo
from domain.errors import ErrorCode, PaygateError
from domain.events import conflict_event_id
from domain.retry import RetryPolicy
from domain.status import PaymentStatus
from paygate.metrics import Metrics
from persistence.payment_store import Existing, PaymentStore, Refused, Started, attempt_number
from providers.errors import ProviderError
from providers.port import ChargeRequest
from providers.registry import Providers, UnknownProviderError
from providers.routing import Router

log = logging.getLogger("paygate.consumer")

__all__ = ["Outcome", "PaymentCommandHandler"]


class PaymentCommandHandler:
    def __init__(
        self,
        *,
        store: PaymentStore,
        providers: Providers,
        router: Router,
        events: ResultEvents,
        account_key: bytes,
        metrics: Metrics,
        retry_policy: RetryPolicy | None = None,
        resend_window: timedelta = timedelta(minutes=30),
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self._providers = providers
        self._router = router
        for name in router.provider_names():
            providers.get(name)  # every routed provider must exist: fail at start, not later
        self._events = events
        self._account_key = account_key
        self._metrics = metrics
        self._resend_window = resend_window
        self._retry_policy = retry_policy or RetryPolicy()
        self._clock = clock
        self._recorder = OutcomeRecorder(store, events, clock)

    async def handle(self, command: CreatePayment) -> Outcome:
        route = self._router.route(command.payment_method.value, command.amount.currency)
        begun = await self._store.begin(
            command,
            provider=route[0],
            account_key=self._account_key,
            refusal_event=lambda refused, error, created_at: self._events.event(
                PaymentFacts.of_command(refused, created_at),
                status=PaymentStatus.FAILED,
                provider=None,
                provider_reference=None,
                error=ErrorInfo.from_error(error),
                occurred_at=created_at,
            ),
        )
        if isinstance(begun, Started):
            # A key used again after it expired makes a payment of a later generation.
            command = dataclasses.replace(command, generation=begun.generation)
            facts = PaymentFacts.of_command(command, begun.created_at)
            outcome = await self._charge(command, facts, begun.attempt_key, route)
        elif isinstance(begun, Refused):
            command = dataclasses.replace(command, generation=begun.generation)
            outcome = Outcome.REFUSED
        else:
            outcome = await self._handle_existing(command, begun)
        self._metrics.commands_consumed.labels(outcome.value).inc()
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
        facts = PaymentFacts.of_stored(payment)
        if existing.open_attempt_key is not None:
            started_at = existing.open_attempt_started_at or payment.created_at
            provider = existing.open_attempt_provider or payment.provider or ""
            return await self._resolve_in_doubt(
                command,
                facts,
                existing.open_attempt_key,
                provider,
                started_at,
                payment.next_retry_at,
            )
        await self._store.enqueue(self._events.for_stored(payment))
        return Outcome.REPLAYED

    async def _refuse_conflict(self, command: CreatePayment, payment_id: str) -> None:
        # The stored payment is untouched; the event tells the sender its command was
        # refused, under an event id of its own.
        now = self._clock()
        facts = dataclasses.replace(
            PaymentFacts.of_command(command, now), payment_request_id=payment_id
        )
        await self._store.enqueue(
            self._events.event(
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
            )
        )

    async def _resolve_in_doubt(
        self,
        command: CreatePayment,
        facts: PaymentFacts,
        attempt_key: str,
        provider_name: str,
        attempt_started_at: datetime,
        retry_at: datetime | None = None,
    ) -> Outcome:
        try:
            known = await self._providers.get(provider_name).charge_status(attempt_key)
        except UnknownProviderError as exc:
            # Only the attempt's own provider can tell; never guess, never send it elsewhere.
            log.error(
                "in-doubt payment not resolved: %s",
                exc,
                extra={"payment_request_id": command.payment_request_id},
            )
            return Outcome.PENDING
        except ProviderError as exc:
            # Still cannot tell: leave it for a later redelivery or the reconciler.
            log.warning(
                "in-doubt payment not resolved: %s",
                exc.message,
                extra={"payment_request_id": command.payment_request_id},
            )
            return Outcome.PENDING
        if known is None:
            if self._clock() - attempt_started_at > self._resend_window:
                # Old enough for the reconciler to abandon it: leave it to the reconciler
                # rather than race it (see consumer/reconciler.py).
                return Outcome.PENDING
            if retry_at is not None and retry_at > self._clock():
                # A retry was scheduled before the consumer stopped: keep to its back-off.
                await asyncio.sleep((retry_at - self._clock()).total_seconds())
            # The provider never received the attempt, so sending it now (same key) cannot
            # charge twice. Failover may go on to the providers after it in today's route.
            route = self._router.route(command.payment_method.value, command.amount.currency)
            rest = route[route.index(provider_name) + 1 :] if provider_name in route else []
            return await self._charge(command, facts, attempt_key, [provider_name, *rest])
        return await self._recorder.charged(facts, attempt_key, known, provider=provider_name)

    async def _charge(
        self, command: CreatePayment, facts: PaymentFacts, attempt_key: str, route: list[str]
    ) -> Outcome:
        """Send the open attempt to ``route[0]``; fail over along ``route`` while allowed."""
        provider_name, *rest = route
        while True:
            outcome = await self._charge_one(command, facts, attempt_key, provider_name)
            if isinstance(outcome, Outcome):
                return outcome
            error = outcome
            next_key = None
            if rest:
                next_key = await self._store.next_attempt(
                    command.payment_request_id, attempt_key, rest[0]
                )
            if next_key is None and not rest:
                retry = await self._retry_later(command, attempt_key, error, route)
                if retry is not None:
                    attempt_key = retry
                    provider_name, *rest = route
                    continue
            if next_key is None:
                # No provider or retry left (or the payment moved on meanwhile).
                return await self._recorder.provider_error(
                    facts, attempt_key, error, provider=provider_name
                )
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

    async def _retry_later(
        self, command: CreatePayment, attempt_key: str, error: ProviderError, route: list[str]
    ) -> str | None:
        """Wait out the back-off, then open the next attempt at the route's first provider.

        The schedule is written to the store first, so a consumer that dies while waiting
        leaves it for the redelivery to honour. Returns the new attempt's key, or None when
        the attempts are used up or the payment moved on meanwhile.
        """
        attempt_no = attempt_number(attempt_key)
        if not self._retry_policy.may_retry_after(attempt_no):
            return None
        delay = self._retry_policy.delay_s(attempt_no, error.retry_after)
        at = self._clock() + timedelta(seconds=delay)
        if not await self._store.schedule_retry(command.payment_request_id, at):
            return None
        log.warning(
            "provider certainly did not charge; retrying in %.2fs: %s",
            delay,
            error.message,
            extra={"payment_request_id": command.payment_request_id, "attempt": attempt_no},
        )
        self._metrics.provider_retries.labels(route[0]).inc()
        await asyncio.sleep(delay)
        return await self._store.next_attempt(command.payment_request_id, attempt_key, route[0])

    async def _charge_one(
        self, command: CreatePayment, facts: PaymentFacts, attempt_key: str, provider_name: str
    ) -> Outcome | ProviderError:
        """Charge one provider and record the outcome; a certainly-not-charged error is
        returned, unrecorded, for the caller to fail over or record."""
        provider = self._providers.get(provider_name)
        request = ChargeRequest(
            attempt_key=attempt_key,
            payment_request_id=command.payment_request_id,
            amount=command.amount,
            payment_method=command.payment_method,
            payer=command.payer,
            payee=command.payee,
            metadata=command.metadata,
            capture=command.capture,
        )
        started = time.perf_counter()
        try:
            charged = await provider.charge(request)
        except ProviderError as exc:
            self._observe(provider_name, started, "unknown" if exc.outcome_unknown else "error")
            if exc.retriable and not exc.outcome_unknown:
                return exc  # certainly not charged: the caller may fail over
            return await self._recorder.provider_error(
                facts, attempt_key, exc, provider=provider_name
            )
        except PaygateError as exc:
            self._observe(provider_name, started, "error")
            return await self._recorder.failed(
                facts, attempt_key, ErrorInfo.from_error(exc), provider=provider_name
            )
        self._observe(provider_name, started, charged.status.value)
        return await self._recorder.charged(facts, attempt_key, charged, provider=provider_name)

    def _observe(self, provider_name: str, started: float, outcome: str) -> None:
        self._metrics.provider_call_seconds.labels(provider_name, outcome).observe(
            time.perf_counter() - started
        )
