"""Handles one CapturePayment command, exactly once in effect.

1. :meth:`CaptureStore.begin` moves the payment from ``authorized`` to ``capturing``
   (write-ahead), refuses the capture, or reports one already under way or done.
2. The payment's provider is asked to capture, under the payment's one capture key, so a
   capture sent twice (a redelivery, the reconciler) captures once.
3. The answer and its result event are committed together by :meth:`CaptureStore.finish`.

A provider that certainly did not capture (unavailable, rate limited) is asked again with
back-off, up to the retry policy's attempts; then, like a refusal by the provider, the
payment goes back to ``authorized`` with the error, and may be captured again later. A
timeout leaves it ``capturing`` for :meth:`resolve` (a redelivery, or the capture
reconciler) to settle by asking the provider about the charge.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from consumer.outcome_recorder import Outcome
from consumer.results import ResultEvents
from domain.captures import CapturePayment, capture_key_for
from domain.clock import utc_now
from domain.error_info import ErrorInfo
from domain.errors import ErrorCode, PaygateError
from domain.events import capture_event_id
from domain.payment import PaymentView
from domain.retry import RetryPolicy
from domain.status import PaymentStatus
from paygate.metrics import Metrics
from persistence.capture_store import CaptureExisting, CaptureRefused, CaptureStarted, CaptureStore
from persistence.payment_store import OutboxMessage
from providers.errors import ProviderError
from providers.port import CaptureRequest, ChargeStatus
from providers.registry import Providers, UnknownProviderError

log = logging.getLogger("paygate.consumer")


class CaptureCommandHandler:
    def __init__(
        self,
        *,
        store: CaptureStore,
        providers: Providers,
        events: ResultEvents,
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

    async def handle(self, command: CapturePayment) -> Outcome:
        begun = await self._store.begin(command, self._refusal_event)
        if isinstance(begun, CaptureStarted):
            outcome = await self.send(begun.payment)
        elif isinstance(begun, CaptureRefused):
            outcome = Outcome.REFUSED
            if begun.payment is None:
                # Nothing to tell the world about a payment that does not exist: the log
                # and the metric say it.
                log.warning(
                    "capture of an unknown payment refused",
                    extra={"payment_request_id": command.payment_request_id},
                )
        else:
            outcome = await self._handle_existing(begun)
        self._metrics.capture_commands_consumed.labels(outcome.value).inc()
        log.info(
            "capture command handled",
            extra={
                "payment_request_id": command.payment_request_id,
                "order_id": command.order_id,
                "outcome": outcome.value,
            },
        )
        return outcome

    async def _handle_existing(self, existing: CaptureExisting) -> Outcome:
        payment = existing.payment
        if payment.status is PaymentStatus.CAPTURING:
            return await self.resolve(payment)
        # Captured already: capturing again changes nothing; say so again, same event id.
        await self._store.enqueue(self._events.for_stored(payment))
        return Outcome.REPLAYED

    async def resolve(self, payment: PaymentView) -> Outcome:
        """Settle a payment left ``capturing``: ask the provider what the charge is now."""
        try:
            provider = self._providers.get(payment.provider or "")
            known = await provider.charge_by_reference(payment.provider_reference or "")
        except (UnknownProviderError, ProviderError) as exc:
            log.warning(
                "capture not resolved: %s",
                exc,
                extra={"payment_request_id": payment.payment_request_id},
            )
            return Outcome.PENDING
        if known is not None and known.status is ChargeStatus.SUCCEEDED:
            return await self._captured(payment)
        # Still only authorized (or unknown to the provider): the capture did not happen.
        # Sending it again under the same key cannot capture twice.
        return await self.send(payment)

    async def send(self, payment: PaymentView) -> Outcome:
        request = CaptureRequest(
            capture_key=capture_key_for(payment.payment_request_id),
            payment_request_id=payment.payment_request_id,
            charge_reference=payment.provider_reference or "",
            amount=payment.amount,
        )
        attempt = 1
        while True:
            try:
                provider = self._providers.get(payment.provider or "")
                answer = await provider.capture(request)
            except UnknownProviderError as exc:
                log.error(
                    "capture not sent: %s",
                    exc,
                    extra={"payment_request_id": payment.payment_request_id},
                )
                return Outcome.PENDING
            except ProviderError as exc:
                if exc.outcome_unknown:
                    return Outcome.PENDING  # stays capturing; resolve() settles it
                if exc.retriable and self._retry_policy.may_retry_after(attempt):
                    await asyncio.sleep(self._retry_policy.delay_s(attempt, exc.retry_after))
                    attempt += 1
                    continue
                message = f"the provider could not capture the payment: {exc.message}"
                return await self._not_captured(payment, ErrorInfo(exc.code, message))
            except PaygateError as exc:
                return await self._not_captured(payment, ErrorInfo.from_error(exc))
            if answer.status is ChargeStatus.SUCCEEDED:
                return await self._captured(payment)
            error = answer.error or PaygateError(
                ErrorCode.PAYMENT_NOT_CAPTURABLE, "the provider did not capture the payment"
            )
            return await self._not_captured(payment, ErrorInfo.from_error(error))

    async def _captured(self, payment: PaymentView) -> Outcome:
        applied = await self._store.finish(
            payment.payment_request_id,
            captured=True,
            error=None,
            event=self._events.for_stored,
        )
        return Outcome.SUCCEEDED if applied else Outcome.REPLAYED

    async def _not_captured(self, payment: PaymentView, error: ErrorInfo) -> Outcome:
        def event(stored: PaymentView) -> OutboxMessage:
            return self._events.event_of(
                stored,
                event_id=capture_event_id(
                    stored.payment_request_id, "not_captured", stored.updated_at
                ),
            )

        applied = await self._store.finish(
            payment.payment_request_id, captured=False, error=error, event=event
        )
        return Outcome.AUTHORIZED if applied else Outcome.REPLAYED

    def _refusal_event(self, payment: PaymentView, error: PaygateError) -> OutboxMessage:
        now = self._clock()
        return self._events.event_of(
            payment,
            error=ErrorInfo.from_error(error),
            occurred_at=now,
            event_id=capture_event_id(payment.payment_request_id, "refused", now),
        )
