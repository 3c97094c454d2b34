"""One table's claims, taken, renewed and released through a store's writer queue.

Every store whose rows carry a claim (payments, their captures and voids, refunds, stray
charges) offers
the same three operations over persistence.claims; this object is them, bound once to the
table, the writer queue and the lease, so the stores do not each write them again. Each
operation is one transaction of its own, with the guarantees of persistence.claims.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime, timedelta

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from persistence.attempts import payment_of_attempt
from persistence.claims import Claim, release_claim, renew_claim, take_claim
from persistence.group_commit import GroupCommit
from persistence.lock_order import RowLocks
from persistence.tables import payments, refunds, stray_charges


class RowClaims:
    def __init__(
        self,
        table: Table,
        writes: GroupCommit,
        clock: Callable[[], datetime],
        lease: timedelta,
    ) -> None:
        self._table = table
        self._writes = writes
        self._clock = clock
        self._lease = lease
        self._locks = _locks_of(table)

    async def take(self, row_id: str, statuses: Collection[str]) -> Claim | None:
        """Take the claim on the row, or None: its status is not one of ``statuses``, or
        another worker holds it. Decided with the row locked, so of two takers one wins."""
        now = self._clock()

        async def record(conn: AsyncConnection) -> Claim | None:
            return await take_claim(
                conn, self._table, row_id, statuses=statuses, now=now, lease=self._lease
            )

        return await self._writes.run(record, locks=self._locks(row_id))

    async def renew(self, row_id: str, token: str) -> bool:
        """Extend the holder's claim by a lease; False if ``token`` is no longer the row's
        (then the caller must not call the provider)."""
        expires_at = self._clock() + self._lease

        async def record(conn: AsyncConnection) -> bool:
            return await renew_claim(conn, self._table, row_id, token, expires_at)

        return await self._writes.run(record, locks=self._locks(row_id))

    async def release(self, row_id: str, token: str) -> None:
        """Give the claim up (the holder cannot go on now), so another may take it at once."""

        async def record(conn: AsyncConnection) -> None:
            await release_claim(conn, self._table, row_id, token)

        await self._writes.run(record, locks=self._locks(row_id))


def _locks_of(table: Table) -> Callable[[str], RowLocks | None]:
    """What a claim's write on ``table``'s row locks (persistence.lock_order)."""
    if table is payments:
        return lambda row_id: RowLocks.of(payments=[row_id])
    if table is refunds:
        return lambda row_id: RowLocks.of(refunds=[row_id])
    if table is stray_charges:
        # A stray charge's rows are written under its payment's lock, as every write of its
        # attempt is (persistence.stray_store).
        return lambda attempt_key: RowLocks.of(payments=[payment_of_attempt(attempt_key)])
    raise ValueError(f"claims on {table.name} have no place in the lock order")
