"""The vault, as the settings configure it: its database and its key-encryption keys.

The vault lives in paygate's database unless ``PAYGATE_VAULT_DATABASE_URL`` names another;
that one gets the same migrations (the vault's tables are part of them), so it is upgraded
at start like paygate's own. A URL that names paygate's own database in other words, under
the same role, is taken for what it is (persistence.database_identity): the vault then
shares paygate's engine and writer queue, as when the setting is unset.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from paygate.settings import DEV_ACCOUNT_ENCRYPTION_KEY_FILE, Environment, Settings
from persistence.database_identity import same_table
from persistence.engine import create_engine
from persistence.group_commit import GroupCommit
from persistence.migrate import create_schema
from persistence.vault_tables import vault_keys
from vault.account_key_pair import AccountKeyPair
from vault.kek import KeyEncryptionKeys, LocalKeyEncryptionKeys
from vault.recent_numbers import RecentNumbers
from vault.rows import VaultRows
from vault.vault import Vault


@dataclass
class OpenVault:
    """The vault and, when it has a database of its own, the engine to close."""

    vault: Vault
    own_engine: AsyncEngine | None

    async def close(self) -> None:
        """Safe to call twice."""
        if self.own_engine is not None:
            await self.own_engine.dispose()


def key_encryption_keys(settings: Settings) -> KeyEncryptionKeys:
    """The configured key-encryption keys; raises ``KeyFormatError`` (a ValueError, which
    never shows a key) or ``OSError`` for an unreadable key file."""
    return LocalKeyEncryptionKeys.from_text(settings.vault_kek_text)


async def open_vault(
    settings: Settings,
    paygate_engine: AsyncEngine,
    writes: GroupCommit | None = None,
    *,
    recent: RecentNumbers | None = None,
) -> OpenVault:
    """The vault on its configured database; ``paygate_engine`` is used when it has none,
    with ``writes``, that database's one writer queue (persistence.database), if given.
    ``recent``: where the consumer holds the numbers it vaults for its provider calls."""
    keks = key_encryption_keys(settings)
    own: AsyncEngine | None = None
    engine = paygate_engine
    if settings.vault_database_url is not None:
        own = create_engine(
            settings.vault_database_url, sqlite_synchronous=settings.sqlite_synchronous
        )
        await create_schema(own)
        if await same_table(own, paygate_engine, vault_keys.name):
            # paygate's own database under another URL: one engine and one writer queue, as
            # when unset (on SQLite a second writer of the file would wait in the busy
            # handler, and the tokens could not ride their payment's begin).
            await own.dispose()
            own = None
        else:
            writes = None  # another database: the vault's rows make their own queue
            engine = own
    vault = Vault(VaultRows(engine, writes), keks, settings.account_key, recent=recent)
    return OpenVault(vault, own)


def account_key_pair(settings: Settings) -> AccountKeyPair:
    """paygate's account encryption keys; generated when missing in development, or at the
    development default path (which production refuses: paygate.production_checks)."""
    return AccountKeyPair.from_files(
        settings.account_encryption_key_files,
        generate_missing=settings.env is Environment.DEVELOPMENT
        or settings.account_encryption_key_files == [DEV_ACCOUNT_ENCRYPTION_KEY_FILE],
    )
