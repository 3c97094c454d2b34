"""Claims: one owner at a time for a row's provider work, enforced by conditional writes.

A claim is a ``(claim_token, claim_expires_at)`` pair on the row whose provider work it
guards: a payment (its attempts and its capture), a refund, or a stray charge (its
reversal). The invariant:

    Only the worker holding a row's current token calls the provider for it, and a write
    about that work changes the row only while the writer's token is still the row's.

How the database enforces it, without relying on timing:

* **Taking** a claim is a conditional write on the row, made with the row locked
  (``FOR UPDATE`` on PostgreSQL; SQLite's write transaction holds the database lock): it
  succeeds only if the row has no token or its token has expired, and it writes a fresh,
  random token. Of two workers taking one claim, the second finds the first's token and
  loses. A worker that loses does not call the provider.
* **Every later write** of the owner (finish an attempt, open the next one, schedule a
  retry, renew) carries ``claim_token = :token`` in its ``WHERE``. Once another worker has
  taken the claim, the former owner's writes match nothing: it learns it lost the claim and
  stops, whatever it was doing.
* **Renewing** is such a write. Every provider call follows one (a take, the write of the
  row with its claim, a renewal) that was made after the call's place at the provider's
  gate was taken, or shortly enough before it to be fresh (consumer.claimed_calls: a third
  of the lease, one call), so a call is only ever made right after the database confirmed
  the caller is the owner.

Expiry decides only when a claim may be *taken over* (its owner died or hangs). An owner
whose lease ran out but whom nobody replaced still writes: nobody else acted meanwhile.
Clocks matter only for liveness (how soon a dead owner is replaced), never for safety: two
workers that both believe they own a row cannot both write, because the token decides.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Table, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from persistence.engine import as_utc_or_none


@dataclass(frozen=True, slots=True)
class Claim:
    """The right to do a row's provider work: ``token`` is checked by every write."""

    token: str
    expires_at: datetime


def new_claim(now: datetime, lease: timedelta) -> Claim:
    return Claim(uuid.uuid4().hex, now + lease)


def claim_columns(claim: Claim | None) -> dict[str, Any]:
    """The row's claim columns set to ``claim`` (None: released)."""
    return {
        "claim_token": None if claim is None else claim.token,
        "claim_expires_at": None if claim is None else claim.expires_at,
    }


def is_claimable(token: str | None, expires_at: datetime | None, now: datetime) -> bool:
    """Whether a row whose claim reads (token, expires_at) may be taken at ``now``."""
    return token is None or expires_at is None or expires_at <= now


def claimable(table: Table, now: datetime) -> ColumnElement[bool]:
    """SQL: the row's claim may be taken at ``now``."""
    return or_(
        table.c.claim_token.is_(None),
        table.c.claim_expires_at.is_(None),
        table.c.claim_expires_at <= now,
    )


def least_recently_examined(table: Table) -> tuple[ColumnElement[Any], ...]:
    """ORDER BY for reconcilers: never examined first, then the longest ago, so a page of
    rows that cannot be settled yet moves to the back instead of starving the others."""
    return (table.c.examined_at.is_not(None), table.c.examined_at)


def the_row(table: Table, row_id: str) -> ColumnElement[bool]:
    """SQL: ``table``'s row ``row_id``, by its primary key (one column on every claimed table:
    ``id``, or a stray charge's ``attempt_key``)."""
    (key,) = table.primary_key.columns
    return key == row_id


def held_by(table: Table, token: str) -> ColumnElement[bool]:
    """SQL: the row's claim is ``token``'s."""
    return table.c.claim_token == token


async def take_claim(
    conn: AsyncConnection,
    table: Table,
    row_id: str,
    *,
    statuses: Collection[str],
    now: datetime,
    lease: timedelta,
    also: Callable[[AsyncConnection], Awaitable[bool]] | None = None,
) -> Claim | None:
    """Take the claim on ``table``'s row ``row_id``: the conditional write of the module
    docstring. None (nothing written) unless the row's status is one of ``statuses``, the
    claim is free or expired, and ``also`` (a further check, read under the same lock) holds.

    The row is locked first (``FOR UPDATE`` on PostgreSQL; SQLite's write transaction holds
    the database lock), so the checks and the write see no other writer in between.
    """
    row = (
        await conn.execute(
            select(table.c.status, table.c.claim_token, table.c.claim_expires_at)
            .where(the_row(table, row_id))
            .with_for_update()
        )
    ).one_or_none()
    if (
        row is None
        or row.status not in statuses
        or not is_claimable(row.claim_token, as_utc_or_none(row.claim_expires_at), now)
    ):
        return None
    if also is not None and not await also(conn):
        return None
    claim = new_claim(now, lease)
    # Reconcilers order by it (least_recently_examined); a table without it orders otherwise.
    examined = {"examined_at": now} if "examined_at" in table.c else {}
    await conn.execute(
        update(table).where(the_row(table, row_id)).values(**claim_columns(claim), **examined)
    )
    return claim


async def renew_claim(
    conn: AsyncConnection, table: Table, row_id: str, token: str, expires_at: datetime
) -> bool:
    """Extend the holder's claim; False if ``token`` is no longer the row's (then the caller
    must not call the provider)."""
    result = await conn.execute(
        update(table)
        .where(the_row(table, row_id))
        .where(table.c.claim_token == token)
        .values(claim_expires_at=expires_at)
    )
    return bool(result.rowcount)


async def release_claim(conn: AsyncConnection, table: Table, row_id: str, token: str) -> None:
    """Give the claim up, so another may take it at once (a no-op if it is not ``token``)."""
    await conn.execute(
        update(table)
        .where(the_row(table, row_id))
        .where(table.c.claim_token == token)
        .values(**claim_columns(None))
    )
