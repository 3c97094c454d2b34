"""Payments that finish later: the next action a requires_action payment waits on.

payments gain the action's type (redirect_url or qr_code), its target (the URL or the QR
code content) and when the provider stops waiting for the payer. All null for a payment
that needs no action, or once the provider has said how it ended.

Revision ID: 0007
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.add_column(sa.Column("next_action_type", sa.String(16)))
        batch.add_column(sa.Column("next_action_target", sa.Text()))
        batch.add_column(sa.Column("next_action_expires_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("next_action_expires_at")
        batch.drop_column("next_action_target")
        batch.drop_column("next_action_type")
