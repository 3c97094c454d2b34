"""The payment store: write-ahead attempts, outcomes with their outbox rows, claims, queries.

Every method is one database transaction. The two that matter for exactly-once effects:

* :meth:`PaymentStore.begin` records the payment and its provider attempt *before* the
  provider is called, or tells the caller what already exists for that id
  (persistence.payment_begin).
* :meth:`PaymentStore.finish` records the provider's answer and the result event in one
  transaction, so a state change is never visible without its event, or the reverse
  (persistence.payment_finish).

Both run in bulk when concurrent handlers call them together (see
:mod:`persistence.group_commit`). Between the two, one worker at a time owns the payment's
provider work: :meth:`claim`, :meth:`renew`, :meth:`release`, and the writes only the owner
may make, :meth:`schedule_retry` and :meth:`next_attempt` (persistence.payment_claims; the
argument is in persistence.claims).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import or_, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.clock import utc_now
from domain.error_info import ErrorInfo
from domain.errors import PaygateError
from domain.idempotency import OrderPayment
from domain.next_action import NextAction
from domain.payment_view import PaymentView
from domain.payments import CreatePayment
from domain.refund_view import RefundView
from domain.status import WAITING_FOR_PROVIDER, PaymentStatus
from persistence.claims import (
    claimable,
    least_recently_examined,
    new_claim,
)
from persistence.engine import as_utc, single_read_engine
from persistence.group_commit import Bulk, GroupCommit
from persistence.lock_order import RowLocks
from persistence.outbox import Outbox, OutboxMessage
from persistence.payment_begin import (
    BeginRequest,
    BeginResult,
    begin_many,
    begin_one,
    order_payments_in,
)
from persistence.payment_claims import (
    ClaimedAttempt,
    InDoubt,
    claim_open_attempt,
    open_next_attempt,
    schedule_retry,
    stamp_sending,
    uncount_unsent,
)
from persistence.payment_finish import FinishRequest, finish_many, finish_one
from persistence.payment_replay import enqueue_as_it_is
from persistence.payment_rows import payment_in, payment_view_of
from persistence.raw_reads import raw_reads_for
from persistence.refund_store import payment_and_refunds_in
from persistence.row_claims import RowClaims
from persistence.tables import payments, provider_attempts

# How long a claim on a payment lasts before another worker may take it over (see
# persistence.claims): longer than a provider call, so a live owner is not replaced mid-call.
DEFAULT_CLAIM_LEASE = timedelta(seconds=30)


class PaymentStore:
    def __init__(
        self,
        engine: AsyncEngine,
        clock: Callable[[], datetime] = utc_now,
        *,
        claim_lease: timedelta = DEFAULT_CLAIM_LEASE,
        writes: GroupCommit | None = None,
    ) -> None:
        """``writes``: the database's one writer queue (persistence.database.Database
        passes it; alone, the store makes its own)."""
        self._engine = engine
        # Shares the pool; for the hot one-statement reads of every new payment.
        self._single_reads = single_read_engine(engine)
        # The same two reads straight to the driver, where it is aiosqlite or asyncpg.
        self._raw_reads = raw_reads_for(engine)
        self._clock = clock
        self._lease = claim_lease
        # Payment writes of concurrent handlers share transactions (see group_commit).
        self._writes = writes or GroupCommit(engine)
        self._outbox = Outbox(engine, self._writes, clock)
        self._claims = RowClaims(payments, self._writes, clock, claim_lease)

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @property
    def writes(self) -> GroupCommit:
        """The one writer queue of this database, for stores that write next to this one."""
        return self._writes

    async def close(self) -> None:
        """Close the connections the raw reads keep outside the engine's pool (before the
        engine is disposed of: it does not know them). Safe to call twice."""
        if self._raw_reads is not None:
            await self._raw_reads.close()

    async def begin(
        self,
        command: CreatePayment,
        *,
        provider: str,
        account_key: bytes,
        refusal_event: Callable[[CreatePayment, PaygateError, datetime], OutboxMessage],
        seal: Callable[[CreatePayment], bytes] | None = None,
        along: Sequence[Bulk] = (),
    ) -> BeginResult:
        """Record a new payment and its first attempt, refuse it, or report what exists.

        Order protection is decided inside the write transaction, with the order locked
        (PostgreSQL: an advisory lock; SQLite: the database write lock), so two payments of
        one order cannot both see "not paid yet". A refused payment is stored as failed,
        with its result event from ``refusal_event``, so the client can query why.

        A new payment is claimed for the caller (``Started.claim``) in the transaction that
        inserts it: the insert itself is the conditional write only one worker can win.
        ``seal`` seals the command (with its resolved generation) into the attempt, so a
        later owner of the attempt can re-send it.

        ``along``: writes committed in the same transaction when the begin makes a new
        payment, stored or refused (the vault rows of the tokens the command names, so the
        payment never names a token that is not stored, and the payment costs one trip
        through the writer queue less); a write of them refused (``client_shredded``,
        ``KeyRetiredError``) fails the begin, nothing written. Not run when the payment
        exists already (``Existing``): a redelivery's new tokens would name nothing, and a
        shredded client's redelivery is answered with where its payment stands. Their
        locks are taken all the same (declared before the begin decides).
        """
        now = self._clock()
        request = BeginRequest(
            command=command,
            parameters_hash=command.parameters_fingerprint(account_key),
            provider=provider,
            account_key=account_key,
            refusal_event=refusal_event,
            now=now,
            claim=new_claim(now, self._lease),
            seal=seal,
            along=tuple(along),
        )

        async def record(conn: AsyncConnection) -> BeginResult:
            return await begin_one(conn, request)

        bulk = Bulk(begin_many, request)
        # The ``along`` writes' locks too (a new token's: its client's vault lock, shared).
        locks = RowLocks.union([RowLocks.of(orders=[request.order]), *(b.locks for b in along)])
        try:
            return await self._writes.run(record, bulk, locks=locks)
        except IntegrityError:
            # Another writer inserted the same payment between our read and our insert
            # (the order lock makes this all but impossible); a second pass reads it.
            return await self._writes.run(record, bulk, locks=locks)

    async def finish(
        self,
        payment_id: str,
        attempt_key: str,
        *,
        claim: str,
        status: PaymentStatus,
        attempt_status: str,
        provider_reference: str | None,
        error: ErrorInfo | None,
        event: OutboxMessage,
        next_action: NextAction | None = None,
    ) -> bool:
        """Record an attempt's outcome and its result event atomically, and release the claim.

        ``next_action`` goes with status ``requires_action`` (the attempt then stays open,
        and the payment waits for its payer holding no claim); any other status clears it.

        Applies only while ``claim`` is still the payment's claim token. Returns False,
        changing the payment in no way, when it is not (another worker took the payment
        over: its owner records the outcome) or when the payment already has ``status``.
        A charge reported under an attempt that was meanwhile closed as not charged is
        recorded on that attempt as a stray charge (see consumer.stray_charges), never
        dropped. A move out of a final status by the claim's holder raises
        :class:`domain.status.InvalidTransitionError`.
        """
        request = FinishRequest(
            payment_id=payment_id,
            attempt_key=attempt_key,
            claim=claim,
            status=status,
            attempt_status=attempt_status,
            provider_reference=provider_reference,
            error=error,
            event=event,
            now=self._clock(),
            next_action=next_action,
        )

        async def record(conn: AsyncConnection) -> bool:
            return await finish_one(conn, request)

        return await self._writes.run(
            record, Bulk(finish_many, request), locks=RowLocks.of(payments=[payment_id])
        )

    async def claim(self, payment_id: str) -> ClaimedAttempt | None:
        """Take the claim on the payment's open attempt, or None if it cannot be taken.

        It can be taken when the payment waits on a provider (``pending``, ``processing``, or
        ``requires_action``: the provider waits on the payer),
        its latest attempt is open, and nobody holds the claim (or the holder's lease has
        expired). Decided with the payment row locked, so of two takers only one wins.
        """
        now = self._clock()

        async def record(conn: AsyncConnection) -> ClaimedAttempt | None:
            return await claim_open_attempt(conn, payment_id, now, self._lease)

        return await self._writes.run(record, locks=RowLocks.of(payments=[payment_id]))

    @property
    def claim_lease(self) -> timedelta:
        """How long a claim written or renewed by this store lasts (consumer.claimed_calls)."""
        return self._lease

    async def renew(self, payment_id: str, claim: str) -> bool:
        """Extend the holder's claim by a lease; False if ``claim`` is no longer the
        payment's (then the caller must not call the provider)."""
        return await self._claims.renew(payment_id, claim)

    async def renew_sending(self, payment_id: str, attempt_key: str, *, claim: str) -> bool:
        """:meth:`renew`, recording in the same write that ``attempt_key`` is sent again now
        (a re-send or a retry: ``provider_attempts.last_sent_at``, see
        persistence.payment_claims.stamp_sending). False if ``claim`` is no longer the
        payment's or the attempt has closed: then the key must not be sent. A first send
        needs none: its time is the attempt's creation."""
        now = self._clock()

        async def record(conn: AsyncConnection) -> bool:
            return await stamp_sending(conn, payment_id, attempt_key, claim, now, now + self._lease)

        return await self._writes.run(record, locks=RowLocks.of(payments=[payment_id]))

    async def uncount_unsent(self, payment_id: str, attempt_key: str) -> None:
        """Take back the count :meth:`renew_sending` made for a send of ``attempt_key`` that
        certainly never went out (persistence.payment_claims.uncount_unsent)."""

        async def record(conn: AsyncConnection) -> None:
            await uncount_unsent(conn, payment_id, attempt_key)

        await self._writes.run(record, locks=RowLocks.of(payments=[payment_id]))

    async def release(self, payment_id: str, claim: str) -> None:
        """Give the claim up (the holder cannot go on now), so another may take it at once."""
        await self._claims.release(payment_id, claim)

    async def check_again_at(self, payment_id: str, at: datetime) -> None:
        """Keep a payment that still waits for its payer out of :meth:`in_doubt` until
        ``at``. Written only while it is ``requires_action``: a payment that moved on
        meanwhile (a notification recorded it) is left as it is."""

        async def record(conn: AsyncConnection) -> None:
            await conn.execute(
                update(payments)
                .where(payments.c.id == payment_id)
                .where(payments.c.status == PaymentStatus.REQUIRES_ACTION.value)
                .values(next_check_at=at)
            )

        await self._writes.run(record, locks=RowLocks.of(payments=[payment_id]))

    async def schedule_retry(self, payment_id: str, at: datetime, *, claim: str) -> bool:
        """Record when the payment's provider is to be tried again (only while processing
        and only by the claim's holder, whose claim now lasts until a lease after ``at``)."""
        expires_at = max(at, self._clock()) + self._lease

        async def record(conn: AsyncConnection) -> bool:
            return await schedule_retry(conn, payment_id, at, claim, expires_at)

        return await self._writes.run(record, locks=RowLocks.of(payments=[payment_id]))

    async def next_attempt(
        self, payment_id: str, failed_attempt_key: str, provider: str, *, claim: str
    ) -> str | None:
        """Failover, write-ahead: close a failed attempt and open the next one, atomically.

        In one transaction: the open attempt ``failed_attempt_key`` (it must be the payment's
        latest) is finished as ``failed``, attempt n+1 is inserted for ``provider``, and the
        payment's ``provider`` becomes ``provider``. Only while the payment is still
        ``processing``, ``claim`` is still its claim, and the attempt was opened under that
        same claim (never taken over: nobody else can have a call with its key in flight);
        otherwise (or if that attempt is no longer the open, latest one) nothing changes and
        None is returned. Returns the new attempt's key: call the provider with it only
        after this returned. The claim is renewed by the same write.
        """
        now = self._clock()

        async def record(conn: AsyncConnection) -> str | None:
            return await open_next_attempt(
                conn, payment_id, failed_attempt_key, provider, claim, now, self._lease
            )

        return await self._writes.run(record, locks=RowLocks.of(payments=[payment_id]))

    async def enqueue(self, event: OutboxMessage) -> None:
        """Queue an event on its own (a refusal with an event id of its own)."""
        await self._outbox.enqueue(event)

    async def republish(
        self, payment_id: str, event_of: Callable[[PaymentView], OutboxMessage]
    ) -> PaymentView | None:
        """Answer a replay: queue the event of the payment as it is now, read under its row
        lock in the same transaction (persistence.payment_replay). The payment as queued."""
        now = self._clock()

        async def record(conn: AsyncConnection) -> PaymentView | None:
            return await enqueue_as_it_is(conn, payment_id, event_of, now)

        return await self._writes.run(record, locks=RowLocks.of(payments=[payment_id]))

    async def get_payment(self, payment_id: str) -> PaymentView | None:
        async with self._engine.connect() as conn:
            return await payment_in(conn, payment_id)

    async def payment_with_refunds(
        self, payment_id: str
    ) -> tuple[PaymentView, list[RefundView]] | None:
        """The payment and its refunds (oldest first), in one statement: a payment's answer
        costs one pool checkout and one ``SELECT``, and on SQLite no ``BEGIN``; sent
        straight to the driver when it can be (persistence.raw_reads)."""
        if self._raw_reads is not None:
            return await self._raw_reads.payment_with_refunds(payment_id)
        async with self._single_reads.connect() as conn:
            return await payment_and_refunds_in(conn, payment_id)

    async def order_payments(self, order_id: str, client_id: str | None) -> list[OrderPayment]:
        """The payments of ``client_id``'s order ``order_id`` (None: upstream services').

        One ``SELECT``, so on SQLite without ``BEGIN`` (``single_read_engine``); sent
        straight to the driver when it can be (persistence.raw_reads)."""
        if self._raw_reads is not None:
            return await self._raw_reads.order_payments(order_id, client_id)
        async with self._single_reads.connect() as conn:
            return await order_payments_in(conn, order_id, client_id)

    async def client_order_page(
        self, client_id: str, order_id: str, *, limit: int, starting_after: str | None
    ) -> list[PaymentView]:
        """Up to ``limit`` of the client's payments of the order, oldest first, after the
        payment ``starting_after`` (a cursor from the previous page)."""
        query = (
            select(payments)
            .where(payments.c.client_id == client_id)
            .where(payments.c.order_id == order_id)
            .order_by(payments.c.created_at, payments.c.id)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            if starting_after is not None:
                cursor = (
                    await conn.execute(
                        select(payments.c.created_at, payments.c.id)
                        .where(payments.c.id == starting_after)
                        .where(payments.c.client_id == client_id)
                    )
                ).one_or_none()
                if cursor is None:
                    return []
                query = query.where(
                    tuple_(payments.c.created_at, payments.c.id)
                    > tuple_(cursor.created_at, cursor.id)
                )
            rows = (await conn.execute(query)).all()
        return [payment_view_of(row._mapping) for row in rows]

    async def expire_idempotency_keys(self, created_before: datetime) -> int:
        """Mark the keys of payments created before ``created_before`` expired."""

        # Rows chosen by a query cannot be locked in the writers' order
        # (persistence.lock_order): a payment another transaction holds keeps its key live
        # until the next pass rather than being waited for.
        # (An alias: a subquery of the UPDATE's own table would be correlated to it.)
        candidate = payments.alias("due")
        due = (
            select(candidate.c.id)
            .where(candidate.c.key_expired.is_(False))
            .where(candidate.c.created_at < created_before)
            .with_for_update(skip_locked=True)
        )

        async def record(conn: AsyncConnection) -> int:
            result = await conn.execute(
                update(payments).where(payments.c.id.in_(due)).values(key_expired=True)
            )
            return int(result.rowcount)

        return await self._writes.run(record)

    async def in_doubt(self, started_before: datetime, limit: int) -> list[InDoubt]:
        """Payments whose open attempt started before ``started_before`` and whose claim is
        free or expired, least recently examined first.

        Payments waiting for their payer (``requires_action``) are among them once their
        ``next_check_at`` has come (see :meth:`check_again_at`): asking their provider
        finishes them when a notification was lost, and closes them once their action
        expired."""
        now = self._clock()
        query = (
            select(
                payments,
                provider_attempts.c.attempt_key,
                provider_attempts.c.created_at.label("attempt_started_at"),
                provider_attempts.c.provider.label("attempt_provider"),
            )
            .join(provider_attempts, provider_attempts.c.payment_id == payments.c.id)
            .where(provider_attempts.c.finished_at.is_(None))
            .where(provider_attempts.c.created_at < started_before)
            .where(payments.c.status.in_([s.value for s in WAITING_FOR_PROVIDER]))
            .where(
                or_(
                    payments.c.status != PaymentStatus.REQUIRES_ACTION.value,
                    payments.c.next_check_at.is_(None),
                    payments.c.next_check_at <= now,
                )
            )
            # A payment whose owner is alive is its owner's; the caller claims the others.
            .where(claimable(payments, now))
            .order_by(*least_recently_examined(payments), provider_attempts.c.created_at)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            InDoubt(
                payment=payment_view_of(row._mapping),
                attempt_key=row.attempt_key,
                attempt_started_at=as_utc(row.attempt_started_at),
                attempt_provider=row.attempt_provider,
            )
            for row in rows
        ]
