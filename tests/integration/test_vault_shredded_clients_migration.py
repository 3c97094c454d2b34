"""Revision 0031 (``vault_shredded_clients``) down and up on SQLite and PostgreSQL: the
downgrade drops only the shred records (every saved card stays), and the upgrade starts
with no client shredded, after which a shred is recorded and refuses the client's cards
again."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.accounts import Account, AccountType
from domain.errors import ErrorCode, PaygateError
from persistence.group_commit import GroupCommit
from persistence.vault_tables import vault_entries, vault_shredded_clients
from tests.support.attempt_migrations import migrate, rows_of
from tests.support.builders import SUCCESS_CARD
from tests.support.clock import Clock
from tests.support.vault_keys import FINGERPRINT_KEY, KEK_1
from vault.kek import LocalKeyEncryptionKeys
from vault.rows import VaultRows
from vault.vault import Vault

pytestmark = pytest.mark.integration

CARD = Account(AccountType.CARD, SUCCESS_CARD)


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))


def _vault(engine: AsyncEngine, clock: Clock) -> Vault:
    return Vault(
        VaultRows(engine, GroupCommit(engine)),
        LocalKeyEncryptionKeys.from_text(KEK_1),
        FINGERPRINT_KEY,
        clock=clock,
    )


async def test_0031_down_keeps_the_cards_and_up_starts_with_no_client_shredded(
    engine: AsyncEngine,
) -> None:
    clock = Clock()
    vault = _vault(engine, clock)
    kept = await vault.tokenize(CARD, client_id="acme", saved=True)
    assert await vault.delete_client("gone") == 0
    assert await rows_of(engine, vault_shredded_clients.c.client_id) == [("gone",)]
    cards = await rows_of(engine, vault_entries.c.token, vault_entries.c.client_id)

    await migrate(engine, "downgrade", "0030")

    assert "vault_shredded_clients" not in await _tables(engine)
    assert await rows_of(engine, vault_entries.c.token, vault_entries.c.client_id) == cards

    await migrate(engine, "upgrade", "0031")

    assert await rows_of(engine, vault_shredded_clients.c.client_id) == []
    assert await rows_of(engine, vault_entries.c.token, vault_entries.c.client_id) == cards
    assert await _vault(engine, clock).reveal(kept, client_id="acme") == CARD
    # The table works as before: a shred is recorded and refuses the client's cards.
    vault = _vault(engine, clock)
    assert await vault.delete_client("acme") == 1
    with pytest.raises(PaygateError) as refused:
        await vault.tokenize(CARD, client_id="acme", saved=True)
    assert refused.value.code is ErrorCode.CLIENT_SHREDDED
