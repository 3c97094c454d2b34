"""The refund store: reservations against the captured amount, outcomes, queries.

The invariant: for every payment, succeeded refunds plus refunds not final yet never exceed
the captured amount. It is kept inside the database, by conditional updates of the payment's
two totals (``refunded_minor``, ``refund_reserved_minor``):

* :meth:`RefundStore.begin` reserves a refund's amount with
  ``UPDATE payments SET refund_reserved_minor = refund_reserved_minor + :amount
  WHERE captured - refunded_minor - refund_reserved_minor >= :amount`` in the same
  transaction that inserts the refund; the payment row is locked first (``FOR UPDATE`` on
  PostgreSQL; SQLite's write transactions hold the database lock), so concurrent refunds of
  one payment queue on the row and each sees the others' reservations.
* :meth:`RefundStore.finish` moves the reservation into ``refunded_minor`` (succeeded) or
  releases it (failed), and records the refund's result event, in one transaction; the
  totals the event reports are read under the payment's row lock, as a replay's are
  (:meth:`RefundStore.republish`), so no event carries totals older than one queued
  before it.

Nothing is checked before the transaction and trusted inside it: a check that passed in the
REST facade is made again here.

One owner per refund (see persistence.claims): a new refund is claimed by the insert that
makes it; anyone else must take the claim (:meth:`RefundStore.claim`) before asking the
provider about it or sending it, and :meth:`RefundStore.finish` applies only with the
holder's token. So the reconciler can never release a reservation while a worker is sending
the refund, and a worker that lost the refund to another changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import bindparam, case, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.client_scope import in_scope, no_payment_in_scope
from domain.clock import utc_now
from domain.error_info import ErrorInfo
from domain.errors import ErrorCode, PaygateError
from domain.money import Money
from domain.payment_view import PaymentView
from domain.refund_rules import refusal_for_refund
from domain.refund_view import RefundView
from domain.refunds import RefundPayment, RefundReason, RefundStatus
from domain.status import CAPTURED, PaymentStatus
from persistence.claims import (
    Claim,
    claim_columns,
    claimable,
    least_recently_examined,
    new_claim,
    release_claim,
)
from persistence.engine import as_utc
from persistence.group_commit import GroupCommit
from persistence.outbox import Outbox, OutboxMessage, enqueue_outbox
from persistence.payment_rows import captured_minor_of, payment_view_of
from persistence.row_claims import RowClaims
from persistence.tables import payments, refunds

_OPEN = (RefundStatus.PROCESSING.value, RefundStatus.PENDING.value)


@dataclass(frozen=True, slots=True)
class PaymentRefunds:
    """Where a payment stands with its refunds, as a refund event reports it."""

    status: PaymentStatus
    refunded_minor: int


# Builds the event of a refund's new state; the store supplies the payment's standing
# (None when the payment does not exist), known only inside the transaction.
RefundEventBuilder = Callable[[RefundView, PaymentRefunds | None], OutboxMessage]


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
class OpenRefund:
    """A refund without a final answer, for the reconciler."""

    refund: RefundView
    charge_reference: str


# Built once, for its memoized cache key (see persistence.payment_rows).
_REFUNDS_OF_PAYMENTS: Final = (
    select(refunds)
    .where(refunds.c.payment_id.in_(bindparam("payment_ids", expanding=True)))
    .order_by(refunds.c.created_at, refunds.c.id)
)


# The statements every refund runs in the writer queue, built once like the one above: a
# statement built per call has its cache key computed anew over every column it names, at
# each execution. Their values are bound parameters; ``refund_minor`` and the refund's
# ``*_id`` names are not column names, which an UPDATE's bound parameters must not be.
_REFUND_BY_ID: Final = select(refunds).where(refunds.c.id == bindparam("refund_id"))
_PAYMENT_LOCKED: Final = (
    select(payments).where(payments.c.id == bindparam("payment_id")).with_for_update()
)
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
# The settlement and the release return the totals they leave: the event's standing, read
# under the row lock the UPDATE holds (RETURNING: SQLite 3.35 or later, as the rate limit).
_refunded_after: Final = payments.c.refunded_minor + bindparam("refund_minor")
_SETTLE: Final = (
    update(payments)
    .where(payments.c.id == bindparam("payment_id"))
    .where(payments.c.refund_reserved_minor >= bindparam("refund_minor"))
    .values(
        refunded_minor=_refunded_after,
        refund_reserved_minor=payments.c.refund_reserved_minor - bindparam("refund_minor"),
        status=case(
            (_refunded_after >= captured_minor_of(payments), PaymentStatus.REFUNDED.value),
            else_=PaymentStatus.PARTIALLY_REFUNDED.value,
        ),
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


# The payment's columns under their own names, the refund's prefixed: both tables have
# an id, a status, an amount... An outer join, so a payment without refunds is one row.
_REFUND_PREFIX: Final = "refund__"
PAYMENT_AND_REFUNDS: Final = (
    select(payments, *(column.label(_REFUND_PREFIX + column.name) for column in refunds.c))
    .select_from(payments.outerjoin(refunds, refunds.c.payment_id == payments.c.id))
    .where(payments.c.id == bindparam("payment_id"))
    .order_by(refunds.c.created_at, refunds.c.id)
)


async def payment_and_refunds_in(
    conn: AsyncConnection, payment_request_id: str
) -> tuple[PaymentView, list[RefundView]] | None:
    """The payment and its refunds (oldest first) in one ``SELECT``: one statement reads
    one snapshot, on SQLite and PostgreSQL alike, so the two agree without a transaction
    around them (hence ``single_read_engine``'s connections, no ``BEGIN`` on SQLite)."""
    rows = (await conn.execute(PAYMENT_AND_REFUNDS, {"payment_id": payment_request_id})).all()
    return payment_and_refunds_of([row._mapping for row in rows])


def payment_and_refunds_of(
    rows: Sequence[Mapping[Any, Any]],
) -> tuple[PaymentView, list[RefundView]] | None:
    """The payment and its refunds from the rows of :data:`PAYMENT_AND_REFUNDS`, by column
    name (also persistence.raw_reads, which reads them without SQLAlchemy)."""
    if not rows:
        return None
    view = payment_view_of(rows[0])
    its_refunds = [
        _refund_view(_Prefixed(row)) for row in rows if row[_REFUND_PREFIX + "id"] is not None
    ]
    return view, its_refunds


class _Prefixed:
    """A joined row's refund columns under their own names, as ``_refund_view`` reads them."""

    __slots__ = ("_mapping",)

    def __init__(self, mapping: Any) -> None:
        self._mapping = mapping

    def __getattr__(self, name: str) -> Any:
        return self._mapping[_REFUND_PREFIX + name]


class RefundStore:
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
        self._claims = RowClaims(refunds, writes, clock, claim_lease)

    async def begin(self, command: RefundPayment, event: RefundEventBuilder) -> RefundBegin:
        """Reserve and record a new refund, refuse it, or report the existing one."""
        parameters_hash = command.parameters_fingerprint()
        now = self._clock()

        async def refuse_unknown(conn: AsyncConnection) -> RefundRefused:
            # Nothing stored: a failed refund of another client's payment would show in
            # that client's refunds. The event is the one an unknown payment gets.
            unknown = no_payment_in_scope()
            view = _refused_view(command, parameters_hash, None, unknown, now)
            await enqueue_outbox(conn, event(view, None), now)
            return RefundRefused(unknown, None)

        async def record(conn: AsyncConnection) -> RefundBegin:
            existing = await _refund_row(conn, command.refund_id)
            if existing is not None:
                # Checked before replaying: a replay would show another scope the refund.
                if not await _in_scope(conn, command):
                    return await refuse_unknown(conn)
                return RefundExisting(
                    _refund_view(existing),
                    existing.parameters_hash == parameters_hash,
                    await _charge_reference(conn, existing.payment_id),
                )
            payment = (
                await conn.execute(_PAYMENT_LOCKED, {"payment_id": command.payment_request_id})
            ).one_or_none()
            if (
                payment is None
                or payment.order_id != command.order_id
                or not in_scope(payment.client_id, command.client_id)
            ):
                return await refuse_unknown(conn)
            standing = PaymentRefunds(PaymentStatus(payment.status), payment.refunded_minor)
            reserved = payment.refunded_minor + payment.refund_reserved_minor
            captured = (
                payment.amount_minor if payment.captured_minor is None else payment.captured_minor
            )
            remaining = captured - reserved
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
            amount = command.amount or (
                Money(remaining, payment.currency) if remaining > 0 else None
            )
            if error is None:
                assert amount is not None
                if not await _reserve(conn, command.payment_request_id, amount.minor_units):
                    # Cannot happen with the row locked and the rule above; if it ever does,
                    # the guard wins over the rule.
                    error = PaygateError(
                        ErrorCode.REFUND_EXCEEDS_CAPTURED,
                        "the refund is above what remains refundable",
                        param="amount",
                    )
            if error is not None:
                view = _refused_view(command, parameters_hash, amount, error, now)
                await conn.execute(insert(refunds).values(**_row(view, payment.provider)))
                await enqueue_outbox(conn, event(view, standing), now)
                return RefundRefused(error, view)
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
                created_at=now,
                updated_at=now,
                parameters_hash=parameters_hash,
            )
            claim = new_claim(now, self._lease)
            await conn.execute(
                insert(refunds).values(**_row(view, payment.provider), **claim_columns(claim))
            )
            return RefundStarted(view, payment.provider_reference, claim)

        try:
            return await self._writes.run(record)
        except IntegrityError:
            # The same refund inserted by another writer between our read and our insert:
            # a second pass finds it.
            return await self._writes.run(record)

    async def claim(self, refund_id: str) -> Claim | None:
        """Take the claim on an open refund, or None: it is final, or another worker holds
        it. Decided with the refund row locked, so of two takers only one wins."""
        return await self._claims.take(refund_id, _OPEN)

    async def renew(self, refund_id: str, claim: str) -> bool:
        """Extend the holder's claim; False if it is no longer the holder's (then it must
        not call the provider)."""
        return await self._claims.renew(refund_id, claim)

    async def release(self, refund_id: str, claim: str) -> None:
        await self._claims.release(refund_id, claim)

    async def finish(
        self,
        refund_id: str,
        *,
        claim: str,
        status: RefundStatus,
        provider_reference: str | None,
        error: ErrorInfo | None,
        event: RefundEventBuilder,
    ) -> bool:
        """Record the provider's answer, move the payment's totals, queue the event.

        ``pending`` keeps the reservation (the provider settles later). Applies only while
        ``claim`` is the refund's claim, and releases it. Returns False, changing nothing,
        when it is not, when the refund is already final, or already pending and asked to
        stay pending.
        """
        if status is RefundStatus.PROCESSING:
            raise ValueError("processing is not an outcome")
        now = self._clock()

        async def record(conn: AsyncConnection) -> bool:
            from_statuses = (
                [RefundStatus.PROCESSING.value] if status is RefundStatus.PENDING else _OPEN
            )
            # Conditional: of two resolvers, only the first moves the refund (the row lock
            # on PostgreSQL makes the second wait, then find nothing to move).
            moved = await conn.execute(
                update(refunds)
                .where(refunds.c.id == refund_id)
                .where(refunds.c.status.in_(from_statuses))
                .where(refunds.c.claim_token == claim)
                .values(
                    status=status.value,
                    provider_reference=provider_reference,
                    updated_at=now,
                    **_error_columns(error),
                    **claim_columns(None),
                )
            )
            if moved.rowcount != 1:
                # Nothing to record (already final, or pending and still pending): the
                # caller's work on the refund is over all the same, so its claim goes.
                await release_claim(conn, refunds, refund_id, claim)
                return False
            row = await _refund_row(conn, refund_id)
            assert row is not None
            # The event's totals are read under the payment's row lock, as a replay reads
            # them (see republish), taken after the refund's row: the order of finish's
            # locks. A settling or releasing outcome's UPDATE takes that lock itself and
            # returns the totals it leaves, so it needs no lock or read of its own. A
            # pending outcome changes no total: it locks the row first, else it would read
            # the totals unlocked, and its event could be queued after a settling refund's
            # with the totals from before it.
            standing: PaymentRefunds | None
            if status is RefundStatus.SUCCEEDED:
                standing = await _settle(conn, row.payment_id, row.amount_minor)
            elif status is RefundStatus.FAILED:
                standing = await _release(conn, row.payment_id, row.amount_minor)
            else:
                await _lock_payment_of(conn, refund_id)
                standing = await _standing(conn, row.payment_id)
            await enqueue_outbox(conn, event(_refund_view(row), standing), now)
            return True

        return await self._writes.run(record)

    async def enqueue(self, message: OutboxMessage) -> None:
        """Queue an event on its own (a refusal with an event id of its own)."""
        await self._outbox.enqueue(message)

    async def republish(
        self, refund_id: str, event: RefundEventBuilder, *, final_only: bool = False
    ) -> RefundView | None:
        """Answer a replay: queue the event of the refund and its payment's standing as they
        are now, read under the payment's row lock in the transaction that queues it. The
        refund as queued; None, and nothing queued, if there is no such refund, or if
        ``final_only`` and it is not final (its owner will publish its outcome).

        The lock is the one refunds settle under (:meth:`finish`, :meth:`begin`): another
        refund of the payment settles either before (its totals are the ones re-published)
        or after (its event is queued after this one). Read earlier, without the lock, the
        totals could be older than an event already queued, and a reader keeping the last
        totals per payment would see them go back.
        """
        now = self._clock()

        async def record(conn: AsyncConnection) -> RefundView | None:
            await _lock_payment_of(conn, refund_id)
            row = await _refund_row(conn, refund_id)
            if row is None:
                return None
            refund = _refund_view(row)
            if final_only and not refund.status.is_final:
                return None
            standing = await _standing(conn, row.payment_id)
            await enqueue_outbox(conn, event(refund, standing), now)
            return refund

        return await self._writes.run(record)

    async def get(self, refund_id: str) -> RefundView | None:
        async with self._engine.connect() as conn:
            row = await _refund_row(conn, refund_id)
        return None if row is None else _refund_view(row)

    async def of_payment(self, payment_request_id: str) -> list[RefundView]:
        """The payment's refunds, oldest first."""
        return (await self.of_payments([payment_request_id]))[payment_request_id]

    async def of_payments(self, payment_request_ids: Sequence[str]) -> dict[str, list[RefundView]]:
        """Each payment's refunds, oldest first, in one query (a page of payments lists
        theirs). Every id is a key, with an empty list when it has no refunds."""
        found: dict[str, list[RefundView]] = {pid: [] for pid in payment_request_ids}
        if not found:
            return found
        async with self._engine.connect() as conn:
            rows = await conn.execute(_REFUNDS_OF_PAYMENTS, {"payment_ids": list(found)})
            for row in rows:
                found[row.payment_id].append(_refund_view(row))
        return found

    async def open_refunds(self, updated_before: datetime, limit: int) -> list[OpenRefund]:
        """Refunds still processing or pending, last touched before ``updated_before``."""
        query = (
            select(refunds, payments.c.provider_reference.label("charge_reference"))
            .join(payments, payments.c.id == refunds.c.payment_id)
            .where(refunds.c.status.in_(_OPEN))
            .where(refunds.c.updated_at < updated_before)
            # A live owner's refund is its owner's; the caller claims the others.
            .where(claimable(refunds, self._clock()))
            .order_by(*least_recently_examined(refunds), refunds.c.updated_at)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [OpenRefund(_refund_view(row), row.charge_reference) for row in rows]


async def _reserve(conn: AsyncConnection, payment_id: str, amount_minor: int) -> bool:
    """The invariant's guard: reserve only what remains, only on a captured payment."""
    moved = await conn.execute(_RESERVE, {"payment_id": payment_id, "refund_minor": amount_minor})
    return moved.rowcount == 1


async def _settle(conn: AsyncConnection, payment_id: str, amount_minor: int) -> PaymentRefunds:
    """Move the reservation into the refunded total; the payment's totals after it."""
    moved = (
        await conn.execute(_SETTLE, {"payment_id": payment_id, "refund_minor": amount_minor})
    ).one_or_none()
    if moved is None:
        # Only begin() reserves and only finish() of an open refund settles: a missing
        # reservation means the totals were edited by hand. Roll back, do not guess.
        raise RuntimeError(f"payment {payment_id} has no reservation for this refund")
    return _standing_of(moved)


async def _release(conn: AsyncConnection, payment_id: str, amount_minor: int) -> PaymentRefunds:
    """Give the reservation back; the payment's totals after it."""
    moved = (
        await conn.execute(_RELEASE, {"payment_id": payment_id, "refund_minor": amount_minor})
    ).one_or_none()
    if moved is None:
        raise RuntimeError(f"payment {payment_id} has no reservation for this refund")
    return _standing_of(moved)


async def _lock_payment_of(conn: AsyncConnection, refund_id: str) -> None:
    """Lock the refund's payment row (``FOR UPDATE`` on PostgreSQL; on SQLite the write
    transaction already holds the database lock): the lock refunds settle under."""
    await conn.execute(_PAYMENT_OF_REFUND_LOCKED, {"refund_id": refund_id})


async def _standing(conn: AsyncConnection, payment_id: str) -> PaymentRefunds | None:
    row = (await conn.execute(_STANDING, {"payment_id": payment_id})).one_or_none()
    return None if row is None else _standing_of(row)


def _standing_of(row: Any) -> PaymentRefunds:
    """The standing from a row of the payment's ``status`` and ``refunded_minor``."""
    return PaymentRefunds(PaymentStatus(row.status), row.refunded_minor)


async def _in_scope(conn: AsyncConnection, command: RefundPayment) -> bool:
    """Whether the command's payment is of the command's client scope."""
    payment = (
        await conn.execute(
            select(payments.c.client_id).where(payments.c.id == command.payment_request_id)
        )
    ).one_or_none()
    return payment is not None and in_scope(payment.client_id, command.client_id)


async def _refund_row(conn: AsyncConnection, refund_id: str) -> Row[Any] | None:
    return (await conn.execute(_REFUND_BY_ID, {"refund_id": refund_id})).one_or_none()


async def _charge_reference(conn: AsyncConnection, payment_id: str) -> str | None:
    reference: str | None = (
        await conn.execute(select(payments.c.provider_reference).where(payments.c.id == payment_id))
    ).scalar_one_or_none()
    return reference


def _refused_view(
    command: RefundPayment,
    parameters_hash: str,
    amount: Money | None,
    error: PaygateError,
    now: datetime,
) -> RefundView:
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
        created_at=now,
        updated_at=now,
        parameters_hash=parameters_hash,
    )


def _row(view: RefundView, provider: str | None) -> dict[str, Any]:
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
        **_error_columns(view.error),
    }


def _error_columns(error: ErrorInfo | None) -> dict[str, Any]:
    return {
        "error_code": None if error is None else error.code.value,
        "error_message": None if error is None else error.message,
        "decline_code": None if error is None else error.decline_code,
    }


def _refund_view(row: Any) -> RefundView:
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
