"""Concurrent lookups share one query per round, each answered as its own query would be."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pytest

from vault.read_batches import ReadBatches

pytestmark = pytest.mark.unit


class Table:
    def __init__(self, rows: dict[str, int]) -> None:
        self.rows = rows
        self.queries: list[list[str]] = []
        self.fail: Exception | None = None
        self.began = asyncio.Event()

    async def fetch(self, keys: Sequence[str]) -> Mapping[str, int]:
        self.queries.append(list(keys))
        self.began.set()
        if self.fail is not None:
            raise self.fail
        found = {k: self.rows[k] for k in keys if k in self.rows}  # read when it begins
        await asyncio.sleep(0)  # and takes a turn of the loop to answer, like a real one
        return found


async def test_lookups_made_together_share_a_query() -> None:
    table = Table({"a": 1, "b": 2})
    reads = ReadBatches(table.fetch)
    found = await asyncio.gather(reads.get("a"), reads.get("b"), reads.get("a"), reads.get("x"))
    assert list(found) == [
        1,
        2,
        1,
        None,
    ]
    assert table.queries == [["a", "b", "x"]]


async def test_a_lookup_made_during_a_query_waits_for_the_next_one() -> None:
    table = Table({"a": 1})
    reads = ReadBatches(table.fetch)
    first = asyncio.ensure_future(reads.get("a"))
    await table.began.wait()  # the first query has begun
    table.rows["a"] = 5  # changed after it began: a later lookup must see the change
    second = asyncio.ensure_future(reads.get("a"))
    assert list(await asyncio.gather(first, second)) == [1, 5]
    assert table.queries == [["a"], ["a"]]


async def test_a_failed_query_fails_its_callers_and_the_next_round_works() -> None:
    table = Table({"a": 1})
    reads = ReadBatches(table.fetch, max_batch=1)
    table.fail = RuntimeError("database gone")
    with pytest.raises(RuntimeError, match="database gone"):
        await reads.get("a")
    table.fail = None
    assert await reads.get("a") == 1


async def test_a_cancelled_caller_leaves_the_others_answered() -> None:
    table = Table({"a": 1, "b": 2})
    reads = ReadBatches(table.fetch)
    gone = asyncio.ensure_future(reads.get("a"))
    kept = asyncio.ensure_future(reads.get("b"))
    await asyncio.sleep(0)
    gone.cancel()
    assert await kept == 2
    assert gone.cancelled()
