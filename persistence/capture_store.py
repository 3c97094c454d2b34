"""The capture store: the write-ahead move to ``capturing``, and the capture's outcome.

:meth:`CaptureStore.begin` moves an ``authorized`` payment to ``capturing`` with one
conditional update, before the provider is asked, so a crash leaves a payment that says a
capture may be under way (and the reconciler asks the provider), never a silent one. Of two
captures of one payment crossing, only one finds it ``authorized``. :meth:`CaptureStore.finish`
records the answer and its result event in one transaction.

A partial capture's amount is checked against the authorization and written with the move
to ``capturing`` (``captured_minor``), under the row's lock: whoever resolves the capture
later re-sends that amount, never another. A capture asking for more than is held, or one
naming another amount than the capture made or under way, is refused and changes nothing.

One owner per capture (see persistence.claims): the move to ``capturing`` claims the payment
for the worker that made it; anyone else (a redelivery, the capture reconciler) must take
the claim before asking the provider, and :meth:`CaptureStore.finish` applies only with the
holder's token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.captures import CapturePayment, capture_amount
from domain.client_scope import in_scope, no_payment_in_scope
from domain.clock import utc_now
from domain.error_info import ErrorInfo
from domain.errors import ErrorCode, PaygateError
from domain.payment_view import PaymentView
from domain.status import CAPTURED, PaymentStatus
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


@dataclass(frozen=True, slots=True)
class CaptureStarted:
    """The payment is ``capturing`` and claimed for the caller: ask its provider to capture
    it, and pass ``claim.token`` to every later write."""

    payment: PaymentView
    claim: Claim


@dataclass(frozen=True, slots=True)
class CaptureExisting:
    """A capture is under way (``capturing``) or done (captured): resolve or replay it."""

    payment: PaymentView


@dataclass(frozen=True, slots=True)
class CaptureRefused:
    """Not capturable; ``payment`` is None when there is no such payment in the order."""

    error: PaygateError
    payment: PaymentView | None


CaptureBegin = CaptureStarted | CaptureExisting | CaptureRefused
PaymentEventBuilder = Callable[[PaymentView], OutboxMessage]


class CaptureStore:
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
        command: CapturePayment,
        refusal_event: Callable[[PaymentView, PaygateError], OutboxMessage],
    ) -> CaptureBegin:
        now = self._clock()
        claim = new_claim(now, self._lease)

        async def record(conn: AsyncConnection) -> CaptureBegin:
            # Locked first, so the amount is checked against the row the move then writes.
            await conn.execute(
                select(payments.c.id)
                .where(payments.c.id == command.payment_request_id)
                .with_for_update()
            )
            payment = await payment_in(conn, command.payment_request_id)
            if payment is None or payment.order_id != command.order_id:
                return CaptureRefused(no_payment_in_scope(), None)
            if not in_scope(payment.client_id, command.client_id):
                # The code and message of an unknown payment. Unlike one, the payment
                # exists, so its result event says the capture was refused (unchanged
                # payment, error not_found): results readers see all payments anyway.
                unknown = no_payment_in_scope()
                await enqueue_outbox(conn, refusal_event(payment, unknown), now)
                return CaptureRefused(unknown, payment)
            error = _refusal(command, payment)
            if error is None and payment.status is PaymentStatus.AUTHORIZED:
                amount = capture_amount(payment.amount, command.amount)
                partial = amount.minor_units != payment.amount.minor_units
                moved = await conn.execute(
                    update(payments)
                    .where(payments.c.id == command.payment_request_id)
                    .where(payments.c.status == PaymentStatus.AUTHORIZED.value)
                    .values(
                        status=PaymentStatus.CAPTURING.value,
                        updated_at=now,
                        captured_minor=amount.minor_units if partial else None,
                        **claim_columns(claim),
                    )
                )
                assert moved.rowcount == 1  # the row is locked and was authorized
                started = await payment_in(conn, command.payment_request_id)
                assert started is not None
                return CaptureStarted(started, claim)
            if error is None:
                return CaptureExisting(payment)
            await enqueue_outbox(conn, refusal_event(payment, error), now)
            return CaptureRefused(error, payment)

        return await self._writes.run(record)

    async def claim(self, payment_request_id: str) -> Claim | None:
        """Take the claim on a capture under way, or None: it is settled, or another worker
        holds it. Decided with the payment row locked, so of two takers only one wins."""
        now = self._clock()

        async def record(conn: AsyncConnection) -> Claim | None:
            return await take_claim(
                conn,
                payments,
                payment_request_id,
                statuses=(PaymentStatus.CAPTURING.value,),
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
        captured: bool,
        error: ErrorInfo | None,
        event: PaymentEventBuilder,
    ) -> bool:
        """``succeeded`` when ``captured``, else back to ``authorized`` with ``error``; the
        claim is released.

        Only from ``capturing`` and only for the claim's holder: returns False, changing
        nothing, otherwise."""
        now = self._clock()
        status = PaymentStatus.SUCCEEDED if captured else PaymentStatus.AUTHORIZED
        # A capture that did not happen leaves the whole authorization, for any capture.
        amount = {} if captured else {"captured_minor": None}

        async def record(conn: AsyncConnection) -> bool:
            moved = await conn.execute(
                update(payments)
                .where(payments.c.id == payment_request_id)
                .where(payments.c.status == PaymentStatus.CAPTURING.value)
                .where(payments.c.claim_token == claim)
                .values(
                    status=status.value,
                    updated_at=now,
                    **amount,
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

    async def capturing(self, updated_before: datetime, limit: int) -> list[PaymentView]:
        """Payments whose capture has had no answer since before ``updated_before``."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(payments)
                .where(payments.c.status == PaymentStatus.CAPTURING.value)
                .where(payments.c.updated_at < updated_before)
                .where(claimable(payments, self._clock()))
                .order_by(*least_recently_examined(payments), payments.c.updated_at)
                .limit(limit)
            )
            return [payment_view_of(row._mapping) for row in rows]


def _refusal(command: CapturePayment, payment: PaymentView) -> PaygateError | None:
    """Why this capture of ``payment`` changes nothing, or None: it may start (the payment
    is authorized) or it names the capture under way or made (a replay)."""
    under_way_or_made = payment.status is PaymentStatus.CAPTURING or payment.status in CAPTURED
    if payment.status is not PaymentStatus.AUTHORIZED and not under_way_or_made:
        return PaygateError(
            ErrorCode.PAYMENT_NOT_CAPTURABLE,
            f"the payment is {payment.status.value}; only an authorized payment can be captured",
        )
    try:
        amount = capture_amount(payment.amount, command.amount)
    except PaygateError as exc:
        return exc
    if payment.status is PaymentStatus.AUTHORIZED:
        return None
    if command.amount is None or amount == payment.captured_amount:
        return None
    return PaygateError(
        ErrorCode.IDEMPOTENCY_CONFLICT,
        f"the payment's capture is of {payment.captured_amount}, not {amount}: a payment is "
        "captured once",
        param="amount",
    )
