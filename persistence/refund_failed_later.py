"""A refund the provider failed after paygate recorded it succeeded (Stripe's ``refund.failed``
for a Refund it had answered ``succeeded``): the refund leaves ``succeeded`` for ``failed``
and the payment's refunded total falls by exactly its amount, in one transaction.

The writer queue holds the payment's row and then the refund's before this runs (the
operation declares the refund, whose payment comes with it: persistence.lock_order), so
the refund finishes and the outside-refund absorption of the same payment
(persistence.refund_finish, persistence.provider_refund_store) either committed before and
are seen, or wait until after. The invariants stay checkable:

* ``refunded_minor = succeeded refund rows + refunded_outside_minor``: the row leaves
  ``succeeded`` and the total falls by its amount in the same transaction; the outside part
  is not touched (the fall is guarded to never reach into it);
* ``refunded_minor + refund_reserved_minor <= captured``: the total only falls;
* a failed refund that reached the provider counts in what a later ``charge.refunded`` may
  not take as refunded outside (persistence.refunds_failed_at_provider): a late event
  that still counts this refund records none of it.

Conditional on the refund being ``succeeded``, with the provider and the reference the
notice names: a replay (already ``failed``) changes nothing, and an open refund is not
this module's (its claim holder or the reconciler records the failure as any other).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

from sqlalchemy import bindparam, update
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.error_info import ErrorInfo
from domain.money import Money
from domain.refunds import RefundStatus
from domain.status import CAPTURED
from persistence.outbox import enqueue_outbox
from persistence.payment_rows import status_with_refunds_of
from persistence.refund_rows import (
    OPEN_STATUSES,
    RefundEventBuilder,
    refund_error_columns,
    refund_row_in,
    refund_view_of,
    standing_of,
)
from persistence.tables import payments, refunds


class LateFailure(StrEnum):
    """What recording a provider's late failure of a refund did."""

    RECORDED = "recorded"  # succeeded -> failed, the total fell by its amount
    ALREADY = "already"  # failed already: a replay, or the reconciler was first
    OPEN = "open"  # not final in paygate's records yet: its owner records the failure
    UNKNOWN = "unknown"  # no such refund
    MISMATCH = "mismatch"  # another provider, reference, amount or currency


@dataclass(frozen=True, slots=True)
class LateFailureRequest:
    refund_id: str
    provider: str
    provider_reference: str
    amount: Money
    error: ErrorInfo
    event: RefundEventBuilder
    now: datetime


_refunded_after: Final = payments.c.refunded_minor - bindparam("refund_minor")
# Guarded so that only paygate's own refunded part falls (never what was refunded outside,
# which has no refund row), and only on a captured payment; returns the totals it leaves,
# as the refund finish's settle does.
_TAKE_BACK: Final = (
    update(payments)
    .where(payments.c.id == bindparam("payment_id"))
    .where(payments.c.status.in_([status.value for status in CAPTURED]))
    .where(
        payments.c.refunded_minor - payments.c.refunded_outside_minor >= bindparam("refund_minor")
    )
    .values(
        refunded_minor=_refunded_after,
        status=status_with_refunds_of(payments, _refunded_after),
        updated_at=bindparam("now"),
    )
    .returning(payments.c.status, payments.c.refunded_minor)
)
_FAIL_SUCCEEDED: Final = (
    update(refunds)
    .where(refunds.c.id == bindparam("b_id"))
    .where(refunds.c.status == RefundStatus.SUCCEEDED.value)
    .values(
        status=RefundStatus.FAILED.value,
        updated_at=bindparam("b_now"),
        **{name: bindparam(f"b_{name}") for name in refund_error_columns(None)},
    )
)


async def fail_succeeded(conn: AsyncConnection, request: LateFailureRequest) -> LateFailure:
    """Record the provider's failure of a refund paygate recorded succeeded; see the module
    docstring. Its rows are locked already (payment, then refund)."""
    row = await refund_row_in(conn, request.refund_id)
    if row is None:
        return LateFailure.UNKNOWN
    if (
        row.provider != request.provider
        or row.amount_minor != request.amount.minor_units
        or row.currency != request.amount.currency
        or (
            row.provider_reference is not None
            and row.provider_reference != request.provider_reference
        )
    ):
        return LateFailure.MISMATCH
    if row.status == RefundStatus.FAILED.value:
        return LateFailure.ALREADY
    if row.status in OPEN_STATUSES:
        return LateFailure.OPEN
    moved = await conn.execute(
        _FAIL_SUCCEEDED,
        {
            "b_id": request.refund_id,
            "b_now": request.now,
            **{f"b_{name}": value for name, value in refund_error_columns(request.error).items()},
        },
    )
    if moved.rowcount != 1:
        raise RuntimeError(f"refund {request.refund_id} left succeeded under its lock")
    totals = (
        await conn.execute(
            _TAKE_BACK,
            {"payment_id": row.payment_id, "refund_minor": row.amount_minor, "now": request.now},
        )
    ).one_or_none()
    if totals is None:
        # A succeeded refund's amount is in its payment's own refunded part, always: if it
        # is not, the totals were edited by hand. Roll back, do not guess.
        raise RuntimeError(f"payment {row.payment_id} has not this refund's amount refunded")
    failed = await refund_row_in(conn, request.refund_id)
    assert failed is not None  # locked
    event = request.event(refund_view_of(failed), standing_of(totals))
    await enqueue_outbox(conn, event, request.now)
    return LateFailure.RECORDED
