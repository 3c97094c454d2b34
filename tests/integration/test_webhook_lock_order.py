"""Two processes' batches of webhook delivery writes, naming two deliveries in opposite
orders, must not deadlock.

Deliveries are written by more than one process: the dispatcher records each attempt's
outcome (``record_attempt``), the facade re-sends one on a client's request (``retry``) or
fails an endpoint's pending ones (``delete_endpoint``). Each is a write of its own rows, but
the writer queue runs the writes of concurrent callers in one transaction, in the order
they arrived (persistence.group_commit): a dispatcher's batch that records deliveries A
then B and a facade's batch that re-sends B then A lock the two rows in opposite orders,
and PostgreSQL breaks the cycle after ``deadlock_timeout`` by aborting one (SQLSTATE
40P01), a second's stall of every write of both batches. Each of these writes declares its
deliveries' endpoints (an advisory lock per endpoint, persistence.lock_order), taken with
the batch's other locks before its first operation, in the writers' one order.

The steps are forced by hand: the dispatcher pauses after its first record until the
facade's batch waits on a lock. PostgreSQL only: SQLite has no row locks.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from persistence.group_commit import GroupCommit
from persistence.webhook_secrets import StoredSecret
from persistence.webhook_store import DueDelivery, WebhookStore
from persistence.webhook_tables import webhook_deliveries, webhook_endpoints
from tests.integration.test_rate_limit_lock_order import two_engines  # noqa: F401
from tests.integration.test_writer_lock_order import _deadlocks, _until_a_lock_wait

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
TOKEN = "dispatcher-token"


async def _claimed_deliveries(engine, count: int) -> list[DueDelivery]:
    """``count`` deliveries, each to an endpoint of its own, claimed by the dispatcher."""
    due = []
    async with engine.begin() as conn:
        for _ in range(count):
            endpoint_id, delivery_id = f"we_{uuid.uuid4().hex}", f"wd_{uuid.uuid4().hex}"
            await conn.execute(
                insert(webhook_endpoints).values(
                    id=endpoint_id,
                    client_id="client-1",
                    url="https://example.test/hook",
                    enabled_events=["*"],
                    secret="whsec_x",
                    created_at=NOW,
                )
            )
            await conn.execute(
                insert(webhook_deliveries).values(
                    id=delivery_id,
                    endpoint_id=endpoint_id,
                    event_id=f"evt_{uuid.uuid4().hex}",
                    event_type="payment.succeeded",
                    payload="{}",
                    status="pending",
                    attempts=0,
                    next_attempt_at=NOW,
                    created_at=NOW,
                    updated_at=NOW,
                    claim_token=TOKEN,
                    claim_expires_at=NOW + timedelta(minutes=5),
                )
            )
            due.append(
                DueDelivery(
                    id=delivery_id,
                    endpoint_id=endpoint_id,
                    url="https://example.test/hook",
                    event_id="evt",
                    attempts=0,
                    created_at=NOW,
                    token=TOKEN,
                    secret=StoredSecret(None, None, "whsec_x"),
                    payload="{}",
                )
            )
    return due


async def test_a_dispatchers_records_and_a_facades_retries_in_opposite_orders_do_not_deadlock(
    two_engines,  # noqa: F811
) -> None:
    dispatcher_engine, facade_engine = two_engines
    dispatcher_writes = GroupCommit(dispatcher_engine)
    dispatcher = WebhookStore(dispatcher_engine, dispatcher_writes, lambda: NOW)
    facade = WebhookStore(facade_engine, GroupCommit(facade_engine), lambda: NOW)
    a, b = await _claimed_deliveries(dispatcher_engine, 2)
    deadlocks = _deadlocks([dispatcher_engine, facade_engine])

    paused, resume = asyncio.Event(), asyncio.Event()

    async def pause(conn: AsyncConnection) -> None:
        paused.set()
        await resume.wait()

    async def record(delivery: DueDelivery) -> bool:
        return await dispatcher.record_attempt(
            delivery, delivered=True, status_code=200, error=None, next_attempt_at=None
        )

    # The dispatcher, one batch: the outcome of A, the pause, the outcome of B.
    dispatcher_batch = asyncio.gather(record(a), dispatcher_writes.run(pause), record(b))
    await paused.wait()
    # The facade, one batch: re-sends of B, then of A, on a client's requests.
    facade_batch = asyncio.gather(
        facade.retry(b.id, client_id="client-1"), facade.retry(a.id, client_id="client-1")
    )
    await _until_a_lock_wait(dispatcher_engine, facade_batch)
    resume.set()
    recorded = await dispatcher_batch
    retried = await facade_batch

    assert deadlocks == []
    assert (recorded[0], recorded[2]) == (True, True)
    assert [delivery is not None and delivery.status for delivery in retried] == [
        "pending",
        "pending",
    ]
