"""Stray charges carry when the sweep may try their reversal again.

The sweep read the stray charges whose reversal is unanswered in no order, at most a page
of them per pass: a page of reversals that keep getting no answer (a provider error or
timeout, a refund the provider leaves pending) could come back on every pass and keep a
newer stray charge from ever being reversed. ``next_sweep_at`` (null: never tried) is
stamped before each try (persistence.stray_store.StrayStore.reverse_again_at), as 0019's is
for the attempt keys: the sweep reads the reversals never tried first, then those whose
time has come, longest due first, and holds one it keeps failing to hear about back for a
while that grows with its age, never for good.

Nullable, no default: adding it rewrites nothing, and every reversal under way in the
previous release is tried on the next pass, as before. No index: the rows read are the
stray charges still being reversed, a handful (each one is a bug or a provider fault, and
alerts).

Revision ID: 0021
Revises: 0019
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision: str | None = "0019"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("stray_charges") as batch:
        batch.add_column(sa.Column("next_sweep_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    # A release before 0021 reads the reversals in no order: nothing else depends on it.
    with op.batch_alter_table("stray_charges") as batch:
        batch.drop_column("next_sweep_at")
