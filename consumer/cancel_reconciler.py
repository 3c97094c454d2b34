"""Settles voids left ``canceling`` (a timeout, or a crash after the write-ahead move).

Every pass takes the payments ``canceling`` since before ``min_age`` that nobody holds the
claim on, takes the claim of each (see persistence.claims) and lets the cancel handler
resolve it: the provider says the hold is released (record ``canceled`` or ``expired``), or
it is not (send the void again under the payment's one cancel key, which cannot void twice).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

from consumer.cancel_handler import CancelCommandHandler
from consumer.periodic import run_periodically
from consumer.ports import CancelWrites
from domain.clock import utc_now

PAGE_SIZE = 500


class CancelReconciler:
    def __init__(
        self,
        *,
        store: CancelWrites,
        handler: CancelCommandHandler,
        min_age: timedelta,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self._handler = handler
        self._min_age = min_age
        self._clock = clock

    async def run_once(self, limit: int = PAGE_SIZE) -> int:
        """One pass; returns how many voids were examined."""
        examined = await self._store.canceling(self._clock() - self._min_age, limit)
        for payment in examined:
            # A void whose worker is alive is its worker's; of two reconcilers, one wins.
            claim = await self._store.claim(payment.payment_request_id)
            if claim is not None:
                await self._handler.resolve(payment, claim.token)
        return len(examined)

    async def run(self, stop: asyncio.Event, interval_s: float) -> None:
        await run_periodically(stop, interval_s, self.run_once, "unsettled cancels examined")
