"""Records a provider's word that a refund paygate sent failed (Stripe's ``refund.failed``).

A provider can answer a refund ``succeeded`` (or ``pending``) and fail it later: the card
was closed, the payer's bank sent the money back. Stripe then returns the money to the
merchant's balance and lowers the Charge's ``amount_refunded``. Left unread, the payment
stays recorded refunded, the client was told "refunded", and the payer never gets the
money: so the notice is recorded, by where paygate's records of the refund stand:

* ``succeeded``: the refund becomes ``failed`` with ``refund_failed_after_success`` and its
  payment's refunded total falls by its amount, with the refund's result event (and
  webhook), in one transaction (persistence.refund_failed_later); counted in
  ``paygate_refunds_failed_after_success_total`` and logged at error level, since money
  the client was told went back is in the merchant's balance;
* open (``processing``/``pending``: the provider's answer not recorded yet): as any
  failure the provider answers, under the refund's claim (consumer.refund_outcomes:
  ``failed``, ``refund_failed``, the reservation released). A worker holding the claim
  (the refund's handler, between its call and its write, or the reconciler) makes this
  ``busy``: the provider sends the notice again, and by then the refund is final; a
  handler that records ``succeeded`` from an answer made before the failure is then
  corrected by the resent notice;
* ``failed`` already: a replay, or the reconciler asked first (``already``);
* a stray charge's reversal (consumer.stray_charges: its key is the refund's id) that the
  sweep recorded ``reversed``: the stray charge becomes ``failed``, counted
  ``paygate_stray_charges_total{result="reversal_failed"}`` (which pages: the money is
  taken again and an operator gives it back); a reversal the sweep has sent and not
  recorded yet (the stray charge ``reversing`` with that refund's key) is ``busy``: the
  sweep may hold Stripe's ``succeeded``, made before the failure, and record it after
  this, so the provider sends the notice again and it then finds the charge
  ``reversed``; a reversal left pending is asked about by the sweep on its next try too;
* no such refund (another system's on the same provider account), or one of another
  provider, charge, reference or amount: nothing changes (``unknown``, ``mismatch``).

Every write is conditional on what it read under the rows' locks, so a replay, a notice
delivered out of order or two deliveries at once change the refund at most once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from consumer.outcome import Outcome
from consumer.ports import RefundFailureWrites, StrayReversals
from consumer.refund_events import RefundEvents
from consumer.refund_outcomes import RefundOutcomes
from consumer.stray_charges import attempt_of_reversal
from domain.clock import utc_now
from domain.error_info import ErrorInfo
from domain.errors import ErrorCode
from domain.refund_view import RefundView
from domain.refunds import RefundStatus
from persistence.refund_store import LateFailure
from persistence.stray_store import LateReversalFailure
from providers.notices import NoticeResult, RefundNotice
from telemetry.metrics import Metrics

log = logging.getLogger("paygate.notifications")

_LATE: dict[LateFailure, NoticeResult] = {
    LateFailure.RECORDED: NoticeResult.RECORDED,
    LateFailure.ALREADY: NoticeResult.ALREADY,
    # Moved back to open between the read and the write cannot happen (a final refund
    # stays final but for this); answered busy, the provider sends it again.
    LateFailure.OPEN: NoticeResult.BUSY,
    LateFailure.UNKNOWN: NoticeResult.UNKNOWN,
    LateFailure.MISMATCH: NoticeResult.MISMATCH,
}


def failed_after_success_error(notice: RefundNotice) -> ErrorInfo:
    """The refund's error once its provider failed it after it succeeded: the provider's
    reason (Stripe's ``failure_reason``) as the decline code."""
    reason = None if notice.outcome.error is None else notice.outcome.error.decline_code
    return ErrorInfo(
        ErrorCode.REFUND_FAILED_AFTER_SUCCESS,
        f"{notice.provider} failed the refund after it had succeeded"
        + (f" ({reason})" if reason else "")
        + ": the money went back to the merchant's balance, not to the payer",
        decline_code=reason,
    )


class RefundFailures:
    def __init__(
        self,
        *,
        store: RefundFailureWrites,
        events: RefundEvents,
        strays: StrayReversals | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self._strays = strays
        self._events = events
        self._metrics = metrics
        self._clock = clock
        self._outcomes = RefundOutcomes(store, events, clock)

    async def record(self, notice: RefundNotice) -> NoticeResult:
        refund = await self._store.get(notice.refund_id)
        if refund is None:
            return await self._stray_reversal(notice)
        if refund.provider != notice.provider or refund.amount != notice.amount:
            return NoticeResult.MISMATCH
        # The refund's id is metadata, which anyone with the provider account writes: only
        # a failure of a refund of this refund's charge is its failure. Without this, an
        # open refund with no reference yet (its answer lost) was failed by a Refund of
        # another charge carrying its id, the reservation released while the provider's
        # refund of this charge stood, and the amount could be refunded twice.
        charge = await self._store.charge_reference_of(notice.refund_id)
        if notice.charge_reference is None or notice.charge_reference != charge:
            return NoticeResult.MISMATCH
        if refund.status in (RefundStatus.PROCESSING, RefundStatus.PENDING):
            claimed = await self._store.claim(notice.refund_id)
            if claimed is not None:
                return await self._open_failed(claimed.refund, notice, claimed.claim.token)
            # Held by another worker, or final since the read: read again.
            refund = await self._store.get(notice.refund_id)
            if refund is None or not refund.status.is_final:
                return NoticeResult.BUSY
        if refund.status is RefundStatus.FAILED:
            return NoticeResult.ALREADY
        return await self._succeeded_failed(notice)

    async def _open_failed(
        self, refund: RefundView, notice: RefundNotice, claim: str
    ) -> NoticeResult:
        if refund.provider_reference not in (None, notice.outcome.provider_reference):
            await self._store.release(refund.refund_id, claim)
            return NoticeResult.MISMATCH
        outcome = await self._outcomes.answered(refund, notice.outcome, claim=claim)
        return NoticeResult.ALREADY if outcome is Outcome.REPLAYED else NoticeResult.RECORDED

    async def _stray_reversal(self, notice: RefundNotice) -> NoticeResult:
        attempt_key = attempt_of_reversal(notice.refund_id)
        reference = notice.outcome.provider_reference
        if attempt_key is None or reference is None or self._strays is None:
            return NoticeResult.UNKNOWN
        reason = None if notice.outcome.error is None else notice.outcome.error.decline_code
        result = await self._strays.reversal_failed_later(
            attempt_key,
            notice.provider,
            reversal_key=notice.refund_id,
            reversal_reference=reference,
            error=f"the provider failed the reversal refund {reference} after it had succeeded"
            + (f" ({reason})" if reason else "")
            + ": the stray charge is taken again; refund it by hand",
        )
        if result is LateReversalFailure.UNDER_WAY:
            # The sweep sent this refund and has not recorded its answer: it may hold a
            # "succeeded" made before the failure and record the charge reversed after
            # this. Not acknowledged, so the provider sends it again once that is recorded.
            return NoticeResult.BUSY
        if result is LateReversalFailure.NONE:
            # Failed already (a replay), or another system's: nothing to record here.
            return NoticeResult.UNKNOWN
        if self._metrics is not None:
            self._metrics.stray_charges.labels(notice.provider, "reversal_failed").inc()
        log.error(
            "stray charge NOT reversed: the provider failed its reversal after it had "
            "succeeded; an operator must refund it",
            extra={"provider": notice.provider, "attempt_key": attempt_key},
        )
        return NoticeResult.RECORDED

    async def _succeeded_failed(self, notice: RefundNotice) -> NoticeResult:
        reference = notice.outcome.provider_reference
        if reference is None:
            return NoticeResult.MISMATCH
        now = self._clock()
        result = await self._store.fail_after_success(
            notice.refund_id,
            provider=notice.provider,
            provider_reference=reference,
            amount=notice.amount,
            error=failed_after_success_error(notice),
            event=self._events.at(now),
        )
        if result is LateFailure.RECORDED:
            if self._metrics is not None:
                self._metrics.refunds_failed_after_success.labels(notice.provider).inc()
            log.error(
                "refund failed at the provider after it succeeded: recorded failed, the "
                "payment's refunded total taken back; the payer has not been paid back",
                extra={
                    "provider": notice.provider,
                    "refund_id": notice.refund_id,
                    "provider_reference": reference,
                    "amount_minor": notice.amount.minor_units,
                },
            )
        return _LATE[result]
