"""The shared token buckets on SQLite and PostgreSQL: atomic takes, refill, and no more
granted than the bucket holds when several engines (as several processes would) take at
once."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from persistence.engine import create_engine
from persistence.group_commit import GroupCommit
from persistence.rate_limit_store import RateLimitStore

pytestmark = pytest.mark.integration

NOW = 1_800_000_000.0


def _client() -> str:
    return f"client-{uuid.uuid4().hex[:8]}"


async def test_a_new_client_starts_with_a_full_bucket_and_is_refused_when_it_is_empty(
    engine: AsyncEngine,
) -> None:
    store = RateLimitStore(GroupCommit(engine))
    client = _client()
    takes = [await store.take(client, count=1, rate_per_s=2.0, burst=3, now=NOW) for _ in range(4)]
    assert takes[:3] == [0.0, 0.0, 0.0]
    # Empty: one token comes back after 1/rate seconds.
    assert takes[3] == pytest.approx(0.5)


async def test_the_bucket_refills_at_the_rate_up_to_the_burst(engine: AsyncEngine) -> None:
    store = RateLimitStore(GroupCommit(engine))
    client = _client()
    assert await store.take(client, count=3, rate_per_s=2.0, burst=3, now=NOW) == 0.0
    # One second later: two tokens back, not three.
    assert await store.take(client, count=3, rate_per_s=2.0, burst=3, now=NOW + 1) > 0
    assert await store.take(client, count=2, rate_per_s=2.0, burst=3, now=NOW + 1) == 0.0
    # Long after: full, but never more than the burst.
    assert await store.take(client, count=3, rate_per_s=2.0, burst=3, now=NOW + 100) == 0.0
    assert await store.take(client, count=1, rate_per_s=2.0, burst=3, now=NOW + 100) > 0


async def test_a_clock_behind_the_last_take_refills_nothing(engine: AsyncEngine) -> None:
    store = RateLimitStore(GroupCommit(engine))
    client = _client()
    assert await store.take(client, count=2, rate_per_s=1.0, burst=2, now=NOW) == 0.0
    # Another process whose clock is 10 s behind: no negative refill, no token either.
    assert await store.take(client, count=1, rate_per_s=1.0, burst=2, now=NOW - 10) > 0
    assert await store.take(client, count=1, rate_per_s=1.0, burst=2, now=NOW + 1) == 0.0


async def test_takes_are_per_client(engine: AsyncEngine) -> None:
    store = RateLimitStore(GroupCommit(engine))
    first, second = _client(), _client()
    assert await store.take(first, count=1, rate_per_s=1.0, burst=1, now=NOW) == 0.0
    assert await store.take(first, count=1, rate_per_s=1.0, burst=1, now=NOW) > 0
    assert await store.take(second, count=1, rate_per_s=1.0, burst=1, now=NOW) == 0.0


async def test_concurrent_takes_from_separate_engines_never_grant_more_than_the_burst(
    database_url: str, engine: AsyncEngine
) -> None:
    # Four engines stand for four facade processes, each with its own group commit.
    engines = [create_engine(database_url) for _ in range(4)]
    try:
        stores = [RateLimitStore(GroupCommit(e)) for e in engines]
        client = _client()
        burst = 25
        results = await asyncio.gather(
            *(
                stores[n % len(stores)].take(
                    client, count=1, rate_per_s=0.001, burst=burst, now=NOW
                )
                for n in range(100)
            )
        )
    finally:
        for e in engines:
            await e.dispose()
    assert sum(1 for wait_s in results if wait_s == 0.0) == burst


async def test_a_count_outside_one_to_burst_is_refused(engine: AsyncEngine) -> None:
    store = RateLimitStore(GroupCommit(engine))
    with pytest.raises(ValueError, match="must be"):
        await store.take(_client(), count=0, rate_per_s=1.0, burst=5, now=NOW)
    with pytest.raises(ValueError, match="must be"):
        await store.take(_client(), count=6, rate_per_s=1.0, burst=5, now=NOW)


async def test_a_new_clients_first_takes_from_several_engines_at_once_are_all_granted(
    database_url: str, engine: AsyncEngine
) -> None:
    # Each engine may find no row and try to create it; the losers take from the winner's.
    engines = [create_engine(database_url) for _ in range(4)]
    try:
        client = _client()
        results = await asyncio.gather(
            *(
                RateLimitStore(GroupCommit(e)).take(
                    client, count=1, rate_per_s=0.001, burst=10, now=NOW
                )
                for e in engines
            )
        )
    finally:
        for e in engines:
            await e.dispose()
    assert results == [0.0, 0.0, 0.0, 0.0]
