"""The vault's rows: SQL on ``vault_keys``, ``vault_entries`` and ``vault_shredded_clients``,
nothing cryptographic.

Every method is one short transaction. What comes in and out is already encrypted (values)
or wrapped (keys): this module never sees a clear number or a clear key.

Locks: a client's tokens are written by several processes (the facade deletes one on the
client's request, the consumer's housekeeping shreds expired ones, ``paygate keys`` shreds
a client's and re-encrypts values), each through its writer queue, whose transaction runs
many callers' writes in arrival order. So every write of existing tokens of one client
declares the client (an advisory lock, persistence.lock_order), taken with its batch's other
locks before its first operation, and changes only that client's rows: two batches naming
the same tokens in opposite orders, or a batch and a client's shred, queue on each other
instead of deadlocking (tests/integration/test_vault_lock_order.py). The expiry sweep,
whose rows a query chooses across clients, skips rows another transaction holds. A new
token's insert locks a row no other write can name before it commits, and reads its
data key's row ``FOR KEY SHARE`` (:meth:`VaultRows.add_entry`: a value sealed under a key
retired before its row landed is refused; a rewrap's swap alike); the data keys' rows are
written by ``paygate keys`` alone, one at a time, each write holding nothing else while
it waits for that row.

A client's shred (:meth:`VaultRows.delete_client`) leaves none of its tokens behind, and
none can be stored after it: in one transaction it records the client as shredded and
deletes its tokens, holding the client's vault lock exclusive; every insert of a token
holds that lock *shared* (declared with its batch's locks, so taken in the one order) and
reads the record before inserting (refused: ``client_shredded``). So an insert either
commits before the shred takes the lock, and the shred's DELETE, which waits for it, sees
and deletes its row, or takes the lock after the shred committed and finds the record
(PostgreSQL's READ COMMITTED: each statement reads what committed before it began). Its
lock order, with the key rows' locks of a retire or rewrap: the client's vault lock, then
the data key's row (``FOR KEY SHARE``); the shred takes the first only (it reads no key
row), and a retire the key row only, so no cycle can form between them
(tests/integration/test_vault_shred_race.py). On SQLite the write transaction holds the
database.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Final, Protocol

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from persistence.database_identity import same_table
from persistence.engine import as_utc, as_utc_or_none
from persistence.group_commit import Bulk, GroupCommit
from persistence.lock_order import RowLocks
from persistence.vault_key_guard import require_live_keys
from persistence.vault_tables import vault_entries, vault_keys, vault_shredded_clients
from persistence.webhook_tables import webhook_endpoints
from vault.errors import client_shredded
from vault.read_batches import ReadBatches

# Every column that names the data key a stored value is sealed under: a key is retired
# only when none does.
_SEALED_UNDER_A_KEY: Final = (vault_entries.c.key_id, webhook_endpoints.c.secret_key_id)


@dataclass(frozen=True, slots=True)
class KeyRow:
    key_id: str
    kek_id: str
    wrapped_key: bytes | None
    created_at: datetime
    retired_at: datetime | None
    values: int = 0


@dataclass(frozen=True, slots=True)
class EntryRow:
    token: str
    client_id: str | None
    account_type: str
    masked: str
    fingerprint: str
    key_id: str
    ciphertext: bytes
    saved: bool
    created_at: datetime
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class _Scope:
    """Whose a live token is: all :meth:`VaultRows.is_live` reads of a row."""

    client_id: str | None


def _key(row: object) -> KeyRow:
    return KeyRow(
        key_id=row.key_id,  # type: ignore[attr-defined]
        kek_id=row.kek_id,  # type: ignore[attr-defined]
        wrapped_key=row.wrapped_key,  # type: ignore[attr-defined]
        created_at=as_utc(row.created_at),  # type: ignore[attr-defined]
        retired_at=as_utc_or_none(row.retired_at),  # type: ignore[attr-defined]
    )


def _entry(row: object) -> EntryRow:
    return EntryRow(
        token=row.token,  # type: ignore[attr-defined]
        client_id=row.client_id,  # type: ignore[attr-defined]
        account_type=row.account_type,  # type: ignore[attr-defined]
        masked=row.masked,  # type: ignore[attr-defined]
        fingerprint=row.fingerprint,  # type: ignore[attr-defined]
        key_id=row.key_id,  # type: ignore[attr-defined]
        ciphertext=row.ciphertext,  # type: ignore[attr-defined]
        saved=bool(row.saved),  # type: ignore[attr-defined]
        created_at=as_utc(row.created_at),  # type: ignore[attr-defined]
        expires_at=as_utc_or_none(row.expires_at),  # type: ignore[attr-defined]
    )


def _scope(client_id: str | None):  # type: ignore[no-untyped-def]
    column = vault_entries.c.client_id
    return column.is_(None) if client_id is None else column == client_id


def _insert_locks(entry: EntryRow) -> RowLocks:
    """What an insert of ``entry`` locks: its client's vault lock, shared. Upstream
    services' tokens (no client) lock nothing: no shred names them."""
    return _NO_LOCKS if entry.client_id is None else _client_insert_locks(entry.client_id)


_NO_LOCKS: Final = RowLocks()


@lru_cache(maxsize=4096)
def _client_insert_locks(client_id: str) -> RowLocks:
    # Made once per client (immutable): building it was a measurable part of a
    # tokenization's CPU (docs/performance.md, the shred check on the insert path).
    return RowLocks.of(vault_inserts=[client_id])


async def _refuse_shredded_clients(conn: AsyncConnection, entries: Sequence[EntryRow]) -> None:
    """``client_shredded`` if a client of ``entries`` is recorded as shredded. Read under
    the clients' vault locks (:func:`_insert_locks`, taken before the transaction's first
    operation): a shred that committed before they were granted is seen here."""
    clients = sorted({e.client_id for e in entries if e.client_id is not None})
    if not clients:
        return
    shredded = await conn.scalar(
        select(vault_shredded_clients.c.client_id)
        .where(vault_shredded_clients.c.client_id.in_(clients))
        .order_by(vault_shredded_clients.c.client_id)
        .limit(1)
    )
    if shredded is not None:
        raise client_shredded(shredded)


async def _insert_entries(conn: AsyncConnection, entries: Sequence[EntryRow]) -> list[None]:
    """Insert ``entries`` (every insert of a token comes here), unless a client of theirs
    was shredded (``client_shredded``, nothing inserted)."""
    await _refuse_shredded_clients(conn, entries)
    await conn.execute(
        insert(vault_entries),
        [
            {
                "token": e.token,
                "client_id": e.client_id,
                "account_type": e.account_type,
                "masked": e.masked,
                "fingerprint": e.fingerprint,
                "key_id": e.key_id,
                "ciphertext": e.ciphertext,
                "saved": e.saved,
                "created_at": e.created_at,
                "expires_at": e.expires_at,
            }
            for e in entries
        ],
    )
    return [None] * len(entries)


async def _insert_entries_under_live_keys(
    conn: AsyncConnection, entries: Sequence[EntryRow]
) -> list[None]:
    """Insert ``entries`` unless one's data key is retired (KeyRetiredError, nothing
    inserted). The keys' rows are read ``FOR KEY SHARE``: a retire
    (:meth:`VaultRows.retire_key` locks its key's row ``FOR UPDATE`` before counting the
    key's values) then waits for this transaction and counts its rows, or has erased the
    key and this read, taken after it, finds the key retired
    (persistence.vault_key_guard). On SQLite the write transaction holds the database."""
    await require_live_keys(conn, {e.key_id for e in entries})
    return await _insert_entries(conn, entries)


class VaultStorage(Protocol):
    """What :class:`vault.vault.Vault` needs from its rows; :class:`VaultRows` is the SQL
    one, tests pass a fake."""

    async def beside(self, engine: AsyncEngine) -> bool:
        """Whether the data keys' rows are in ``engine``'s database, where a write of a
        value sealed under one can check, in its own transaction, that the key is live
        (persistence.vault_key_guard)."""
        ...

    async def add_key(self, key: KeyRow) -> None: ...
    async def newest_active_key(self) -> KeyRow | None: ...
    async def key(self, key_id: str) -> KeyRow | None: ...
    async def keys(self) -> list[KeyRow]: ...
    async def rewrap_key(self, key_id: str, kek_id: str, wrapped: bytes) -> None: ...
    async def retire_key(self, key_id: str, at: datetime) -> bool: ...
    async def add_entry(self, entry: EntryRow) -> None: ...
    def entry_write(self, entry: EntryRow) -> Bulk | None:
        """``entry``'s insert, for the caller to run in a transaction of its own writer
        queue; None when the rows are in another database (then :meth:`add_entry`)."""
        ...

    async def entry(self, token: str, client_id: str | None) -> EntryRow | None: ...
    async def is_live(self, token: str, client_id: str | None) -> bool: ...
    async def entries_not_under(self, key_id: str, limit: int) -> list[EntryRow]: ...
    async def replace_ciphertext(
        self, token: str, client_id: str | None, old_key_id: str, key_id: str, ciphertext: bytes
    ) -> bool: ...
    async def delete_entry(self, token: str, client_id: str | None) -> bool: ...
    async def delete_client(self, client_id: str, at: datetime) -> int: ...
    async def unshred_client(self, client_id: str) -> bool: ...
    async def delete_expired(self, now: datetime, limit: int) -> int: ...


class VaultRows:
    def __init__(self, engine: AsyncEngine, writes: GroupCommit | None = None) -> None:
        """``writes``: the database's one writer queue when the vault shares paygate's
        database (on SQLite a second writer would wait in the busy handler, and every
        tokenization would be a commit of its own); else one of the vault's own."""
        self._engine = engine
        # Only rows in paygate's own database can join a transaction of its writer queue.
        self._shares_database = writes is not None
        self._writes = writes if writes is not None else GroupCommit(engine)
        self._reads: ReadBatches[EntryRow] = ReadBatches(self._entries)
        self._live_reads: ReadBatches[_Scope] = ReadBatches(self._scopes)
        self._beside: weakref.WeakKeyDictionary[AsyncEngine, bool] = weakref.WeakKeyDictionary()

    async def beside(self, engine: AsyncEngine) -> bool:
        # Asked of the databases, once per engine: two URLs whose text differs can name
        # one database, and one text (in-memory SQLite) two (persistence.database_identity).
        known = self._beside.get(engine)
        if known is None:
            known = await same_table(engine, self._engine, vault_keys.name)
            self._beside[engine] = known
        return known

    # --- data keys ---------------------------------------------------------------------

    async def add_key(self, key: KeyRow) -> None:
        async def _op(conn: AsyncConnection) -> None:
            await conn.execute(
                insert(vault_keys).values(
                    key_id=key.key_id,
                    kek_id=key.kek_id,
                    wrapped_key=key.wrapped_key,
                    created_at=key.created_at,
                    retired_at=None,
                )
            )

        await self._writes.run(_op)

    async def newest_active_key(self) -> KeyRow | None:
        query = (
            select(vault_keys)
            .where(vault_keys.c.retired_at.is_(None))
            .order_by(vault_keys.c.created_at.desc(), vault_keys.c.key_id.desc())
            .limit(1)
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).one_or_none()
        return None if row is None else _key(row)

    async def key(self, key_id: str) -> KeyRow | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(vault_keys).where(vault_keys.c.key_id == key_id))
            ).one_or_none()
        return None if row is None else _key(row)

    async def keys(self) -> list[KeyRow]:
        """Every key, oldest first, with how many values each encrypts."""
        counts = (
            select(vault_entries.c.key_id, func.count().label("values"))
            .group_by(vault_entries.c.key_id)
            .subquery()
        )
        query = (
            select(vault_keys, func.coalesce(counts.c["values"], 0).label("n"))
            .outerjoin(counts, counts.c.key_id == vault_keys.c.key_id)
            .order_by(vault_keys.c.created_at, vault_keys.c.key_id)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            KeyRow(
                key_id=row.key_id,
                kek_id=row.kek_id,
                wrapped_key=row.wrapped_key,
                created_at=as_utc(row.created_at),
                retired_at=as_utc_or_none(row.retired_at),
                values=int(row.n),
            )
            for row in rows
        ]

    async def rewrap_key(self, key_id: str, kek_id: str, wrapped: bytes) -> None:
        async def _op(conn: AsyncConnection) -> None:
            await conn.execute(
                update(vault_keys)
                .where(vault_keys.c.key_id == key_id, vault_keys.c.retired_at.is_(None))
                .values(kek_id=kek_id, wrapped_key=wrapped)
            )

        await self._writes.run(_op)

    async def retire_key(self, key_id: str, at: datetime) -> bool:
        """Erase the key's wrapped bytes, if no value (nor webhook signing secret) still
        uses it; False if one does.

        The key's row is locked first: a write of a value under the key that is under way
        (it holds the row ``FOR KEY SHARE``: :meth:`add_entry`, a rewrap's swap, a webhook
        secret's write in persistence.webhook_secrets) commits before the count, which then
        sees it; one that comes later finds the key retired and is refused. The webhook
        secrets counted are those of this database: with a vault database of its own,
        paygate's are counted by ``paygate keys retire`` before, without this guard
        (docs/security.md)."""

        async def _op(conn: AsyncConnection) -> bool:
            await conn.execute(
                select(vault_keys.c.key_id).where(vault_keys.c.key_id == key_id).with_for_update()
            )
            for column in _SEALED_UNDER_A_KEY:
                if await conn.scalar(select(func.count()).where(column == key_id)):
                    return False
            await conn.execute(
                update(vault_keys)
                .where(vault_keys.c.key_id == key_id)
                .values(wrapped_key=None, retired_at=func.coalesce(vault_keys.c.retired_at, at))
            )
            return True

        return await self._writes.run(_op)

    # --- entries -----------------------------------------------------------------------

    async def add_entry(self, entry: EntryRow) -> None:
        """Insert ``entry``; KeyRetiredError if its data key was retired since it was
        sealed (the insert can land long after the seal: a backed-up writer queue, a
        stalled database), for the caller to seal it again under a live key."""

        async def _op(conn: AsyncConnection) -> None:
            await _insert_entries_under_live_keys(conn, [entry])

        # Many tokenizations at once (the consumer's intake) insert in one statement.
        await self._writes.run(
            _op, Bulk(_insert_entries_under_live_keys, entry), locks=_insert_locks(entry)
        )

    def entry_write(self, entry: EntryRow) -> Bulk | None:
        if not self._shares_database:
            return None
        # Checked as add_entry's insert: the payment's begin that runs it can land after the
        # key was retired (KeyRetiredError then fails that begin, with nothing written), or
        # after the client was shredded (client_shredded). Its locks, for the transaction it
        # joins (PaymentStore.begin's) to take first.
        return Bulk(_insert_entries_under_live_keys, entry, _insert_locks(entry))

    async def entry(self, token: str, client_id: str | None) -> EntryRow | None:
        entry = await self._reads.get(token)
        # The scope is checked here, on the row: NULL (upstream services) matches only None.
        return entry if entry is not None and entry.client_id == client_id else None

    async def _entries(self, tokens: Sequence[str]) -> dict[str, EntryRow]:
        query = select(vault_entries).where(vault_entries.c.token.in_(list(tokens)))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {row.token: _entry(row) for row in rows}

    async def is_live(self, token: str, client_id: str | None) -> bool:
        """Whether the database holds ``token`` in ``client_id``'s scope now (from a query
        begun after this call). Expiry is the caller's to check: a row's ``expires_at``
        never changes, so the caller that wrote it knows it."""
        scope = await self._live_reads.get(token)
        return scope is not None and scope.client_id == client_id

    async def _scopes(self, tokens: Sequence[str]) -> dict[str, _Scope]:
        # Two short columns, no ciphertext and no timestamps to convert: the row-building
        # of a full read was most of a reveal's cost.
        query = select(vault_entries.c.token, vault_entries.c.client_id).where(
            vault_entries.c.token.in_(list(tokens))
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {token: _Scope(client_id) for token, client_id in rows}

    async def entries_not_under(self, key_id: str, limit: int) -> list[EntryRow]:
        query = (
            select(vault_entries)
            .where(vault_entries.c.key_id != key_id)
            .order_by(vault_entries.c.token)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_entry(row) for row in rows]

    async def replace_ciphertext(
        self, token: str, client_id: str | None, old_key_id: str, key_id: str, ciphertext: bytes
    ) -> bool:
        """Swap in a re-encrypted value, unless it changed meanwhile (deleted, moved).
        ``client_id`` is the token's (its row's): the lock the write declares.
        KeyRetiredError if ``key_id`` was retired meanwhile (a rewrap that began before a
        rotation, still moving values to what was then the newest key): the value stays
        under its old key, which still opens it."""

        async def _op(conn: AsyncConnection) -> bool:
            await require_live_keys(conn, {key_id})
            result = await conn.execute(
                update(vault_entries)
                .where(
                    vault_entries.c.token == token,
                    _scope(client_id),
                    vault_entries.c.key_id == old_key_id,
                )
                .values(key_id=key_id, ciphertext=ciphertext)
            )
            return bool(result.rowcount)

        return await self._writes.run(_op, locks=RowLocks.of(vault_clients=[client_id]))

    async def delete_entry(self, token: str, client_id: str | None) -> bool:
        async def _op(conn: AsyncConnection) -> bool:
            result = await conn.execute(
                delete(vault_entries).where(vault_entries.c.token == token, _scope(client_id))
            )
            return bool(result.rowcount)

        return await self._writes.run(_op, locks=RowLocks.of(vault_clients=[client_id]))

    async def delete_client(self, client_id: str, at: datetime) -> int:
        """Record ``client_id`` as shredded (at ``at``, if not already) and delete its
        tokens, in one transaction holding its vault lock exclusive: an insert under way
        commits first and is deleted here, a later one is refused (module docstring)."""

        async def _op(conn: AsyncConnection) -> int:
            # The lock keeps any other shred or unshred of the client out: read, then insert.
            recorded = await conn.scalar(
                select(vault_shredded_clients.c.client_id).where(
                    vault_shredded_clients.c.client_id == client_id
                )
            )
            if recorded is None:
                await conn.execute(
                    insert(vault_shredded_clients).values(client_id=client_id, shredded_at=at)
                )
            result = await conn.execute(
                delete(vault_entries).where(vault_entries.c.client_id == client_id)
            )
            return int(result.rowcount)

        return await self._writes.run(_op, locks=RowLocks.of(vault_clients=[client_id]))

    async def unshred_client(self, client_id: str) -> bool:
        """Let tokens of ``client_id`` be stored again; False if it was not shredded."""

        async def _op(conn: AsyncConnection) -> bool:
            result = await conn.execute(
                delete(vault_shredded_clients).where(
                    vault_shredded_clients.c.client_id == client_id
                )
            )
            return bool(result.rowcount)

        return await self._writes.run(_op, locks=RowLocks.of(vault_clients=[client_id]))

    async def delete_expired(self, now: datetime, limit: int) -> int:
        """Delete up to ``limit`` tokens expired by ``now``; how many. Fewer than ``limit``
        when no more are expired, or the rest are held by another transaction (a client's
        delete or shred, a rewrap), left to the next pass."""
        # Rows chosen by a query, of any client, cannot be locked in the writers' order
        # (persistence.lock_order): rows another transaction holds are skipped, not waited
        # for. (An alias: a subquery of the DELETE's own table would be correlated to it.)
        candidate = vault_entries.alias("expired")
        expired = (
            select(candidate.c.token)
            .where(candidate.c.expires_at.is_not(None))
            .where(candidate.c.expires_at <= now)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )

        async def _op(conn: AsyncConnection) -> int:
            result = await conn.execute(
                delete(vault_entries).where(vault_entries.c.token.in_(expired))
            )
            return int(result.rowcount)

        return await self._writes.run(_op)
