"""A replayed command's answer: the event of its payment as it is now.

A replayed command (a redelivery, a resend with the same idempotency key) is answered by
re-publishing its payment's event. The payment is read again, under its row lock, in the
transaction that queues the event: read earlier (when the command was begun) it may since
have been changed by another writer (the expiry pass, a capture, a cancel, a provider's
notification), whose newer event is then already queued, and an event of the old state
queued after it would tell a reader that keeps the last event per payment that the payment
went back (``authorized`` again after ``expired``). Under the lock, a concurrent writer
either committed before (and its state is the one re-published) or waits until after (and
its event is queued after this one, as its change happened after it).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.payment_view import PaymentView
from persistence.follow_up import PaymentEventBuilder
from persistence.outbox import enqueue_outbox
from persistence.payment_rows import payment_in
from persistence.tables import payments


async def enqueue_as_it_is(
    conn: AsyncConnection, payment_id: str, event_of: PaymentEventBuilder, now: datetime
) -> PaymentView | None:
    """Queue ``event_of`` the payment as it is now, read with its row locked (``FOR
    UPDATE`` on PostgreSQL; SQLite's write transaction holds the database lock). None,
    and nothing queued, if there is no such payment."""
    await conn.execute(select(payments.c.id).where(payments.c.id == payment_id).with_for_update())
    payment = await payment_in(conn, payment_id)
    if payment is not None:
        await enqueue_outbox(conn, event_of(payment), now)
    return payment
