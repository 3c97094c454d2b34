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

Begins and finishes of concurrent handlers run in bulk, as the payments' do (see
persistence.group_commit): persistence.refund_begin and persistence.refund_finish make the
same decisions for a batch from one locked read of its rows, with a few statements per
batch instead of several per refund; the refunds of one payment in a batch are decided one
after another, each against the totals the ones before it left.

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

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.clock import utc_now
from domain.error_info import ErrorInfo
from domain.money import Money
from domain.payment_view import PaymentView
from domain.refund_view import RefundView
from domain.refunds import RefundPayment, RefundStatus
from persistence.claims import (
    Claim,
    claimable,
    least_recently_examined,
    new_claim,
    take_claim,
)
from persistence.group_commit import Bulk, GroupCommit
from persistence.lock_order import RowLocks
from persistence.outbox import Outbox, OutboxMessage, enqueue_outbox
from persistence.payment_rows import payment_view_of
from persistence.refund_begin import (
    RefundBegin,
    RefundBeginRequest,
    RefundExisting,
    RefundRefused,
    RefundStarted,
    begin_many,
    begin_one,
)
from persistence.refund_failed_later import LateFailure, LateFailureRequest, fail_succeeded
from persistence.refund_finish import RefundFinishRequest, finish_many, finish_one
from persistence.refund_rows import (
    OPEN_STATUSES,
    PaymentRefunds,
    RefundEventBuilder,
    lock_payment_of,
    refund_row_in,
    refund_view_of,
    standing_in,
)
from persistence.row_claims import RowClaims
from persistence.tables import payments, refunds

# What the consumer and the facade import from here: the refund store's vocabulary.
__all__ = [
    "PAYMENT_AND_REFUNDS",
    "LateFailure",
    "OpenRefund",
    "PaymentRefunds",
    "RefundBegin",
    "RefundEventBuilder",
    "RefundExisting",
    "RefundRefused",
    "RefundStarted",
    "RefundStore",
    "payment_and_refunds_in",
    "payment_and_refunds_of",
]


@dataclass(frozen=True, slots=True)
class ClaimedRefund:
    """An open refund's claim, and the refund as read under it (RefundStore.claim)."""

    claim: Claim
    refund: RefundView


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
        refund_view_of(_Prefixed(row)) for row in rows if row[_REFUND_PREFIX + "id"] is not None
    ]
    return view, its_refunds


class _Prefixed:
    """A joined row's refund columns under their own names, as ``refund_view_of`` reads them."""

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
        """Reserve and record a new refund, refuse it, or report the existing one
        (persistence.refund_begin; in bulk with the begins of concurrent handlers)."""
        now = self._clock()
        request = RefundBeginRequest(
            command=command,
            parameters_hash=command.parameters_fingerprint(),
            event=event,
            now=now,
            claim=new_claim(now, self._lease),
        )

        async def record(conn: AsyncConnection) -> RefundBegin:
            return await begin_one(conn, request)

        bulk = Bulk(begin_many, request)
        locks = RowLocks.of(payments=[command.payment_request_id])
        try:
            return await self._writes.run(record, bulk, locks=locks)
        except IntegrityError:
            # The same refund inserted by another writer between our read and our insert:
            # a second pass finds it.
            return await self._writes.run(record, bulk, locks=locks)

    async def claim(self, refund_id: str) -> ClaimedRefund | None:
        """Take the claim on an open refund and read the refund under it, or None: it is
        final, or another worker holds it. Decided with the refund row locked, so of two
        takers only one wins.

        The read is in the claim's own transaction: if it fails (a row its reader cannot
        read, a bug), the claim is rolled back with it, so no claim is ever left without a
        holder that read the refund. Taken in one transaction and read in a second, a failed
        read left the claim held until its lease ran out, every other worker turned away
        meanwhile; a release after the failure could itself fail, and, fenced by the token,
        would be all that stood between the two.
        """
        now = self._clock()

        async def record(conn: AsyncConnection) -> ClaimedRefund | None:
            claim = await take_claim(
                conn, refunds, refund_id, statuses=OPEN_STATUSES, now=now, lease=self._lease
            )
            if claim is None:
                return None
            row = await refund_row_in(conn, refund_id)
            if row is None:
                raise LookupError(f"refund {refund_id} vanished under its claim")
            return ClaimedRefund(claim, refund_view_of(row))

        # take_claim locks the refund's row: declared, so it is taken with the batch's
        # other locks, in their order (persistence.lock_order).
        return await self._writes.run(record, locks=RowLocks.of(refunds=[refund_id]))

    @property
    def claim_lease(self) -> timedelta:
        """How long a claim written or renewed by this store lasts (consumer.claimed_calls)."""
        return self._lease

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
        request = RefundFinishRequest(
            refund_id=refund_id,
            claim=claim,
            status=status,
            provider_reference=provider_reference,
            error=error,
            event=event,
            now=self._clock(),
        )

        async def record(conn: AsyncConnection) -> bool:
            return await finish_one(conn, request)

        return await self._writes.run(
            record, Bulk(finish_many, request), locks=RowLocks.of(refunds=[refund_id])
        )

    async def fail_after_success(
        self,
        refund_id: str,
        *,
        provider: str,
        provider_reference: str,
        amount: Money,
        error: ErrorInfo,
        event: RefundEventBuilder,
    ) -> LateFailure:
        """The provider failed a refund paygate recorded succeeded: the refund becomes
        ``failed`` with ``error`` and its payment's refunded total falls by its amount, with
        ``event``, in one transaction (persistence.refund_failed_later). Anything but a
        succeeded refund of that provider, reference and amount changes nothing."""
        request = LateFailureRequest(
            refund_id=refund_id,
            provider=provider,
            provider_reference=provider_reference,
            amount=amount,
            error=error,
            event=event,
            now=self._clock(),
        )

        async def record(conn: AsyncConnection) -> LateFailure:
            return await fail_succeeded(conn, request)

        # The refund's row and, before it, its payment's (persistence.lock_order).
        return await self._writes.run(record, locks=RowLocks.of(refunds=[refund_id]))

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
            await lock_payment_of(conn, refund_id)
            row = await refund_row_in(conn, refund_id)
            if row is None:
                return None
            refund = refund_view_of(row)
            if final_only and not refund.status.is_final:
                return None
            standing = await standing_in(conn, row.payment_id)
            await enqueue_outbox(conn, event(refund, standing), now)
            return refund

        return await self._writes.run(record, locks=RowLocks.of(refunds=[refund_id]))

    async def charge_reference_of(self, refund_id: str) -> str | None:
        """The provider's reference of the charge ``refund_id`` refunds (its payment's);
        None for no such refund, or a payment without one."""
        async with self._engine.connect() as conn:
            return (
                await conn.execute(
                    select(payments.c.provider_reference)
                    .join(refunds, refunds.c.payment_id == payments.c.id)
                    .where(refunds.c.id == refund_id)
                )
            ).scalar_one_or_none()

    async def get(self, refund_id: str) -> RefundView | None:
        async with self._engine.connect() as conn:
            row = await refund_row_in(conn, refund_id)
        return None if row is None else refund_view_of(row)

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
                found[row.payment_id].append(refund_view_of(row))
        return found

    async def open_refunds(self, updated_before: datetime, limit: int) -> list[OpenRefund]:
        """Refunds still processing or pending, last touched before ``updated_before``."""
        query = (
            select(refunds, payments.c.provider_reference.label("charge_reference"))
            .join(payments, payments.c.id == refunds.c.payment_id)
            .where(refunds.c.status.in_(OPEN_STATUSES))
            .where(refunds.c.updated_at < updated_before)
            # A live owner's refund is its owner's; the caller claims the others.
            .where(claimable(refunds, self._clock()))
            .order_by(*least_recently_examined(refunds), refunds.c.updated_at)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [OpenRefund(refund_view_of(row), row.charge_reference) for row in rows]
