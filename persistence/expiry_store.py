"""The expiry store: authorizations to ask the provider about, and recording that a hold
was released without paygate's cancel (it ran out, or someone voided it at the provider).

:meth:`ExpiryStore.release` is one conditional update from ``authorized``, the same row
condition as the write-ahead moves of a capture and of a cancel: if either began first, it
changes nothing (they then learn from the provider that the hold is gone, and settle the
payment themselves). So no claim is needed here: this sweep never asks the provider to act,
it only records what the provider says already happened.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.clock import utc_now
from domain.error_info import ErrorInfo
from domain.payment_view import PaymentView
from domain.status import CAPTURED, RELEASED, PaymentStatus
from persistence.claims import claimable, least_recently_examined
from persistence.follow_up import PaymentEventBuilder
from persistence.group_commit import GroupCommit
from persistence.lock_order import RowLocks
from persistence.outbox import enqueue_outbox
from persistence.payment_rows import (
    error_columns,
    payment_in,
    payment_view_of,
    refunded_at_provider_to,
)
from persistence.tables import payments


class ExpiryStore:
    def __init__(
        self, engine: AsyncEngine, writes: GroupCommit, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self._engine = engine
        self._writes = writes
        self._clock = clock

    async def authorized(self, updated_before: datetime, limit: int) -> list[PaymentView]:
        """Authorized payments untouched since ``updated_before``, least recently examined
        first, so that holds still alive move to the back of the queue."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(payments)
                .where(payments.c.status == PaymentStatus.AUTHORIZED.value)
                .where(payments.c.updated_at < updated_before)
                .where(payments.c.provider_reference.is_not(None))
                .where(claimable(payments, self._clock()))
                .order_by(*least_recently_examined(payments), payments.c.updated_at)
                .limit(limit)
            )
            return [payment_view_of(row._mapping) for row in rows]

    async def examined(self, payment_request_id: str) -> None:
        """The provider still holds it: ask about the others first next time."""
        now = self._clock()

        async def record(conn: AsyncConnection) -> None:
            await conn.execute(
                update(payments).where(payments.c.id == payment_request_id).values(examined_at=now)
            )

        await self._writes.run(record, locks=RowLocks.of(payments=[payment_request_id]))

    async def release(
        self,
        payment_request_id: str,
        *,
        status: PaymentStatus,
        error: ErrorInfo | None,
        event: PaymentEventBuilder,
    ) -> bool:
        """Record that the provider released the hold (``expired`` or ``canceled``), with its
        result event. Only from ``authorized``: False, changing nothing, otherwise."""
        if status not in RELEASED:
            raise ValueError(f"a released hold is not {status.value}")
        return await self._settle(
            payment_request_id, {"status": status.value, **error_columns(error)}, event
        )

    async def captured(
        self,
        payment_request_id: str,
        *,
        captured_minor: int | None,
        event: PaymentEventBuilder,
        status: PaymentStatus = PaymentStatus.SUCCEEDED,
        refunded_minor: int = 0,
    ) -> bool:
        """Record that the provider captured the hold without paygate (by hand in its
        dashboard): ``succeeded``, of ``captured_minor`` (None: all of it), with its result
        event; or ``partially_refunded``/``refunded`` when the provider says it refunded
        ``refunded_minor`` of it since, outside paygate (the payment's refunded total, no
        refund row: domain.provider_refunds). Only from ``authorized``: False, changing
        nothing, otherwise."""
        if status not in CAPTURED:
            raise ValueError(f"a captured hold is not {status.value}")
        if (status is not PaymentStatus.SUCCEEDED) != (refunded_minor > 0):
            raise ValueError(f"a {status.value} payment has {refunded_minor} refunded")
        values: dict[str, object] = {"status": status.value, "captured_minor": captured_minor}
        if refunded_minor:
            values.update(refunded_at_provider_to(refunded_minor))
        return await self._settle(payment_request_id, {**values, **error_columns(None)}, event)

    async def _settle(
        self, payment_request_id: str, values: dict[str, object], event: PaymentEventBuilder
    ) -> bool:
        now = self._clock()

        async def record(conn: AsyncConnection) -> bool:
            moved = await conn.execute(
                update(payments)
                .where(payments.c.id == payment_request_id)
                .where(payments.c.status == PaymentStatus.AUTHORIZED.value)
                .where(claimable(payments, now))
                .values(updated_at=now, examined_at=now, **values)
            )
            if moved.rowcount != 1:
                return False
            payment = await payment_in(conn, payment_request_id)
            assert payment is not None
            await enqueue_outbox(conn, event(payment), now)
            return True

        return await self._writes.run(record, locks=RowLocks.of(payments=[payment_request_id]))
