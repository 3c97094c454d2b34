"""What operators watch in the store: work waiting, and how long the oldest piece has waited.

Read-only, one short query each, for the consumer's gauges and readiness:

- the outbox backlog: rows not yet published (the relay's queue);
- in-doubt attempts: provider attempts opened and not finished, on payments still
  pending or processing (calls in flight now, or waiting for the reconciler);
- :meth:`Backlogs.ping`: whether the database answers at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.status import PaymentStatus
from persistence.engine import as_utc_or_none
from persistence.tables import outbox, payments, provider_attempts

_OPEN_PAYMENT_STATUSES = (PaymentStatus.PENDING.value, PaymentStatus.PROCESSING.value)


@dataclass(frozen=True, slots=True)
class Backlog:
    """``count`` items waiting; ``oldest`` the time the oldest was written (None if none)."""

    count: int
    oldest: datetime | None


class Backlogs:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def ping(self) -> None:
        """Raises unless the database answers a trivial query."""
        async with self._engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def outbox(self) -> Backlog:
        query = select(func.count(), func.min(outbox.c.created_at)).where(
            outbox.c.published_at.is_(None)
        )
        return await self._backlog(query)

    async def in_doubt_attempts(self) -> Backlog:
        query = (
            select(func.count(), func.min(provider_attempts.c.created_at))
            .select_from(provider_attempts)
            .join(payments, payments.c.id == provider_attempts.c.payment_id)
            .where(provider_attempts.c.finished_at.is_(None))
            .where(payments.c.status.in_(_OPEN_PAYMENT_STATUSES))
        )
        return await self._backlog(query)

    async def _backlog(self, query: Select[int, Any]) -> Backlog:
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).one()
        return Backlog(int(row[0]), as_utc_or_none(row[1]))
