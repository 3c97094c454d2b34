"""Rate limit buckets: one token bucket per client, shared by every facade instance.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "rate_limit_buckets",
        sa.Column("client_id", sa.String(64), primary_key=True),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("as_of", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    # Loses only the buckets' state: every client starts again with a full bucket.
    op.drop_table("rate_limit_buckets")
