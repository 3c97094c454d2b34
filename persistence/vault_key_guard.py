"""A value sealed under a vault data key is written only while that key is live.

A value (a card number, a webhook signing secret) is sealed first and its row written
later, through a writer queue that a backlog or a stalled database can hold for as long as
it likes. ``paygate keys retire`` erases a key's bytes once no row uses it: a row that lands
under the key after that never opens again. So every write that puts a value under a key
reads the key's row here, in its own transaction, and is refused (:class:`KeyRetiredError`)
when the key is retired; the writer seals the value again under the newest key. The retire
(vault.rows.VaultRows.retire_key) locks the key's row ``FOR UPDATE`` before counting the
rows under it, so a write under way is waited for and counted, or comes after and is
refused: no timing window.

Lock order (persistence.lock_order): the key rows are read ``FOR KEY SHARE`` after the
write's declared locks. The only lock that conflicts with it is a retire's ``FOR UPDATE``,
and a retire holds nothing else and waits on nothing after taking it (its counts are plain
reads), so no cycle can go through a key row. A key's rewrap (its wrapped bytes, no key
column) neither waits for these reads nor makes them wait. On SQLite a write transaction
holds the whole database.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from persistence.vault_tables import vault_keys


class KeyRetiredError(LookupError):
    """A value's data key was retired (its bytes erased) before the value's row was
    written: the write is refused, and the value must be sealed again under a live key."""

    def __init__(self, key_ids: Sequence[str]) -> None:
        super().__init__(", ".join(sorted(key_ids)))
        self.key_ids = tuple(sorted(key_ids))


async def require_live_keys(conn: AsyncConnection, key_ids: Iterable[str]) -> None:
    """KeyRetiredError unless every one of ``key_ids`` is live; their rows held ``FOR KEY
    SHARE`` to the transaction's end, so no retire (``FOR UPDATE``) erases one before it
    commits."""
    ordered = sorted(set(key_ids))
    live = set(
        await conn.scalars(
            select(vault_keys.c.key_id)
            .where(vault_keys.c.key_id.in_(ordered), vault_keys.c.wrapped_key.is_not(None))
            .order_by(vault_keys.c.key_id)
            .with_for_update(read=True, key_share=True)
        )
    )
    retired = [key_id for key_id in ordered if key_id not in live]
    if retired:
        raise KeyRetiredError(retired)
