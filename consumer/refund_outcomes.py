"""Turns a provider's answer to a refund (or its silence) into a stored refund status.

Shared by the refund handler and the refund reconciler, so both map answers the same way:

| provider answer                          | refund    | payment totals            |
| ---------------------------------------- | --------- | ------------------------- |
| refund succeeded                         | succeeded | reservation → refunded    |
| refund failed                            | failed    | reservation released      |
| accepted, settles later                  | pending   | reservation kept          |
| no answer in time (outcome unknown)      | pending   | reservation kept          |
| certainly not processed, retries used up | failed    | reservation released      |
| the same, by a worker that took it over  | pending   | reservation kept          |
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from consumer.outcome import Outcome
from consumer.ports import RefundWrites
from consumer.refund_events import RefundEvents
from domain.error_info import ErrorInfo
from domain.errors import ErrorCode, PaygateError
from domain.refund_view import RefundView
from domain.refunds import RefundStatus
from providers.port import ProviderRefundStatus, RefundOutcome

_STATUS = {
    ProviderRefundStatus.SUCCEEDED: RefundStatus.SUCCEEDED,
    ProviderRefundStatus.PENDING: RefundStatus.PENDING,
    ProviderRefundStatus.FAILED: RefundStatus.FAILED,
}


class RefundOutcomes:
    def __init__(
        self, store: RefundWrites, events: RefundEvents, clock: Callable[[], datetime]
    ) -> None:
        self._store = store
        self._events = events
        self._clock = clock

    async def answered(self, refund: RefundView, answer: RefundOutcome, *, claim: str) -> Outcome:
        status = _STATUS[answer.status]
        error = None
        if status is RefundStatus.FAILED:
            error = ErrorInfo.from_error(
                answer.error
                or PaygateError(ErrorCode.REFUND_FAILED, "the provider refused the refund")
            )
        return await self._finish(refund, status, answer.provider_reference, error, claim)

    async def unknown(
        self, refund: RefundView, *, claim: str, error: ErrorInfo | None = None
    ) -> Outcome:
        """Pending: whether the provider refunded is not known yet (a timeout, unless
        ``error`` says otherwise)."""
        error = error or ErrorInfo(
            ErrorCode.PROVIDER_TIMEOUT,
            "the provider did not answer in time; the refund stays pending until the provider "
            "confirms its outcome",
        )
        return await self._finish(refund, RefundStatus.PENDING, None, error, claim)

    async def failed(self, refund: RefundView, error: ErrorInfo, *, claim: str) -> Outcome:
        return await self._finish(refund, RefundStatus.FAILED, None, error, claim)

    async def _finish(
        self,
        refund: RefundView,
        status: RefundStatus,
        provider_reference: str | None,
        error: ErrorInfo | None,
        claim: str,
    ) -> Outcome:
        applied = await self._store.finish(
            refund.refund_id,
            claim=claim,
            status=status,
            provider_reference=provider_reference or refund.provider_reference,
            error=error,
            event=self._events.at(self._clock()),
        )
        if not applied and status is not RefundStatus.PENDING:
            return Outcome.REPLAYED
        return Outcome(status.value)
