"""Resolves in-doubt payments by asking the provider, never by charging again.

An attempt is in doubt when its outcome was never recorded: the provider timed out, or the
consumer died between the write-ahead commit and the provider's answer. The reconciler
asks the provider the attempt was sent to (its ``provider`` column; with routing, not
necessarily the payment's first provider) for the attempt, by its idempotency key:

* the provider knows it: record its answer (succeeded or declined);
* the provider has never seen it, and the attempt is older than ``abandon_after``: it
  certainly did not charge, so the payment fails with ``provider_unavailable``;
* otherwise (the provider cannot be reached, is not configured any more, or the attempt
  is young): leave it pending.

Windows keep the reconciler and the command handler apart: the handler re-sends an unseen
attempt only while it is younger than half of ``abandon_after``, and the reconciler
abandons only older ones, so they never act on the same attempt at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from consumer.outcome_recorder import Outcome, OutcomeRecorder
from consumer.periodic import run_periodically
from consumer.results import PaymentFacts, ResultEvents
from domain.clock import utc_now
from domain.error_info import ErrorInfo
from domain.errors import ErrorCode
from paygate.metrics import Metrics
from persistence.payment_store import InDoubt, PaymentStore
from providers.errors import ProviderError
from providers.registry import Providers, UnknownProviderError

log = logging.getLogger("paygate.reconciler")

PAGE_SIZE = 500


@dataclass
class ReconcileReport:
    checked: int = 0
    resolved: int = 0
    abandoned: int = 0
    still_pending: int = 0


class Reconciler:
    def __init__(
        self,
        *,
        store: PaymentStore,
        providers: Providers,
        events: ResultEvents,
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
        self._recorder = OutcomeRecorder(store, events, clock)

    async def run_once(self, limit: int = PAGE_SIZE) -> ReconcileReport:
        report = ReconcileReport()
        now = self._clock()
        for item in await self._store.in_doubt(now - self._min_age, limit):
            report.checked += 1
            outcome = await self._reconcile(item, now)
            if outcome is None:
                report.still_pending += 1
            elif outcome == "abandoned":
                report.abandoned += 1
            else:
                report.resolved += 1
            self._metrics.reconciled.labels(outcome or "still_pending").inc()
        return report

    async def run(self, stop: asyncio.Event, interval_s: float) -> None:
        """Reconcile every ``interval_s`` until ``stop`` is set; errors are logged, not fatal.

        The outcome of each examined payment is counted in ``paygate_reconciled_total``."""

        async def checked() -> int:
            return (await self.run_once()).checked

        await run_periodically(stop, interval_s, checked, "in-doubt payments examined")

    async def _reconcile(self, item: InDoubt, now: datetime) -> str | None:
        facts = PaymentFacts.of_stored(item.payment)
        provider = item.attempt_provider
        try:
            known = await self._providers.get(provider).charge_status(item.attempt_key)
        except UnknownProviderError as exc:
            # Only the attempt's own provider can tell: never guess, never ask another.
            log.error(
                "in-doubt payment not reconciled: %s",
                exc,
                extra={"payment_request_id": facts.payment_request_id},
            )
            return None
        except ProviderError as exc:
            log.warning(
                "provider unreachable during reconciliation: %s",
                exc.message,
                extra={"payment_request_id": facts.payment_request_id},
            )
            return None
        if known is not None:
            outcome = await self._recorder.charged(
                facts, item.attempt_key, known, provider=provider
            )
            return "resolved" if outcome is not Outcome.REPLAYED else "already_final"
        if now - item.attempt_started_at < self._abandon_after:
            return None
        await self._recorder.failed(
            facts,
            item.attempt_key,
            ErrorInfo(
                ErrorCode.PROVIDER_UNAVAILABLE,
                "the provider never received the payment; nothing was charged",
            ),
            provider=provider,
        )
        return "abandoned"
