"""Stray charges carry a claim, as payments and refunds do (persistence.claims).

Two sweepers (two consumer processes, or one pass overlapping the next) could both read a
stray charge whose reversal is under way and both send its reversal; the compare-and-set
writes on the noted reversal key and the provider's idempotency kept the money right, but
the only fence on *sending* was the re-try stamp (``next_sweep_at``), a timing window. A
sweeper now takes the stray charge's claim before it asks or tells the provider anything
about the reversal, and every write of what it learned carries its token
(persistence.stray_store, consumer.stray_charges).

Nullable, no default: a stray charge of the previous release has no claim, so the first
sweeper to come takes it.

Revision ID: 0029
Revises: 0028
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0029"
down_revision: str | None = "0028"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("stray_charges") as batch:
        batch.add_column(sa.Column("claim_token", sa.String(36)))
        batch.add_column(sa.Column("claim_expires_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    # A release before 0029 fences only by the re-try stamp and the noted key, as it did; a
    # claim held at the downgrade is simply forgotten (its holder's writes then match the
    # noted key alone).
    with op.batch_alter_table("stray_charges") as batch:
        batch.drop_column("claim_expires_at")
        batch.drop_column("claim_token")
