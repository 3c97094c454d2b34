"""Provider attempts count how often a provider's notice reopened them for the stray sweep.

The sweep reads an unverified attempt key, asks the provider, and marks the key verified
when the provider holds no charge under it. A signed ``paid`` notice for that key may reopen
it (``verified_at`` cleared) between the question and the mark; an unconditional mark then
overwrote the reopen, and the late charge was never found or reversed. ``reopen_count`` is
the key's check generation: a reopen increments it, and the sweep's marks update only while
it still holds the value the candidate was read with (persistence.stray_store), so the
database, not timing, keeps a reopen from being lost.

``NOT NULL`` with a server default of 0: every attempt of the previous release starts at
generation 0. On SQLite the column is added in place (``ALTER TABLE ... ADD COLUMN``), so the
table and its partial index ``ix_provider_attempts_unverified`` are not rebuilt.

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision: str | None = "0017"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("provider_attempts") as batch:
        batch.add_column(
            sa.Column("reopen_count", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )


def downgrade() -> None:
    # A release before 0018 marks unconditionally: nothing else depends on the count.
    with op.batch_alter_table("provider_attempts") as batch:
        batch.drop_column("reopen_count")
