"""The card vault: the one place account numbers are kept, encrypted.

Key hierarchy (docs/security.md)::

    key-encryption key (KEK)     a file or setting, or a KMS (vault.kek.KeyEncryptionKeys)
    └── data keys (AES-256)      random, stored only wrapped by a KEK (table vault_keys)
        └── values (AES-256-GCM) one per token, a fresh nonce each (table vault_entries)

Nothing else in paygate stores, logs or publishes a clear account number: the bus carries
tokens (``pm_...``), the store masked numbers and keyed fingerprints.
"""
