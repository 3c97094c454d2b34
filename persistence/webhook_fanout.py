"""Queues webhook deliveries in the transaction that writes their result event.

Called wherever an outbox row is written (``enqueue_outbox``, the bulk begin and finish),
with the same connection, so a delivery commits exactly when its result does: an event is
never lost (no crash between the two can drop it) and never sent for a change that rolled
back. Invariants:

* One query finds the endpoints of the clients the events' payments belong to; a payment
  without a client (an upstream service's, from Kafka) or a client without endpoints
  costs that query and nothing else.
* A delivery's id derives from (endpoint, event) and the insert skips ids that exist, so a
  result event written again (a replayed outcome re-published) is not queued twice, and a
  concurrent writer of the same event cannot fail the payment's transaction.
* Each event comes with the time its own operation recorded (its outbox row's): the events
  of one writer-queue batch were made by operations that arrived at different times, and a
  delivery's ``created_at`` (what a client's delivery listing shows) and first
  ``next_attempt_at`` (the order the dispatcher sends in) are that operation's, not the
  batch's first.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.webhook_events import WebhookEvent, subscribed
from persistence.tables import payments
from persistence.webhook_tables import webhook_deliveries, webhook_endpoints

DELIVERY_PENDING: Final = "pending"
DELIVERY_DELIVERED: Final = "delivered"
DELIVERY_FAILED: Final = "failed"

_DELIVERY_NAMESPACE: Final = uuid.UUID("6f1d2a9e-5b0c-4c1e-9d7a-3c2b8e4f1a60")


def delivery_id_for(endpoint_id: str, event_id: str) -> str:
    return "whd_" + uuid.uuid5(_DELIVERY_NAMESPACE, f"{endpoint_id}:{event_id}").hex


async def enqueue_webhooks(
    conn: AsyncConnection, events: Sequence[tuple[WebhookEvent, datetime]]
) -> int:
    """Queue a delivery of each event to each live endpoint subscribed to its type, owned
    by the client of its payment, at the time paired with it (its operation's); return how
    many rows were new."""
    if not events:
        return 0
    payment_ids = sorted({event.payment_request_id for event, _ in events})
    rows = (
        await conn.execute(
            select(
                payments.c.id.label("payment_id"),
                webhook_endpoints.c.id,
                webhook_endpoints.c.enabled_events,
            )
            .join(webhook_endpoints, webhook_endpoints.c.client_id == payments.c.client_id)
            .where(payments.c.id.in_(payment_ids))
            .where(webhook_endpoints.c.deleted_at.is_(None))
        )
    ).all()
    if not rows:
        return 0
    endpoints: dict[str, list[tuple[str, list[str]]]] = {}
    for row in rows:
        endpoints.setdefault(row.payment_id, []).append((row.id, list(row.enabled_events)))
    values = [
        delivery_row(endpoint_id, event, now)
        for event, now in events
        for endpoint_id, enabled in endpoints.get(event.payment_request_id, [])
        if subscribed(enabled, event.type)
    ]
    if not values:
        return 0
    result = await conn.execute(_insert_new(conn), values)
    return max(int(result.rowcount), 0)


def delivery_row(endpoint_id: str, event: WebhookEvent, now: datetime) -> dict[str, Any]:
    return {
        "id": delivery_id_for(endpoint_id, event.event_id),
        "endpoint_id": endpoint_id,
        "event_id": event.event_id,
        "event_type": event.type,
        "payload": event.body,
        "status": DELIVERY_PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "last_attempt_at": None,
        "last_status_code": None,
        "last_error": None,
        "created_at": now,
        "updated_at": now,
        "claim_token": None,
        "claim_expires_at": None,
    }


def _insert_new(conn: AsyncConnection) -> Any:
    """INSERT that skips rows whose id exists (ON CONFLICT DO NOTHING)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(webhook_deliveries).on_conflict_do_nothing(index_elements=["id"])
    return sqlite.insert(webhook_deliveries).on_conflict_do_nothing(index_elements=["id"])
