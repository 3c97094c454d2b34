"""Claims: one owner per provider attempt, refund and capture, enforced by the database.

payments and refunds gain the claim (token and expiry); provider attempts gain the
provider's reference, the sealed request a new owner re-sends, and the time a closed attempt
was verified at the provider; stray_charges records charges made under keys that are not the
payment's charge, and their reversal.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    for table in ("payments", "refunds"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("claim_token", sa.String(36)))
            batch.add_column(sa.Column("claim_expires_at", sa.DateTime(timezone=True)))
            batch.add_column(sa.Column("examined_at", sa.DateTime(timezone=True)))
    with op.batch_alter_table("provider_attempts") as batch:
        batch.add_column(sa.Column("opened_by", sa.String(36)))
        batch.add_column(sa.Column("provider_reference", sa.String(255)))
        batch.add_column(sa.Column("sealed_request", sa.LargeBinary()))
        batch.add_column(sa.Column("verified_at", sa.DateTime(timezone=True)))
    op.create_table(
        "stray_charges",
        sa.Column("attempt_key", sa.String(64), primary_key=True),
        sa.Column("payment_id", sa.String(36), sa.ForeignKey("payments.id"), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("provider_reference", sa.String(255)),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reversal_reference", sa.String(255)),
        sa.Column("error_message", sa.Text()),
        sa.Column("found_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_stray_charges_payment_id", "stray_charges", ["payment_id"])


def downgrade() -> None:
    op.drop_index("ix_stray_charges_payment_id", "stray_charges")
    op.drop_table("stray_charges")
    with op.batch_alter_table("provider_attempts") as batch:
        batch.drop_column("verified_at")
        batch.drop_column("sealed_request")
        batch.drop_column("provider_reference")
        batch.drop_column("opened_by")
    for table in ("refunds", "payments"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("examined_at")
            batch.drop_column("claim_expires_at")
            batch.drop_column("claim_token")
