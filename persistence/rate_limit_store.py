"""Token buckets in the database: a client's rate limit, shared by every facade process.

A bucket holds up to ``burst`` tokens and refills at ``rate`` per second. :meth:`take`
takes ``count`` tokens, all or none, in one atomic statement (an ``UPDATE`` whose ``WHERE``
checks the refilled count), so concurrent takes from any number of processes never grant
more than the bucket holds: the limit means the same behind one facade or ten.

The statements are plain SQL that SQLite (3.35 or later) and PostgreSQL both run:
``UPDATE ... RETURNING`` and ``INSERT ... ON CONFLICT DO NOTHING``. Time is the facades'
clock, in epoch seconds; a clock behind the one that last wrote the row refills nothing
rather than a negative amount, and never moves ``as_of`` back.

Takes run through :class:`~persistence.group_commit.GroupCommit`, so the takes of
concurrent requests share one transaction (and, on SQLite, one sync to disk).
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import Float, String, TextClause, bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection

from persistence.group_commit import GroupCommit
from persistence.lock_order import RowLocks

# Plain SQL both dialects run the same. The f-strings join constants only; every value
# is a bound parameter (hence the S608 exemptions).
# The bucket's content now: what it held, plus the refill since, capped at the burst.
_ELAPSED: Final = "(CASE WHEN :now > as_of THEN :now - as_of ELSE 0 END)"
_REFILLED: Final = (
    f"(CASE WHEN tokens + {_ELAPSED} * :rate > :burst THEN :burst "
    f"ELSE tokens + {_ELAPSED} * :rate END)"
)
_TAKE_SQL: Final = (
    f"UPDATE rate_limit_buckets SET tokens = {_REFILLED} - :count, "  # noqa: S608
    "as_of = CASE WHEN :now > as_of THEN :now ELSE as_of END "
    f"WHERE client_id = :client_id AND {_REFILLED} >= :count "
    "RETURNING tokens"
)


def _typed(sql: str) -> TextClause:
    # PostgreSQL cannot infer the type of a parameter that meets only other parameters
    # (``:now - as_of`` is fine, ``:burst - :count`` is not): type them all.
    names = ("now", "rate", "burst", "count")
    return text(sql).bindparams(
        bindparam("client_id", type_=String()),
        *(bindparam(name, type_=Float()) for name in names if f":{name}" in sql),
    )


_TAKE: Final = _typed(_TAKE_SQL)
_CREATE: Final = _typed(
    "INSERT INTO rate_limit_buckets (client_id, tokens, as_of) "
    "VALUES (:client_id, :burst - :count, :now) "
    "ON CONFLICT (client_id) DO NOTHING RETURNING tokens"
)
_PEEK: Final = _typed(
    f"SELECT {_REFILLED} FROM rate_limit_buckets WHERE client_id = :client_id"  # noqa: S608
)
# A refusal always says to wait a little, so that 0.0 can only mean "granted".
_MIN_WAIT_S: Final = 0.001


class RateLimitStore:
    """The ``rate_limit_buckets`` table."""

    def __init__(self, writes: GroupCommit) -> None:
        self._writes = writes

    async def take(
        self, client_id: str, *, count: int, rate_per_s: float, burst: int, now: float
    ) -> float:
        """Take ``count`` tokens of ``client_id``'s bucket if it holds them: 0.0 if taken,
        else the seconds until they will be (at least 1 ms). ``count`` must be between 1
        and ``burst``."""
        if not 1 <= count <= burst or rate_per_s <= 0:
            raise ValueError("count must be between 1 and burst, and rate_per_s positive")
        params = {
            "client_id": client_id,
            "count": float(count),
            "rate": float(rate_per_s),
            "burst": float(burst),
            "now": now,
        }

        async def take(conn: AsyncConnection) -> float:
            if (await conn.execute(_TAKE, params)).first() is not None:
                return 0.0
            # No row yet (a new client starts full), or too few tokens.
            if (await conn.execute(_CREATE, params)).first() is not None:
                return 0.0
            # The insert conflicted: another process made the row since the UPDATE looked
            # (PostgreSQL; SQLite's write lock serialises the two). Take from it instead.
            if (await conn.execute(_TAKE, params)).first() is not None:
                return 0.0
            held = (await conn.execute(_PEEK, params)).scalar_one()
            return max(_MIN_WAIT_S, (count - float(held)) / rate_per_s)

        # The bucket's row lock (or, for a new client, the insert's wait on another's) is
        # taken mid-batch in arrival order; declared, the batch takes it first, in the
        # writers' one order, so two processes' batches of takes cannot deadlock.
        wait_s: float = await self._writes.run(take, locks=RowLocks.of(buckets=[client_id]))
        return wait_s
