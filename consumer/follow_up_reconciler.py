"""Settles follow-ups left in flight (a timeout, or a crash after the write-ahead move).

Every pass takes the payments in flight (``capturing``, ``canceling``) since before
``min_age`` that nobody holds the claim on, takes the claim of each (see
persistence.claims) and lets the follow-up's handler resolve it: the provider says the
follow-up happened (record it), or it did not (send it again under the payment's one key
for it, which cannot act twice). A subclass names which payments are in flight.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import ClassVar, Generic, TypeVar

from consumer.follow_up_handler import FollowUpHandler
from consumer.periodic import run_periodically
from consumer.ports import FollowUpWrites
from domain.clock import utc_now
from domain.payment_view import PaymentView

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
        min_age: timedelta,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self._handler = handler
        self._min_age = min_age
        self._clock = clock

    @abstractmethod
    async def _in_flight(self, updated_before: datetime, limit: int) -> list[PaymentView]:
        """The payments in flight since before ``updated_before`` whose claim is free."""

    async def run_once(self, limit: int = PAGE_SIZE) -> int:
        """One pass; returns how many follow-ups were examined."""
        examined = await self._in_flight(self._clock() - self._min_age, limit)
        for payment in examined:
            # A follow-up whose worker is alive is its worker's; of two reconcilers, one wins.
            claimed = await self._store.claim(payment.payment_request_id)
            if claimed is not None:
                # The payment as it is under the claim: the one listed may be out of date.
                await self._handler.resolve(claimed.payment, claimed.claim.token)
        return len(examined)

    async def run(self, stop: asyncio.Event, interval_s: float) -> None:
        await run_periodically(stop, interval_s, self.run_once, f"unsettled {self.PLURAL} examined")
