"""Stray charges carry the key of the reversal refund last sent.

A stray charge's reversal is a refund, and a provider may answer it ``pending`` (Stripe)
and fail it later. The sweep then read the charge again on its next try, and since the
charge's refunded amount counts a pending refund, found nothing left to reverse and
recorded the charge ``reversed``: if the refund failed after that, the money stayed taken
and nothing asked again. ``reversal_key`` is written before each refund is sent
(persistence.stray_store.StrayStore.note_reversal_key); while it is set, the sweep asks the
provider about that refund first (consumer.stray_charges): succeeded is ``reversed``,
pending is asked again, failed is ``failed`` and alerts, and only a refund the provider
never received lets the charge's own amounts decide.

Nullable, no default: a reversal under way in the previous release has none and is tried as
before.

Revision ID: 0028
Revises: 0027
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0028"
down_revision: str | None = "0027"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("stray_charges") as batch:
        batch.add_column(sa.Column("reversal_key", sa.String(255)))


def downgrade() -> None:
    # A release before 0028 reads the charge's amounts only, as it did.
    with op.batch_alter_table("stray_charges") as batch:
        batch.drop_column("reversal_key")
