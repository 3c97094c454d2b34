"""A vault on in-memory rows, with fixed test keys: for the facade's and the consumer's
unit tests, which need one but test something else."""

from __future__ import annotations

from tests.support.fake_vault_rows import FakeVaultRows
from tests.support.vault_keys import KEK_1
from vault.kek import LocalKeyEncryptionKeys
from vault.vault import Vault


def memory_vault(fingerprint_key: bytes, rows: FakeVaultRows | None = None) -> Vault:
    """``fingerprint_key`` must be the one the code under test fingerprints with, so the
    vault's fingerprints match the store's."""
    return Vault(
        rows if rows is not None else FakeVaultRows(),
        LocalKeyEncryptionKeys.from_text(KEK_1),
        fingerprint_key,
    )
