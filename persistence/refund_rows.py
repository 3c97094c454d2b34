"""Refund rows: how a refund is written and read back, and the payment totals refunds move,
shared by the refund writes (persistence.refund_begin, persistence.refund_finish) and the
refund store's reads.

The totals are the payment's ``refunded_minor`` and ``refund_reserved_minor``; every write
of them holds the payment's row lock (``FOR UPDATE`` on PostgreSQL; SQLite's write
transactions hold the database lock). The writer queue takes the rows of a transaction in
one order before its first operation (persistence.lock_order: payments, then refunds, each
in id order), so the locking statements here find their rows held already.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import BigInteger, bindparam, select, text, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.error_info import ErrorInfo
from domain.errors import ErrorCode
from domain.money import Money
from domain.refund_view import RefundView
from domain.refunds import RefundReason, RefundStatus
from domain.status import PaymentStatus
from persistence.engine import as_utc
from persistence.outbox import OutboxMessage
from persistence.payment_rows import captured_minor_of
from persistence.tables import payments, refunds

OPEN_STATUSES: Final = (RefundStatus.PROCESSING.value, RefundStatus.PENDING.value)


@dataclass(frozen=True, slots=True)
class PaymentRefunds:
    """Where a payment stands with its refunds, as a refund event reports it."""

    status: PaymentStatus
    refunded_minor: int


# Builds the event of a refund's new state; the store supplies the payment's standing
# (None when the payment does not exist), known only inside the transaction.
RefundEventBuilder = Callable[[RefundView, PaymentRefunds | None], OutboxMessage]


# Built once, for their memoized cache keys: a statement built per call has its cache key
# computed anew over every column it names, at each execution. Their values are bound
# parameters; the refund's ``*_id`` names are not column names, which an UPDATE's bound
# parameters must not be.
_REFUND_BY_ID: Final = select(refunds).where(refunds.c.id == bindparam("refund_id"))
_PAYMENT_OF_REFUND_LOCKED: Final = (
    select(payments.c.id)
    .where(
        payments.c.id
        == select(refunds.c.payment_id)
        .where(refunds.c.id == bindparam("refund_id"))
        .scalar_subquery()
    )
    .with_for_update()
)
_STANDING: Final = select(payments.c.status, payments.c.refunded_minor).where(
    payments.c.id == bindparam("payment_id")
)
# PostgreSQL's read-back of a bulk write of the totals: only the rows this transaction
# wrote, whose ``xmin`` is its own transaction id (no savepoints here, so no subtransaction
# ids). Values alone cannot tell our write from another transaction's that left the same
# totals (two batches reserving one sum from the same totals read): that one is not ours.
_WRITTEN_HERE: Final = text("payments.xmin = pg_current_xact_id()::xid")
_TOTALS_WRITTEN_HERE: Final = (
    select(
        payments.c.id,
        payments.c.status,
        payments.c.refunded_minor,
        payments.c.refund_reserved_minor,
    )
    .where(payments.c.id.in_(bindparam("payment_ids", expanding=True)))
    .where(_WRITTEN_HERE)
)


async def refund_row_in(conn: AsyncConnection, refund_id: str) -> Row[Any] | None:
    return (await conn.execute(_REFUND_BY_ID, {"refund_id": refund_id})).one_or_none()


async def lock_payment_of(conn: AsyncConnection, refund_id: str) -> None:
    """Lock the refund's payment row (``FOR UPDATE`` on PostgreSQL; on SQLite the write
    transaction already holds the database lock): the lock refunds settle under."""
    await conn.execute(_PAYMENT_OF_REFUND_LOCKED, {"refund_id": refund_id})


async def standing_in(conn: AsyncConnection, payment_id: str) -> PaymentRefunds | None:
    row = (await conn.execute(_STANDING, {"payment_id": payment_id})).one_or_none()
    return None if row is None else standing_of(row)


def standing_of(row: Any) -> PaymentRefunds:
    """The standing from a row of the payment's ``status`` and ``refunded_minor``."""
    return PaymentRefunds(PaymentStatus(row.status), row.refunded_minor)


@dataclass(frozen=True, slots=True)
class Totals:
    """A payment's refund totals and status, as read under its row lock or as a batch of
    refund writes leaves them."""

    status: str
    refunded_minor: int
    reserved_minor: int


# Compare-and-set: a payment's totals move from what was read under its lock to what the
# batch decided, and only from that; and only to totals that keep the invariant (nothing
# reserved below zero, succeeded plus reserved within what was captured), which the
# database checks as single refunds' guarded UPDATEs do. Bind names differ from column
# names (SQLAlchemy reserves those for the SET clause); typed, for asyncpg's arithmetic.
_NEW_REFUNDED: Final = bindparam("b_refunded", type_=BigInteger)
_NEW_RESERVED: Final = bindparam("b_reserved", type_=BigInteger)
_SET_TOTALS: Final = (
    update(payments)
    .where(payments.c.id == bindparam("b_id"))
    .where(payments.c.status == bindparam("b_seen_status"))
    .where(payments.c.refunded_minor == bindparam("b_seen_refunded", type_=BigInteger))
    .where(payments.c.refund_reserved_minor == bindparam("b_seen_reserved", type_=BigInteger))
    .where(_NEW_RESERVED >= 0)
    .where(captured_minor_of(payments) - _NEW_REFUNDED >= _NEW_RESERVED)
    .values(
        status=bindparam("b_status"),
        refunded_minor=_NEW_REFUNDED,
        refund_reserved_minor=_NEW_RESERVED,
    )
)


async def set_totals(
    conn: AsyncConnection, seen: Mapping[str, Totals], after: Mapping[str, Totals]
) -> None:
    """Move each payment of ``after`` from its ``seen`` totals to its ``after`` ones, in one
    executemany, and make sure every one moved, else raise (the caller's transaction then
    rolls back: the group commit runs its operations again one at a time).

    The rows are locked since they were read, so every one moves; that is checked all the
    same, since money moves here: from the driver's count where it can count an executemany
    (SQLite), else by reading back the totals this transaction wrote (PostgreSQL: asyncpg
    does not count one; a row another transaction left with the same totals is not ours).
    """
    changed = sorted(after)
    if not changed:
        return
    moved = await conn.execute(
        _SET_TOTALS,
        [
            {
                "b_id": payment_id,
                "b_seen_status": seen[payment_id].status,
                "b_seen_refunded": seen[payment_id].refunded_minor,
                "b_seen_reserved": seen[payment_id].reserved_minor,
                "b_status": after[payment_id].status,
                "b_refunded": after[payment_id].refunded_minor,
                "b_reserved": after[payment_id].reserved_minor,
            }
            for payment_id in changed
        ],
    )
    if conn.dialect.supports_sane_multi_rowcount:
        if moved.rowcount != len(changed):
            raise RuntimeError(f"refund totals moved on {moved.rowcount} of {len(changed)}")
        return
    rows = await conn.execute(_TOTALS_WRITTEN_HERE, {"payment_ids": changed})
    now = {
        row.id: Totals(row.status, row.refunded_minor, row.refund_reserved_minor) for row in rows
    }
    if any(now.get(payment_id) != after[payment_id] for payment_id in changed):
        raise RuntimeError("refund totals are not what the batch wrote")


def refund_error_columns(error: ErrorInfo | None) -> dict[str, Any]:
    return {
        "error_code": None if error is None else error.code.value,
        "error_message": None if error is None else error.message,
        "decline_code": None if error is None else error.decline_code,
    }


def refund_values(view: RefundView, provider: str | None) -> dict[str, Any]:
    """The refund's row as an insert writes it (claim columns apart)."""
    return {
        "id": view.refund_id,
        "payment_id": view.payment_request_id,
        "order_id": view.order_id,
        "idempotency_key": view.idempotency_key,
        "parameters_hash": view.parameters_hash,
        "amount_minor": None if view.amount is None else view.amount.minor_units,
        "currency": None if view.amount is None else view.amount.currency,
        "reason": None if view.reason is None else view.reason.value,
        "status": view.status.value,
        "provider": provider,
        "provider_reference": view.provider_reference,
        "created_at": view.created_at,
        "updated_at": view.updated_at,
        **refund_error_columns(view.error),
    }


def refund_view_of(row: Any) -> RefundView:
    """The refund from a row of the refunds table (attributes by column name)."""
    amount = None if row.amount_minor is None else Money(row.amount_minor, row.currency)
    return RefundView(
        refund_id=row.id,
        payment_request_id=row.payment_id,
        order_id=row.order_id,
        idempotency_key=row.idempotency_key,
        amount=amount,
        reason=None if row.reason is None else RefundReason(row.reason),
        status=RefundStatus(row.status),
        provider=row.provider,
        provider_reference=row.provider_reference,
        error=None
        if row.error_code is None
        else ErrorInfo(
            code=ErrorCode(row.error_code),
            message=row.error_message or "",
            decline_code=row.decline_code,
        ),
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
        parameters_hash=row.parameters_hash,
    )


class RowValues:
    """Column values by name as attributes, as :func:`refund_view_of` reads a row: a row
    read before an update, with the values the update wrote."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None


def ids_in_order(ids: Sequence[str]) -> list[str]:
    """Distinct ids, sorted: the order rows are locked in, so that two transactions locking
    overlapping sets queue instead of deadlocking."""
    return sorted(set(ids))
