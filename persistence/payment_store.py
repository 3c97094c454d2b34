"""The payment store: write-ahead attempts, outcomes with their outbox rows, and queries.

Every method is one database transaction. The two that matter for exactly-once effects:

* :meth:`PaymentStore.begin` records the payment and its provider attempt *before* the
  provider is called, or tells the caller what already exists for that id.
* :meth:`PaymentStore.finish` records the provider's answer and the result event in one
  transaction, so a state change is never visible without its event, or the reverse.

Both run in bulk when concurrent handlers call them together (see
:mod:`persistence.group_commit`): a batch of begins locks its orders, reads all their
payments in one query and inserts the new rows with one statement per table; a batch of
finishes reads and locks its payments in one query and updates them with one executemany
statement per table. Anything unusual in a batch (two operations on one order or payment, a
replay of a known payment) runs the one-operation code, in the same transaction.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    Text,
    bindparam,
    case,
    delete,
    insert,
    null,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.accounts import AccountRef, AccountType
from domain.clock import utc_now
from domain.commands import CreatePayment, PaymentMethod
from domain.error_info import ErrorInfo
from domain.errors import ErrorCode, PaygateError
from domain.idempotency import OrderPayment, resolve_key
from domain.money import Money
from domain.order_protection import refusal_for_new_payment
from domain.payment import PaymentView
from domain.status import ALLOWED_TRANSITIONS, InvalidTransitionError, PaymentStatus
from persistence.claims import Claim, claim_columns, claimable, is_claimable, new_claim
from persistence.engine import as_utc
from persistence.group_commit import Bulk, GroupCommit
from persistence.tables import outbox, payments, provider_attempts

# How long a claim on a payment lasts before another worker may take it over (see
# persistence.claims): longer than a provider call, so a live owner is not replaced mid-call.
DEFAULT_CLAIM_LEASE = timedelta(seconds=30)

ATTEMPT_STARTED = "started"
ATTEMPT_SUCCEEDED = "succeeded"
ATTEMPT_DECLINED = "declined"
ATTEMPT_FAILED = "failed"
ATTEMPT_UNKNOWN = "unknown"


# For each status, the statuses a payment may move to it from.
_MAY_BECOME = {
    target: [source for source, targets in ALLOWED_TRANSITIONS.items() if target in targets]
    for target in PaymentStatus
}


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    event_id: str
    topic: str
    key: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class PendingOutboxRow:
    id: int
    topic: str
    key: str
    payload: bytes


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
class InDoubt:
    """A payment whose latest provider attempt has no known outcome."""

    payment: PaymentView
    attempt_key: str
    attempt_started_at: datetime
    attempt_provider: str


@dataclass(frozen=True, slots=True)
class ClaimedAttempt:
    """The caller now owns the payment's open attempt: only it may call the provider."""

    claim: Claim
    attempt_key: str
    provider: str
    started_at: datetime
    sealed_request: bytes | None
    generation: int


@dataclass(frozen=True, slots=True)
class Refused:
    """Order protection refused the payment; it is stored as failed with ``error``."""

    error: PaygateError
    created_at: datetime
    generation: int = 0


BeginResult = Started | Existing | Refused


def attempt_key_for(payment_id: str, attempt_no: int) -> str:
    """Deterministic, so the provider's idempotency key for an attempt can be re-derived."""
    return f"{payment_id}-a{attempt_no}"


def attempt_number(attempt_key: str) -> int:
    """The n of an attempt key made by :func:`attempt_key_for`."""
    return int(attempt_key.rsplit("-a", 1)[1])


class PaymentStore:
    def __init__(
        self,
        engine: AsyncEngine,
        clock: Callable[[], datetime] = utc_now,
        *,
        claim_lease: timedelta = DEFAULT_CLAIM_LEASE,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._lease = claim_lease
        # Payment writes of concurrent handlers share transactions (see group_commit).
        self._writes = GroupCommit(engine)

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @property
    def writes(self) -> GroupCommit:
        """The one writer queue of this database, for stores that write next to this one."""
        return self._writes

    async def begin(
        self,
        command: CreatePayment,
        *,
        provider: str,
        account_key: bytes,
        refusal_event: Callable[[CreatePayment, PaygateError, datetime], OutboxMessage],
        seal: Callable[[CreatePayment], bytes] | None = None,
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
        """
        now = self._clock()
        request = _BeginRequest(
            command=command,
            parameters_hash=command.parameters_fingerprint(account_key),
            provider=provider,
            account_key=account_key,
            refusal_event=refusal_event,
            now=now,
            claim=new_claim(now, self._lease),
            seal=seal,
        )

        async def record(conn: AsyncConnection) -> BeginResult:
            return await _begin_one(conn, request)

        bulk = Bulk(_begin_many, request)
        try:
            return await self._writes.run(record, bulk)
        except IntegrityError:
            # Another writer inserted the same payment between our read and our insert
            # (the order lock makes this all but impossible); a second pass reads it.
            return await self._writes.run(record, bulk)

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
    ) -> bool:
        """Record an attempt's outcome and its result event atomically, and release the claim.

        Applies only while ``claim`` is still the payment's claim token. Returns False,
        changing the payment in no way, when it is not (another worker took the payment
        over: its owner records the outcome) or when the payment already has ``status``.
        A charge reported under an attempt that was meanwhile closed as not charged is
        recorded on that attempt as a stray charge (see consumer.stray_charges), never
        dropped. A move out of a final status by the claim's holder raises
        :class:`domain.status.InvalidTransitionError`.
        """
        request = _FinishRequest(
            payment_id=payment_id,
            attempt_key=attempt_key,
            claim=claim,
            status=status,
            attempt_status=attempt_status,
            provider_reference=provider_reference,
            error=error,
            event=event,
            now=self._clock(),
        )

        async def record(conn: AsyncConnection) -> bool:
            return await _finish_one(conn, request)

        return await self._writes.run(record, Bulk(_finish_many, request))

    async def schedule_retry(self, payment_id: str, at: datetime, *, claim: str) -> bool:
        """Record when the payment's provider is to be tried again (only while processing
        and only by the claim's holder, whose claim now lasts until a lease after ``at``)."""
        expires_at = max(at, self._clock()) + self._lease

        async def record(conn: AsyncConnection) -> bool:
            result = await conn.execute(
                update(payments)
                .where(payments.c.id == payment_id)
                .where(payments.c.status == PaymentStatus.PROCESSING.value)
                .where(payments.c.claim_token == claim)
                .values(next_retry_at=at, claim_expires_at=expires_at)
            )
            return bool(result.rowcount)

        return await self._writes.run(record)

    async def claim(self, payment_id: str) -> ClaimedAttempt | None:
        """Take the claim on the payment's open attempt, or None if it cannot be taken.

        It can be taken when the payment waits on a provider (``pending`` or ``processing``),
        its latest attempt is open, and nobody holds the claim (or the holder's lease has
        expired). Decided with the payment row locked, so of two takers only one wins.
        """
        now = self._clock()

        async def record(conn: AsyncConnection) -> ClaimedAttempt | None:
            row = (
                await conn.execute(
                    select(
                        payments.c.status,
                        payments.c.claim_token,
                        payments.c.claim_expires_at,
                        payments.c.key_generation,
                    )
                    .where(payments.c.id == payment_id)
                    .with_for_update()
                )
            ).one_or_none()
            if (
                row is None
                or PaymentStatus(row.status).charge_known
                or not is_claimable(row.claim_token, _utc_or_none(row.claim_expires_at), now)
            ):
                return None
            latest = await _latest_attempt(conn, payment_id)
            if latest is None or latest.finished_at is not None:
                return None
            claim = new_claim(now, self._lease)
            await conn.execute(
                update(payments).where(payments.c.id == payment_id).values(**claim_columns(claim))
            )
            return ClaimedAttempt(
                claim,
                latest.attempt_key,
                latest.provider,
                as_utc(latest.created_at),
                latest.sealed_request,
                row.key_generation,
            )

        return await self._writes.run(record)

    async def renew(self, payment_id: str, claim: str) -> bool:
        """Extend the holder's claim by a lease; False if ``claim`` is no longer the
        payment's (then the caller must not call the provider)."""
        expires_at = self._clock() + self._lease

        async def record(conn: AsyncConnection) -> bool:
            result = await conn.execute(
                update(payments)
                .where(payments.c.id == payment_id)
                .where(payments.c.claim_token == claim)
                .values(claim_expires_at=expires_at)
            )
            return bool(result.rowcount)

        return await self._writes.run(record)

    async def release(self, payment_id: str, claim: str) -> None:
        """Give the claim up (the holder cannot go on now), so another may take it at once."""

        async def record(conn: AsyncConnection) -> None:
            await conn.execute(
                update(payments)
                .where(payments.c.id == payment_id)
                .where(payments.c.claim_token == claim)
                .values(**claim_columns(None))
            )

        await self._writes.run(record)

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
            # The row lock (PostgreSQL) serialises this with finish(), which updates the
            # payment row first as well; SQLite holds the database write lock.
            row = (
                await conn.execute(
                    select(payments.c.status, payments.c.claim_token)
                    .where(payments.c.id == payment_id)
                    .with_for_update()
                )
            ).one_or_none()
            if (
                row is None
                or row.status != PaymentStatus.PROCESSING.value
                or row.claim_token != claim
            ):
                return None
            latest = (
                await conn.execute(
                    select(
                        provider_attempts.c.attempt_key,
                        provider_attempts.c.attempt_no,
                        provider_attempts.c.finished_at,
                        provider_attempts.c.sealed_request,
                        provider_attempts.c.opened_by,
                    )
                    .where(provider_attempts.c.payment_id == payment_id)
                    .order_by(provider_attempts.c.attempt_no.desc())
                    .limit(1)
                )
            ).one_or_none()
            if (
                latest is None
                or latest.attempt_key != failed_attempt_key
                or latest.finished_at is not None
                # Taken over since it was opened: its first owner may still have the call in
                # flight, so "not charged" is not certain for this key; only the same key may
                # be sent again (see PaymentCommandHandler._charge).
                or latest.opened_by != claim
            ):
                return None
            await conn.execute(
                update(provider_attempts)
                .where(provider_attempts.c.attempt_key == failed_attempt_key)
                .values(status=ATTEMPT_FAILED, finished_at=now, sealed_request=None)
            )
            attempt_no = latest.attempt_no + 1
            attempt_key = attempt_key_for(payment_id, attempt_no)
            await conn.execute(
                insert(provider_attempts).values(
                    attempt_key=attempt_key,
                    payment_id=payment_id,
                    attempt_no=attempt_no,
                    provider=provider,
                    status=ATTEMPT_STARTED,
                    created_at=now,
                    sealed_request=latest.sealed_request,
                    opened_by=claim,
                )
            )
            await conn.execute(
                update(payments)
                .where(payments.c.id == payment_id)
                .values(
                    provider=provider,
                    updated_at=now,
                    next_retry_at=None,
                    claim_expires_at=now + self._lease,
                )
            )
            return attempt_key

        return await self._writes.run(record)

    async def enqueue(self, event: OutboxMessage) -> None:
        """Queue an event on its own, e.g. to re-publish a replayed outcome."""
        await enqueue_alone(self._writes, event, self._clock())

    async def get_payment(self, payment_id: str) -> PaymentView | None:
        async with self._engine.connect() as conn:
            return await payment_in(conn, payment_id)

    async def order_payments(self, order_id: str, client_id: str | None) -> list[OrderPayment]:
        """The payments of ``client_id``'s order ``order_id`` (None: upstream services')."""
        async with self._engine.connect() as conn:
            return await _order_payments(conn, order_id, client_id)

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

        async def record(conn: AsyncConnection) -> int:
            result = await conn.execute(
                update(payments)
                .where(payments.c.key_expired.is_(False))
                .where(payments.c.created_at < created_before)
                .values(key_expired=True)
            )
            return int(result.rowcount)

        return await self._writes.run(record)

    async def prune_outbox(self, published_before: datetime) -> int:
        """Delete outbox rows published before ``published_before``; return how many."""

        async def record(conn: AsyncConnection) -> int:
            result = await conn.execute(
                delete(outbox)
                .where(outbox.c.published_at.is_not(None))
                .where(outbox.c.published_at < published_before)
            )
            return int(result.rowcount)

        return await self._writes.run(record)

    async def unpublished(self, limit: int) -> list[PendingOutboxRow]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(outbox.c.id, outbox.c.topic, outbox.c.message_key, outbox.c.payload)
                .where(outbox.c.published_at.is_(None))
                .order_by(outbox.c.id)
                .limit(limit)
            )
            return [PendingOutboxRow(r.id, r.topic, r.message_key, r.payload) for r in rows]

    async def mark_published(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        now = self._clock()

        async def record(conn: AsyncConnection) -> None:
            await conn.execute(update(outbox).where(outbox.c.id.in_(ids)).values(published_at=now))

        # Through the same queue as the payment writes: on SQLite a second writer would
        # wait in SQLite's sleeping busy handler instead of queueing here.
        await self._writes.run(record)

    async def in_doubt(self, started_before: datetime, limit: int) -> list[InDoubt]:
        """Payments whose open attempt started before ``started_before``, oldest first."""
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
            .where(
                payments.c.status.in_([PaymentStatus.PENDING.value, PaymentStatus.PROCESSING.value])
            )
            # A payment whose owner is alive is its owner's; the caller claims the others.
            .where(claimable(payments, self._clock()))
            .order_by(provider_attempts.c.created_at)
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


async def enqueue_outbox(conn: AsyncConnection, event: OutboxMessage, now: datetime) -> None:
    """Queue ``event`` in the caller's transaction, so it commits with the state it reports."""
    await conn.execute(insert(outbox).values(**_outbox_row(event, now)))


async def enqueue_alone(writes: GroupCommit, event: OutboxMessage, now: datetime) -> None:
    """Queue ``event`` in a write transaction of its own (through the store's queue)."""

    async def record(conn: AsyncConnection) -> None:
        await enqueue_outbox(conn, event, now)

    await writes.run(record)


def _outbox_row(event: OutboxMessage, now: datetime) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "topic": event.topic,
        "message_key": event.key,
        "payload": event.payload,
        "created_at": now,
    }


# --- begin: one operation, or a batch of them --------------------------------------------


@dataclass(frozen=True, slots=True)
class _BeginRequest:
    command: CreatePayment
    parameters_hash: str
    provider: str
    account_key: bytes
    refusal_event: Callable[[CreatePayment, PaygateError, datetime], OutboxMessage]
    now: datetime
    claim: Claim
    seal: Callable[[CreatePayment], bytes] | None

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


def _new_payment(request: _BeginRequest, order: list[OrderPayment], generation: int) -> _NewPayment:
    """Decide (order protection included) what a begin inserts for a new payment."""
    resolved = dataclasses.replace(request.command, generation=generation)
    payment_id = resolved.payment_request_id
    now = request.now
    row = _new_payment_row(
        resolved, request.parameters_hash, request.account_key, request.provider, now
    )
    refusal = refusal_for_new_payment(
        (p.status for p in order), new_attempt=request.command.new_attempt
    )
    if refusal is not None:
        return _NewPayment(
            Refused(refusal, now, generation),
            {
                **row,
                "status": PaymentStatus.FAILED.value,
                **error_columns(refusal),
                **claim_columns(None),
            },
            None,
            _outbox_row(request.refusal_event(resolved, refusal, now), now),
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


async def _begin_one(conn: AsyncConnection, request: _BeginRequest) -> BeginResult:
    command = request.command
    await _lock_orders(conn, [(command.client_id, command.order_id)])
    # One query of the order's payments answers both "does this key stand for a
    # payment?" and "is the order paid?".
    order = await _order_payments(conn, command.order_id, command.client_id)
    key = resolve_key(order, command.idempotency_key)
    if key.live_payment_id is not None:
        existing = await _existing_in(conn, key.live_payment_id, request.parameters_hash)
        assert existing is not None
        return existing
    new = _new_payment(request, order, key.next_generation)
    await conn.execute(insert(payments).values(**new.payment))
    if new.attempt is not None:
        await conn.execute(insert(provider_attempts).values(**new.attempt))
    if new.event is not None:
        await conn.execute(insert(outbox).values(**new.event))
    return new.result


async def _begin_many(
    conn: AsyncConnection, requests: Sequence[_BeginRequest]
) -> list[BeginResult]:
    """Many begins in one transaction: the same decisions as :func:`_begin_one`, made from
    one read of all their orders, with one insert per table.

    Only a new payment of an order nobody else in the batch touches is decided here; a
    known key (a replay) or two begins of one order run :func:`_begin_one` after the bulk
    inserts, under the same locks, so each sees what the others wrote.
    """
    await _lock_orders(conn, [request.order for request in requests])
    orders = await _payments_of_orders(conn, {request.command.order_id for request in requests})
    per_order = Counter(request.order for request in requests)
    results: list[BeginResult | None] = [None] * len(requests)
    alone: list[int] = []
    new: list[_NewPayment] = []
    for index, request in enumerate(requests):
        order = orders.get(request.order, [])
        key = resolve_key(order, request.command.idempotency_key)
        if per_order[request.order] > 1 or key.live_payment_id is not None:
            alone.append(index)
            continue
        planned = _new_payment(request, order, key.next_generation)
        new.append(planned)
        results[index] = planned.result
    await _insert_rows(conn, payments, [n.payment for n in new])
    await _insert_rows(conn, provider_attempts, [n.attempt for n in new if n.attempt is not None])
    await _insert_rows(conn, outbox, [n.event for n in new if n.event is not None])
    for index in alone:
        results[index] = await _begin_one(conn, requests[index])
    return [_answered(result) for result in results]


async def _insert_rows(conn: AsyncConnection, table: Any, rows: list[dict[str, Any]]) -> None:
    # A list of parameter sets is one executemany: one hop to the driver (aiosqlite's
    # thread; asyncpg pipelines the rows), whatever the number of rows.
    if rows:
        await conn.execute(insert(table), rows)


def _answered(result: BeginResult | None) -> BeginResult:
    assert result is not None, "every begin of a batch is answered"
    return result


async def _lock_orders(conn: AsyncConnection, orders: Sequence[tuple[str | None, str]]) -> None:
    """Lock the orders (a PostgreSQL advisory lock per (client, order), held until the
    transaction ends: rows that do not exist yet cannot be locked), in one statement.

    The locks are taken in the order of their keys, so two transactions locking
    overlapping sets (two consumer processes during a rebalance) queue instead of
    deadlocking.
    """
    if conn.dialect.name != "postgresql":
        return  # SQLite: write transactions already hold the database write lock from BEGIN.
    scopes = sorted({_order_scope(order_id, client_id) for client_id, order_id in orders})
    await conn.execute(_LOCK_ORDERS, {"scopes": scopes})


_LOCK_ORDERS = text(
    "SELECT pg_advisory_xact_lock(h) FROM ("
    " SELECT DISTINCT hashtextextended(s, 0) AS h FROM unnest(CAST(:scopes AS text[])) AS s"
    " ORDER BY h) AS ordered"
).bindparams(bindparam("scopes", type_=ARRAY(Text)))


async def _payments_of_orders(
    conn: AsyncConnection, order_ids: set[str]
) -> dict[tuple[str | None, str], list[OrderPayment]]:
    """The payments of each (client, order) of these order ids, for key resolution and
    order protection."""
    rows = await conn.execute(
        select(
            payments.c.id,
            payments.c.idempotency_key,
            payments.c.status,
            payments.c.key_expired,
            payments.c.order_id,
            payments.c.client_id,
        ).where(payments.c.order_id.in_(sorted(order_ids)))
    )
    orders: dict[tuple[str | None, str], list[OrderPayment]] = {}
    for row in rows:
        orders.setdefault((row.client_id, row.order_id), []).append(
            OrderPayment(row.id, row.idempotency_key, PaymentStatus(row.status), row.key_expired)
        )
    return orders


# --- finish: one operation, or a batch of them -------------------------------------------


@dataclass(frozen=True, slots=True)
class _FinishRequest:
    payment_id: str
    attempt_key: str
    claim: str
    status: PaymentStatus
    attempt_status: str
    provider_reference: str | None
    error: ErrorInfo | None
    event: OutboxMessage
    now: datetime


def _already_there(current: PaymentStatus, target: PaymentStatus) -> bool:
    """Whether a payment in ``current`` that may not become ``target`` already is it."""
    # Already there, or "outcome unknown" arriving after the outcome became known (a
    # timed-out call whose answer the reconciler already recorded). A charge that succeeded
    # and was refunded since counts as "already there".
    return current.charge_outcome is target.charge_outcome or (
        target is PaymentStatus.PENDING and current.charge_known
    )


def _attempt_finished_at(request: _FinishRequest) -> datetime | None:
    # An attempt whose outcome is unknown stays open: it is in doubt until the provider is
    # asked about it.
    return None if request.attempt_status == ATTEMPT_UNKNOWN else request.now


async def _finish_one(conn: AsyncConnection, request: _FinishRequest) -> bool:
    status = request.status
    # A conditional update: it moves the payment only from a status that may become
    # ``status`` and only for the claim's holder, and takes the row lock on PostgreSQL as it
    # does so.
    moved = await conn.execute(
        update(payments)
        .where(payments.c.id == request.payment_id)
        .where(payments.c.status.in_([s.value for s in _MAY_BECOME[status]]))
        .where(payments.c.claim_token == request.claim)
        .values(
            status=status.value,
            provider_reference=request.provider_reference,
            updated_at=request.now,
            next_retry_at=None,
            **error_columns(request.error),
            **claim_columns(None),
        )
    )
    if moved.rowcount != 1:
        current = (
            await conn.execute(
                select(payments.c.status, payments.c.claim_token).where(
                    payments.c.id == request.payment_id
                )
            )
        ).one()
        if current.claim_token != request.claim or _already_there(
            PaymentStatus(current.status), status
        ):
            await _note_stray_charge(conn, request)
            return False
        raise InvalidTransitionError(PaymentStatus(current.status), status)
    finished = await conn.execute(_FINISH_ATTEMPT, [_finish_attempt_params(request)])
    if finished.rowcount != 1:
        # The claim's holder finishes the attempt it opened, which only it can close: if it
        # is not open, the store was changed behind the claims' back. Roll back.
        raise RuntimeError(f"attempt {request.attempt_key} is not open")
    await enqueue_outbox(conn, request.event, request.now)
    return True


async def _note_stray_charge(conn: AsyncConnection, request: _FinishRequest) -> None:
    """A worker that lost its claim learned that the provider charged under its attempt.

    If that attempt is still the payment's open one, its owner will learn the same from
    the provider (same key): nothing to do. If it was closed meanwhile (as certainly not
    charged, or the payment moved on), this charge is not the payment's: it is recorded on
    the attempt, where the stray-charge sweep finds and reverses it.
    """
    if request.attempt_status != ATTEMPT_SUCCEEDED:
        return
    await conn.execute(
        _NOTE_STRAY_CHARGE,
        [{"b_attempt_key": request.attempt_key, "b_ref": request.provider_reference}],
    )


# A charge under an attempt already closed otherwise: recorded on that attempt, where the
# stray-charge sweep finds it. An open attempt is its owner's to finish.
_NOTE_STRAY_CHARGE = (
    update(provider_attempts)
    .where(provider_attempts.c.attempt_key == bindparam("b_attempt_key"))
    .where(provider_attempts.c.finished_at.is_not(None))
    .where(provider_attempts.c.status != ATTEMPT_SUCCEEDED)
    .values(status=ATTEMPT_SUCCEEDED, provider_reference=bindparam("b_ref"))
)


async def _finish_many(conn: AsyncConnection, requests: Sequence[_FinishRequest]) -> list[bool]:
    """Many finishes in one transaction, with :func:`_finish_one`'s semantics.

    The payments are read, and locked (``FOR UPDATE`` on PostgreSQL, in id order; SQLite
    holds the write lock), in one query; which may move is decided here from the status
    read; the moves are one executemany UPDATE that re-checks that status per row. A
    refused transition raises, so that the batch is run again one operation at a time and
    only its caller hears of it. Two finishes of one payment, or one of a payment not
    found, run :func:`_finish_one` after the bulk statements.
    """
    per_payment = Counter(request.payment_id for request in requests)
    rows = (
        await conn.execute(
            select(payments.c.id, payments.c.status, payments.c.claim_token)
            .where(payments.c.id.in_(sorted(per_payment)))
            .order_by(payments.c.id)
            .with_for_update()
        )
    ).all()
    seen = {row.id: PaymentStatus(row.status) for row in rows}
    claims = {row.id: row.claim_token for row in rows}
    results: list[bool] = [False] * len(requests)
    alone: list[int] = []
    moves: list[_FinishRequest] = []
    strays: list[_FinishRequest] = []
    for index, request in enumerate(requests):
        current = seen.get(request.payment_id)
        owner = claims.get(request.payment_id) == request.claim
        if current is None or per_payment[request.payment_id] > 1:
            alone.append(index)  # unusual: decided one at a time
        elif owner and current in _MAY_BECOME[request.status]:
            moves.append(request)
            results[index] = True
        elif owner and not _already_there(current, request.status):
            raise InvalidTransitionError(current, request.status)
        elif request.attempt_status == ATTEMPT_SUCCEEDED:
            strays.append(request)  # not applied; a charge is never dropped (see below)
    if moves:
        moved = await conn.execute(
            _MOVE_PAYMENT,
            [
                {
                    "b_id": request.payment_id,
                    "b_seen": seen[request.payment_id].value,
                    "b_claim": request.claim,
                    "b_status": request.status.value,
                    "b_provider_reference": request.provider_reference,
                    "b_now": request.now,
                    **{f"b_{name}": value for name, value in error_columns(request.error).items()},
                }
                for request in moves
            ],
        )
        # The rows are locked since they were read, so every one moves; checked where the
        # driver can count an executemany (SQLite), as a guard on that reasoning.
        if conn.dialect.supports_sane_multi_rowcount and moved.rowcount != len(moves):
            raise RuntimeError(f"bulk finish moved {moved.rowcount} of {len(moves)} payments")
        finished = await conn.execute(
            _FINISH_ATTEMPT, [_finish_attempt_params(request) for request in moves]
        )
        if conn.dialect.supports_sane_multi_rowcount and finished.rowcount != len(moves):
            raise RuntimeError(f"bulk finish closed {finished.rowcount} of {len(moves)} attempts")
        await _insert_rows(conn, outbox, [_outbox_row(r.event, r.now) for r in moves])
    if strays:
        await conn.execute(
            _NOTE_STRAY_CHARGE,
            [{"b_attempt_key": r.attempt_key, "b_ref": r.provider_reference} for r in strays],
        )
    for index in alone:
        results[index] = await _finish_one(conn, requests[index])
    return results


async def payment_in(conn: AsyncConnection, payment_id: str) -> PaymentView | None:
    """The payment as ``conn`` sees it (in its transaction, if it has one)."""
    row = (await conn.execute(select(payments).where(payments.c.id == payment_id))).one_or_none()
    return None if row is None else payment_view_of(row._mapping)


def payment_view_of(row: Any) -> PaymentView:
    error = (
        None
        if row["error_code"] is None
        else ErrorInfo(
            code=ErrorCode(row["error_code"]),
            message=row["error_message"] or "",
            param=row["error_param"],
            decline_code=row["decline_code"],
        )
    )
    return PaymentView(
        payment_request_id=row["id"],
        order_id=row["order_id"],
        user_id=row["user_id"],
        idempotency_key=row["idempotency_key"],
        status=PaymentStatus(row["status"]),
        amount=Money(row["amount_minor"], row["currency"]),
        payment_method=PaymentMethod(row["payment_method"]),
        payer=AccountRef(
            AccountType(row["payer_type"]), row["payer_masked"], row["payer_fingerprint"]
        ),
        payee=AccountRef(
            AccountType(row["payee_type"]), row["payee_masked"], row["payee_fingerprint"]
        ),
        provider=row["provider"],
        provider_reference=row["provider_reference"],
        error=error,
        created_at=as_utc(row["created_at"]),
        updated_at=as_utc(row["updated_at"]),
        parameters_hash=row["parameters_hash"],
        next_retry_at=None if row["next_retry_at"] is None else as_utc(row["next_retry_at"]),
        client_id=row["client_id"],
        refunded_minor=row["refunded_minor"],
        refund_reserved_minor=row["refund_reserved_minor"],
    )


def _order_scope(order_id: str, client_id: str | None) -> str:
    return order_id if client_id is None else f"{client_id}\x1f{order_id}"


def _new_payment_row(
    command: CreatePayment,
    parameters_hash: str,
    account_key: bytes,
    provider: str,
    now: datetime,
) -> dict[str, Any]:
    payer = command.payer.ref(account_key)
    payee = command.payee.ref(account_key)
    return {
        "id": command.payment_request_id,
        "order_id": command.order_id,
        "client_id": command.client_id,
        "user_id": command.user_id,
        "idempotency_key": command.idempotency_key,
        "key_generation": command.generation,
        "key_expired": False,
        "parameters_hash": parameters_hash,
        "amount_minor": command.amount.minor_units,
        "currency": command.amount.currency,
        "payment_method": command.payment_method.value,
        "payer_type": payer.type.value,
        "payer_masked": payer.masked,
        "payer_fingerprint": payer.fingerprint,
        "payee_type": payee.type.value,
        "payee_masked": payee.masked,
        "payee_fingerprint": payee.fingerprint,
        "metadata": dict(command.metadata),
        "provider": provider,
        "created_at": now,
        "updated_at": now,
    }


def error_columns(error: PaygateError | ErrorInfo | None) -> dict[str, Any]:
    return {
        "error_code": None if error is None else error.code.value,
        "error_message": None if error is None else error.message,
        "error_param": None if error is None else error.param,
        "decline_code": None if error is None else error.decline_code,
    }


async def _existing_in(
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


async def _order_payments(
    conn: AsyncConnection, order_id: str, client_id: str | None
) -> list[OrderPayment]:
    return (await _payments_of_orders(conn, {order_id})).get((client_id, order_id), [])


# Bind names differ from column names: SQLAlchemy reserves those for the SET clause.
_MOVE_PAYMENT = (
    update(payments)
    .where(payments.c.id == bindparam("b_id"))
    .where(payments.c.status == bindparam("b_seen"))
    .where(payments.c.claim_token == bindparam("b_claim"))
    .values(
        status=bindparam("b_status"),
        provider_reference=bindparam("b_provider_reference"),
        updated_at=bindparam("b_now"),
        next_retry_at=None,
        claim_token=None,
        claim_expires_at=None,
        **{name: bindparam(f"b_{name}") for name in error_columns(None)},
    )
)

# Only an open attempt finishes; the sealed request goes once the attempt is closed (one
# whose outcome is unknown stays open, and keeps it for whoever re-sends it).
_FINISH_ATTEMPT = (
    update(provider_attempts)
    .where(provider_attempts.c.attempt_key == bindparam("b_attempt_key"))
    .where(provider_attempts.c.finished_at.is_(None))
    .values(
        status=bindparam("b_status"),
        finished_at=bindparam("b_finished_at"),
        provider_reference=bindparam("b_provider_reference"),
        sealed_request=case(
            (bindparam("b_keep_sealed", type_=Boolean), provider_attempts.c.sealed_request),
            else_=null(),
        ),
    )
)


def _finish_attempt_params(request: _FinishRequest) -> dict[str, Any]:
    finished_at = _attempt_finished_at(request)
    return {
        "b_attempt_key": request.attempt_key,
        "b_status": request.attempt_status,
        "b_finished_at": finished_at,
        "b_provider_reference": request.provider_reference,
        "b_keep_sealed": finished_at is None,
    }


async def _latest_attempt(conn: AsyncConnection, payment_id: str) -> Any:
    return (
        await conn.execute(
            select(
                provider_attempts.c.attempt_key,
                provider_attempts.c.provider,
                provider_attempts.c.created_at,
                provider_attempts.c.finished_at,
                provider_attempts.c.sealed_request,
            )
            .where(provider_attempts.c.payment_id == payment_id)
            .order_by(provider_attempts.c.attempt_no.desc())
            .limit(1)
        )
    ).one_or_none()


def _utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)
