"""An in-memory ``vault.rows.VaultStorage``: the vault's rows as dicts, for unit tests."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime

from persistence.group_commit import Bulk
from persistence.vault_key_guard import KeyRetiredError
from vault.errors import client_shredded
from vault.rows import EntryRow, KeyRow


class FakeVaultRows:
    def __init__(self) -> None:
        self.keys_by_id: dict[str, KeyRow] = {}
        self.entries: dict[str, EntryRow] = {}
        self.shredded: set[str] = set()

    async def beside(self, engine: object) -> bool:
        return False  # no database: nothing written elsewhere can check a key here

    async def add_key(self, key: KeyRow) -> None:
        self.keys_by_id[key.key_id] = key

    async def newest_active_key(self) -> KeyRow | None:
        live = [k for k in self.keys_by_id.values() if k.retired_at is None]
        return max(live, key=lambda k: (k.created_at, k.key_id), default=None)

    async def key(self, key_id: str) -> KeyRow | None:
        return self.keys_by_id.get(key_id)

    async def keys(self) -> list[KeyRow]:
        return [
            dataclasses.replace(k, values=sum(e.key_id == k.key_id for e in self.entries.values()))
            for k in sorted(self.keys_by_id.values(), key=lambda k: (k.created_at, k.key_id))
        ]

    async def rewrap_key(self, key_id: str, kek_id: str, wrapped: bytes) -> None:
        key = self.keys_by_id[key_id]
        self.keys_by_id[key_id] = dataclasses.replace(key, kek_id=kek_id, wrapped_key=wrapped)

    async def retire_key(self, key_id: str, at: datetime) -> bool:
        if any(e.key_id == key_id for e in self.entries.values()):
            return False
        key = self.keys_by_id[key_id]
        self.keys_by_id[key_id] = dataclasses.replace(
            key, wrapped_key=None, retired_at=key.retired_at or at
        )
        return True

    async def add_entry(self, entry: EntryRow) -> None:
        self._refuse_shredded([entry])
        key = self.keys_by_id.get(entry.key_id)
        if key is None or key.wrapped_key is None:
            raise KeyRetiredError([entry.key_id])
        self.entries[entry.token] = entry

    def entry_write(self, entry: EntryRow) -> Bulk | None:
        # The in-memory rows take any transaction's writes: the caller runs it on commit.
        return Bulk(self._add_entries, entry)

    def _refuse_shredded(self, entries: Sequence[EntryRow]) -> None:
        for entry in entries:
            if entry.client_id in self.shredded:
                raise client_shredded(entry.client_id)

    async def _add_entries(self, _conn: object, entries: Sequence[EntryRow]) -> list[None]:
        self._refuse_shredded(entries)
        for entry in entries:
            self.entries[entry.token] = entry
        return [None] * len(entries)

    async def entry(self, token: str, client_id: str | None) -> EntryRow | None:
        entry = self.entries.get(token)
        return entry if entry is not None and entry.client_id == client_id else None

    async def is_live(self, token: str, client_id: str | None) -> bool:
        return await self.entry(token, client_id) is not None

    async def entries_not_under(self, key_id: str, limit: int) -> list[EntryRow]:
        return sorted(
            (e for e in self.entries.values() if e.key_id != key_id), key=lambda e: e.token
        )[:limit]

    async def replace_ciphertext(
        self, token: str, client_id: str | None, old_key_id: str, key_id: str, ciphertext: bytes
    ) -> bool:
        key = self.keys_by_id.get(key_id)
        if key is None or key.wrapped_key is None:
            raise KeyRetiredError([key_id])
        entry = self.entries.get(token)
        if entry is None or entry.client_id != client_id or entry.key_id != old_key_id:
            return False
        self.entries[token] = dataclasses.replace(entry, key_id=key_id, ciphertext=ciphertext)
        return True

    async def delete_entry(self, token: str, client_id: str | None) -> bool:
        if await self.entry(token, client_id) is None:
            return False
        del self.entries[token]
        return True

    async def unshred_client(self, client_id: str) -> bool:
        if client_id not in self.shredded:
            return False
        self.shredded.discard(client_id)
        return True

    async def delete_client(self, client_id: str, at: datetime) -> int:
        self.shredded.add(client_id)
        gone = [t for t, e in self.entries.items() if e.client_id == client_id]
        for token in gone:
            del self.entries[token]
        return len(gone)

    async def delete_expired(self, now: datetime, limit: int) -> int:
        gone = [
            t for t, e in self.entries.items() if e.expires_at is not None and e.expires_at <= now
        ][:limit]
        for token in gone:
            del self.entries[token]
        return len(gone)
