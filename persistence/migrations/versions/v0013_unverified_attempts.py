"""A partial index of the attempts the stray-charge sweep has not verified yet.

Every sweep pass reads the unverified attempts; without this index it scanned the whole
table, all of history. With it, and with the sweep now marking the attempts captured
payments stand on (persistence.stray_store.mark_own_charges), a pass reads new work only.
Attempts of the previous release are marked by the sweep, a page per pass, not here: a
migration runs at every process's start, and a large table's update would hold it.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision: str | None = "0012"
branch_labels: str | None = None
depends_on: str | None = None

_UNVERIFIED = sa.text("verified_at IS NULL")


def upgrade() -> None:
    op.create_index(
        "ix_provider_attempts_unverified",
        "provider_attempts",
        ["created_at"],
        postgresql_where=_UNVERIFIED,
        sqlite_where=_UNVERIFIED,
    )


def downgrade() -> None:
    op.drop_index("ix_provider_attempts_unverified", table_name="provider_attempts")
