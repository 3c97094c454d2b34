"""Records what a provider's notification says, as a claimed store write.

Why a claimed write, not a command on Kafka: the notification is the provider's answer to
an attempt we sent, exactly what the command handler and the reconciler record after asking
the provider themselves. Recording it the same way -- take the payment's claim (see
persistence.claims), write the outcome and its result event in one transaction, give the
claim up -- keeps one owner per attempt without a second pipeline, and lets the facade
answer the provider ``success`` only once the outcome is durable, so a crash before the
write means the provider notifies again. A command would add a schema, a hop and a window
where the provider was told "received" for something not yet recorded.

The invariant of the claims holds: the notice is written only by the holder of the
payment's token, on the attempt the notice names, which must be the payment's open attempt,
with the provider that attempt was sent to, for the payment's amount. Anything else changes
nothing and is logged: a replayed notification finds the payment moved on (``already``); a
worker holding the claim makes the provider send it again later (``busy``).

A notice of the charge a captured payment stands on that says more was refunded of it than
paygate can account for (Alipay's notification of a trade it closed after a refund in full
made in the merchant's portal, or one with a ``refund_fee``; Stripe's ``charge.refunded``
after a refund in the Dashboard) raises the payment's refunded
total to it, and its status to ``partially_refunded`` or ``refunded``, with a result event
and no refund row (domain.provider_refunds, persistence.provider_refund_store): answered
``recorded``. Before, such a payment stayed ``succeeded``, and paygate would try to refund
money the provider had returned already. The provider's word that such a refund failed
(Stripe's ``refund.failed`` of a Refund without paygate's metadata) takes back what was
counted of it, once (consumer.outside_refund_notices).

One exception to "changes nothing": a notice that reports money taken (charged or
authorized) under a key the payment does not stand on -- an attempt that is not the open
one (the payment failed over), or a final payment that did not end on this charge
(``failed``, ``expired``, ``canceled``, or captured under another reference) -- is the
provider's word of a stray charge. The stray-charge sweep asks about such a key only once;
if it asked before the payer paid (a page trade Alipay creates only when opened, a trade
paid on Alipay's side of a clock skew), it never would again and the money would stay
taken. So the key is handed back to the sweep (:meth:`StrayLeads.reopen`), logged at
error level, and answered ``stray``: the next pass asks the provider and, if it confirms,
records, counts (``paygate_stray_charges_total{result="found"}``) and reverses it. A reopen
that lands while the sweep is asking about the key is not undone by the sweep's mark: the
reopen moves the key's check generation on (see persistence.stray_store).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from consumer.outcome import Outcome
from consumer.outside_refund_notices import OutsideRefundFailures
from consumer.payment_events import PaymentEvents, PaymentFacts
from consumer.payment_outcomes import PaymentOutcomes
from consumer.ports import PaymentWrites, ProviderRefundRecords, StrayLeads
from consumer.refund_notices import RefundFailures
from domain.clock import utc_now
from domain.events import outside_refund_event_id
from domain.payment_view import PaymentView
from domain.provider_refunds import refunded_at_provider
from domain.status import CAPTURED, HELD
from persistence.attempts import attempt_number
from persistence.outbox import OutboxMessage
from providers.notices import (
    ChargeNotice,
    NoticeResult,
    OutsideRefundFailedNotice,
    ProviderNotice,
    RefundNotice,
)
from providers.port import ChargeStatus

log = logging.getLogger("paygate.notifications")


def payment_id_of(attempt_key: str) -> str | None:
    """The payment an attempt key (``<payment id>-a<n>``) belongs to, or None."""
    payment_id, _, number = attempt_key.rpartition("-a")
    # ASCII digits only, and few of them: the key comes from the provider's notification
    # (for Stripe, metadata anyone with the account's API key can write), and int() refuses
    # the other Unicode digits (``²``) and over 4300 digits, which would answer a 500.
    if not payment_id or not (number.isascii() and number.isdigit()) or len(number) > 9:
        return None
    return payment_id if attempt_number(attempt_key) >= 1 else None


class NoticeRecorder:
    def __init__(
        self,
        *,
        store: PaymentWrites,
        events: PaymentEvents,
        strays: StrayLeads,
        refunds: ProviderRefundRecords,
        refund_failures: RefundFailures | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        """``refund_failures`` records the notices of refunds (Stripe's refund.failed);
        without it (a provider that sends none) such a notice is answered busy, never
        acknowledged unrecorded."""
        self._store = store
        self._refund_failures = refund_failures
        self._strays = strays
        self._refunds = refunds
        self._events = events
        self._recorder = PaymentOutcomes(store, events, clock)
        self._outside_failures = OutsideRefundFailures(store=refunds, events=events)

    async def record(self, notice: ProviderNotice) -> NoticeResult:
        if isinstance(notice, RefundNotice):
            return await self._refund(notice)
        if isinstance(notice, OutsideRefundFailedNotice):
            return await self._outside_failures.record(notice)
        result = await self._record(notice)
        if result is NoticeResult.STRAY:
            log.error(
                "provider notification reports a charge the payment does not stand on: "
                "handed to the stray-charge sweep",
                extra={"provider": notice.provider, "attempt_key": notice.attempt_key},
            )
            return result
        log.log(
            logging.WARNING if result is NoticeResult.MISMATCH else logging.INFO,
            "provider notification %s",
            result.value,
            extra={"provider": notice.provider, "attempt_key": notice.attempt_key},
        )
        return result

    async def _refund(self, notice: RefundNotice) -> NoticeResult:
        if self._refund_failures is None:
            log.error(
                "provider notification of a refund, with no recorder of refunds: not "
                "acknowledged (the provider sends it again)",
                extra={"provider": notice.provider, "refund_id": notice.refund_id},
            )
            return NoticeResult.BUSY
        result = await self._refund_failures.record(notice)
        log.log(
            logging.WARNING if result is NoticeResult.MISMATCH else logging.INFO,
            "provider notification of a refund %s",
            result.value,
            extra={"provider": notice.provider, "refund_id": notice.refund_id},
        )
        return result

    async def _record(self, notice: ChargeNotice) -> NoticeResult:
        payment_id = payment_id_of(notice.attempt_key)
        payment = None if payment_id is None else await self._store.get_payment(payment_id)
        if payment is None or payment_id is None:
            return NoticeResult.UNKNOWN
        if payment.provider != notice.provider:
            # Failed over to another provider since: not recorded on the payment, but money
            # taken under one of its earlier keys is the sweep's.
            return await self._not_standing_on(notice, NoticeResult.MISMATCH)
        if payment.amount != notice.amount:
            return NoticeResult.MISMATCH
        if notice.outcome is None:
            return NoticeResult.IGNORED
        if payment.status.is_final:
            # A replay, or the reconciler's query came first: the outcome is recorded.
            return await self._already(payment, notice)
        claimed = await self._store.claim(payment_id)
        if claimed is None:
            current = await self._store.get_payment(payment_id)
            if current is not None and current.status.is_final:
                return await self._already(current, notice)
            return NoticeResult.BUSY
        if claimed.attempt_key != notice.attempt_key or claimed.provider != notice.provider:
            await self._store.release(payment_id, claimed.claim.token)
            return await self._not_standing_on(notice, NoticeResult.MISMATCH)
        outcome = await self._recorder.charged(
            PaymentFacts.of_stored(claimed.payment),  # as under the claim's lock
            claimed.attempt_key,
            notice.outcome,
            provider=claimed.provider,
            claim=claimed.claim.token,
        )
        if notice.outcome.refunded is not None:
            # Paid and refunded in part before paygate heard: the charge first, then what
            # was refunded of it (a crash between is covered: the provider, unanswered,
            # notifies again, and the replay reaches _already).
            recorded = await self._store.get_payment(payment_id)
            if recorded is not None and recorded.status.is_final:
                await self._refunded_outside(recorded, notice)
        return NoticeResult.ALREADY if outcome is Outcome.REPLAYED else NoticeResult.RECORDED

    async def _already(self, payment: PaymentView, notice: ChargeNotice) -> NoticeResult:
        """``payment`` is final: a replay of its own charge, or money it does not stand on."""
        own = (
            payment.status in CAPTURED | HELD
            and notice.outcome is not None
            and notice.outcome.provider_reference is not None
            and notice.outcome.provider_reference == payment.provider_reference
        )
        if own:
            return await self._refunded_outside(payment, notice)
        return await self._not_standing_on(notice, NoticeResult.ALREADY)

    async def _refunded_outside(self, payment: PaymentView, notice: ChargeNotice) -> NoticeResult:
        """``payment`` stands on the notice's charge: record what the provider says was
        refunded of it in all, if more than paygate can account for (refunds made outside
        paygate: domain.provider_refunds); else it is a replay (``already``)."""
        outcome = notice.outcome
        if payment.status not in CAPTURED or outcome is None:
            return NoticeResult.ALREADY
        if outcome.status is not ChargeStatus.SUCCEEDED or payment.provider_reference is None:
            return NoticeResult.ALREADY
        taken = payment.captured_amount
        try:
            total = refunded_at_provider(
                taken.minor_units,
                taken.currency,
                outcome.refunded,
                in_full=outcome.refunded_in_full,
            )
        except ValueError as exc:
            log.error(
                "provider notification: a refunded amount paygate cannot record: %s",
                exc,
                extra={"provider": notice.provider, "attempt_key": notice.attempt_key},
            )
            return NoticeResult.ALREADY  # the charge's outcome is recorded; the error tells
        if total == 0:
            return NoticeResult.ALREADY

        def event(stored: PaymentView, failed_at_provider_minor: int) -> OutboxMessage:
            return self._events.of_payment(
                stored,
                event_id=outside_refund_event_id(
                    stored.payment_request_id, stored.refunded_minor, failed_at_provider_minor
                ),
            )

        stored = await self._refunds.absorb(
            payment.payment_request_id,
            provider_reference=payment.provider_reference,
            provider_refunded_minor=total,
            event=event,
            reading_at=notice.refunded_as_of,
        )
        if stored is None:
            return NoticeResult.ALREADY
        log.warning(
            "provider notification: refunded outside paygate; recorded in the payment's total",
            extra={
                "payment_request_id": payment.payment_request_id,
                "status": stored.status.value,
                "refunded_minor": stored.refunded_minor,
            },
        )
        return NoticeResult.RECORDED

    async def _not_standing_on(self, notice: ChargeNotice, otherwise: NoticeResult) -> NoticeResult:
        """The payment does not stand on ``notice``'s key: if the notice says money was
        taken there, hand the key to the stray-charge sweep; else ``otherwise``."""
        # Money refunded in full already (Alipay's closed paid trade, Stripe's Charge whose
        # amount_refunded is its amount_captured) is no longer taken.
        taken = (
            notice.outcome is not None
            and notice.outcome.status in (ChargeStatus.SUCCEEDED, ChargeStatus.AUTHORIZED)
            and not notice.outcome.nothing_kept
        )
        if taken and await self._strays.reopen(notice.attempt_key, notice.provider):
            return NoticeResult.STRAY
        return otherwise
