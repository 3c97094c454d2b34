"""Finishing a refund: the provider's answer, the payment's totals and the result event, in
one transaction, for one operation or a batch of them.

Only the claim's holder finishes (see persistence.claims). ``succeeded`` moves the refund's
reservation into the payment's refunded total, ``failed`` releases it, ``pending`` keeps it;
the event reports the payment's totals as the refund leaves them, read under the payment's
row lock. The writer queue holds both rows, the payment's and then the refund's, before
this runs (persistence.lock_order); the statements here lock nothing new.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.error_info import ErrorInfo
from domain.provider_refunds import status_with_refunds
from domain.refunds import RefundStatus
from domain.status import PaymentStatus
from persistence.claims import claim_columns, release_claim
from persistence.outbox import OutboxMessage, enqueue_outbox, outbox_row, webhooks_of
from persistence.payment_rows import captured_minor_of, insert_rows, status_with_refunds_of
from persistence.refund_rows import (
    OPEN_STATUSES,
    PaymentRefunds,
    RefundEventBuilder,
    RowValues,
    Totals,
    ids_in_order,
    lock_payment_of,
    refund_error_columns,
    refund_row_in,
    refund_view_of,
    set_totals,
    standing_in,
    standing_of,
)
from persistence.tables import outbox, payments, refunds
from persistence.webhook_fanout import enqueue_webhooks
from telemetry.trace_context import current_traceparent


@dataclass(frozen=True, slots=True)
class RefundFinishRequest:
    refund_id: str
    claim: str
    status: RefundStatus
    provider_reference: str | None
    error: ErrorInfo | None
    event: RefundEventBuilder
    now: datetime
    # The caller's trace context, taken in its task (see RefundBeginRequest).
    traceparent: str | None = field(default_factory=current_traceparent)

    @property
    def from_statuses(self) -> tuple[str, ...]:
        """The statuses the refund may move from: pending only from processing (a pending
        refund asked to stay pending records nothing), a final answer from either."""
        if self.status is RefundStatus.PENDING:
            return (RefundStatus.PROCESSING.value,)
        return OPEN_STATUSES

    def traced(self, event: OutboxMessage) -> OutboxMessage:
        """The event under the caller's trace context (see RefundBeginRequest)."""
        return dataclasses.replace(event, traceparent=self.traceparent)

    def changes(self) -> dict[str, Any]:
        """The refund row's new values (its claim goes with the answer)."""
        return {
            "status": self.status.value,
            "provider_reference": self.provider_reference,
            "updated_at": self.now,
            **refund_error_columns(self.error),
            **claim_columns(None),
        }


# Built once, for their memoized cache keys (see persistence.refund_rows). The settlement
# and the release return the totals they leave: the event's standing, read under the row
# lock the UPDATE holds (RETURNING: SQLite 3.35 or later, as the rate limit).
_refunded_after: Final = payments.c.refunded_minor + bindparam("refund_minor")
_SETTLE: Final = (
    update(payments)
    .where(payments.c.id == bindparam("payment_id"))
    .where(payments.c.refund_reserved_minor >= bindparam("refund_minor"))
    .values(
        refunded_minor=_refunded_after,
        refund_reserved_minor=payments.c.refund_reserved_minor - bindparam("refund_minor"),
        status=status_with_refunds_of(payments, _refunded_after),
    )
    .returning(payments.c.status, payments.c.refunded_minor)
)
_RELEASE: Final = (
    update(payments)
    .where(payments.c.id == bindparam("payment_id"))
    .where(payments.c.refund_reserved_minor >= bindparam("refund_minor"))
    .values(refund_reserved_minor=payments.c.refund_reserved_minor - bindparam("refund_minor"))
    .returning(payments.c.status, payments.c.refunded_minor)
)
# Only the refunds held with one of the batch's claims are read here: a finish with another's
# claim changes nothing, and runs finish_one, whose conditional UPDATE passes over a row it
# does not match. (Every refund the batch names, and its payment, is locked already, in the
# writers' one order: persistence.lock_order.)
_REFUNDS_LOCKED: Final = (
    select(refunds)
    .where(refunds.c.id.in_(bindparam("refund_ids", expanding=True)))
    .where(refunds.c.claim_token.in_(bindparam("claims", expanding=True)))
    .order_by(refunds.c.id)
    .with_for_update()
)
_TOTALS_LOCKED: Final = (
    select(
        payments.c.id,
        payments.c.status,
        payments.c.refunded_minor,
        payments.c.refund_reserved_minor,
        captured_minor_of(payments).label("captured_minor"),
    )
    .where(payments.c.id.in_(bindparam("payment_ids", expanding=True)))
    .order_by(payments.c.id)
    .with_for_update()
)
# Moves a refund read under its lock, re-checking what was read (bind names differ from
# column names: SQLAlchemy reserves those for the SET clause).
_MOVE_REFUND: Final = (
    update(refunds)
    .where(refunds.c.id == bindparam("b_id"))
    .where(refunds.c.status == bindparam("b_seen"))
    .where(refunds.c.claim_token == bindparam("b_claim"))
    .values(
        status=bindparam("b_status"),
        provider_reference=bindparam("b_provider_reference"),
        updated_at=bindparam("b_now"),
        claim_token=None,
        claim_expires_at=None,
        **{name: bindparam(f"b_{name}") for name in refund_error_columns(None)},
    )
)


async def finish_one(conn: AsyncConnection, request: RefundFinishRequest) -> bool:
    """Record the provider's answer, move the payment's totals, queue the event; False,
    changing nothing but releasing the caller's claim, if the refund does not move."""
    refund_id = request.refund_id
    # Conditional: of two resolvers, only the first moves the refund (the row lock on
    # PostgreSQL makes the second wait, then find nothing to move).
    moved = await conn.execute(
        update(refunds)
        .where(refunds.c.id == refund_id)
        .where(refunds.c.status.in_(request.from_statuses))
        .where(refunds.c.claim_token == request.claim)
        .values(**request.changes())
    )
    if moved.rowcount != 1:
        # Nothing to record (already final, or pending and still pending): the caller's
        # work on the refund is over all the same, so its claim goes.
        await release_claim(conn, refunds, refund_id, request.claim)
        return False
    row = await refund_row_in(conn, refund_id)
    assert row is not None
    # The event's totals are read under the payment's row lock, as a replay reads them
    # (RefundStore.republish), held since the transaction began (persistence.lock_order).
    # A settling or releasing outcome's UPDATE takes that lock itself and returns the
    # totals it leaves, so it needs no lock or read of its own. A pending outcome changes
    # no total: it locks the row first, else it would read the totals unlocked, and its
    # event could be queued after a settling refund's with the totals from before it.
    standing: PaymentRefunds | None
    if request.status is RefundStatus.SUCCEEDED:
        standing = await _moved_totals(conn, _SETTLE, row.payment_id, row.amount_minor)
    elif request.status is RefundStatus.FAILED:
        standing = await _moved_totals(conn, _RELEASE, row.payment_id, row.amount_minor)
    else:
        await lock_payment_of(conn, refund_id)
        standing = await standing_in(conn, row.payment_id)
    event = request.event(refund_view_of(row), standing)
    await enqueue_outbox(conn, request.traced(event), request.now)
    return True


async def _moved_totals(
    conn: AsyncConnection, statement: Any, payment_id: str, amount_minor: int
) -> PaymentRefunds:
    """Settle or release the reservation; the payment's totals after it."""
    moved = (
        await conn.execute(statement, {"payment_id": payment_id, "refund_minor": amount_minor})
    ).one_or_none()
    if moved is None:
        # Only begin reserves and only the finish of an open refund settles: a missing
        # reservation means the totals were edited by hand. Roll back, do not guess.
        raise RuntimeError(f"payment {payment_id} has no reservation for this refund")
    return standing_of(moved)


async def finish_many(conn: AsyncConnection, requests: Sequence[RefundFinishRequest]) -> list[bool]:
    """Many finishes in one transaction, with :func:`finish_one`'s semantics.

    The refunds held with the batch's claims are read in one query (in id order; a refund
    another holds is not read, see :data:`_REFUNDS_LOCKED`), then their payments (in id
    order; the writer queue holds all these rows already, payments before refunds:
    persistence.lock_order); which refunds move is decided from what was read, and the moves are one
    executemany that re-checks it per row. The payments' totals are worked out refund
    after refund in the batch's order, so two refunds of one payment each report the
    totals they leave, as one finished after the other would; they are written as one
    compare-and-set per payment (persistence.refund_rows.set_totals). A refund that does
    not move (not open, another's claim), is not found, or is twice in the batch runs
    :func:`finish_one` after the bulk statements.
    """
    per_refund = Counter(request.refund_id for request in requests)
    locked = await conn.execute(
        _REFUNDS_LOCKED,
        {
            "refund_ids": ids_in_order(list(per_refund)),
            "claims": sorted({request.claim for request in requests}),
        },
    )
    found: dict[str, Any] = {row.id: row for row in locked}
    alone: list[int] = []
    moves: list[int] = []
    for index, request in enumerate(requests):
        row = found.get(request.refund_id)
        if (
            row is None
            or per_refund[request.refund_id] > 1
            or row.status not in request.from_statuses
            or row.claim_token != request.claim
        ):
            alone.append(index)  # unusual: decided one at a time
        else:
            moves.append(index)
    results = [False] * len(requests)
    if moves:
        await _move_refunds(conn, [(requests[i], found[requests[i].refund_id]) for i in moves])
        events = await _settle_many(
            conn, [(requests[i], found[requests[i].refund_id]) for i in moves]
        )
        await insert_rows(conn, outbox, [outbox_row(event, now) for event, now in events])
        await enqueue_webhooks(conn, webhooks_of(events))
        for index in moves:
            results[index] = True
    for index in alone:
        results[index] = await finish_one(conn, requests[index])
    return results


async def _move_refunds(
    conn: AsyncConnection, moves: Sequence[tuple[RefundFinishRequest, Any]]
) -> None:
    moved = await conn.execute(
        _MOVE_REFUND,
        [
            {
                "b_id": request.refund_id,
                "b_seen": row.status,
                "b_claim": request.claim,
                "b_status": request.status.value,
                "b_provider_reference": request.provider_reference,
                "b_now": request.now,
                **{
                    f"b_{name}": value
                    for name, value in refund_error_columns(request.error).items()
                },
            }
            for request, row in moves
        ],
    )
    # The rows are locked since they were read, so every one moves; checked where the
    # driver can count an executemany (SQLite), as a guard on that reasoning.
    if conn.dialect.supports_sane_multi_rowcount and moved.rowcount != len(moves):
        raise RuntimeError(f"bulk refund finish moved {moved.rowcount} of {len(moves)} refunds")


async def _settle_many(
    conn: AsyncConnection, moves: Sequence[tuple[RefundFinishRequest, Any]]
) -> list[tuple[OutboxMessage, datetime]]:
    """Move the payments' totals for the moved refunds, in the batch's order; the refunds'
    events, each with the totals its refund leaves."""
    payment_ids = ids_in_order([row.payment_id for _, row in moves])
    locked = await conn.execute(_TOTALS_LOCKED, {"payment_ids": payment_ids})
    captured: dict[str, int] = {}
    seen: dict[str, Totals] = {}
    for payment in locked:
        captured[payment.id] = payment.captured_minor
        seen[payment.id] = Totals(
            payment.status, payment.refunded_minor, payment.refund_reserved_minor
        )
    running = dict(seen)
    events: list[tuple[OutboxMessage, datetime]] = []
    for request, row in moves:
        totals = running.get(row.payment_id)
        standing: PaymentRefunds | None = None
        if request.status is not RefundStatus.PENDING:
            if totals is None or totals.reserved_minor < row.amount_minor:
                # As finish_one: a missing reservation means the totals were edited by
                # hand. Roll back, do not guess.
                raise RuntimeError(f"payment {row.payment_id} has no reservation for this refund")
            totals = _after(request.status, totals, row.amount_minor, captured[row.payment_id])
            running[row.payment_id] = totals
        if totals is not None:
            standing = PaymentRefunds(PaymentStatus(totals.status), totals.refunded_minor)
        view = refund_view_of(RowValues({**row._mapping, **request.changes()}))
        events.append((request.traced(request.event(view, standing)), request.now))
    await set_totals(
        conn,
        seen,
        {
            payment_id: totals
            for payment_id, totals in running.items()
            if totals != seen[payment_id]
        },
    )
    return events


def _after(status: RefundStatus, totals: Totals, amount_minor: int, captured_minor: int) -> Totals:
    """The totals a settling (succeeded) or releasing (failed) refund leaves, as
    :data:`_SETTLE` and :data:`_RELEASE` compute them."""
    reserved = totals.reserved_minor - amount_minor
    if status is RefundStatus.FAILED:
        return dataclasses.replace(totals, reserved_minor=reserved)
    refunded = totals.refunded_minor + amount_minor
    return Totals(status_with_refunds(captured_minor, refunded).value, refunded, reserved)
