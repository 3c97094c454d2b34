"""The outbox: result events written in the transaction of the state change they report.

A state change and its event commit together (:func:`enqueue_outbox`, called inside the
writer's transaction), so neither is ever visible without the other. The relay
(producer.outbox_relay) reads what is unpublished, publishes it, and stamps it; housekeeping
prunes what was published long ago. This module is all the relay depends on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.clock import utc_now
from domain.webhook_events import WebhookEvent
from persistence.group_commit import GroupCommit
from persistence.tables import outbox
from persistence.webhook_fanout import enqueue_webhooks
from telemetry.trace_context import current_traceparent


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A result event to publish. ``traceparent`` is the trace context it was made in (taken
    when it is made, in the handler's task: the group commit may write it from another),
    None when tracing is off."""

    event_id: str
    topic: str
    key: str
    payload: bytes
    traceparent: str | None = field(default_factory=current_traceparent, compare=False)
    # The same event for REST clients' webhook endpoints (None: not one they receive).
    webhook: WebhookEvent | None = None


@dataclass(frozen=True, slots=True)
class PendingOutboxRow:
    id: int
    topic: str
    key: str
    payload: bytes
    traceparent: str | None = None


async def enqueue_outbox(conn: AsyncConnection, event: OutboxMessage, now: datetime) -> None:
    """Queue ``event`` in the caller's transaction, so it commits with the state it reports,
    and its webhook deliveries with it (see persistence.webhook_fanout)."""
    await conn.execute(insert(outbox).values(**outbox_row(event, now)))
    await enqueue_webhooks(conn, webhooks_of([(event, now)]))


def webhooks_of(
    events: Iterable[tuple[OutboxMessage, datetime]],
) -> list[tuple[WebhookEvent, datetime]]:
    """The webhooks of ``events``, each with its own event's time (persistence.webhook_fanout)."""
    return [(event.webhook, now) for event, now in events if event.webhook is not None]


def outbox_row(event: OutboxMessage, now: datetime) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "topic": event.topic,
        "message_key": event.key,
        "payload": event.payload,
        "created_at": now,
        "trace_parent": event.traceparent,
    }


class Outbox:
    def __init__(
        self, engine: AsyncEngine, writes: GroupCommit, clock: Callable[[], datetime] = utc_now
    ) -> None:
        """``writes`` is the database's one writer queue (see persistence.database)."""
        self._engine = engine
        self._writes = writes
        self._clock = clock

    async def enqueue(self, event: OutboxMessage) -> None:
        """Queue an event in a write transaction of its own: for an event that reports no
        stored state, such as the refusal of a command whose idempotency key was used with
        other parameters. A replay re-publishes stored state, so it queues under that
        state's row lock instead (persistence/payment_replay.py, RefundStore.republish)."""
        now = self._clock()

        async def record(conn: AsyncConnection) -> None:
            await enqueue_outbox(conn, event, now)

        await self._writes.run(record)

    async def unpublished(self, limit: int) -> list[PendingOutboxRow]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(
                    outbox.c.id,
                    outbox.c.topic,
                    outbox.c.message_key,
                    outbox.c.payload,
                    outbox.c.trace_parent,
                )
                .where(outbox.c.published_at.is_(None))
                .order_by(outbox.c.id)
                .limit(limit)
            )
            return [
                PendingOutboxRow(r.id, r.topic, r.message_key, r.payload, r.trace_parent)
                for r in rows
            ]

    async def mark_published(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        now = self._clock()

        async def record(conn: AsyncConnection) -> None:
            await conn.execute(update(outbox).where(outbox.c.id.in_(ids)).values(published_at=now))

        # Through the same queue as the payment writes: on SQLite a second writer would
        # wait in SQLite's sleeping busy handler instead of queueing here.
        await self._writes.run(record)

    async def prune(self, published_before: datetime) -> int:
        """Delete outbox rows published before ``published_before``; return how many."""

        async def record(conn: AsyncConnection) -> int:
            result = await conn.execute(
                delete(outbox)
                .where(outbox.c.published_at.is_not(None))
                .where(outbox.c.published_at < published_before)
            )
            return int(result.rowcount)

        return await self._writes.run(record)
