"""What a payment's refunds that failed at the provider add up to, as a reading of the
charge's refunded total may count them: paygate's own (the provider gave them a reference)
and those made outside paygate that it reported failed (persistence.outside_refund_failed).

Read under the payment's row lock, which every refund's finish and every outside failure's
record take too, so the sums are the ones the write that follows them acts on.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.failed_refund_netting import FailedOutsideRefund, counted_failed_minor
from domain.refunds import RefundStatus
from persistence.tables import outside_refund_failures, refunds


@dataclass(frozen=True, slots=True)
class FailedAtProvider:
    own_minor: int  # paygate's refunds the provider made and failed
    outside: tuple[FailedOutsideRefund, ...]  # refunds made outside paygate, failed

    def with_failure(self, failed: FailedOutsideRefund) -> FailedAtProvider:
        return FailedAtProvider(self.own_minor, (*self.outside, failed))

    def counted_by(self, reading_at: int | None) -> int:
        """What a reading made at ``reading_at`` (Unix seconds, None: not known) may count
        of them. paygate's own carry no provider time: a reading may count each
        (paygate's refund reached the provider before it failed), so all are netted."""
        return self.own_minor + counted_failed_minor(self.outside, reading_at)

    @property
    def all_minor(self) -> int:
        """All of them: grows with every failure recorded, never shrinks
        (domain.events.outside_refund_event_id)."""
        return self.own_minor + sum(f.amount_minor for f in self.outside)


async def failed_at_provider(conn: AsyncConnection, payment_id: str) -> FailedAtProvider:
    own = await conn.execute(
        select(func.coalesce(func.sum(refunds.c.amount_minor), 0))
        .where(refunds.c.payment_id == payment_id)
        .where(refunds.c.status == RefundStatus.FAILED.value)
        .where(refunds.c.provider_reference.is_not(None))
    )
    outside = await conn.execute(
        select(
            outside_refund_failures.c.amount_minor,
            outside_refund_failures.c.made_unix,
            outside_refund_failures.c.failed_unix,
        ).where(outside_refund_failures.c.payment_id == payment_id)
    )
    return FailedAtProvider(
        int(own.scalar_one()),
        tuple(
            FailedOutsideRefund(int(r.amount_minor), r.made_unix, r.failed_unix) for r in outside
        ),
    )
