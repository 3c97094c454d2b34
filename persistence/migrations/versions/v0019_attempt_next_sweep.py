"""Provider attempts carry when the stray-charge sweep may ask about them again.

The sweep read its candidates oldest first and marked only the keys a provider answered, so
a full page of old keys no provider answers (a provider error, a provider no longer
configured, a trade still waiting for its payer) came first on every pass and hid every
newer stray charge for good. ``next_sweep_at`` (null: never asked, or reopened since) is
stamped before each question (persistence.stray_store.StrayStore.ask_again_at): the sweep
reads the keys never asked first, then those whose time has come, longest due first, and
holds a key it keeps failing to hear about back for a while that grows with its age, never
for good.

Nullable, no default: adding it rewrites nothing, and every candidate of the previous
release is asked on the next pass, as before. On SQLite the column is added in place
(``ALTER TABLE ... ADD COLUMN``), so the table and its partial index
``ix_provider_attempts_unverified`` (which still finds the rows: the pass reads only
unverified attempts, a set that holds new work only) are not rebuilt.

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision: str | None = "0018"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("provider_attempts") as batch:
        batch.add_column(sa.Column("next_sweep_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    # A release before 0019 reads candidates oldest first: nothing else depends on it.
    with op.batch_alter_table("provider_attempts") as batch:
        batch.drop_column("next_sweep_at")
