"""Two processes' batches of vault writes, naming the same tokens in opposite orders, must
not deadlock.

Vault rows are written by more than one process: the facade deletes a client's token on
its request (``delete_entry``), the consumer's housekeeping shreds expired tokens
(``delete_expired``), ``paygate keys`` shreds a client's tokens (``delete_client``) and
re-encrypts values under the newest key (``replace_ciphertext``). The writer queue runs
concurrent callers' writes in one transaction, in the order they arrived
(persistence.group_commit): a facade's batch deleting tokens A then B locks their rows in
that order, while a one-statement delete of many rows locks them in the order its scan
meets them. Two such transactions meeting the rows in opposite orders deadlock, and
PostgreSQL aborts one after ``deadlock_timeout`` (SQLSTATE 40P01): a second's stall of
every write of both batches (in the consumer's, payments' writes).

So the writes of one client's tokens declare the client's vault scope (an advisory lock in
the writers' order, persistence.lock_order), and the expiry sweep, whose rows a query
chooses, skips the rows another transaction holds.

The steps are forced by hand: the facade pauses after its first delete until the other
process waits on a lock (or is done). PostgreSQL only: SQLite has no row locks.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from persistence.group_commit import GroupCommit
from persistence.vault_tables import vault_entries
from tests.integration.test_rate_limit_lock_order import two_engines  # noqa: F401
from tests.integration.test_writer_lock_order import _deadlocks, _until_a_lock_wait
from vault.rows import VaultRows

pytestmark = pytest.mark.integration

# Long expired: no other test's token expires this early, so the sweep finds only these.
EXPIRED = datetime(2001, 1, 1, tzinfo=UTC)


async def _tokens(engine: AsyncEngine, client_id: str, expires_at: datetime | None) -> list[str]:
    """Two tokens of ``client_id``, in token order, written to the table in that order
    (so a scan in either order, the index's or the heap's, meets the first first)."""
    tokens = sorted(f"tok_{uuid.uuid4().hex[:24]}" for _ in range(2))
    async with engine.begin() as conn:
        for token in tokens:
            await conn.execute(
                insert(vault_entries).values(
                    token=token,
                    client_id=client_id,
                    account_type="card",
                    masked="****4242",
                    fingerprint="f" * 64,
                    key_id="dk_test",
                    ciphertext=b"sealed",
                    saved=True,
                    created_at=EXPIRED - timedelta(days=1),
                    expires_at=expires_at,
                )
            )
    return tokens


async def _left(engine: AsyncEngine, tokens: list[str]) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.scalars(
            select(vault_entries.c.token).where(vault_entries.c.token.in_(tokens))
        )
        return sorted(rows)


def _pause() -> tuple[asyncio.Event, asyncio.Event, Callable[[AsyncConnection], Awaitable[None]]]:
    paused, resume = asyncio.Event(), asyncio.Event()

    async def pause(conn: AsyncConnection) -> None:
        paused.set()
        await resume.wait()

    return paused, resume, pause


async def test_a_facades_deletes_and_a_client_shred_in_opposite_orders_do_not_deadlock(
    two_engines: list[AsyncEngine],  # noqa: F811
) -> None:
    facade_engine, command_engine = two_engines
    facade_writes = GroupCommit(facade_engine)
    facade = VaultRows(facade_engine, facade_writes)
    command = VaultRows(command_engine, GroupCommit(command_engine))
    client = f"client-{uuid.uuid4().hex[:8]}"
    a, b = await _tokens(facade_engine, client, None)
    deadlocks = _deadlocks([facade_engine, command_engine])
    paused, resume, pause = _pause()

    # The facade, one batch: the client's deletes of B, the pause, of A.
    facade_batch = asyncio.gather(
        facade.delete_entry(b, client),
        facade_writes.run(pause),
        facade.delete_entry(a, client),
    )
    await paused.wait()
    # ``paygate keys shred-client``: one statement, meeting A first.
    shred = asyncio.ensure_future(command.delete_client(client, datetime.now(UTC)))
    await _until_a_lock_wait(facade_engine, shred)
    resume.set()
    deleted = await facade_batch
    shredded = await shred

    assert deadlocks == []
    assert (deleted[0], deleted[2]) == (True, True)
    assert shredded == 0
    assert await _left(facade_engine, [a, b]) == []


async def test_a_facades_deletes_and_the_expiry_sweep_in_opposite_orders_do_not_deadlock(
    two_engines: list[AsyncEngine],  # noqa: F811
) -> None:
    facade_engine, consumer_engine = two_engines
    facade_writes = GroupCommit(facade_engine)
    facade = VaultRows(facade_engine, facade_writes)
    consumer = VaultRows(consumer_engine, GroupCommit(consumer_engine))
    client = f"client-{uuid.uuid4().hex[:8]}"
    a, b = await _tokens(facade_engine, client, EXPIRED)
    deadlocks = _deadlocks([facade_engine, consumer_engine])
    paused, resume, pause = _pause()

    # The facade, one batch: the client's deletes of B, the pause, of A.
    facade_batch = asyncio.gather(
        facade.delete_entry(b, client),
        facade_writes.run(pause),
        facade.delete_entry(a, client),
    )
    await paused.wait()
    # The consumer's housekeeping: one statement, meeting A first.
    sweep = asyncio.ensure_future(consumer.delete_expired(EXPIRED + timedelta(seconds=1), 500))
    await _until_a_lock_wait(facade_engine, sweep)
    resume.set()
    deleted = await facade_batch
    swept = await sweep

    assert deadlocks == []
    # Each token deleted once, by one of the two: nothing lost, nothing left.
    assert deleted[0] is True
    assert swept + int(deleted[0]) + int(deleted[2]) == 2
    assert await _left(facade_engine, [a, b]) == []
