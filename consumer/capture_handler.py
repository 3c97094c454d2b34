"""Handles one CapturePayment command, exactly once in effect.

1. :meth:`CaptureStore.begin` moves the payment from ``authorized`` to ``capturing``
   (write-ahead), refuses the capture, or reports one already under way or done.
2. The payment's provider is asked to capture, under the payment's one capture key, so a
   capture sent twice (a redelivery, the reconciler) captures once.
3. The answer and its result event are committed together by :meth:`CaptureStore.finish`.

A provider that certainly did not capture (unavailable, rate limited) is asked again with
back-off, up to the retry policy's attempts; then, like a refusal by the provider, the
payment goes back to ``authorized`` with the error, and may be captured again later -- but
only for the worker that began the capture and kept its claim throughout, the only one that
ever sent it. A worker that took the capture over cannot know whether a former owner's call
with the capture key is still on its way (and would capture): for it the payment stays
``capturing`` until the provider's own answer settles it. A timeout leaves it
``capturing`` too, for :meth:`resolve` (a redelivery, or the capture reconciler) to settle
by asking the provider about the charge.

One owner per capture (see persistence.claims): only the holder of the payment's claim asks
the provider, sends the capture or records its answer; a duplicate that cannot take the
claim does nothing (``owned_elsewhere``), and the holder renews it before every re-send.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
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
            outcome = await self._as_owner(
                begun.payment.payment_request_id,
                begun.claim.token,
                self._send(begun.payment, begun.claim.token, sole_sender=True),
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
            claim = await self._store.claim(payment.payment_request_id)
            if claim is not None:
                return await self.resolve(payment, claim.token)
            return Outcome.OWNED_ELSEWHERE  # another worker holds the capture
        # Captured already: capturing again changes nothing; say so again, same event id.
        await self._store.enqueue(self._events.for_stored(payment))
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
        return await self._send(payment, claim)

    async def _as_owner(self, payment_id: str, claim: str, work: Awaitable[Outcome]) -> Outcome:
        """Run ``work`` holding ``claim``; a worker stopped meanwhile gives the claim up."""
        try:
            return await work
        except BaseException:
            try:
                await asyncio.shield(self._store.release(payment_id, claim))
            except Exception:  # the database may be what failed: the claim then expires
                log.warning("claim not released; it expires on its own")
            raise

    async def _send(
        self, payment: PaymentView, claim: str, *, sole_sender: bool = False
    ) -> Outcome:
        """Ask the provider to capture, retrying what certainly did not arrive.

        ``sole_sender``: ``claim`` is the one the capture began under, never taken over, so
        no other worker ever sent this capture. Only then do "certainly not captured"
        answers, once the retries are used up, prove the capture did not happen.
        """
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
                await self._store.release(payment.payment_request_id, claim)
                return Outcome.PENDING
            except ProviderError as exc:
                if exc.outcome_unknown:
                    # Stays capturing; resolve() settles it, under a claim of its own.
                    await self._store.release(payment.payment_request_id, claim)
                    return Outcome.PENDING
                if exc.retriable and self._retry_policy.may_retry_after(attempt):
                    await asyncio.sleep(self._retry_policy.delay_s(attempt, exc.retry_after))
                    if not await self._store.renew(payment.payment_request_id, claim):
                        return Outcome.OWNED_ELSEWHERE
                    attempt += 1
                    continue
                if exc.retriable and not sole_sender:
                    # A former owner's call with the capture key may still arrive and
                    # capture; our answers say nothing of it. Stays capturing, as after a
                    # timeout, for the provider's own answer.
                    await self._store.release(payment.payment_request_id, claim)
                    return Outcome.PENDING
                message = f"the provider could not capture the payment: {exc.message}"
                return await self._not_captured(payment, ErrorInfo(exc.code, message), claim)
            except PaygateError as exc:
                return await self._not_captured(payment, ErrorInfo.from_error(exc), claim)
            if answer.status is ChargeStatus.SUCCEEDED:
                return await self._captured(payment, claim)
            error = answer.error or PaygateError(
                ErrorCode.PAYMENT_NOT_CAPTURABLE, "the provider did not capture the payment"
            )
            return await self._not_captured(payment, ErrorInfo.from_error(error), claim)

    async def _captured(self, payment: PaymentView, claim: str) -> Outcome:
        applied = await self._store.finish(
            payment.payment_request_id,
            claim=claim,
            captured=True,
            error=None,
            event=self._events.for_stored,
        )
        return Outcome.SUCCEEDED if applied else Outcome.REPLAYED

    async def _not_captured(self, payment: PaymentView, error: ErrorInfo, claim: str) -> Outcome:
        def event(stored: PaymentView) -> OutboxMessage:
            return self._events.event_of(
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
        return self._events.event_of(
            payment,
            error=ErrorInfo.from_error(error),
            occurred_at=now,
            event_id=capture_event_id(payment.payment_request_id, "refused", now),
        )
