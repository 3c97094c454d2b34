"""A refund made outside paygate (by hand, in the provider's dashboard) that the provider
reports failed (Stripe's ``refund.failed`` for a Refund without paygate's metadata): its
money went back to the merchant, so what paygate counted of it in the payment's
``refunded_outside_minor`` is taken back, once.

paygate counts outside refunds from the provider's running total of the charge (Stripe's
``amount_refunded``), not one by one, so it cannot always tell whether the failed refund is
in what it counted: a ``charge.refunded`` that counted it may not have arrived yet, or may
have been counted less paygate's refunds in flight. So:

* the take-back is at most the refund's amount, bounded by ``refunded_outside_minor`` (at
  most what was counted outside; never a refund of paygate's: its rows and reservations are
  not touched, the update is guarded by the outside part itself); when a reading of the
  charge's total with the provider's time is kept (``payments.provider_refunded_minor``,
  the latest ``charge.refunded``), the total falls no lower than that reading stands for net
  of the failed refunds it may count, this one included: a reading made after the failure
  and delivered before it already leaves the refund out, and is counted exactly;
* the failure is recorded by the provider's refund id (table ``outside_refund_failures``,
  primary key provider + refund id) with its amount, what was taken back, and when the
  provider made the refund and failed it (0032), in the same transaction: a duplicate or
  replayed notice finds the row and changes nothing;
* a reading of the charge's refunded total made while the refund stood (made at or after
  its ``created``, at or before its failure, by the provider's clock) is taken net of the
  failed refund's whole amount (persistence.refunds_failed_at_provider,
  domain.failed_refund_netting): such a reading counts it and must not raise the total
  for it again; a reading made after the failure leaves it out and is taken whole. A
  failure without times (recorded before 0032, or told without them) is netted from every
  reading, as before.

The price, as for paygate's own refunds that failed at the provider: a reading made in the
same second as a failure is netted of it (it may leave it out), so counts less than was
refunded outside until a later reading; a refund through paygate beyond what the provider
keeps is refused by the provider.

The payment's row is locked first (the writer queue declares it: persistence.lock_order),
so paygate's refund writes of the same payment (begin, finish, late failure) and the
outside absorption either committed before and are seen, or wait until after. Refused
without a change: a payment not standing on the named charge, another currency, an amount
above what was captured, a refund id of paygate's own refund (acknowledged: its failure
comes with paygate's metadata; of another payment's refund: refused), or a refund id
recorded for another payment or amount.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.failed_refund_netting import FailedOutsideRefund
from domain.money import Money
from domain.payment_view import PaymentView
from domain.provider_refunds import reading_total
from domain.status import CAPTURED, HELD, PaymentStatus
from persistence.follow_up import PaymentEventBuilder
from persistence.outbox import enqueue_outbox
from persistence.payment_rows import payment_in, status_with_refunds_of
from persistence.refunds_failed_at_provider import failed_at_provider
from persistence.tables import outside_refund_failures, payments, refunds


class OutsideFailure(StrEnum):
    """What recording a provider's failure of a refund made outside paygate did."""

    TAKEN_BACK = "taken_back"  # recorded; the payment's refunded total fell
    NOTED = "noted"  # recorded; nothing of it was counted outside, nothing to take back
    ALREADY = "already"  # recorded before: a duplicate or replayed notice
    OWN = "own"  # the refund id is one of paygate's refunds': not an outside refund
    NOT_CAPTURED = "not_captured"  # the payment is not recorded captured yet
    UNKNOWN = "unknown"  # no payment stands on the charge, or it ended uncaptured
    MISMATCH = "mismatch"  # another currency, an impossible amount, another payment's id


@dataclass(frozen=True, slots=True)
class OutsideFailureRequest:
    payment_id: str
    provider: str
    provider_reference: str  # the provider's id of the failed refund
    charge_reference: str
    amount: Money
    event: PaymentEventBuilder
    now: datetime
    failed: FailedOutsideRefund  # its amount, and when the provider made and failed it


_after: Final = payments.c.refunded_minor - bindparam("taken_back")
# Only the outside part falls, by at most what it holds: paygate's succeeded refunds
# (refunded_minor - refunded_outside_minor) and reservations are untouched.
_TAKE_BACK: Final = (
    update(payments)
    .where(payments.c.id == bindparam("payment_id"))
    .where(payments.c.refunded_outside_minor >= bindparam("taken_back"))
    .values(
        refunded_minor=_after,
        refunded_outside_minor=payments.c.refunded_outside_minor - bindparam("taken_back"),
        status=status_with_refunds_of(payments, _after),
        updated_at=bindparam("now"),
    )
)


async def record_outside_failure(
    conn: AsyncConnection, request: OutsideFailureRequest
) -> tuple[OutsideFailure, PaymentView | None]:
    """Record the failure; see the module docstring. The payment as stored when its total
    fell, else None."""
    row = (
        await conn.execute(
            select(
                payments.c.status,
                payments.c.provider,
                payments.c.provider_reference,
                payments.c.currency,
                payments.c.amount_minor,
                payments.c.captured_minor,
                payments.c.refunded_minor,
                payments.c.refund_reserved_minor,
                payments.c.refunded_outside_minor,
                payments.c.provider_refunded_minor,
                payments.c.provider_refunded_unix,
            )
            .where(payments.c.id == request.payment_id)
            .with_for_update()
        )
    ).one_or_none()
    if (
        row is None
        or row.provider != request.provider
        or row.provider_reference != request.charge_reference
    ):
        return OutsideFailure.UNKNOWN, None
    status = PaymentStatus(row.status)
    if status not in CAPTURED:
        # Not captured yet (held, or its charge not answered): the provider sends it again,
        # by when it may be. Ended uncaptured (failed, canceled, expired): nothing of it is
        # counted refunded.
        later = status in HELD or not status.charge_known
        return (OutsideFailure.NOT_CAPTURED if later else OutsideFailure.UNKNOWN), None
    captured = row.amount_minor if row.captured_minor is None else row.captured_minor
    if row.currency != request.amount.currency or request.amount.minor_units > captured:
        return OutsideFailure.MISMATCH, None
    # By the index on the refunds' references (0030): a scan would hold the writer queue.
    own = (
        await conn.execute(
            select(refunds.c.payment_id)
            .where(refunds.c.provider_reference == request.provider_reference)
            .where(refunds.c.provider == request.provider)
            .limit(1)
        )
    ).first()
    if own is not None:
        # paygate's own refund (its failure comes with its metadata), or, named on another
        # payment's charge, a notice that cannot be the provider's word.
        mine = own.payment_id == request.payment_id
        return (OutsideFailure.OWN if mine else OutsideFailure.MISMATCH), None
    taken_back = row.refunded_minor - await _total_after(conn, request, row, captured)
    inserted = await conn.execute(
        _insert_once(conn).values(
            provider=request.provider,
            provider_reference=request.provider_reference,
            payment_id=request.payment_id,
            amount_minor=request.amount.minor_units,
            currency=request.amount.currency,
            taken_back_minor=taken_back,
            recorded_at=request.now,
            made_unix=request.failed.made_at,
            failed_unix=request.failed.failed_at,
        )
    )
    if inserted.rowcount != 1:
        return await _recorded_before(conn, request), None
    if taken_back == 0:
        return OutsideFailure.NOTED, None
    moved = await conn.execute(
        _TAKE_BACK,
        {"payment_id": request.payment_id, "taken_back": taken_back, "now": request.now},
    )
    if moved.rowcount != 1:
        raise RuntimeError(f"payment {request.payment_id} moved under its lock")
    payment = await payment_in(conn, request.payment_id)
    assert payment is not None  # locked above
    await enqueue_outbox(conn, request.event(payment), request.now)
    return OutsideFailure.TAKEN_BACK, payment


async def _total_after(
    conn: AsyncConnection, request: OutsideFailureRequest, row: Any, captured: int
) -> int:
    """The refunded total once the failure is recorded: less the refund's amount, at most
    what was counted outside; and, when a reading of the charge's total with a time is
    kept, at least what that reading stands for net of the failed refunds it may count,
    this one included (a reading made after the failure, delivered before it, already
    leaves it out). Never above the total as it is: a failure raises nothing."""
    lowest = row.refunded_minor - min(request.amount.minor_units, row.refunded_outside_minor)
    if row.provider_refunded_unix is None:
        return int(lowest)
    failed = (await failed_at_provider(conn, request.payment_id)).with_failure(request.failed)
    reading_at = int(row.provider_refunded_unix)
    by_reading = reading_total(
        captured,
        row.refund_reserved_minor,
        int(row.provider_refunded_minor),
        failed.counted_by(reading_at),
    )
    return int(max(lowest, min(row.refunded_minor, by_reading)))


def _insert_once(conn: AsyncConnection) -> postgresql.Insert | sqlite.Insert:
    """An insert that a row with the same provider refund id turns into nothing (a
    concurrent notice of it, whichever payment's lock that one holds)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(outside_refund_failures).on_conflict_do_nothing()
    return sqlite.insert(outside_refund_failures).on_conflict_do_nothing()


async def _recorded_before(conn: AsyncConnection, request: OutsideFailureRequest) -> OutsideFailure:
    earlier = (
        await conn.execute(
            select(
                outside_refund_failures.c.payment_id,
                outside_refund_failures.c.amount_minor,
                outside_refund_failures.c.currency,
            )
            .where(outside_refund_failures.c.provider == request.provider)
            .where(outside_refund_failures.c.provider_reference == request.provider_reference)
        )
    ).one()
    same = (earlier.payment_id, earlier.amount_minor, earlier.currency) == (
        request.payment_id,
        request.amount.minor_units,
        request.amount.currency,
    )
    return OutsideFailure.ALREADY if same else OutsideFailure.MISMATCH
