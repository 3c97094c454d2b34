"""Handles one CreatePayment command, exactly once in effect.

1. :meth:`PaymentStore.begin` commits the payment and its attempt before any provider
   call (write-ahead), or reports what already exists for the payment id.
2. The provider is called with the attempt key as its idempotency key.
3. The outcome and its result event are committed together.

A redelivered command finds the payment: a final one is re-published (same event id),
an in-doubt one is resolved by asking the provider, never by charging blindly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum

from consumer.results import ResultEvents
from domain.commands import CreatePayment
from domain.error_info import ErrorInfo
from domain.errors import ErrorCode, PaygateError
from domain.events import conflict_event_id
from domain.status import PaymentStatus
from paygate.metrics import Metrics
from persistence.payment_store import (
    ATTEMPT_DECLINED,
    ATTEMPT_FAILED,
    ATTEMPT_SUCCEEDED,
    ATTEMPT_UNKNOWN,
    Existing,
    PaymentStore,
    Started,
)
from providers.errors import ProviderError
from providers.port import ChargeOutcome, ChargeRequest, ChargeStatus, PaymentProvider

log = logging.getLogger("paygate.consumer")


class Outcome(StrEnum):
    """What handling a command did; also the label of the commands-consumed metric."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PENDING = "pending"
    REPLAYED = "replayed"
    CONFLICT = "conflict"


def _utc_now() -> datetime:
    return datetime.now(UTC)


class PaymentCommandHandler:
    def __init__(
        self,
        *,
        store: PaymentStore,
        provider: PaymentProvider,
        events: ResultEvents,
        account_key: bytes,
        metrics: Metrics,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._store = store
        self._provider = provider
        self._events = events
        self._account_key = account_key
        self._metrics = metrics
        self._clock = clock

    async def handle(self, command: CreatePayment) -> Outcome:
        begun = await self._store.begin(
            command, provider=self._provider.name, account_key=self._account_key
        )
        if isinstance(begun, Started):
            outcome = await self._charge(command, begun.attempt_key, begun.created_at)
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
            now = self._clock()
            conflict = ErrorInfo(
                ErrorCode.IDEMPOTENCY_CONFLICT,
                "this idempotency key was already used for this order with other parameters",
            )
            # The stored payment is untouched; the event tells the sender its command was
            # refused. Its id differs from the payment's own events.
            await self._store.enqueue(
                self._events.for_command(
                    command,
                    status=PaymentStatus.FAILED,
                    provider=None,
                    provider_reference=None,
                    error=conflict,
                    created_at=now,
                    occurred_at=now,
                    event_id=conflict_event_id(
                        command.payment_request_id,
                        command.parameters_fingerprint(self._account_key),
                    ),
                )
            )
            return Outcome.CONFLICT
        if existing.open_attempt_key is not None:
            return await self._resolve_in_doubt(
                command, existing.open_attempt_key, payment.created_at
            )
        await self._store.enqueue(self._events.for_stored(payment))
        return Outcome.REPLAYED

    async def _resolve_in_doubt(
        self, command: CreatePayment, attempt_key: str, created_at: datetime
    ) -> Outcome:
        try:
            known = await self._provider.charge_status(attempt_key)
        except ProviderError as exc:
            # Still cannot tell: leave it pending for a later redelivery or reconciliation.
            log.warning(
                "in-doubt payment not resolved: %s",
                exc.message,
                extra={"payment_request_id": command.payment_request_id},
            )
            return Outcome.PENDING
        if known is None:
            # The provider never received the attempt, so sending it now (same key) cannot
            # charge twice.
            return await self._charge(command, attempt_key, created_at)
        return await self._record(command, attempt_key, created_at, known)

    async def _charge(
        self, command: CreatePayment, attempt_key: str, created_at: datetime
    ) -> Outcome:
        request = ChargeRequest(
            attempt_key=attempt_key,
            payment_request_id=command.payment_request_id,
            amount=command.amount,
            payment_method=command.payment_method,
            payer=command.payer,
            payee=command.payee,
            metadata=command.metadata,
        )
        started = time.perf_counter()
        try:
            charged = await self._provider.charge(request)
        except ProviderError as exc:
            self._observe(started, "unknown" if exc.outcome_unknown else "error")
            return await self._record_error(command, attempt_key, created_at, exc)
        except PaygateError as exc:
            self._observe(started, "error")
            return await self._finish(
                command,
                attempt_key,
                created_at,
                PaymentStatus.FAILED,
                ATTEMPT_FAILED,
                None,
                ErrorInfo.from_error(exc),
            )
        self._observe(started, charged.status.value)
        return await self._record(command, attempt_key, created_at, charged)

    async def _record(
        self,
        command: CreatePayment,
        attempt_key: str,
        created_at: datetime,
        charged: ChargeOutcome,
    ) -> Outcome:
        if charged.status is ChargeStatus.SUCCEEDED:
            return await self._finish(
                command,
                attempt_key,
                created_at,
                PaymentStatus.SUCCEEDED,
                ATTEMPT_SUCCEEDED,
                charged.provider_reference,
                None,
            )
        error = charged.error or PaygateError(
            ErrorCode.PAYMENT_DECLINED, "the provider declined the payment"
        )
        return await self._finish(
            command,
            attempt_key,
            created_at,
            PaymentStatus.FAILED,
            ATTEMPT_DECLINED,
            charged.provider_reference,
            ErrorInfo.from_error(error),
        )

    async def _record_error(
        self,
        command: CreatePayment,
        attempt_key: str,
        created_at: datetime,
        exc: ProviderError,
    ) -> Outcome:
        if exc.outcome_unknown:
            error = ErrorInfo(
                ErrorCode.PROVIDER_TIMEOUT,
                "the provider did not answer in time; the payment stays pending until the "
                "provider confirms its outcome",
            )
            return await self._finish(
                command,
                attempt_key,
                created_at,
                PaymentStatus.PENDING,
                ATTEMPT_UNKNOWN,
                None,
                error,
            )
        error = ErrorInfo(exc.code, f"the provider could not process the payment: {exc.message}")
        return await self._finish(
            command, attempt_key, created_at, PaymentStatus.FAILED, ATTEMPT_FAILED, None, error
        )

    async def _finish(
        self,
        command: CreatePayment,
        attempt_key: str,
        created_at: datetime,
        status: PaymentStatus,
        attempt_status: str,
        provider_reference: str | None,
        error: ErrorInfo | None,
    ) -> Outcome:
        now = self._clock()
        event = self._events.for_command(
            command,
            status=status,
            provider=self._provider.name,
            provider_reference=provider_reference,
            error=error,
            created_at=created_at,
            occurred_at=now,
        )
        await self._store.finish(
            command.payment_request_id,
            attempt_key,
            status=status,
            attempt_status=attempt_status,
            provider_reference=provider_reference,
            error=error,
            event=event,
        )
        return Outcome(status.value)

    def _observe(self, started: float, outcome: str) -> None:
        self._metrics.provider_call_seconds.labels(self._provider.name, outcome).observe(
            time.perf_counter() - started
        )
