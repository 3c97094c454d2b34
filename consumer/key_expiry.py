"""The expiry job for idempotency keys (see domain.idempotency).

Keys are kept for ``retention`` (at least 7 days), then marked expired, so that a client
may use them again for a new payment. Payments themselves are never deleted.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final

from domain.clock import utc_now
from persistence.payment_store import PaymentStore

MIN_RETENTION: Final = timedelta(days=7)


class KeyExpiry:
    def __init__(
        self,
        store: PaymentStore,
        retention: timedelta,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if retention < MIN_RETENTION:
            raise ValueError(f"idempotency keys must be kept at least {MIN_RETENTION.days} days")
        self._store = store
        self._retention = retention
        self._clock = clock

    async def run_once(self) -> int:
        """Expire the keys older than the retention; return how many."""
        return await self._store.expire_idempotency_keys(self._clock() - self._retention)
