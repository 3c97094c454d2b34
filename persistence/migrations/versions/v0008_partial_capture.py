"""Partial capture: what a capture takes, when it is less than the authorized amount.

payments gains ``captured_minor`` (null: the whole amount, as every payment captured before
this revision). The statuses ``canceling``, ``canceled`` and ``expired`` need no change:
``status`` is a string column.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.add_column(sa.Column("captured_minor", sa.BigInteger()))


def downgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("captured_minor")
