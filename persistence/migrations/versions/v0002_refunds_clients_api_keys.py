"""Refunds, API clients and API keys.

payments gains client_id (null: created by an upstream service on Kafka) and the two refund
totals (0 for existing payments), and status widens to 24 characters (partially_refunded);
the refunds and api_keys tables are new.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # SQLite cannot change a column's type: batch mode rebuilds the table there, copying the
    # rows (the new NOT NULL totals take their server default); on PostgreSQL the same block
    # is plain ALTER TABLE statements.
    with op.batch_alter_table("payments") as batch:
        batch.add_column(sa.Column("client_id", sa.String(64)))
        batch.add_column(
            sa.Column("refunded_minor", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("refund_reserved_minor", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.alter_column(
            "status", existing_type=sa.String(16), type_=sa.String(24), existing_nullable=False
        )
        batch.create_index("ix_payments_client_order", ["client_id", "order_id", "created_at"])

    op.create_table(
        "refunds",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("payment_id", sa.String(36), sa.ForeignKey("payments.id"), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("parameters_hash", sa.String(64), nullable=False),
        sa.Column("amount_minor", sa.BigInteger()),
        sa.Column("currency", sa.String(3)),
        sa.Column("reason", sa.String(32)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("provider", sa.String(32)),
        sa.Column("provider_reference", sa.String(255)),
        sa.Column("error_code", sa.String(64)),
        sa.Column("error_message", sa.Text()),
        sa.Column("decline_code", sa.String(64)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_refunds_payment_id", "refunds", ["payment_id"])
    op.create_index("ix_refunds_open", "refunds", ["status", "updated_at"])

    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(16), primary_key=True),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("label", sa.String(128)),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_api_keys_client_id", "api_keys", ["client_id"])


def downgrade() -> None:
    # Loses refunds, API keys and the clients of payments; fails on PostgreSQL while a
    # payment's status is longer than 16 characters.
    op.drop_index("ix_api_keys_client_id", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_index("ix_refunds_open", table_name="refunds")
    op.drop_index("ix_refunds_payment_id", table_name="refunds")
    op.drop_table("refunds")
    with op.batch_alter_table("payments") as batch:
        batch.drop_index("ix_payments_client_order")
        batch.alter_column(
            "status", existing_type=sa.String(24), type_=sa.String(16), existing_nullable=False
        )
        batch.drop_column("refund_reserved_minor")
        batch.drop_column("refunded_minor")
        batch.drop_column("client_id")
