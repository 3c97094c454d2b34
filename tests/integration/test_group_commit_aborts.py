"""A transaction the database aborts to break a deadlock (SQLSTATE 40P01) or a serialization
conflict (40001) is run again: nothing of it took effect, so each operation applies once.

On PostgreSQL the abort is the server's own: the operation raises ``deadlock_detected``
from a ``DO`` block after its write, inside the writer queue's transaction. SQLite has no
such abort; there the driver's error is stood in for, with the same SQLSTATE, so the writer
queue's handling is checked on both. Each operation counts its runs in a row of its own, so
an operation applied twice (or a write of an aborted run kept) shows as a count above one.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from persistence.group_commit import GroupCommit

pytestmark = pytest.mark.integration

_metadata = MetaData()
_applied = Table(
    "test_abort_applied",
    _metadata,
    Column("name", String(40), primary_key=True),
    Column("runs", Integer, nullable=False),
)


class _DriverError(Exception):
    """What a PostgreSQL driver's error carries, for SQLite, which has no such abort."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"injected {sqlstate}")
        self.sqlstate = sqlstate


async def _abort(conn: AsyncConnection, sqlstate: str) -> None:
    if conn.dialect.name == "postgresql":
        condition = {"40P01": "deadlock_detected", "40001": "serialization_failure"}[sqlstate]
        await conn.execute(
            text(f"DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '{condition}'; END $$")
        )
    raise DBAPIError("injected", None, _DriverError(sqlstate))


def _counting(name: str, aborts: int = 0, sqlstate: str = "40P01"):
    """An operation that adds one to ``name``'s runs, aborted by the database on its first
    ``aborts`` tries (after its write); it returns its name."""
    tries = 0

    async def operation(conn: AsyncConnection) -> str:
        nonlocal tries
        tries += 1
        await conn.execute(
            update(_applied).where(_applied.c.name == name).values(runs=_applied.c.runs + 1)
        )
        if tries <= aborts:
            await _abort(conn, sqlstate)
        return name

    return operation


async def _prepared(engine: AsyncEngine, *names: str) -> GroupCommit:
    async with engine.begin() as conn:
        await conn.run_sync(_metadata.create_all)
        await conn.execute(insert(_applied), [{"name": name, "runs": 0} for name in names])
    return GroupCommit(engine)


async def _runs(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        return {row.name: row.runs for row in await conn.execute(select(_applied))}


def _aborted(exc: BaseException) -> bool:
    """Whether ``exc`` is a deadlock abort (the server's own on PostgreSQL)."""
    original = getattr(exc, "orig", None)
    code = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    return isinstance(exc, DBAPIError) and code == "40P01"


async def _together(writes: GroupCommit, operations):
    return await asyncio.gather(*(writes.run(op) for op in operations), return_exceptions=True)


async def test_the_injected_abort_is_the_databases_concurrency_abort(engine):
    writes = await _prepared(engine, "a")
    with pytest.raises(DBAPIError) as raised:
        await writes.run(_counting("a", aborts=1_000))
    assert _aborted(raised.value)
    if engine.dialect.name == "postgresql":
        assert "deadlock" in str(raised.value).lower()


@pytest.mark.parametrize("sqlstate", ["40P01", "40001"])
async def test_an_operation_aborted_alone_runs_again_and_applies_once(engine, sqlstate):
    writes = await _prepared(engine, "a")
    assert await writes.run(_counting("a", aborts=2, sqlstate=sqlstate)) == "a"
    assert await _runs(engine) == {"a": 1}


async def test_an_aborted_batch_applies_each_operation_once(engine):
    writes = await _prepared(engine, "a", "b", "c")
    # b is aborted in the batch and again when it runs alone, then goes through.
    results = await _together(writes, [_counting("a"), _counting("b", aborts=2), _counting("c")])
    assert results == ["a", "b", "c"]
    assert await _runs(engine) == {"a": 1, "b": 1, "c": 1}


async def test_an_operation_aborted_every_time_fails_alone_and_applies_nothing(engine):
    writes = await _prepared(engine, "a", "b")
    results = await _together(writes, [_counting("a"), _counting("b", aborts=1_000)])
    assert results[0] == "a"
    assert _aborted(results[1])
    assert await _runs(engine) == {"a": 1, "b": 0}


async def test_other_failures_are_not_run_again(engine):
    writes = await _prepared(engine, "a")
    tries = 0

    async def refused(conn: AsyncConnection) -> None:
        nonlocal tries
        tries += 1
        await conn.execute(update(_applied).values(runs=_applied.c.runs + 1))
        raise DBAPIError("refused", None, _DriverError("23505"))

    with pytest.raises(DBAPIError):
        await writes.run(refused)
    assert tries == 1
    assert await _runs(engine) == {"a": 0}
