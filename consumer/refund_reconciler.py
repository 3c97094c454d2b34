"""Settles refunds that have no final answer by asking their provider.

A refund stays open (``processing`` or ``pending``) when its provider answers later
(asynchronous refunds), timed out, or the consumer died after reserving it. Every pass asks
the provider about each open refund older than ``min_age``, by the refund's idempotency key:

* the provider knows it: record its answer (a refund still pending at the provider stays
  pending and is asked about again next pass);
* the provider has never seen it, and the refund is older than ``abandon_after``: nothing
  was refunded, so the refund fails with ``provider_unavailable`` and its reservation is
  released;
* otherwise (the provider cannot be reached, or the refund is young): leave it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from consumer.outcome_recorder import Outcome
from consumer.periodic import run_periodically
from consumer.refund_outcomes import RefundOutcomes
from consumer.refund_results import RefundEvents
from domain.clock import utc_now
from domain.error_info import ErrorInfo
from domain.errors import ErrorCode
from paygate.metrics import Metrics
from persistence.refund_store import OpenRefund, RefundStore
from providers.errors import ProviderError
from providers.registry import Providers, UnknownProviderError

log = logging.getLogger("paygate.reconciler")

PAGE_SIZE = 500


class RefundReconciler:
    def __init__(
        self,
        *,
        store: RefundStore,
        providers: Providers,
        events: RefundEvents,
        metrics: Metrics,
        min_age: timedelta,
        abandon_after: timedelta,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if abandon_after <= min_age:
            raise ValueError("abandon_after must be longer than min_age")
        self._store = store
        self._providers = providers
        self._metrics = metrics
        self._min_age = min_age
        self._abandon_after = abandon_after
        self._clock = clock
        self._outcomes = RefundOutcomes(store, events, clock)

    async def run_once(self, limit: int = PAGE_SIZE) -> int:
        """One pass; returns how many open refunds were examined."""
        now = self._clock()
        examined = await self._store.open_refunds(now - self._min_age, limit)
        for item in examined:
            result = await self._reconcile(item, now)
            self._metrics.refunds_reconciled.labels(result).inc()
        return len(examined)

    async def run(self, stop: asyncio.Event, interval_s: float) -> None:
        await run_periodically(stop, interval_s, self.run_once, "open refunds examined")

    async def _reconcile(self, item: OpenRefund, now: datetime) -> str:
        refund = item.refund
        try:
            provider = self._providers.get(refund.provider or "")
            known = await provider.refund_status(refund.refund_id, item.charge_reference)
        except (UnknownProviderError, ProviderError) as exc:
            log.warning(
                "open refund not reconciled: %s", exc, extra={"refund_id": refund.refund_id}
            )
            return "still_pending"
        if known is not None:
            outcome = await self._outcomes.answered(refund, known)
            if outcome is Outcome.PENDING:
                return "still_pending"
            return "resolved" if outcome is not Outcome.REPLAYED else "already_final"
        if now - refund.created_at < self._abandon_after:
            return "still_pending"
        await self._outcomes.failed(
            refund,
            ErrorInfo(
                ErrorCode.PROVIDER_UNAVAILABLE,
                "the provider never received the refund; nothing was refunded",
            ),
        )
        return "abandoned"
