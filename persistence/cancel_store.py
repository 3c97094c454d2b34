"""The cancel store: the write-ahead move to ``canceling``, and the void's outcome.

:meth:`CancelStore.begin` moves an ``authorized`` payment to ``canceling`` with one
conditional update, before the provider is asked, so a crash leaves a payment that says a
void may be under way (and the reconciler asks the provider), never a silent one. A capture
begins with the same conditional update from ``authorized`` (persistence.capture_store), so
of a cancel and a capture of one payment crossing, exactly one finds it ``authorized``: the
other is refused, whatever the timing. :meth:`CancelStore.finish` records the answer and its
result event in one transaction.

One owner per void (see persistence.claims): the move to ``canceling`` claims the payment
for the worker that made it; anyone else (a redelivery, the cancel reconciler) must take
the claim before asking the provider, and :meth:`CancelStore.finish` applies only with the
holder's token.

A cancel names its payment's client scope (domain.client_scope): one naming another scope
is refused ``not_found`` with a result event, in the begin's transaction, before any status
check, exactly as a capture is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.cancels import CancelPayment
from domain.client_scope import in_scope, no_payment_in_scope
from domain.clock import utc_now
from domain.error_info import ErrorInfo
from domain.errors import ErrorCode, PaygateError
from domain.payment_view import PaymentView
from domain.status import RELEASED, PaymentStatus
from persistence.claims import (
    Claim,
    claim_columns,
    claimable,
    least_recently_examined,
    new_claim,
    release_claim,
    renew_claim,
    take_claim,
)
from persistence.group_commit import GroupCommit
from persistence.outbox import Outbox, OutboxMessage, enqueue_outbox
from persistence.payment_rows import error_columns, payment_in, payment_view_of
from persistence.tables import payments

# Where a void's answer may take a payment: released, or back to authorized (not voided).
CANCEL_OUTCOMES: Final = frozenset(
    {PaymentStatus.CANCELED, PaymentStatus.EXPIRED, PaymentStatus.AUTHORIZED}
)


@dataclass(frozen=True, slots=True)
class CancelStarted:
    """The payment is ``canceling`` and claimed for the caller: ask its provider to void
    it, and pass ``claim.token`` to every later write."""

    payment: PaymentView
    claim: Claim


@dataclass(frozen=True, slots=True)
class CancelExisting:
    """A void is under way (``canceling``) or the hold is released (``canceled``,
    ``expired``): resolve or replay it."""

    payment: PaymentView


@dataclass(frozen=True, slots=True)
class CancelRefused:
    """Not cancelable; ``payment`` is None when there is no such payment in the order."""

    error: PaygateError
    payment: PaymentView | None


CancelBegin = CancelStarted | CancelExisting | CancelRefused
PaymentEventBuilder = Callable[[PaymentView], OutboxMessage]


class CancelStore:
    def __init__(
        self,
        engine: AsyncEngine,
        writes: GroupCommit,
        clock: Callable[[], datetime] = utc_now,
        *,
        claim_lease: timedelta = timedelta(seconds=30),
    ) -> None:
        """``writes`` is the payment store's group commit: one writer queue per database."""
        self._engine = engine
        self._writes = writes
        self._clock = clock
        self._lease = claim_lease
        self._outbox = Outbox(engine, writes, clock)

    async def begin(
        self,
        command: CancelPayment,
        refusal_event: Callable[[PaymentView, PaygateError], OutboxMessage],
    ) -> CancelBegin:
        now = self._clock()
        claim = new_claim(now, self._lease)

        async def record(conn: AsyncConnection) -> CancelBegin:
            # Locked first, as a capture's begin does, so the checks below hold for the row
            # the move then writes.
            await conn.execute(
                select(payments.c.id)
                .where(payments.c.id == command.payment_request_id)
                .with_for_update()
            )
            payment = await payment_in(conn, command.payment_request_id)
            if payment is None or payment.order_id != command.order_id:
                return CancelRefused(no_payment_in_scope(), None)
            if not in_scope(payment.client_id, command.client_id):
                # The code and message of an unknown payment. Unlike one, the payment
                # exists, so its result event says the cancel was refused (unchanged
                # payment, error not_found): results readers see all payments anyway.
                unknown = no_payment_in_scope()
                await enqueue_outbox(conn, refusal_event(payment, unknown), now)
                return CancelRefused(unknown, payment)
            if payment.status is PaymentStatus.AUTHORIZED:
                # Still the same conditional update from authorized as a capture's, so of
                # a cancel and a capture crossing exactly one moves the payment.
                moved = await conn.execute(
                    update(payments)
                    .where(payments.c.id == command.payment_request_id)
                    .where(payments.c.status == PaymentStatus.AUTHORIZED.value)
                    .values(
                        status=PaymentStatus.CANCELING.value,
                        updated_at=now,
                        **claim_columns(claim),
                    )
                )
                assert moved.rowcount == 1  # the row is locked and was authorized
                started = await payment_in(conn, command.payment_request_id)
                assert started is not None
                return CancelStarted(started, claim)
            if payment.status is PaymentStatus.CANCELING or payment.status in RELEASED:
                return CancelExisting(payment)
            error = not_cancelable(payment.status)
            await enqueue_outbox(conn, refusal_event(payment, error), now)
            return CancelRefused(error, payment)

        return await self._writes.run(record)

    async def claim(self, payment_request_id: str) -> Claim | None:
        """Take the claim on a void under way, or None: it is settled, or another worker
        holds it. Decided with the payment row locked, so of two takers only one wins."""
        now = self._clock()

        async def record(conn: AsyncConnection) -> Claim | None:
            return await take_claim(
                conn,
                payments,
                payment_request_id,
                statuses=(PaymentStatus.CANCELING.value,),
                now=now,
                lease=self._lease,
            )

        return await self._writes.run(record)

    async def renew(self, payment_request_id: str, claim: str) -> bool:
        expires_at = self._clock() + self._lease

        async def record(conn: AsyncConnection) -> bool:
            return await renew_claim(conn, payments, payment_request_id, claim, expires_at)

        return await self._writes.run(record)

    async def release(self, payment_request_id: str, claim: str) -> None:
        async def record(conn: AsyncConnection) -> None:
            await release_claim(conn, payments, payment_request_id, claim)

        await self._writes.run(record)

    async def finish(
        self,
        payment_request_id: str,
        *,
        claim: str,
        status: PaymentStatus,
        error: ErrorInfo | None,
        event: PaymentEventBuilder,
    ) -> bool:
        """``status`` is ``canceled`` or ``expired`` (released), or ``authorized`` with
        ``error`` (not voided); the claim is released.

        Only from ``canceling`` and only for the claim's holder: returns False, changing
        nothing, otherwise."""
        if status not in CANCEL_OUTCOMES:
            raise ValueError(f"a void does not end {status.value}")
        now = self._clock()

        async def record(conn: AsyncConnection) -> bool:
            moved = await conn.execute(
                update(payments)
                .where(payments.c.id == payment_request_id)
                .where(payments.c.status == PaymentStatus.CANCELING.value)
                .where(payments.c.claim_token == claim)
                .values(
                    status=status.value,
                    updated_at=now,
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

        return await self._writes.run(record)

    async def enqueue(self, message: OutboxMessage) -> None:
        """Queue an event on its own, e.g. to re-publish a replayed outcome."""
        await self._outbox.enqueue(message)

    async def canceling(self, updated_before: datetime, limit: int) -> list[PaymentView]:
        """Payments whose void has had no answer since before ``updated_before``."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(payments)
                .where(payments.c.status == PaymentStatus.CANCELING.value)
                .where(payments.c.updated_at < updated_before)
                .where(claimable(payments, self._clock()))
                .order_by(*least_recently_examined(payments), payments.c.updated_at)
                .limit(limit)
            )
            return [payment_view_of(row._mapping) for row in rows]


def not_cancelable(status: PaymentStatus) -> PaygateError:
    return PaygateError(
        ErrorCode.PAYMENT_NOT_CANCELABLE,
        f"the payment is {status.value}; only an authorized payment can be canceled",
    )
