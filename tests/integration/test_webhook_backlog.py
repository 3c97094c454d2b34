"""The webhook backlog as the consumer's gauges read it from the store (persistence.backlogs),
on SQLite and PostgreSQL: deliveries owed by state, the oldest of each, the failed ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.webhook_events import WebhookEvent
from persistence.backlogs import Backlog, Backlogs, WebhookBacklog
from persistence.webhook_fanout import DELIVERY_DELIVERED, DELIVERY_FAILED, delivery_row
from persistence.webhook_tables import webhook_deliveries, webhook_endpoints

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def queue(engine: AsyncEngine, event_id: str, at: datetime, **changes: object) -> None:
    event = WebhookEvent(event_id, "payment.succeeded", "pay_1", "{}")
    async with engine.begin() as conn:
        row = delivery_row("we_1", event, at)
        await conn.execute(insert(webhook_deliveries).values(**row))
        if changes:
            await conn.execute(
                update(webhook_deliveries)
                .where(webhook_deliveries.c.id == row["id"])
                .values(**changes)
            )


async def test_an_empty_queue_reads_zero_and_no_age(engine: AsyncEngine) -> None:
    empty = Backlog(0, None)
    assert await Backlogs(engine).webhook_deliveries() == WebhookBacklog(empty, empty, 0)


async def test_deliveries_are_counted_by_state_with_the_oldest_of_each(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            insert(webhook_endpoints).values(
                id="we_1",
                client_id="acme",
                url="https://hooks.example/in",
                enabled_events=["*"],
                secret_key_id="dk_x",
                secret_ciphertext=b"x",
                created_at=T0,
            )
        )
    await queue(engine, "evt_new_1", T0 + timedelta(minutes=5))
    await queue(engine, "evt_new_2", T0 + timedelta(minutes=9))
    await queue(engine, "evt_retry_1", T0, attempts=3)
    await queue(engine, "evt_retry_2", T0 + timedelta(minutes=1), attempts=1)
    await queue(engine, "evt_gone", T0 - timedelta(days=1), attempts=17, status=DELIVERY_FAILED)
    await queue(engine, "evt_done", T0 - timedelta(days=2), attempts=1, status=DELIVERY_DELIVERED)

    assert await Backlogs(engine).webhook_deliveries() == WebhookBacklog(
        pending=Backlog(2, T0 + timedelta(minutes=5)),
        retrying=Backlog(2, T0),
        failed=1,
    )
