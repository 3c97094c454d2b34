"""Samples what operators watch into gauges: consumer lag, the outbox, in-doubt attempts and
the webhook deliveries owed.

Every ``interval_s`` one pass asks the broker for the lag of this consumer's partitions
(consumer.lag) and the store for its backlogs (persistence.backlogs), and sets the gauges.
Ages are measured against the wall clock, since the store keeps wall-clock times.

A pass that fails (the database or the broker unreachable) leaves the gauges at their
last values and is logged once per outage (telemetry.outage_log), not once per pass; the
readiness checks and the alerts on staleness say the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from consumer.lag import ConsumerLag
from domain.clock import utc_now
from persistence.backlogs import Backlog, WebhookBacklog
from telemetry.metrics import Metrics
from telemetry.outage_log import OutageLog

log = logging.getLogger("paygate.consumer.ops")


class BacklogQueries(Protocol):
    async def outbox(self) -> Backlog: ...

    async def in_doubt_attempts(self) -> Backlog: ...

    async def webhook_deliveries(self) -> WebhookBacklog: ...


def age_s(backlog: Backlog, now: datetime) -> float:
    """Seconds the oldest item has waited; 0 for an empty backlog (or a clock behind)."""
    if backlog.oldest is None:
        return 0.0
    return max(0.0, (now - backlog.oldest).total_seconds())


class OpsGauges:
    def __init__(
        self,
        *,
        backlogs: BacklogQueries,
        lag: ConsumerLag,
        metrics: Metrics,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._backlogs = backlogs
        self._lag = lag
        self._metrics = metrics
        self._clock = clock
        self._outage = OutageLog("lag and backlog sources", log)

    async def sample(self) -> None:
        """One pass; raises what the broker or the store raised."""
        await self._lag.sample()
        outbox = await self._backlogs.outbox()
        in_doubt = await self._backlogs.in_doubt_attempts()
        webhooks = await self._backlogs.webhook_deliveries()
        now = self._clock()
        self._metrics.outbox_backlog.set(outbox.count)
        self._metrics.outbox_oldest_age.set(age_s(outbox, now))
        self._metrics.in_doubt_attempts.set(in_doubt.count)
        self._metrics.in_doubt_oldest_age.set(age_s(in_doubt, now))
        for state, backlog in (("pending", webhooks.pending), ("retrying", webhooks.retrying)):
            self._metrics.webhook_deliveries_pending.labels(state).set(backlog.count)
            self._metrics.webhook_deliveries_oldest_age.labels(state).set(age_s(backlog, now))
        self._metrics.webhook_deliveries_failed.set(webhooks.failed)

    async def run(self, stop: asyncio.Event, interval_s: float) -> None:
        """Sample now and every ``interval_s`` until ``stop``; then report no partitions."""
        try:
            while not stop.is_set():
                try:
                    await self.sample()
                except Exception as exc:
                    self._outage.failed(exc)
                else:
                    self._outage.succeeded()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval_s)
        finally:
            self._lag.clear()
