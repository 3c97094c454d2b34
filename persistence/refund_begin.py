"""Beginning a refund: one operation, or a batch of them, in the writer's transaction.

:func:`begin_one` reserves a new refund's amount against its payment and records the
refund, claimed for the caller (see persistence.claims), *before* the provider is called
(write-ahead); refuses it; or reports what already exists for its id. :func:`begin_many`
makes the same decisions for a batch from one locked read of all their payments and one
read of their refund ids, with one statement per table.

The invariant (persistence.refund_store): a payment's succeeded refunds plus its refunds not
final yet never exceed what it captured. Each payment's row is locked before its totals are
read, and a refund is reserved only against what remains after every reservation made
before it, in this transaction included: in a batch, the refunds of one payment are decided
one after another against the remainder the earlier ones left, and the reservation is one
guarded UPDATE per payment for their sum (see :func:`begin_many`).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.client_scope import in_scope, no_payment_in_scope
from domain.error_info import ErrorInfo
from domain.errors import ErrorCode, PaygateError
from domain.money import Money
from domain.refund_rules import refusal_for_refund
from domain.refund_view import RefundView
from domain.refunds import RefundPayment, RefundStatus
from domain.status import CAPTURED, PaymentStatus
from persistence.claims import Claim, claim_columns
from persistence.outbox import OutboxMessage, enqueue_outbox, outbox_row, webhooks_of
from persistence.payment_rows import captured_minor_of, insert_rows
from persistence.refund_rows import (
    PaymentRefunds,
    RefundEventBuilder,
    Totals,
    ids_in_order,
    refund_row_in,
    refund_values,
    refund_view_of,
    set_totals,
)
from persistence.tables import outbox, payments, refunds
from persistence.webhook_fanout import enqueue_webhooks
from telemetry.trace_context import current_traceparent


@dataclass(frozen=True, slots=True)
class RefundStarted:
    """The amount is reserved and the refund committed and claimed for the caller: call
    ``provider`` with it, and pass ``claim.token`` to every later write."""

    refund: RefundView
    charge_reference: str
    claim: Claim


@dataclass(frozen=True, slots=True)
class RefundExisting:
    """The refund id is known: a replay (``same_parameters``) or a conflicting reuse."""

    refund: RefundView
    same_parameters: bool
    charge_reference: str | None


@dataclass(frozen=True, slots=True)
class RefundRefused:
    """Refused with ``error``; stored as failed (``refund``) unless the payment is unknown."""

    error: PaygateError
    refund: RefundView | None


RefundBegin = RefundStarted | RefundExisting | RefundRefused


@dataclass(frozen=True, slots=True)
class RefundBeginRequest:
    command: RefundPayment
    parameters_hash: str
    event: RefundEventBuilder
    now: datetime
    claim: Claim
    # The caller's trace context, taken here in its task: in a batch, the events are made
    # in the group commit's task, under the first caller's span (telemetry.trace_context).
    traceparent: str | None = field(default_factory=current_traceparent)


# Built once, for their memoized cache keys (see persistence.refund_rows).
_PAYMENT_LOCKED: Final = (
    select(payments).where(payments.c.id == bindparam("payment_id")).with_for_update()
)
_PAYMENTS_LOCKED: Final = (
    select(payments)
    .where(payments.c.id.in_(bindparam("payment_ids", expanding=True)))
    .order_by(payments.c.id)
    .with_for_update()
)
_REFUNDS_BY_IDS: Final = select(refunds).where(
    refunds.c.id.in_(bindparam("refund_ids", expanding=True))
)
_RESERVE: Final = (
    update(payments)
    .where(payments.c.id == bindparam("payment_id"))
    .where(payments.c.status.in_([s.value for s in CAPTURED]))
    .where(
        captured_minor_of(payments) - payments.c.refunded_minor - payments.c.refund_reserved_minor
        >= bindparam("refund_minor")
    )
    .values(refund_reserved_minor=payments.c.refund_reserved_minor + bindparam("refund_minor"))
)
_PAYMENT_CLIENT: Final = select(payments.c.client_id).where(
    payments.c.id == bindparam("payment_id")
)
_CHARGE_REFERENCE: Final = select(payments.c.provider_reference).where(
    payments.c.id == bindparam("payment_id")
)


@dataclass(frozen=True, slots=True)
class _Decided:
    """What a new refund of a found payment of the command's scope comes to."""

    view: RefundView
    error: PaygateError | None
    standing: PaymentRefunds
    provider: str | None
    charge_reference: str | None


def _decide(request: RefundBeginRequest, payment: Any, reserved_before: int) -> _Decided:
    """Refuse or reserve against what remains of ``payment`` (its row, read under its lock)
    once ``reserved_before`` more is reserved (by refunds decided before it in the batch)."""
    command = request.command
    standing = PaymentRefunds(PaymentStatus(payment.status), payment.refunded_minor)
    captured = payment.amount_minor if payment.captured_minor is None else payment.captured_minor
    remaining = captured - payment.refunded_minor - payment.refund_reserved_minor - reserved_before
    error = refusal_for_refund(
        status=standing.status,
        payment_currency=payment.currency,
        remaining_minor=remaining,
        requested=command.amount,
    )
    if error is None and payment.provider_reference is None:
        error = PaygateError(
            ErrorCode.PAYMENT_NOT_REFUNDABLE,
            "the provider gave no reference for this payment, so it cannot be refunded",
        )
    amount = command.amount or (Money(remaining, payment.currency) if remaining > 0 else None)
    if error is not None:
        view = _refused_view(request, amount, error)
        return _Decided(view, error, standing, payment.provider, None)
    assert amount is not None
    view = RefundView(
        refund_id=command.refund_id,
        payment_request_id=command.payment_request_id,
        order_id=command.order_id,
        idempotency_key=command.idempotency_key,
        amount=amount,
        reason=command.reason,
        status=RefundStatus.PROCESSING,
        provider=payment.provider,
        provider_reference=None,
        error=None,
        created_at=request.now,
        updated_at=request.now,
        parameters_hash=request.parameters_hash,
    )
    return _Decided(view, None, standing, payment.provider, payment.provider_reference)


def _is_unknown(request: RefundBeginRequest, payment: Any) -> bool:
    """Whether the command names no payment of its order and client scope."""
    command = request.command
    return (
        payment is None
        or payment.order_id != command.order_id
        or not in_scope(payment.client_id, command.client_id)
    )


def _unknown(request: RefundBeginRequest) -> tuple[RefundRefused, OutboxMessage]:
    # Nothing stored: a failed refund of another client's payment would show in that
    # client's refunds. The event is the one an unknown payment gets, for its sender on the
    # results topic only: its webhook would be queued to the endpoints of the client whose
    # payment the id names, telling that client of another's refund attempt.
    unknown = no_payment_in_scope()
    view = _refused_view(request, None, unknown)
    event = dataclasses.replace(request.event(view, None), webhook=None)
    return RefundRefused(unknown, None), _traced(event, request)


async def begin_one(conn: AsyncConnection, request: RefundBeginRequest) -> RefundBegin:
    """Reserve and record a new refund, refuse it, or report the existing one."""
    command = request.command
    existing = await refund_row_in(conn, command.refund_id)
    if existing is not None:
        # Checked before replaying: a replay would show another scope the refund.
        client = (
            await conn.execute(_PAYMENT_CLIENT, {"payment_id": command.payment_request_id})
        ).one_or_none()
        if client is None or not in_scope(client.client_id, command.client_id):
            return await _refuse_unknown(conn, request)
        charge_reference: str | None = (
            await conn.execute(_CHARGE_REFERENCE, {"payment_id": existing.payment_id})
        ).scalar_one_or_none()
        return RefundExisting(
            refund_view_of(existing),
            existing.parameters_hash == request.parameters_hash,
            charge_reference,
        )
    payment = (
        await conn.execute(_PAYMENT_LOCKED, {"payment_id": command.payment_request_id})
    ).one_or_none()
    if _is_unknown(request, payment):
        return await _refuse_unknown(conn, request)
    decided = _decide(request, payment, 0)
    error = decided.error
    if error is None:
        assert decided.view.amount is not None
        if not await _reserve(conn, command.payment_request_id, decided.view.amount.minor_units):
            # Cannot happen with the row locked and the rule above; if it ever does, the
            # guard wins over the rule.
            error = PaygateError(
                ErrorCode.REFUND_EXCEEDS_CAPTURED,
                "the refund is above what remains refundable",
                param="amount",
            )
    if error is not None:
        view = _refused_view(request, decided.view.amount, error)
        await conn.execute(insert(refunds).values(**refund_values(view, decided.provider)))
        event = _traced(request.event(view, decided.standing), request)
        await enqueue_outbox(conn, event, request.now)
        return RefundRefused(error, view)
    await conn.execute(
        insert(refunds).values(
            **refund_values(decided.view, decided.provider), **claim_columns(request.claim)
        )
    )
    assert decided.charge_reference is not None
    return RefundStarted(decided.view, decided.charge_reference, request.claim)


async def _refuse_unknown(conn: AsyncConnection, request: RefundBeginRequest) -> RefundRefused:
    refused, event = _unknown(request)
    await enqueue_outbox(conn, event, request.now)
    return refused


async def _reserve(conn: AsyncConnection, payment_id: str, amount_minor: int) -> bool:
    """The invariant's guard: reserve only what remains, only on a captured payment."""
    moved = await conn.execute(_RESERVE, {"payment_id": payment_id, "refund_minor": amount_minor})
    return moved.rowcount == 1


async def begin_many(
    conn: AsyncConnection, requests: Sequence[RefundBeginRequest]
) -> list[RefundBegin]:
    """Many begins in one transaction: the same decisions as :func:`begin_one`, from one
    locked read of the batch's payments (in id order, as every batch locks them) and one
    read of its refund ids, with one statement per table.

    The refunds of one payment are decided in the batch's order, each against what the
    ones before it left (``reserved``), so two refunds that together exceed the remainder
    cannot both be reserved: the later one is refused, ``refund_exceeds_captured``, as one
    begun after the other would be. Their reservation is then one UPDATE per payment for
    their sum, from the totals read (whose status was checked refundable) and only while
    the sum fits what was captured, which the database checks; every one must move
    (persistence.refund_rows.set_totals), or the batch rolls back and runs one at a
    time. A refund id twice in the batch (a command and its duplicate) runs
    :func:`begin_one` after the bulk statements, so the second finds the first's refund.
    """
    per_refund = Counter(request.command.refund_id for request in requests)
    payment_ids = ids_in_order([request.command.payment_request_id for request in requests])
    # The payments are locked before the refund ids are read: a refund of them that
    # another writer inserts is committed by then (it held the payment's lock to insert it).
    locked = await conn.execute(_PAYMENTS_LOCKED, {"payment_ids": payment_ids})
    paid: dict[str, Any] = {row.id: row for row in locked}
    known_rows = await conn.execute(_REFUNDS_BY_IDS, {"refund_ids": sorted(per_refund)})
    known = {row.id: row for row in known_rows}
    results: list[RefundBegin | None] = [None] * len(requests)
    alone: list[int] = []
    reserved: dict[str, int] = {}
    rows: list[dict[str, Any]] = []
    events: list[tuple[OutboxMessage, datetime]] = []
    for index, request in enumerate(requests):
        command = request.command
        payment = paid.get(command.payment_request_id)
        existing = known.get(command.refund_id)
        if per_refund[command.refund_id] > 1:
            alone.append(index)
            continue
        if existing is not None and payment is not None and _in_scope(request, payment):
            results[index] = RefundExisting(
                refund_view_of(existing),
                existing.parameters_hash == request.parameters_hash,
                payment.provider_reference,
            )
            continue
        if existing is not None or _is_unknown(request, payment):
            refused, event = _unknown(request)
            results[index] = refused
            events.append((event, request.now))
            continue
        payment_id = command.payment_request_id
        decided = _decide(request, payment, reserved.get(payment_id, 0))
        if decided.error is not None:
            rows.append({**refund_values(decided.view, decided.provider), **claim_columns(None)})
            event = request.event(decided.view, decided.standing)
            events.append((_traced(event, request), request.now))
            results[index] = RefundRefused(decided.error, decided.view)
            continue
        assert decided.view.amount is not None
        assert decided.charge_reference is not None
        reserved[payment_id] = reserved.get(payment_id, 0) + decided.view.amount.minor_units
        rows.append(
            {**refund_values(decided.view, decided.provider), **claim_columns(request.claim)}
        )
        results[index] = RefundStarted(decided.view, decided.charge_reference, request.claim)
    await _reserve_many(conn, paid, reserved)
    await insert_rows(conn, refunds, rows)
    await insert_rows(conn, outbox, [outbox_row(event, now) for event, now in events])
    if events:
        await enqueue_webhooks(conn, webhooks_of(events))
    for index in alone:
        results[index] = await begin_one(conn, requests[index])
    return [_answered(result) for result in results]


async def _reserve_many(
    conn: AsyncConnection, paid: dict[str, Any], reserved: dict[str, int]
) -> None:
    """Reserve each payment's sum from the totals read under its lock; the database
    re-checks that it fits what was captured (persistence.refund_rows.set_totals)."""
    seen = {
        payment_id: Totals(
            paid[payment_id].status,
            paid[payment_id].refunded_minor,
            paid[payment_id].refund_reserved_minor,
        )
        for payment_id in reserved
    }
    after = {
        payment_id: dataclasses.replace(
            totals, reserved_minor=totals.reserved_minor + reserved[payment_id]
        )
        for payment_id, totals in seen.items()
    }
    await set_totals(conn, seen, after)


def _in_scope(request: RefundBeginRequest, payment: Any) -> bool:
    return in_scope(payment.client_id, request.command.client_id)


def _traced(event: OutboxMessage, request: RefundBeginRequest) -> OutboxMessage:
    """The event under its caller's trace context: made in the group commit's task, where
    a batch runs under its first caller's (the same as the caller's for an operation run
    alone)."""
    return dataclasses.replace(event, traceparent=request.traceparent)


def _answered(result: RefundBegin | None) -> RefundBegin:
    assert result is not None, "every begin of a batch is answered"
    return result


def _refused_view(
    request: RefundBeginRequest, amount: Money | None, error: PaygateError
) -> RefundView:
    command = request.command
    return RefundView(
        refund_id=command.refund_id,
        payment_request_id=command.payment_request_id,
        order_id=command.order_id,
        idempotency_key=command.idempotency_key,
        amount=amount,
        reason=command.reason,
        status=RefundStatus.FAILED,
        provider=None,
        provider_reference=None,
        error=ErrorInfo.from_error(error),
        created_at=request.now,
        updated_at=request.now,
        parameters_hash=request.parameters_hash,
    )
