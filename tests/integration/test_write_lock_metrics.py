"""The writer queue's lock times as metrics: one observation per transaction, and a wait
another connection causes shows in it (at least as long as it was held; no upper bound)."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import event, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from paygate.database import WriteLockMetrics
from persistence.engine import write_transaction
from persistence.group_commit import GroupCommit
from persistence.lock_order import RowLocks, lock_order_scopes
from persistence.tables import outbox
from telemetry.metrics import Metrics

pytestmark = pytest.mark.integration

HELD_S = 0.2


def _metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def _sample(metrics: Metrics, name: str, dialect: str) -> float:
    value = metrics.registry.get_sample_value(name, {"dialect": dialect})
    return 0.0 if value is None else value


def _row(event_id: str) -> dict:
    from datetime import UTC, datetime

    return {
        "event_id": event_id,
        "topic": "t",
        "message_key": "k",
        "payload": b"x",
        "created_at": datetime.now(UTC),
    }


def _insert(event_id: str):
    async def run(conn: AsyncConnection) -> None:
        await conn.execute(insert(outbox).values(**_row(event_id)))

    return run


async def test_each_transaction_observes_once_however_many_operations(engine: AsyncEngine):
    metrics = _metrics()
    writes = GroupCommit(engine, lock_observer=WriteLockMetrics(metrics))
    begun = [0]

    @event.listens_for(engine.sync_engine, "begin")
    def _count(_conn) -> None:
        begun[0] += 1

    await asyncio.gather(*(writes.run(_insert(f"e{n:03}")) for n in range(60)))

    dialect = engine.dialect.name
    assert 1 <= begun[0] < 60  # batches, not operations
    for name in ("wait", "held"):
        count = _sample(metrics, f"paygate_db_write_lock_{name}_seconds_count", dialect)
        assert count == begun[0], name
    assert _sample(metrics, "paygate_db_write_lock_wait_seconds_sum", dialect) >= 0
    assert _sample(metrics, "paygate_db_write_lock_held_seconds_sum", dialect) > 0


async def test_a_failed_batch_run_again_alone_observes_each_transaction(engine: AsyncEngine):
    metrics = _metrics()
    writes = GroupCommit(engine, lock_observer=WriteLockMetrics(metrics))
    begun = [0]

    @event.listens_for(engine.sync_engine, "begin")
    def _count(_conn) -> None:
        begun[0] += 1

    async def refused(_conn: AsyncConnection) -> None:
        raise ValueError("refused")

    outcomes = await asyncio.gather(
        writes.run(_insert("a")),
        writes.run(refused),
        writes.run(_insert("b")),
        return_exceptions=True,
    )
    assert [isinstance(outcome, ValueError) for outcome in outcomes] == [False, True, False]
    assert begun[0] >= 3  # the failed batch, then its operations one transaction each
    count = _sample(metrics, "paygate_db_write_lock_wait_seconds_count", engine.dialect.name)
    assert count == begun[0]


async def test_a_wait_for_locks_another_connection_holds_shows(engine: AsyncEngine) -> None:
    """On SQLite the other connection holds the database's write lock; on PostgreSQL an
    advisory lock of the writer's lock order."""
    metrics = _metrics()
    writes = GroupCommit(engine, lock_observer=WriteLockMetrics(metrics))
    locks = RowLocks.of(buckets=["client-held"])
    asking = asyncio.Event()

    # The statement that waits: SQLite's BEGIN IMMEDIATE, PostgreSQL's advisory locks. The
    # writer's clock started before it was sent.
    def _asks(_conn, _cursor, statement: str, *_args) -> None:
        if "BEGIN IMMEDIATE" in statement or "pg_advisory_xact_lock" in statement:
            asking.set()

    async with write_transaction(engine) as holder:
        await holder.execute(insert(outbox).values(**_row("held")))
        if engine.dialect.name == "postgresql":
            await lock_order_scopes(holder, locks.scopes)
        # Listening from here on: the holder's own statements are behind us.
        event.listen(engine.sync_engine, "before_cursor_execute", _asks)
        waiting = asyncio.create_task(writes.run(_insert("waited"), locks=locks))
        await asyncio.wait_for(asking.wait(), timeout=30)
        asked_by = time.perf_counter()
        await asyncio.sleep(HELD_S)
        assert not waiting.done()
        held_for = time.perf_counter() - asked_by
    await waiting

    dialect = engine.dialect.name
    assert _sample(metrics, "paygate_db_write_lock_wait_seconds_count", dialect) == 1
    assert _sample(metrics, "paygate_db_write_lock_wait_seconds_sum", dialect) >= held_for
