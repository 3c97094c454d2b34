"""Outbox rows carry the trace context of the change they report.

The relay publishes a row later, in another transaction and process: the row's
``trace_parent`` (a W3C ``traceparent``, null when tracing is off) makes its send the child
of the span that wrote it, so a payment's trace runs on to its result event.

Revision ID: 0012
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Nullable, no default: adding it rewrites nothing, and rows of the previous release
    # publish as they did, without a parent.
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("trace_parent", sa.String(55)))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("trace_parent")
