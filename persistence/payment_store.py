"""The payment store: write-ahead attempts, outcomes with their outbox rows, and queries.

Every method is one database transaction. The two that matter for exactly-once effects:

* :meth:`PaymentStore.begin` records the payment and its provider attempt *before* the
  provider is called, or tells the caller what already exists for that id.
* :meth:`PaymentStore.finish` records the provider's answer and the result event in one
  transaction, so a state change is never visible without its event, or the reverse.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.accounts import AccountRef, AccountType
from domain.commands import CreatePayment, PaymentMethod
from domain.error_info import ErrorInfo
from domain.errors import ErrorCode, PaygateError
from domain.idempotency import OrderPayment, resolve_key
from domain.money import Money
from domain.order_protection import refusal_for_new_payment
from domain.payment import PaymentView
from domain.status import ALLOWED_TRANSITIONS, InvalidTransitionError, PaymentStatus
from persistence.group_commit import GroupCommit
from persistence.tables import outbox, payments, provider_attempts

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


def _utc_now() -> datetime:
    return datetime.now(UTC)


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
    """New payment: the attempt is committed; call the provider with ``attempt_key``."""

    attempt_key: str
    created_at: datetime
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
    def __init__(self, engine: AsyncEngine, clock: Callable[[], datetime] = _utc_now) -> None:
        self._engine = engine
        self._clock = clock
        # Payment writes of concurrent handlers share transactions (see group_commit).
        self._writes = GroupCommit(engine)

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
    ) -> BeginResult:
        """Record a new payment and its first attempt, refuse it, or report what exists.

        Order protection is decided inside the write transaction, with the order locked
        (PostgreSQL: an advisory lock; SQLite: the database write lock), so two payments of
        one order cannot both see "not paid yet". A refused payment is stored as failed,
        with its result event from ``refusal_event``, so the client can query why.
        """
        parameters_hash = command.parameters_fingerprint(account_key)
        now = self._clock()

        async def record(conn: AsyncConnection) -> BeginResult:
            await _lock_order(conn, command.order_id, command.client_id)
            # One query of the order's payments answers both "does this key stand for a
            # payment?" and "is the order paid?".
            order = await _order_payments(conn, command.order_id, command.client_id)
            key = resolve_key(order, command.idempotency_key)
            if key.live_payment_id is not None:
                existing = await _existing_in(conn, key.live_payment_id, parameters_hash)
                assert existing is not None
                return existing
            resolved = dataclasses.replace(command, generation=key.next_generation)
            payment_id = resolved.payment_request_id
            attempt_key = attempt_key_for(payment_id, 1)
            row = _new_payment_row(resolved, parameters_hash, account_key, provider, now)
            refusal = refusal_for_new_payment(
                (p.status for p in order), new_attempt=command.new_attempt
            )
            if refusal is not None:
                await conn.execute(
                    insert(payments).values(
                        **row, status=PaymentStatus.FAILED.value, **error_columns(refusal)
                    )
                )
                await self._enqueue(conn, refusal_event(resolved, refusal, now), now)
                return Refused(refusal, now, key.next_generation)
            await conn.execute(
                insert(payments).values(**row, status=PaymentStatus.PROCESSING.value)
            )
            await conn.execute(
                insert(provider_attempts).values(
                    attempt_key=attempt_key,
                    payment_id=payment_id,
                    attempt_no=1,
                    provider=provider,
                    status=ATTEMPT_STARTED,
                    created_at=now,
                )
            )
            return Started(attempt_key, now, key.next_generation)

        try:
            return await self._writes.run(record)
        except IntegrityError:
            # Another writer inserted the same payment between our read and our insert
            # (the order lock makes this all but impossible); a second pass reads it.
            return await self._writes.run(record)

    async def finish(
        self,
        payment_id: str,
        attempt_key: str,
        *,
        status: PaymentStatus,
        attempt_status: str,
        provider_reference: str | None,
        error: ErrorInfo | None,
        event: OutboxMessage,
    ) -> bool:
        """Record an attempt's outcome and its result event atomically.

        Returns False, changing nothing, when the payment already has ``status``: two
        resolvers of one in-doubt attempt (a redelivery and the reconciler, say) learn the
        same answer from the provider, and only the first records it. Likewise for
        ``pending`` (outcome unknown) arriving once the payment is final. Any other move out of
        a final status raises :class:`domain.status.InvalidTransitionError`.
        """
        now = self._clock()

        async def record(conn: AsyncConnection) -> bool:
            # A conditional update: it moves the payment only from a status that may become
            # ``status``, and takes the row lock on PostgreSQL as it does so.
            moved = await conn.execute(
                update(payments)
                .where(payments.c.id == payment_id)
                .where(payments.c.status.in_([s.value for s in _MAY_BECOME[status]]))
                .values(
                    status=status.value,
                    provider_reference=provider_reference,
                    updated_at=now,
                    next_retry_at=None,
                    **error_columns(error),
                )
            )
            if moved.rowcount != 1:
                current = await self._status_of(conn, payment_id)
                # Already there, or "outcome unknown" arriving after the outcome became
                # known (a timed-out call whose answer the reconciler already recorded).
                # A charge that succeeded and was refunded since counts as "already there".
                if current.charge_outcome is status.charge_outcome or (
                    status is PaymentStatus.PENDING and current.charge_known
                ):
                    return False
                raise InvalidTransitionError(current, status)
            await conn.execute(
                update(provider_attempts)
                .where(provider_attempts.c.attempt_key == attempt_key)
                # An attempt whose outcome is unknown stays open: it is in doubt until
                # the provider is asked about it.
                .values(
                    status=attempt_status,
                    finished_at=None if attempt_status == ATTEMPT_UNKNOWN else now,
                )
            )
            await self._enqueue(conn, event, now)
            return True

        return await self._writes.run(record)

    async def schedule_retry(self, payment_id: str, at: datetime) -> bool:
        """Record when the payment's provider is to be tried again (only while processing)."""

        async def record(conn: AsyncConnection) -> bool:
            result = await conn.execute(
                update(payments)
                .where(payments.c.id == payment_id)
                .where(payments.c.status == PaymentStatus.PROCESSING.value)
                .values(next_retry_at=at)
            )
            return bool(result.rowcount)

        return await self._writes.run(record)

    async def next_attempt(
        self, payment_id: str, failed_attempt_key: str, provider: str
    ) -> str | None:
        """Failover, write-ahead: close a failed attempt and open the next one, atomically.

        In one transaction: the open attempt ``failed_attempt_key`` (it must be the payment's
        latest) is finished as ``failed``, attempt n+1 is inserted for ``provider``, and the
        payment's ``provider`` becomes ``provider``. Only while the payment is still
        ``processing``; otherwise (or if that attempt is no longer the open, latest one)
        nothing changes and None is returned. Returns the new attempt's key: call the
        provider with it only after this returned.
        """
        now = self._clock()

        async def record(conn: AsyncConnection) -> str | None:
            # The row lock (PostgreSQL) serialises this with finish(), which updates the
            # payment row first as well; SQLite holds the database write lock.
            status = (
                await conn.execute(
                    select(payments.c.status).where(payments.c.id == payment_id).with_for_update()
                )
            ).scalar_one_or_none()
            if status != PaymentStatus.PROCESSING.value:
                return None
            latest = (
                await conn.execute(
                    select(
                        provider_attempts.c.attempt_key,
                        provider_attempts.c.attempt_no,
                        provider_attempts.c.finished_at,
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
            ):
                return None
            await conn.execute(
                update(provider_attempts)
                .where(provider_attempts.c.attempt_key == failed_attempt_key)
                .values(status=ATTEMPT_FAILED, finished_at=now)
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
                )
            )
            await conn.execute(
                update(payments)
                .where(payments.c.id == payment_id)
                .values(provider=provider, updated_at=now, next_retry_at=None)
            )
            return attempt_key

        return await self._writes.run(record)

    async def enqueue(self, event: OutboxMessage) -> None:
        """Queue an event on its own, e.g. to re-publish a replayed outcome."""
        now = self._clock()

        async def record(conn: AsyncConnection) -> None:
            await self._enqueue(conn, event, now)

        await self._writes.run(record)

    async def get_payment(self, payment_id: str) -> PaymentView | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(payments).where(payments.c.id == payment_id))
            ).one_or_none()
        return None if row is None else payment_view_of(row._mapping)

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
            .order_by(provider_attempts.c.created_at)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            InDoubt(
                payment=payment_view_of(row._mapping),
                attempt_key=row.attempt_key,
                attempt_started_at=_as_utc(row.attempt_started_at),
                attempt_provider=row.attempt_provider,
            )
            for row in rows
        ]

    async def _status_of(self, conn: AsyncConnection, payment_id: str) -> PaymentStatus:
        status = (
            await conn.execute(select(payments.c.status).where(payments.c.id == payment_id))
        ).scalar_one()
        return PaymentStatus(status)

    @staticmethod
    async def _enqueue(conn: AsyncConnection, event: OutboxMessage, now: datetime) -> None:
        await enqueue_outbox(conn, event, now)


async def enqueue_outbox(conn: AsyncConnection, event: OutboxMessage, now: datetime) -> None:
    """Queue ``event`` in the caller's transaction, so it commits with the state it reports."""
    await conn.execute(
        insert(outbox).values(
            event_id=event.event_id,
            topic=event.topic,
            message_key=event.key,
            payload=event.payload,
            created_at=now,
        )
    )


def _as_utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes even for timezone-aware columns.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


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
        created_at=_as_utc(row["created_at"]),
        updated_at=_as_utc(row["updated_at"]),
        parameters_hash=row["parameters_hash"],
        next_retry_at=None if row["next_retry_at"] is None else _as_utc(row["next_retry_at"]),
        client_id=row["client_id"],
        refunded_minor=row["refunded_minor"],
        refund_reserved_minor=row["refund_reserved_minor"],
    )


async def _lock_order(conn: AsyncConnection, order_id: str, client_id: str | None) -> None:
    if conn.dialect.name == "postgresql":
        # Held until the transaction ends; rows that do not exist yet cannot be locked.
        scope = order_id if client_id is None else f"{client_id}\x1f{order_id}"
        await conn.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(scope, 0))))
    # SQLite: write transactions already hold the database write lock from BEGIN.


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
    row = (await conn.execute(select(payments).where(payments.c.id == payment_id))).one_or_none()
    if row is None:
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
        payment=payment_view_of(row._mapping),
        same_parameters=row.parameters_hash == parameters_hash,
        open_attempt_key=None if open_attempt is None else open_attempt.attempt_key,
        open_attempt_started_at=None if open_attempt is None else _as_utc(open_attempt.created_at),
        open_attempt_provider=None if open_attempt is None else open_attempt.provider,
    )


async def _order_payments(
    conn: AsyncConnection, order_id: str, client_id: str | None
) -> list[OrderPayment]:
    same_client = (
        payments.c.client_id.is_(None) if client_id is None else payments.c.client_id == client_id
    )
    rows = await conn.execute(
        select(payments.c.id, payments.c.idempotency_key, payments.c.status, payments.c.key_expired)
        .where(payments.c.order_id == order_id)
        .where(same_client)
    )
    return [
        OrderPayment(row.id, row.idempotency_key, PaymentStatus(row.status), row.key_expired)
        for row in rows
    ]
