"""Recording refunds a provider reports on a payment paygate recorded captured, made outside
paygate (by hand in the provider's portal or dashboard: Alipay's ``refund_fee``, Stripe's
``charge.refunded``), into the payment's refunded total.

One transaction: the payment row is locked (``FOR UPDATE`` on PostgreSQL; SQLite's write
transaction holds the database lock), so the refund store's conditional updates of the same
totals (persistence.refund_store) either committed before, and are counted, or wait until
after, and see the new total. The rule is domain.provider_refunds.absorbed_refunded_total:
the total rises to the provider's figure less every reservation, never falls, and stays
within what was captured less what is reserved, and takes none of paygate's refunds that
failed at the provider as made outside, nor any refund made outside that failed and that
the reading may count by the provider's times (domain.failed_refund_netting). A reading
with a time that is the charge's latest is kept on the payment, so a failure recorded
after it is netted by it (persistence.outside_refund_failed). No refund row is written (a
refund row is paygate's own call), and the payment's result event says the new status.

No claim is taken: a captured payment has no provider work left that a claim guards (its
refunds hold claims of their own, on refund rows), and the write is conditional on the row
as read under the lock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.clock import utc_now
from domain.failed_refund_netting import FailedOutsideRefund, later_reading
from domain.money import Money
from domain.payment_view import PaymentView
from domain.provider_refunds import absorbed_refunded_total, status_with_refunds
from domain.status import CAPTURED, PaymentStatus
from persistence.follow_up import PaymentEventBuilder
from persistence.group_commit import GroupCommit
from persistence.lock_order import RowLocks
from persistence.outbox import OutboxMessage, enqueue_outbox
from persistence.outside_refund_failed import (
    OutsideFailure,
    OutsideFailureRequest,
    record_outside_failure,
)
from persistence.payment_rows import payment_in, refunded_at_provider_to
from persistence.refunds_failed_at_provider import failed_at_provider
from persistence.tables import payments

# The event of a rise of the refunded total: the payment as stored, and what its refunds
# failed at the provider add up to then, which grows with every fall of the total, so an
# event id made of it and the total is never the id of an earlier rise to the same total
# (domain.events.outside_refund_event_id).
RiseEventBuilder = Callable[[PaymentView, int], OutboxMessage]


class ProviderRefundStore:
    def __init__(self, writes: GroupCommit, clock: Callable[[], datetime] = utc_now) -> None:
        """``writes`` is the payment store's group commit: one writer queue per database."""
        self._writes = writes
        self._clock = clock

    async def absorb(
        self,
        payment_request_id: str,
        *,
        provider_reference: str,
        provider_refunded_minor: int,
        event: RiseEventBuilder,
        reading_at: int | None = None,
    ) -> PaymentView | None:
        """Raise the refunded total of the payment captured as ``provider_reference`` to
        what its provider says was refunded of the charge in all, less paygate's own refunds
        in flight and the failed refunds the provider's reading may count (made at
        ``reading_at``, Unix seconds by the provider's clock; None: not known, every failed
        refund netted: domain.failed_refund_netting); queue ``event`` of the payment as
        stored (and of what its refunds failed at the provider add up to: see
        :data:`RiseEventBuilder`). A reading with a time later than the one kept is kept
        (``provider_refunded_minor``/``_unix``), so a failure recorded after it is netted
        by it too (persistence.outside_refund_failed). The payment as stored, or None when
        its total did not change (not captured, another charge, nothing new)."""
        now = self._clock()

        async def record(conn: AsyncConnection) -> PaymentView | None:
            row = (
                await conn.execute(
                    select(
                        payments.c.status,
                        payments.c.provider_reference,
                        payments.c.amount_minor,
                        payments.c.captured_minor,
                        payments.c.refunded_minor,
                        payments.c.refund_reserved_minor,
                        payments.c.provider_refunded_minor,
                        payments.c.provider_refunded_unix,
                    )
                    .where(payments.c.id == payment_request_id)
                    .with_for_update()
                )
            ).one_or_none()
            if row is None or PaymentStatus(row.status) not in CAPTURED:
                return None
            if row.provider_reference != provider_reference:
                return None
            captured = row.amount_minor if row.captured_minor is None else row.captured_minor
            failed = await failed_at_provider(conn, payment_request_id)
            total = absorbed_refunded_total(
                captured,
                row.refunded_minor,
                row.refund_reserved_minor,
                provider_refunded_minor,
                failed.counted_by(reading_at),
            )
            kept = _kept_reading(row, provider_refunded_minor, reading_at)
            if total is None:
                if kept:
                    await conn.execute(
                        update(payments).where(payments.c.id == payment_request_id).values(kept)
                    )
                return None
            await conn.execute(
                update(payments)
                .where(payments.c.id == payment_request_id)
                .values(
                    **refunded_at_provider_to(total),
                    **kept,
                    status=status_with_refunds(captured, total).value,
                    updated_at=now,
                )
            )
            payment = await payment_in(conn, payment_request_id)
            assert payment is not None  # locked above
            await enqueue_outbox(conn, event(payment, failed.all_minor), now)
            return payment

        return await self._writes.run(record, locks=RowLocks.of(payments=[payment_request_id]))

    async def outside_refund_failed(
        self,
        *,
        provider: str,
        provider_reference: str,
        charge_reference: str,
        amount: Money,
        event: PaymentEventBuilder,
        made_at: int | None = None,
        failed_at: int | None = None,
    ) -> tuple[OutsideFailure, PaymentView | None]:
        """Record the provider's failure of its refund ``provider_reference`` of the charge
        ``charge_reference``, made outside paygate (persistence.outside_refund_failed): what
        was counted of it outside is taken back once, with ``event`` of the payment.
        ``made_at`` and ``failed_at``: when the provider made the refund and failed it
        (Unix seconds by its clock; None: not known), which say the readings of the
        charge's total that may count it (domain.failed_refund_netting)."""
        async with self._writes.engine.connect() as conn:
            found = (
                await conn.execute(
                    select(payments.c.id)
                    .where(payments.c.provider_reference == charge_reference)
                    .where(payments.c.provider == provider)
                    .limit(2)
                )
            ).scalars()
            standing = list(found)
        if not standing:
            return OutsideFailure.UNKNOWN, None
        if len(standing) > 1:
            # Two payments recorded on one charge: which one the refund was of is not the
            # notice's to say (a provider's reference names one charge).
            return OutsideFailure.MISMATCH, None
        (payment_id,) = standing
        request = OutsideFailureRequest(
            payment_id=payment_id,
            provider=provider,
            provider_reference=provider_reference,
            charge_reference=charge_reference,
            amount=amount,
            event=event,
            now=self._clock(),
            failed=FailedOutsideRefund(amount.minor_units, made_at, failed_at),
        )

        async def record(conn: AsyncConnection) -> tuple[OutsideFailure, PaymentView | None]:
            return await record_outside_failure(conn, request)

        return await self._writes.run(record, locks=RowLocks.of(payments=[payment_id]))


def _kept_reading(row: Any, provider_refunded_minor: int, reading_at: int | None) -> dict[str, int]:
    """The columns that keep this reading as the charge's latest, if it is
    (domain.failed_refund_netting.later_reading); none for a reading without a time."""
    if reading_at is None:
        return {}
    stored = (
        None
        if row.provider_refunded_unix is None
        else (int(row.provider_refunded_minor), int(row.provider_refunded_unix))
    )
    kept = later_reading(stored, (provider_refunded_minor, reading_at))
    if kept is None:
        return {}
    return {"provider_refunded_minor": kept[0], "provider_refunded_unix": kept[1]}
