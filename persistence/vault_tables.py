"""The vault's tables, on the shared ``metadata`` so the migrations (revision 0005) and
``create_schema`` make them with the rest.

``vault_keys`` holds data keys, only ever wrapped by a key-encryption key; a retired key's
wrapped bytes are erased (crypto-shredding: what it encrypted is gone with it).
``vault_entries`` holds one encrypted account number per token. Neither holds a clear
number or a clear key. ``vault_shredded_clients`` (revision 0031) names the clients whose
tokens ``paygate keys shred-client`` erased: no token of theirs may be stored again.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, DateTime, Index, LargeBinary, String, Table

from persistence.tables import metadata

vault_keys = Table(
    "vault_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    # Which key-encryption key wrapped it; rewrap moves it to the current one.
    Column("kek_id", String(64), nullable=False),
    # Null once retired: the key is destroyed, the row stays for audit.
    Column("wrapped_key", LargeBinary),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("retired_at", DateTime(timezone=True)),
)

vault_entries = Table(
    "vault_entries",
    metadata,
    Column("token", String(32), primary_key=True),
    # The API client the token belongs to; null: upstream services' scope (Kafka).
    Column("client_id", String(64)),
    Column("account_type", String(16), nullable=False),
    Column("masked", String(16), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    # Saved for reuse: retention never expires it; only a delete does.
    Column("saved", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # When retention deletes it (set once a payment that used it is final); null: never.
    Column("expires_at", DateTime(timezone=True)),
    Index("ix_vault_entries_client_id", "client_id"),
    Index("ix_vault_entries_key_id", "key_id"),
    Index("ix_vault_entries_expires_at", "expires_at"),
)

vault_shredded_clients = Table(
    "vault_shredded_clients",
    metadata,
    # A client whose tokens were shredded: every insert of a token of its is refused
    # (vault.rows), until ``paygate keys unshred-client`` deletes the row.
    Column("client_id", String(64), primary_key=True),
    Column("shredded_at", DateTime(timezone=True), nullable=False),
)
