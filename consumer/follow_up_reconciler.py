"""Settles follow-ups left in flight (a timeout, or a crash after the write-ahead move).

Every pass takes the payments in flight (``capturing``, ``canceling``) since before
``min_age`` that nobody holds the claim on, takes the claim of each (see
persistence.claims) and lets the follow-up's handler resolve it: the provider says the
follow-up happened (record it), or it did not (send it again under the payment's one key
for it, which cannot act twice). A subclass names which payments are in flight.

One follow-up never stops a pass (consumer.pass_guard): if settling it raises anything but
a dependency outage (an answer its adapter cannot read, a bug), it is logged with its
traceback and counted ``failed``, its claim given back for a later pass, and the pass goes
on with the others. Before, one such payment ended every pass where it stood. An outage
still ends the pass. Every result is counted in ``paygate_follow_ups_reconciled_total``.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import ClassVar, Generic, TypeVar

from consumer.follow_up_handler import FollowUpHandler
from consumer.pass_guard import FAILED, OWNED_ELSEWHERE, result_of, unless_poisoned
from consumer.periodic import run_periodically
from consumer.ports import FollowUpWrites
from domain.clock import utc_now
from domain.payment_view import PaymentView
from telemetry.metrics import Metrics

PAGE_SIZE = 500

StoreT = TypeVar("StoreT", bound=FollowUpWrites)


class FollowUpReconciler(ABC, Generic[StoreT]):
    # What a pass examines, for its log line ("captures", "cancels").
    PLURAL: ClassVar[str]

    def __init__(
        self,
        *,
        store: StoreT,
        handler: FollowUpHandler[StoreT],
        metrics: Metrics,
        min_age: timedelta,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self._handler = handler
        self._metrics = metrics
        self._min_age = min_age
        self._clock = clock

    @abstractmethod
    async def _in_flight(self, updated_before: datetime, limit: int) -> list[PaymentView]:
        """The payments in flight since before ``updated_before`` whose claim is free."""

    async def run_once(self, limit: int = PAGE_SIZE) -> int:
        """One pass; returns how many follow-ups were examined."""
        examined = await self._in_flight(self._clock() - self._min_age, limit)
        for payment in examined:
            pid = payment.payment_request_id
            result = await unless_poisoned(
                self._reconcile(pid),
                skipped=FAILED,
                what=f"unsettled {self._handler.NOUN} not reconciled; asked again next pass",
                extra={"payment_request_id": pid},
            )
            self._metrics.follow_ups_reconciled.labels(self._handler.NOUN, result).inc()
        return len(examined)

    async def _reconcile(self, payment_id: str) -> str:
        # A follow-up whose worker is alive is its worker's; of two reconcilers, one wins.
        claimed = await self._store.claim(payment_id)
        if claimed is None:
            return OWNED_ELSEWHERE
        # The payment as it is under the claim: the one listed may be out of date.
        return result_of(await self._handler.resolve(claimed.payment, claimed.claim.token))

    async def run(self, stop: asyncio.Event, interval_s: float) -> None:
        await run_periodically(stop, interval_s, self.run_once, f"unsettled {self.PLURAL} examined")
