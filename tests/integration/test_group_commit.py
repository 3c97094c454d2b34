"""Group commit on real databases: shared transactions, isolated failures."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import event, insert, select
from sqlalchemy.exc import IntegrityError

from persistence.group_commit import GroupCommit
from persistence.tables import outbox

pytestmark = pytest.mark.integration


def _row(event_id: str) -> dict:
    from datetime import UTC, datetime

    return {
        "event_id": event_id,
        "topic": "t",
        "message_key": "k",
        "payload": b"x",
        "created_at": datetime.now(UTC),
    }


def _count_transactions(engine) -> list[int]:
    begun = [0]

    @event.listens_for(engine.sync_engine, "begin")
    def _count(_conn) -> None:
        begun[0] += 1

    return begun


async def _event_ids(engine) -> list[str]:
    async with engine.connect() as conn:
        return sorted((await conn.execute(select(outbox.c.event_id))).scalars())


async def test_concurrent_writes_share_transactions_and_all_commit(engine):
    writes = GroupCommit(engine)
    begun = _count_transactions(engine)

    def op(n: int):
        async def run(conn):
            await conn.execute(insert(outbox).values(**_row(f"e{n:03}")))
            return n

        return run

    results = await asyncio.gather(*(writes.run(op(n)) for n in range(100)))
    assert results == list(range(100))
    assert await _event_ids(engine) == [f"e{n:03}" for n in range(100)]
    # 100 operations, a handful of transactions (the first alone, the rest together).
    assert begun[0] <= 3


async def test_a_failing_operation_is_rolled_back_alone(engine):
    writes = GroupCommit(engine)

    async def good(conn):
        await conn.execute(insert(outbox).values(**_row("good")))

    async def bad(conn):
        await conn.execute(insert(outbox).values(**_row("bad")))
        raise IntegrityError("INSERT", {}, Exception("refused"))

    outcomes = await asyncio.gather(writes.run(good), writes.run(bad), return_exceptions=True)
    assert outcomes[0] is None
    assert isinstance(outcomes[1], IntegrityError)
    assert await _event_ids(engine) == ["good"]


async def test_a_cancelled_caller_whose_operation_has_not_started_is_skipped(engine):
    writes = GroupCommit(engine)
    started, gate = asyncio.Event(), asyncio.Event()

    async def slow(conn):
        started.set()
        await gate.wait()
        await conn.execute(insert(outbox).values(**_row("first")))

    async def later(conn):
        await conn.execute(insert(outbox).values(**_row("cancelled")))

    async def after(conn):
        await conn.execute(insert(outbox).values(**_row("after")))

    first = asyncio.create_task(writes.run(slow))
    await started.wait()  # the first batch is being written
    second = asyncio.create_task(writes.run(later))
    for _ in range(3):
        await asyncio.sleep(0)  # let it queue behind the first
    second.cancel()
    gate.set()
    await first
    with pytest.raises(asyncio.CancelledError):
        await second
    await writes.run(after)  # the queue has moved past the cancelled one
    assert await _event_ids(engine) == ["after", "first"]
