"""The schema of the last release before migrations (git 87d65ed), as create_all made it.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

from alembic import op

from persistence.migrations import baseline_tables

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # The frozen copy of that release's tables, created the way that release created them,
    # so a database made then and one migrated now are the same schema.
    baseline_tables.metadata.create_all(op.get_bind(), checkfirst=False)


def downgrade() -> None:
    baseline_tables.metadata.drop_all(op.get_bind(), checkfirst=False)
