"""Group commit on real databases: shared transactions, isolated failures."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import event, insert, select
from sqlalchemy.exc import IntegrityError

from persistence.group_commit import Bulk, GroupCommit
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


class _Inserts:
    """A bulk kind: outbox inserts, one statement for many; records how each ran."""

    def __init__(self, fail_bulk: bool = False) -> None:
        self.bulk_runs: list[list[str]] = []
        self.alone: list[str] = []
        self._fail_bulk = fail_bulk

    async def run_many(self, conn, event_ids):
        self.bulk_runs.append(list(event_ids))
        await conn.execute(insert(outbox), [_row(e) for e in event_ids])
        if self._fail_bulk:
            raise IntegrityError("INSERT", {}, Exception("one of them is refused"))
        return [f"bulk:{e}" for e in event_ids]

    def operation(self, event_id: str):
        async def run(conn):
            self.alone.append(event_id)
            await conn.execute(insert(outbox).values(**_row(event_id)))
            return f"alone:{event_id}"

        return run

    def run(self, writes: GroupCommit, event_id: str):
        return writes.run(self.operation(event_id), Bulk(self.run_many, event_id))


async def test_operations_of_one_kind_in_a_batch_run_in_bulk(engine):
    writes = GroupCommit(engine)
    inserts = _Inserts()

    async def plain(conn):
        await conn.execute(insert(outbox).values(**_row("plain")))
        return "plain"

    results = await asyncio.gather(
        inserts.run(writes, "b1"), writes.run(plain), inserts.run(writes, "b2")
    )
    assert list(results) == ["bulk:b1", "plain", "bulk:b2"]
    assert inserts.bulk_runs == [["b1", "b2"]]
    assert await _event_ids(engine) == ["b1", "b2", "plain"]
    # Alone in its batch, an operation runs its own function.
    assert await inserts.run(writes, "b3") == "alone:b3"
    assert inserts.bulk_runs == [["b1", "b2"]]


async def test_a_failing_bulk_run_is_run_again_one_operation_at_a_time(engine):
    writes = GroupCommit(engine)
    inserts = _Inserts(fail_bulk=True)
    results = await asyncio.gather(*(inserts.run(writes, f"e{n}") for n in range(3)))
    assert results == ["alone:e0", "alone:e1", "alone:e2"]
    assert inserts.bulk_runs == [["e0", "e1", "e2"]]  # rolled back, then one by one
    assert await _event_ids(engine) == ["e0", "e1", "e2"]
