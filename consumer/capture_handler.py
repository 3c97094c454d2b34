"""Handles one CapturePayment command, exactly once in effect.

1. :meth:`CaptureStore.begin` moves the payment from ``authorized`` to ``capturing``
   (write-ahead), refuses the capture, or reports one already under way or done.
2. The payment's provider is asked to capture the amount written in step 1 (all, or less:
   the provider releases the rest), under the capture's one key, so a capture sent twice (a
   redelivery, the reconciler) captures once.
3. The answer and its result event are committed together by :meth:`CaptureStore.finish`.

A provider that certainly did not capture (unavailable, rate limited) is asked again with
back-off, up to the retry policy's attempts; then, like a refusal by the provider, the
payment goes back to ``authorized`` with the error, and may be captured again later. A
timeout leaves it ``capturing`` for :meth:`resolve` (a redelivery, or the capture
reconciler) to settle by asking the provider about the charge.

One owner per capture (see persistence.claims): only the holder of the payment's claim asks
the provider, sends the capture or records its answer; a duplicate that cannot take the
claim does nothing (``owned_elsewhere``), and the holder renews it before every re-send.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from consumer.claim_holding import holding_claim
from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.ports import CaptureWrites
from consumer.retrying import ClaimLost, GaveUp, call_with_retries
from domain.captures import CapturePayment, provider_capture_key
from domain.clock import utc_now
from domain.error_info import ErrorInfo
from domain.errors import ErrorCode, PaygateError
from domain.events import capture_event_id
from domain.payment_view import PaymentView
from domain.retry import RetryPolicy
from domain.status import PaymentStatus
from persistence.capture_store import CaptureExisting, CaptureRefused, CaptureStarted
from persistence.outbox import OutboxMessage
from providers.errors import ProviderError
from providers.port import CaptureRequest, ChargeStatus
from providers.registry import Providers, UnknownProviderError
from telemetry.metrics import Metrics

log = logging.getLogger("paygate.consumer")


class CaptureCommandHandler:
    def __init__(
        self,
        *,
        store: CaptureWrites,
        providers: Providers,
        events: PaymentEvents,
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
            outcome = await self._as_owner(
                begun.payment.payment_request_id,
                begun.claim.token,
                self._send(begun.payment, begun.claim.token),
            )
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
        self._metrics.commands_consumed.labels("capture", outcome.value).inc()
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
            claim = await self._store.claim(payment.payment_request_id)
            if claim is not None:
                return await self.resolve(payment, claim.token)
            return Outcome.OWNED_ELSEWHERE  # another worker holds the capture
        # Captured already: capturing again changes nothing; say so again, same event id.
        await self._store.enqueue(self._events.of_payment(payment))
        return Outcome.REPLAYED

    async def resolve(self, payment: PaymentView, claim: str) -> Outcome:
        """Settle a payment left ``capturing`` whose claim the caller holds: ask the provider
        what the charge is now."""
        return await self._as_owner(
            payment.payment_request_id, claim, self._resolve(payment, claim)
        )

    async def _resolve(self, payment: PaymentView, claim: str) -> Outcome:
        try:
            provider = self._providers.get(payment.provider or "")
            known = await provider.charge_by_reference(payment.provider_reference or "")
        except (UnknownProviderError, ProviderError) as exc:
            log.warning(
                "capture not resolved: %s",
                exc,
                extra={"payment_request_id": payment.payment_request_id},
            )
            await self._store.release(payment.payment_request_id, claim)
            return Outcome.PENDING
        if known is not None and known.status is ChargeStatus.SUCCEEDED:
            return await self._captured(payment, claim)
        # Still only authorized (or unknown to the provider): the capture did not happen.
        # Sending it again under the same key cannot capture twice.
        return await self._send(payment, claim, in_doubt=True)

    async def _as_owner(self, payment_id: str, claim: str, work: Awaitable[Outcome]) -> Outcome:
        """Run ``work`` holding ``claim`` (see consumer.claim_holding)."""
        return await holding_claim(work, lambda: self._store.release(payment_id, claim))

    async def _send(self, payment: PaymentView, claim: str, *, in_doubt: bool = False) -> Outcome:
        """Ask the provider to capture, retrying what certainly did not arrive.

        ``in_doubt``: the capture was sent before; an earlier call may still reach the
        provider, so when the retries run out the payment stays ``capturing`` for the
        reconciler, never back to ``authorized`` on a guess."""
        # The amount written with the move to capturing: a re-send asks for it again.
        amount = payment.captured_amount
        request = CaptureRequest(
            capture_key=provider_capture_key(payment.payment_request_id, payment.amount, amount),
            payment_request_id=payment.payment_request_id,
            charge_reference=payment.provider_reference or "",
            amount=amount,
        )
        pid = payment.payment_request_id
        try:
            provider = self._providers.get(payment.provider or "")
            answer = await call_with_retries(
                lambda: provider.capture(request),
                policy=self._retry_policy,
                still_owner=lambda: self._store.renew(pid, claim),
            )
        except UnknownProviderError as exc:
            log.error("capture not sent: %s", exc, extra={"payment_request_id": pid})
            await self._store.release(pid, claim)
            return Outcome.PENDING
        except ProviderError as exc:
            if exc.outcome_unknown:
                # Stays capturing; resolve() settles it, under a claim of its own.
                await self._store.release(pid, claim)
                return Outcome.PENDING
            return await self._refused(payment, exc, claim)
        except PaygateError as exc:
            return await self._not_captured(payment, ErrorInfo.from_error(exc), claim)
        if isinstance(answer, ClaimLost):
            return Outcome.OWNED_ELSEWHERE  # another worker has the capture now
        if isinstance(answer, GaveUp):
            if in_doubt:
                await self._store.release(pid, claim)
                return Outcome.PENDING
            return await self._refused(payment, answer.error, claim)
        if answer.status is ChargeStatus.SUCCEEDED:
            return await self._captured(payment, claim)
        error = answer.error or PaygateError(
            ErrorCode.PAYMENT_NOT_CAPTURABLE, "the provider did not capture the payment"
        )
        return await self._not_captured(payment, ErrorInfo.from_error(error), claim)

    async def _refused(self, payment: PaymentView, exc: ProviderError, claim: str) -> Outcome:
        message = f"the provider could not capture the payment: {exc.message}"
        return await self._not_captured(payment, ErrorInfo(exc.code, message), claim)

    async def _captured(self, payment: PaymentView, claim: str) -> Outcome:
        applied = await self._store.finish(
            payment.payment_request_id,
            claim=claim,
            captured=True,
            error=None,
            event=self._events.of_payment,
        )
        return Outcome.SUCCEEDED if applied else Outcome.REPLAYED

    async def _not_captured(self, payment: PaymentView, error: ErrorInfo, claim: str) -> Outcome:
        def event(stored: PaymentView) -> OutboxMessage:
            return self._events.of_payment(
                stored,
                event_id=capture_event_id(
                    stored.payment_request_id, "not_captured", stored.updated_at
                ),
            )

        applied = await self._store.finish(
            payment.payment_request_id, claim=claim, captured=False, error=error, event=event
        )
        return Outcome.AUTHORIZED if applied else Outcome.REPLAYED

    def _refusal_event(self, payment: PaymentView, error: PaygateError) -> OutboxMessage:
        now = self._clock()
        return self._events.of_payment(
            payment,
            error=ErrorInfo.from_error(error),
            occurred_at=now,
            event_id=capture_event_id(payment.payment_request_id, "refused", now),
        )
