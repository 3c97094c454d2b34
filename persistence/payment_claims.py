"""Claims on a payment's provider attempts: taking one, renewing it, giving it up, and the
two writes only its holder may make (a retry's schedule, failover to the next attempt).

The mechanism and its argument are in persistence.claims; this module applies it to
payments, whose claim covers the open attempt.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.payment_view import PaymentView
from domain.status import WAITING_FOR_PROVIDER, PaymentStatus
from persistence.attempts import ATTEMPT_FAILED, ATTEMPT_STARTED, attempt_key_for, latest_attempt
from persistence.claims import Claim, take_claim
from persistence.engine import as_utc
from persistence.payment_rows import payment_in
from persistence.tables import payments, provider_attempts

# A payment's attempts can be claimed while it waits on a provider (or the provider on the
# payer: the claim is then taken to ask how it ended, or to record what a notification said).
_CLAIMABLE = tuple(s.value for s in WAITING_FOR_PROVIDER)
# Retries are scheduled only for calls this service makes, never while the payer acts.
_WAITING = (PaymentStatus.PENDING.value, PaymentStatus.PROCESSING.value)


@dataclass(frozen=True, slots=True)
class InDoubt:
    """A payment whose latest provider attempt has no known outcome."""

    payment: PaymentView
    attempt_key: str
    attempt_started_at: datetime
    attempt_provider: str


@dataclass(frozen=True, slots=True)
class ClaimedAttempt:
    """The caller now owns the payment's open attempt: only it may call the provider.

    ``payment`` is the payment as read under the claim's lock, in the claim's transaction:
    the caller resolves it from this view, never from one read before the claim (another
    worker may have recorded the payer's action, or a retry's schedule, in between).

    ``started_at``: when the attempt was made (and its key first sent): the provider's
    idempotency window counts from it. ``last_sent_at``: when its key was last sent
    (``started_at`` if never re-sent): the provider's silence about the key is final only
    counted from it (see :func:`stamp_sending`). ``resends``: how often its key was sent
    again so far (re-sends and retries); past ``PAYGATE_RESEND_LIMIT`` it is not re-sent
    (consumer.payment_handler)."""

    claim: Claim
    attempt_key: str
    provider: str
    started_at: datetime
    sealed_request: bytes | None
    generation: int
    payment: PaymentView
    last_sent_at: datetime
    resends: int = 0


async def claim_open_attempt(
    conn: AsyncConnection, payment_id: str, now: datetime, lease: timedelta
) -> ClaimedAttempt | None:
    """Take the claim on the payment's open attempt (see PaymentStore.claim)."""
    found: list[tuple[Any, int]] = []

    async def latest_is_open(conn: AsyncConnection) -> bool:
        # Read under the payment's lock: a former owner's failover cannot slip in between.
        latest = await latest_attempt(conn, payment_id)
        generation = (
            await conn.execute(select(payments.c.key_generation).where(payments.c.id == payment_id))
        ).scalar_one()
        found.append((latest, generation))
        return latest is not None and latest.finished_at is None

    claim = await take_claim(
        conn, payments, payment_id, statuses=_CLAIMABLE, now=now, lease=lease, also=latest_is_open
    )
    if claim is None:
        return None
    latest, generation = found[0]
    assert latest is not None
    payment = await payment_in(conn, payment_id)
    assert payment is not None, "a claimed payment exists"
    return ClaimedAttempt(
        claim,
        latest.attempt_key,
        latest.provider,
        as_utc(latest.created_at),
        latest.sealed_request,
        generation,
        payment,
        # Never before the attempt's creation: a re-send stamped on a host whose clock is
        # behind the one that made the attempt would otherwise count the provider's silence
        # from before the key was first sent.
        max(as_utc(latest.created_at), as_utc(latest.last_sent_at or latest.created_at)),
        int(latest.resend_count or 0),
    )


async def stamp_sending(
    conn: AsyncConnection,
    payment_id: str,
    attempt_key: str,
    claim: str,
    now: datetime,
    expires_at: datetime,
) -> bool:
    """Renew ``claim`` and record that ``attempt_key`` is being sent again now, in one
    transaction; False (nothing written) if the claim is no longer the payment's or the
    attempt has closed: then the key must not be sent.

    Write-ahead: the stamp is committed before the call goes out, so ``last_sent_at`` is
    never earlier than the key's last send, whoever crashes when. And as every send of a key
    follows a stamp that found its attempt open, under the claim that any closing of it
    must hold, no call of a closed attempt starts after its ``finished_at``. The same write
    counts the send (``resend_count``), so the bound on re-sends counts every one that may
    have gone out."""
    renewed = await conn.execute(
        update(payments)
        .where(payments.c.id == payment_id)
        .where(payments.c.claim_token == claim)
        .values(claim_expires_at=expires_at)
    )
    if not renewed.rowcount:
        return False
    stamped = await conn.execute(
        update(provider_attempts)
        .where(provider_attempts.c.attempt_key == attempt_key)
        .where(provider_attempts.c.payment_id == payment_id)
        .where(provider_attempts.c.finished_at.is_(None))
        .values(last_sent_at=now, resend_count=provider_attempts.c.resend_count + 1)
    )
    return bool(stamped.rowcount)


async def uncount_unsent(conn: AsyncConnection, payment_id: str, attempt_key: str) -> None:
    """Take back the count of a stamped send of ``attempt_key`` that certainly never went
    out (a refused connection, an open circuit breaker): the bound on re-sends
    (domain.resend_window.may_resend_again) is on calls that may have reached the provider,
    and a short refusal, its retries failed fast by the breaker, would otherwise spend it
    in one pass. ``last_sent_at`` stays as stamped: later than the key's last send only
    makes its silence count from later. Never below zero; the stamp was the caller's own,
    so the claim need not still be its."""
    await conn.execute(
        update(provider_attempts)
        .where(provider_attempts.c.attempt_key == attempt_key)
        .where(provider_attempts.c.payment_id == payment_id)
        .where(provider_attempts.c.resend_count > 0)
        .values(resend_count=provider_attempts.c.resend_count - 1)
    )


async def schedule_retry(
    conn: AsyncConnection, payment_id: str, at: datetime, claim: str, expires_at: datetime
) -> bool:
    # Pending too: a payment re-sent after a timeout retries like any other.
    result = await conn.execute(
        update(payments)
        .where(payments.c.id == payment_id)
        .where(payments.c.status.in_(_WAITING))
        .where(payments.c.claim_token == claim)
        .values(next_retry_at=at, claim_expires_at=expires_at)
    )
    return bool(result.rowcount)


async def open_next_attempt(
    conn: AsyncConnection,
    payment_id: str,
    failed_attempt_key: str,
    provider: str,
    claim: str,
    now: datetime,
    lease: timedelta,
) -> str | None:
    """Failover, write-ahead (see PaymentStore.next_attempt)."""
    # The row lock (PostgreSQL) serialises this with finish(), which updates the payment
    # row first as well; SQLite holds the database write lock.
    row = (
        await conn.execute(
            select(payments.c.status, payments.c.claim_token)
            .where(payments.c.id == payment_id)
            .with_for_update()
        )
    ).one_or_none()
    if row is None or row.status != PaymentStatus.PROCESSING.value or row.claim_token != claim:
        return None
    latest = await latest_attempt(conn, payment_id)
    if (
        latest is None
        or latest.attempt_key != failed_attempt_key
        or latest.finished_at is not None
        # Taken over since it was opened: its first owner may still have the call in
        # flight, so "not charged" is not certain for this key; only the same key may be
        # sent again (see PaymentCommandHandler._charge).
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
        .values(provider=provider, updated_at=now, next_retry_at=None, claim_expires_at=now + lease)
    )
    return attempt_key
