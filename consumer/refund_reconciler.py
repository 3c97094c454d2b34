"""Settles refunds that have no final answer, with the refund handler's own decision table.

A refund stays open (``processing`` or ``pending``) when its provider answers later
(asynchronous refunds), timed out, or its worker died after reserving it. Every pass takes
the open refunds last touched before ``min_age`` that nobody holds the claim on (see
persistence.claims), takes the claim of each -- if another worker takes it first, it leaves
the refund -- and lets :meth:`RefundCommandHandler.resolve` settle it: the provider's answer
is recorded, a refund the provider never received is sent again with the same key (it cannot
refund twice), and an unreachable provider leaves it for the next pass.

One refund never stops a pass (consumer.pass_guard): if settling it raises anything but a
dependency outage (an answer its adapter cannot read, a bug), it is logged with its
traceback and counted ``failed``, its claim given back for a later pass, and the pass goes
on with the others. Before, one such refund ended every pass where it stood. An outage
still ends the pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

from consumer.pass_guard import FAILED, OWNED_ELSEWHERE, result_of, unless_poisoned
from consumer.periodic import run_periodically
from consumer.ports import RefundWrites
from consumer.refund_handler import RefundCommandHandler
from domain.clock import utc_now
from telemetry.metrics import Metrics

PAGE_SIZE = 500


class RefundReconciler:
    def __init__(
        self,
        *,
        store: RefundWrites,
        handler: RefundCommandHandler,
        metrics: Metrics,
        min_age: timedelta,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self._handler = handler
        self._metrics = metrics
        self._min_age = min_age
        self._clock = clock

    async def run_once(self, limit: int = PAGE_SIZE) -> int:
        """One pass; returns how many open refunds were examined."""
        examined = await self._store.open_refunds(self._clock() - self._min_age, limit)
        for item in examined:
            refund_id = item.refund.refund_id
            result = await unless_poisoned(
                self._reconcile(refund_id, item.charge_reference),
                skipped=FAILED,
                what="open refund not reconciled; asked again next pass",
                extra={"refund_id": refund_id},
            )
            self._metrics.refunds_reconciled.labels(result).inc()
        return len(examined)

    async def run(self, stop: asyncio.Event, interval_s: float) -> None:
        await run_periodically(stop, interval_s, self.run_once, "open refunds examined")

    async def _reconcile(self, refund_id: str, charge_reference: str) -> str:
        # The refund as read under the claim, in the claim's transaction: a read that fails
        # takes the claim back with it (RefundStore.claim), none is left held.
        claimed = await self._store.claim(refund_id)
        if claimed is None:
            return OWNED_ELSEWHERE
        return result_of(
            await self._handler.resolve(claimed.refund, charge_reference, claimed.claim.token)
        )
