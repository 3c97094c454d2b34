"""Beginning a payment: one operation, or a batch of them, in the writer's transaction.

:func:`begin_one` records a new payment and its first attempt *before* the provider is
called (write-ahead), claimed for the caller (see persistence.claims), refuses it (order
protection), or reports what already exists for its id. :func:`begin_many` makes the same
decisions for a batch from one read of all their orders, with one insert per table.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy import bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.errors import PaygateError
from domain.idempotency import OrderPayment, resolve_key
from domain.order_protection import refusal_for_new_payment
from domain.payment_view import PaymentView
from domain.payments import CreatePayment
from domain.status import PaymentStatus
from domain.webhook_events import WebhookEvent
from persistence.attempts import ATTEMPT_STARTED, attempt_key_for
from persistence.claims import Claim, claim_columns
from persistence.engine import as_utc
from persistence.group_commit import Bulk, run_bulks
from persistence.lock_order import lock_order_scopes, order_scope
from persistence.outbox import OutboxMessage, outbox_row
from persistence.payment_rows import (
    error_columns,
    insert_rows,
    new_payment_row,
    payment_in,
)
from persistence.tables import outbox, payments, provider_attempts
from persistence.webhook_fanout import enqueue_webhooks
from telemetry.trace_context import current_traceparent


@dataclass(frozen=True, slots=True)
class Started:
    """New payment: the attempt is committed and claimed for the caller; call the provider
    with ``attempt_key``, and pass ``claim.token`` to every later write."""

    attempt_key: str
    created_at: datetime
    claim: Claim
    generation: int = 0


@dataclass(frozen=True, slots=True)
class Existing:
    """The id is already known. ``same_parameters`` tells a replay from a conflicting reuse;
    ``open_attempt_key`` is set when the last attempt has no recorded outcome (in doubt);
    ``open_attempt_provider`` is the provider it was sent to, the only one to ask about it."""

    payment: PaymentView
    same_parameters: bool
    open_attempt_key: str | None
    open_attempt_started_at: datetime | None = None
    open_attempt_provider: str | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """Order protection refused the payment; it is stored as failed with ``error``."""

    error: PaygateError
    created_at: datetime
    generation: int = 0


BeginResult = Started | Existing | Refused


@dataclass(frozen=True, slots=True)
class BeginRequest:
    command: CreatePayment
    parameters_hash: str
    provider: str
    account_key: bytes
    refusal_event: Callable[[CreatePayment, PaygateError, datetime], OutboxMessage]
    now: datetime
    claim: Claim
    seal: Callable[[CreatePayment], bytes] | None
    # Writes that commit with the begin when it makes a new payment, stored or refused (the
    # vault rows of the tokens the command names: persistence.group_commit.run_bulks);
    # not run when the payment already exists.
    along: tuple[Bulk, ...] = ()
    # The caller's trace context, taken here in its task: a refusal event is made in the
    # group commit's, with many begins together (telemetry.trace_context).
    traceparent: str | None = field(default_factory=current_traceparent)

    @property
    def order(self) -> tuple[str | None, str]:
        return (self.command.client_id, self.command.order_id)


@dataclass(frozen=True, slots=True)
class _NewPayment:
    """The rows a begin that makes a new payment inserts, and what it answers."""

    result: Started | Refused
    payment: dict[str, Any]
    attempt: dict[str, Any] | None
    event: dict[str, Any] | None
    # With the time of this begin: queued with the event (persistence.webhook_fanout).
    webhook: tuple[WebhookEvent, datetime] | None = None


def _new_payment(request: BeginRequest, order: list[OrderPayment], generation: int) -> _NewPayment:
    """Decide (order protection included) what a begin inserts for a new payment."""
    resolved = request.command.of_generation(generation)
    payment_id = resolved.payment_request_id
    now = request.now
    row = new_payment_row(
        resolved, request.parameters_hash, request.account_key, request.provider, now
    )
    refusal = refusal_for_new_payment(
        (p.status for p in order), new_attempt=request.command.new_attempt
    )
    if refusal is not None:
        refusal_event = request.refusal_event(resolved, refusal, now)
        return _NewPayment(
            Refused(refusal, now, generation),
            {
                **row,
                "status": PaymentStatus.FAILED.value,
                **error_columns(refusal),
                **claim_columns(None),
            },
            None,
            outbox_row(dataclasses.replace(refusal_event, traceparent=request.traceparent), now),
            None if refusal_event.webhook is None else (refusal_event.webhook, now),
        )
    return _NewPayment(
        Started(attempt_key_for(payment_id, 1), now, request.claim, generation),
        # The error columns too, so that every row of a multi-row insert has the same keys.
        {
            **row,
            "status": PaymentStatus.PROCESSING.value,
            **error_columns(None),
            **claim_columns(request.claim),
        },
        {
            "attempt_key": attempt_key_for(payment_id, 1),
            "payment_id": payment_id,
            "attempt_no": 1,
            "provider": request.provider,
            "status": ATTEMPT_STARTED,
            "created_at": now,
            "sealed_request": None if request.seal is None else request.seal(resolved),
            "opened_by": request.claim.token,
        },
        None,
    )


async def begin_one(conn: AsyncConnection, request: BeginRequest) -> BeginResult:
    """Decide, then write: the ``along`` writes run only for a new payment (stored or
    refused), just before its rows, never for a payment that already exists."""
    command = request.command
    await _lock_orders(conn, [(command.client_id, command.order_id)])
    # One query of the order's payments answers both "does this key stand for a
    # payment?" and "is the order paid?".
    order = await order_payments_in(conn, command.order_id, command.client_id)
    key = resolve_key(order, command.idempotency_key)
    if key.live_payment_id is not None:
        # A redelivery (or a conflicting reuse) of a payment that began: its command's new
        # tokens are not stored. They name nothing (the payment names the first delivery's),
        # and storing them would refuse a shredded client's redelivery (client_shredded)
        # instead of answering it with where its payment stands.
        existing = await existing_in(conn, key.live_payment_id, request.parameters_hash)
        assert existing is not None
        return existing
    new = _new_payment(request, order, key.next_generation)
    # Before the payment's rows, in the same transaction: a write refused here (a shredded
    # client, a retired data key) fails the begin, nothing of it written.
    await run_bulks(conn, request.along)
    await conn.execute(insert(payments).values(**new.payment))
    if new.attempt is not None:
        await conn.execute(insert(provider_attempts).values(**new.attempt))
    if new.event is not None:
        await conn.execute(insert(outbox).values(**new.event))
    if new.webhook is not None:
        await enqueue_webhooks(conn, [new.webhook])
    return new.result


async def begin_many(conn: AsyncConnection, requests: Sequence[BeginRequest]) -> list[BeginResult]:
    """Many begins in one transaction: the same decisions as :func:`begin_one`, made from
    one read of all their orders, with one insert per table.

    Only a new payment of an order nobody else in the batch touches is decided here; a
    known key (a replay) or two begins of one order run :func:`begin_one` after the bulk
    inserts, under the same locks, so each sees what the others wrote. As there, the
    ``along`` writes run only for the begins that make a new payment.
    """
    await _lock_orders(conn, [request.order for request in requests])
    orders = await payments_of_orders(conn, {request.command.order_id for request in requests})
    per_order = Counter(request.order for request in requests)
    results: list[BeginResult | None] = [None] * len(requests)
    alone: list[int] = []
    new: list[_NewPayment] = []
    along: list[Bulk] = []
    for index, request in enumerate(requests):
        order = orders.get(request.order, [])
        key = resolve_key(order, request.command.idempotency_key)
        if per_order[request.order] > 1 or key.live_payment_id is not None:
            alone.append(index)
            continue
        planned = _new_payment(request, order, key.next_generation)
        new.append(planned)
        along.extend(request.along)
        results[index] = planned.result
    await run_bulks(conn, along)
    await insert_rows(conn, payments, [n.payment for n in new])
    await insert_rows(conn, provider_attempts, [n.attempt for n in new if n.attempt is not None])
    await insert_rows(conn, outbox, [n.event for n in new if n.event is not None])
    if new:
        await enqueue_webhooks(conn, [n.webhook for n in new if n.webhook is not None])
    for index in alone:
        results[index] = await begin_one(conn, requests[index])
    return [_answered(result) for result in results]


def _answered(result: BeginResult | None) -> BeginResult:
    assert result is not None, "every begin of a batch is answered"
    return result


async def _lock_orders(conn: AsyncConnection, orders: Sequence[tuple[str | None, str]]) -> None:
    """Lock the orders (a PostgreSQL advisory lock per (client, order), held until the
    transaction ends: rows that do not exist yet cannot be locked), in one statement.

    The writer queue took them already, first of all its batch's locks
    (persistence.lock_order); taken again here, they cost nothing and keep this function
    right on its own.
    """
    if conn.dialect.name != "postgresql":
        return  # SQLite: write transactions already hold the database write lock from BEGIN.
    await lock_order_scopes(
        conn, (order_scope(order_id, client_id) for client_id, order_id in orders)
    )


# What a payment of an order is read as: an OrderPayment, and the client and order it is
# grouped by. persistence.raw_reads reads the same columns.
ORDER_PAYMENT_COLUMNS: Final = (
    payments.c.id,
    payments.c.idempotency_key,
    payments.c.status,
    payments.c.key_expired,
    payments.c.order_id,
    payments.c.client_id,
)

# Built once, for its memoized cache key (see persistence.payment_rows).
_PAYMENTS_OF_ORDERS: Final = select(*ORDER_PAYMENT_COLUMNS).where(
    payments.c.order_id.in_(bindparam("order_ids", expanding=True))
)


async def payments_of_orders(
    conn: AsyncConnection, order_ids: set[str]
) -> dict[tuple[str | None, str], list[OrderPayment]]:
    """The payments of each (client, order) of these order ids, for key resolution and
    order protection."""
    rows = await conn.execute(_PAYMENTS_OF_ORDERS, {"order_ids": sorted(order_ids)})
    orders: dict[tuple[str | None, str], list[OrderPayment]] = {}
    for row in rows:
        orders.setdefault((row.client_id, row.order_id), []).append(
            OrderPayment(row.id, row.idempotency_key, PaymentStatus(row.status), row.key_expired)
        )
    return orders


async def existing_in(
    conn: AsyncConnection, payment_id: str, parameters_hash: str
) -> Existing | None:
    payment = await payment_in(conn, payment_id)
    if payment is None:
        return None
    open_attempt = (
        await conn.execute(
            select(
                provider_attempts.c.attempt_key,
                provider_attempts.c.created_at,
                provider_attempts.c.provider,
            )
            .where(provider_attempts.c.payment_id == payment_id)
            .where(provider_attempts.c.finished_at.is_(None))
            .order_by(provider_attempts.c.attempt_no.desc())
            .limit(1)
        )
    ).one_or_none()
    return Existing(
        payment=payment,
        same_parameters=payment.parameters_hash == parameters_hash,
        open_attempt_key=None if open_attempt is None else open_attempt.attempt_key,
        open_attempt_started_at=None if open_attempt is None else as_utc(open_attempt.created_at),
        open_attempt_provider=None if open_attempt is None else open_attempt.provider,
    )


async def order_payments_in(
    conn: AsyncConnection, order_id: str, client_id: str | None
) -> list[OrderPayment]:
    return (await payments_of_orders(conn, {order_id})).get((client_id, order_id), [])
