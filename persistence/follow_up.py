"""What a capture and a cancel share in the store: both follow up an authorization.

A follow-up begins in one transaction that

1. locks the payment row first (``FOR UPDATE`` on PostgreSQL; SQLite's write transaction
   holds the database lock), so every check below holds for the row the move then writes;
2. refuses a payment that does not exist or is not of the command's order, as unknown,
   with no event (there is no payment to tell the world about);
3. refuses a payment of another client scope (domain.client_scope) with the code and
   message of an unknown payment, before any status check. Unlike an unknown payment it
   exists, so its result event says the command was refused (unchanged payment, error
   ``not_found``): results readers see all payments anyway;
4. then lets the store decide by status: start (:func:`start_from_authorized`), report
   the follow-up under way or done, or refuse with a result event (:func:`refuse`).

The move out of ``authorized`` is one conditional update from ``authorized``, the same for
captures and cancels, so of two follow-ups of one payment crossing (two captures, or a
capture and a cancel) exactly one moves it; the other is refused, whatever the timing.
The mover holds the payment's claim (persistence.claims), and :func:`finish_follow_up`
applies only from the in-flight status and only with the holder's token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.client_scope import in_scope, no_payment_in_scope
from domain.error_info import ErrorInfo
from domain.errors import PaygateError
from domain.payment_view import PaymentView
from domain.status import PaymentStatus
from persistence.claims import Claim, claim_columns
from persistence.outbox import OutboxMessage, enqueue_outbox
from persistence.payment_rows import error_columns, payment_in
from persistence.tables import payments


class FollowUpCommand(Protocol):
    """What a capture or cancel command names: its payment, order and client scope."""

    @property
    def payment_request_id(self) -> str: ...

    @property
    def order_id(self) -> str: ...

    @property
    def client_id(self) -> str | None: ...


RefusalEvent = Callable[[PaymentView, PaygateError], OutboxMessage]
PaymentEventBuilder = Callable[[PaymentView], OutboxMessage]


@dataclass(frozen=True, slots=True)
class FollowUpStarted:
    """The payment is in flight (``capturing``, ``canceling``) and claimed for the caller:
    ask its provider, and pass ``claim.token`` to every later write."""

    payment: PaymentView
    claim: Claim


@dataclass(frozen=True, slots=True)
class FollowUpExisting:
    """A follow-up is under way or done: resolve or replay it."""

    payment: PaymentView


@dataclass(frozen=True, slots=True)
class FollowUpRefused:
    """Refused; ``payment`` is None when there is no such payment in the order."""

    error: PaygateError
    payment: PaymentView | None


FollowUpBegin = FollowUpStarted | FollowUpExisting | FollowUpRefused


async def locked_follow_up(
    conn: AsyncConnection,
    command: FollowUpCommand,
    refusal_event: RefusalEvent,
    now: datetime,
) -> PaymentView | FollowUpRefused:
    """Steps 1 to 3 of the module docstring: the locked payment the command may act on,
    or its refusal (with the refusal's event queued when the payment exists)."""
    await conn.execute(
        select(payments.c.id).where(payments.c.id == command.payment_request_id).with_for_update()
    )
    payment = await payment_in(conn, command.payment_request_id)
    if payment is None or payment.order_id != command.order_id:
        return FollowUpRefused(no_payment_in_scope(), None)
    if not in_scope(payment.client_id, command.client_id):
        return await refuse(conn, payment, no_payment_in_scope(), refusal_event, now)
    return payment


async def refuse(
    conn: AsyncConnection,
    payment: PaymentView,
    error: PaygateError,
    refusal_event: RefusalEvent,
    now: datetime,
) -> FollowUpRefused:
    """Refuse the follow-up of an existing payment, its result event in the same
    transaction."""
    await enqueue_outbox(conn, refusal_event(payment, error), now)
    return FollowUpRefused(error, payment)


async def start_from_authorized(
    conn: AsyncConnection,
    payment_request_id: str,
    *,
    in_flight: PaymentStatus,
    claim: Claim,
    now: datetime,
    values: dict[str, Any] | None = None,
) -> FollowUpStarted:
    """Move the locked, ``authorized`` payment to ``in_flight``, claimed by ``claim``,
    writing ``values`` too: the conditional update every follow-up shares."""
    moved = await conn.execute(
        update(payments)
        .where(payments.c.id == payment_request_id)
        .where(payments.c.status == PaymentStatus.AUTHORIZED.value)
        .values(
            status=in_flight.value,
            updated_at=now,
            **(values or {}),
            **claim_columns(claim),
        )
    )
    assert moved.rowcount == 1  # the row is locked and was authorized
    started = await payment_in(conn, payment_request_id)
    assert started is not None
    return FollowUpStarted(started, claim)


async def finish_follow_up(
    conn: AsyncConnection,
    payment_request_id: str,
    *,
    in_flight: PaymentStatus,
    claim: str,
    status: PaymentStatus,
    error: ErrorInfo | None,
    event: PaymentEventBuilder,
    now: datetime,
    values: dict[str, Any] | None = None,
) -> bool:
    """Record the follow-up's outcome (``status``, ``error``, ``values``) and its result
    event, and release the claim. Only from ``in_flight`` and only for the claim's holder:
    returns False, changing nothing, otherwise."""
    moved = await conn.execute(
        update(payments)
        .where(payments.c.id == payment_request_id)
        .where(payments.c.status == in_flight.value)
        .where(payments.c.claim_token == claim)
        .values(
            status=status.value,
            updated_at=now,
            **(values or {}),
            **error_columns(error),
            **claim_columns(None),
        )
    )
    if moved.rowcount != 1:
        return False
    payment = await payment_in(conn, payment_request_id)
    assert payment is not None
    await enqueue_outbox(conn, event(payment), now)
    return True
