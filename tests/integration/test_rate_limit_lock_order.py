"""Two processes' batches of rate-limit takes, naming the same clients in opposite orders,
must not deadlock.

A take writes its client's bucket row. The takes of concurrent requests share one writer
queue transaction (persistence.group_commit), in the order they arrived, so a batch that
takes from clients A then B and another process's batch that takes from B then A would lock
the two rows in opposite orders: PostgreSQL breaks that cycle after ``deadlock_timeout`` by
aborting one (SQLSTATE 40P01), a second's stall of every request of both batches. A take
declares its client's lock, taken with the batch's others before its first operation, in
the writers' one order (persistence.lock_order).

The steps are forced by hand: process 1 pauses after its take from A until process 2 waits
on a lock. PostgreSQL only: SQLite has no row locks (one writer holds the database).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from persistence.engine import create_engine
from persistence.group_commit import GroupCommit
from persistence.migrate import create_schema
from persistence.rate_limit_store import RateLimitStore
from tests.integration.test_writer_lock_order import _deadlocks, _until_a_lock_wait

pytestmark = pytest.mark.integration

NOW = 1_800_000_000.0


@pytest.fixture
async def two_engines(fresh_postgres_database_url: str) -> AsyncIterator[list[AsyncEngine]]:
    # A database of their own: the vault's and webhooks' tests read the newest data key.
    url = fresh_postgres_database_url
    first, second = create_engine(url), create_engine(url)
    await create_schema(first)
    try:
        yield [first, second]
    finally:
        await first.dispose()
        await second.dispose()


async def test_batches_of_takes_from_two_clients_in_opposite_orders_do_not_deadlock(
    two_engines: list[AsyncEngine],
) -> None:
    first_engine, second_engine = two_engines
    one_writes, two_writes = GroupCommit(first_engine), GroupCommit(second_engine)
    one, two = RateLimitStore(one_writes), RateLimitStore(two_writes)
    a, b = f"client-{uuid.uuid4().hex[:8]}", f"client-{uuid.uuid4().hex[:8]}"

    async def take(store: RateLimitStore, client: str) -> float:
        return await store.take(client, count=1, rate_per_s=0.001, burst=10, now=NOW)

    # Both buckets exist first: each take is then the one UPDATE of its row.
    assert list(await asyncio.gather(take(one, a), take(one, b))) == [0.0, 0.0]
    deadlocks = _deadlocks([first_engine, second_engine])

    paused, resume = asyncio.Event(), asyncio.Event()

    async def pause(conn: AsyncConnection) -> None:
        paused.set()
        await resume.wait()

    # Process 1, one batch: a take from A, the pause, a take from B.
    first_batch = asyncio.gather(take(one, a), one_writes.run(pause), take(one, b))
    await paused.wait()
    # Process 2, one batch: a take from B, then one from A.
    second_batch = asyncio.gather(take(two, b), take(two, a))
    await _until_a_lock_wait(first_engine, second_batch)
    resume.set()
    first_waits = await first_batch
    second_waits = await second_batch

    assert deadlocks == []
    assert (first_waits[0], first_waits[2]) == (0.0, 0.0)
    assert list(second_waits) == [0.0, 0.0]
