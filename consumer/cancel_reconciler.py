"""Settles voids left ``canceling`` (a timeout, or a crash after the write-ahead move).

Every pass takes the payments ``canceling`` since before ``min_age`` that nobody holds the
claim on, takes the claim of each (see persistence.claims) and lets the cancel handler
resolve it: the provider says the hold is released (record ``canceled`` or ``expired``), or
it is not (send the void again under the payment's one cancel key, which cannot void twice).
The pass is every follow-up's (consumer.follow_up_reconciler).
"""

from __future__ import annotations

from datetime import datetime

from consumer.follow_up_reconciler import FollowUpReconciler
from consumer.ports import CancelWrites
from domain.payment_view import PaymentView


class CancelReconciler(FollowUpReconciler[CancelWrites]):
    PLURAL = "cancels"

    async def _in_flight(self, updated_before: datetime, limit: int) -> list[PaymentView]:
        return await self._store.canceling(updated_before, limit)
