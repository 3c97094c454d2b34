"""What operators watch in the store: work waiting, and how long the oldest piece has waited.

Read-only, one short query each, for the consumer's gauges and readiness:

- the outbox backlog: rows not yet published (the relay's queue);
- in-doubt attempts: provider attempts opened and not finished, on payments still
  pending or processing (calls in flight now, or waiting for the reconciler);
- webhook deliveries: those owed (never tried yet, or waiting for a retry) and those that
  gave up and are kept until pruned (:meth:`Backlogs.webhook_deliveries`);
- :meth:`Backlogs.ping`: whether the database answers at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, case, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.status import PaymentStatus
from persistence.engine import as_utc_or_none
from persistence.tables import outbox, payments, provider_attempts
from persistence.webhook_fanout import DELIVERY_FAILED, DELIVERY_PENDING
from persistence.webhook_tables import webhook_deliveries

_OPEN_PAYMENT_STATUSES = (PaymentStatus.PENDING.value, PaymentStatus.PROCESSING.value)


@dataclass(frozen=True, slots=True)
class Backlog:
    """``count`` items waiting; ``oldest`` the time the oldest was written (None if none)."""

    count: int
    oldest: datetime | None


@dataclass(frozen=True, slots=True)
class WebhookBacklog:
    """Deliveries owed: ``pending`` never tried yet (the dispatcher's queue: it should stay
    short and young), ``retrying`` tried and failed, waiting for their next attempt (they
    may wait the whole retry window); ``failed`` gave up, kept until pruned. Ages are from
    when each delivery was queued."""

    pending: Backlog
    retrying: Backlog
    failed: int


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

    async def webhook_deliveries(self) -> WebhookBacklog:
        d = webhook_deliveries
        tried = case((d.c.attempts > 0, 1), else_=0).label("tried")
        owed = (
            select(tried, func.count(), func.min(d.c.created_at))
            .where(d.c.status == DELIVERY_PENDING)
            .group_by(tried)
        )
        # Failed ones are kept for the retention (30 days): counted by the status index
        # alone, without reading the rows.
        failed = select(func.count()).select_from(d).where(d.c.status == DELIVERY_FAILED)
        by_tried: dict[int, Backlog] = {}
        async with self._engine.connect() as conn:
            for was_tried, count, oldest in await conn.execute(owed):
                by_tried[int(was_tried)] = Backlog(int(count), as_utc_or_none(oldest))
            failed_count = int(await conn.scalar(failed) or 0)
        none = Backlog(0, None)
        return WebhookBacklog(
            pending=by_tried.get(0, none), retrying=by_tried.get(1, none), failed=failed_count
        )

    async def _backlog(self, query: Select[int, Any]) -> Backlog:
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).one()
        return Backlog(int(row[0]), as_utc_or_none(row[1]))
