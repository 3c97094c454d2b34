"""Settles captures left ``capturing`` (a timeout, or a crash after the write-ahead move).

Every pass takes the payments ``capturing`` since before ``min_age`` that nobody holds the
claim on, takes the claim of each (see persistence.claims) and lets the capture handler
resolve it: the provider says the charge is captured (record it), or it is not
(send the capture again under the payment's one capture key, which cannot capture twice).
The pass is every follow-up's (consumer.follow_up_reconciler).
"""

from __future__ import annotations

from datetime import datetime

from consumer.follow_up_reconciler import FollowUpReconciler
from consumer.ports import CaptureWrites
from domain.payment_view import PaymentView


class CaptureReconciler(FollowUpReconciler[CaptureWrites]):
    PLURAL = "captures"

    async def _in_flight(self, updated_before: datetime, limit: int) -> list[PaymentView]:
        return await self._store.capturing(updated_before, limit)
