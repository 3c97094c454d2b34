"""Payments waiting for their payer carry when the reconciler may ask about them again.

A ``requires_action`` payment can wait minutes or hours; asking its provider on every pass
made the reconciler's calls grow with the number of waiting payments. ``next_check_at``
(null: at once) holds each one back for a while that grows with its wait, never past its
action's expiry (consumer.payment_reconciler).

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision: str | None = "0013"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Nullable, no default: adding it rewrites nothing, and every waiting payment of the
    # previous release is checked on the next pass, as before.
    with op.batch_alter_table("payments") as batch:
        batch.add_column(sa.Column("next_check_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("next_check_at")
