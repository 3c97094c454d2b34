"""Which engines are compared without a connection (persistence.database_identity), and the
vault asking once per engine (vault.rows.VaultRows.beside)."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import vault.rows
from persistence.database_identity import same_table
from vault.rows import VaultRows

pytestmark = pytest.mark.unit

# Nothing listens there: a comparison that connected would fail.
_NOWHERE_PG = "postgresql+asyncpg://nobody@127.0.0.1:9/nothing"


async def test_an_engine_is_itself_and_two_dialects_are_two_databases_without_connecting() -> None:
    postgres = create_async_engine(_NOWHERE_PG)
    memory = create_async_engine("sqlite+aiosqlite://")
    try:
        assert await same_table(postgres, postgres, "vault_keys")
        assert not await same_table(postgres, memory, "vault_keys")
        assert not await same_table(memory, postgres, "vault_keys")
    finally:
        await postgres.dispose()
        await memory.dispose()


async def test_the_vault_asks_once_per_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[AsyncEngine, AsyncEngine, str]] = []

    async def same(first: AsyncEngine, second: AsyncEngine, table: str) -> bool:
        asked.append((first, second, table))
        return first is other

    monkeypatch.setattr(vault.rows, "same_table", same)
    own = create_async_engine(_NOWHERE_PG)
    other = create_async_engine(_NOWHERE_PG)
    third = create_async_engine(_NOWHERE_PG)
    try:
        rows = VaultRows(own)
        assert await rows.beside(other)
        assert await rows.beside(other)
        assert not await rows.beside(third)
        assert asked == [(other, own, "vault_keys"), (third, own, "vault_keys")]
    finally:
        for engine in (own, other, third):
            await engine.dispose()
