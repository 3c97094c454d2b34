"""A vault to seal webhook signing secrets with, on a test's database."""

from __future__ import annotations

from persistence.database import Database
from tests.support.vault_keys import FINGERPRINT_KEY, KEK_1
from vault.kek import LocalKeyEncryptionKeys
from vault.rows import VaultRows
from vault.vault import Vault


def vault_of(db: Database, keks: str = KEK_1) -> Vault:
    """A vault in ``db``'s database, through its writer queue; its newest key is re-read at
    every use, so a rotation shows at once."""
    return Vault(
        VaultRows(db.engine, db.writes),
        LocalKeyEncryptionKeys.from_text(keks),
        FINGERPRINT_KEY,
        primary_refresh_s=0.0,
    )


def with_sealed_secrets(db: Database, keks: str = KEK_1) -> Database:
    """``db``, its webhook store sealing secrets with :func:`vault_of` (as the services wire
    it with theirs)."""
    db.webhooks = db.webhooks.with_secrets(vault_of(db, keks))
    return db
