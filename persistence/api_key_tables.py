"""The API-key table, on the shared ``metadata`` so ``create_schema`` makes it too.

Keys are never stored in clear: a row holds the key's public id and the SHA-256 of its
secret part (see :mod:`persistence.api_key_store`). A plain hash is enough because the
secret is 256 random bits, not a password a person chose: there is nothing to guess.
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, String, Table

from persistence.tables import metadata

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(16), primary_key=True),
    Column("client_id", String(64), nullable=False, index=True),
    Column("label", String(128)),
    Column("secret_sha256", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Set once, never cleared: a revoked key stays revoked, and the row stays for audit.
    Column("revoked_at", DateTime(timezone=True)),
)
