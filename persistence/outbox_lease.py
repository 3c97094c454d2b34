"""A lease in the database that lets exactly one outbox relay publish at a time.

Every consumer process runs a relay over the shared store. Without a lease, two relays read
the same unpublished rows and both publish them. With it, a relay reads and publishes only
while it holds the lease, and checks it before every batch:

* :meth:`OutboxLease.acquire` is one conditional statement, atomic on SQLite and PostgreSQL
  alike: insert the lease row if there is none, else take it over only where it has
  expired or is this holder's already (a renewal). ``INSERT ... ON CONFLICT (name) DO
  UPDATE ... WHERE``: PostgreSQL re-checks the ``WHERE`` on the newest row version after
  waiting for a concurrent writer's commit; SQLite runs writers one at a time.
* :meth:`OutboxLease.release` deletes the row if this holder has it, so another relay can
  take over at its next try instead of waiting for the lease to run out.

A holder that was paused past its lease (a stopped process, a long GC, a database that
did not answer) finds at its next renewal that another relay took the lease, and does not
publish. Expiry is judged by the relays' clocks (injectable for tests): the hosts' clocks
must agree to well within the lease's duration.

With ``trust_for``, a renewal younger than that is trusted without a statement: nobody can
take a lease before it expires, so a holder whose last renewal committed less than
``trust_for`` ago, with ``trust_for`` at most half the duration, still holds it with at
least half left, as a fresh renewal would have told it. It spares the writer queue a
transaction per relay batch, which was a measurable share of it (docs/performance.md).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import delete, or_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.clock import utc_now
from persistence.group_commit import GroupCommit
from persistence.outbox_lease_tables import outbox_lease

RELAY_LEASE = "outbox-relay"


def new_holder_id() -> str:
    """Unique per relay; host and process id first, so people can tell who holds it."""
    return f"{socket.gethostname()[:64]}/{os.getpid()}/{uuid.uuid4().hex[:12]}"


class OutboxLease:
    """The relay lease as seen by one holder.

    ``writes`` is the store's writer queue (``PaymentStore.writes``): on SQLite a second
    writer would otherwise wait in SQLite's busy handler instead of queueing behind the
    payment writes.
    """

    def __init__(
        self,
        writes: GroupCommit,
        *,
        duration: timedelta,
        holder: str | None = None,
        name: str = RELAY_LEASE,
        clock: Callable[[], datetime] = utc_now,
        trust_for: timedelta = timedelta(0),
    ) -> None:
        if duration <= timedelta(0):
            raise ValueError("a lease needs a positive duration")
        if trust_for * 2 > duration:
            raise ValueError("a renewal can be trusted for at most half the lease's duration")
        self._writes = writes
        self._duration = duration
        self._trust_for = trust_for
        # When our last renewal's statement ran (its clock reading); None: not holding.
        self._renewed_at: datetime | None = None
        self._name = name
        self._clock = clock
        self.holder = holder or new_holder_id()

    @property
    def duration(self) -> timedelta:
        return self._duration

    async def acquire(self) -> bool:
        """Take the lease, or renew it if it is ours; True if we hold it now.

        True only with at least half the duration left after the statement committed: a
        renewal that took longer than that (a database that stalled) is not trusted for a
        batch, and the caller tries again. Within ``trust_for`` of the last renewal, True
        without a statement (see the module docstring).
        """
        renewed_at = self._renewed_at
        if renewed_at is not None and self._clock() - renewed_at < self._trust_for:
            return True
        self._renewed_at = None
        expires_at = await self._writes.run(self._take)
        if expires_at is None:
            return False
        if self._clock() < expires_at - self._duration / 2:
            self._renewed_at = expires_at - self._duration
            return True
        return False

    async def release(self) -> None:
        """Give the lease up if we hold it (a no-op otherwise, and when called twice)."""
        self._renewed_at = None

        async def record(conn: AsyncConnection) -> None:
            await conn.execute(
                delete(outbox_lease)
                .where(outbox_lease.c.name == self._name)
                .where(outbox_lease.c.holder == self.holder)
            )

        await self._writes.run(record)

    async def _take(self, conn: AsyncConnection) -> datetime | None:
        """The one conditional statement; the new expiry if the row is ours now, else None."""
        # Read the clock here, when the statement runs, not when it was queued.
        now = self._clock()
        expires_at = now + self._duration
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(outbox_lease).values(
            name=self._name, holder=self.holder, expires_at=expires_at
        )
        statement = statement.on_conflict_do_update(
            index_elements=[outbox_lease.c.name],
            set_={"holder": statement.excluded.holder, "expires_at": statement.excluded.expires_at},
            where=or_(outbox_lease.c.holder == self.holder, outbox_lease.c.expires_at <= now),
        )
        result = await conn.execute(statement)
        return expires_at if result.rowcount == 1 else None
