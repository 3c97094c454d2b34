"""The card vault: wrapped data keys and encrypted account numbers by token.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "vault_keys",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("kek_id", sa.String(64), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "vault_entries",
        sa.Column("token", sa.String(32), primary_key=True),
        sa.Column("client_id", sa.String(64)),
        sa.Column("account_type", sa.String(16), nullable=False),
        sa.Column("masked", sa.String(16), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("saved", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_vault_entries_client_id", "vault_entries", ["client_id"])
    op.create_index("ix_vault_entries_key_id", "vault_entries", ["key_id"])
    op.create_index("ix_vault_entries_expires_at", "vault_entries", ["expires_at"])


def downgrade() -> None:
    # Destroys every stored account number: tokens in flight stop working.
    op.drop_table("vault_entries")
    op.drop_table("vault_keys")
