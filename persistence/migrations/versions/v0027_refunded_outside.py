"""Payments carry what was refunded outside paygate, as recorded from the provider.

A payment's ``refunded_minor`` counts paygate's own succeeded refunds (each a refund row)
and what its provider reported refunded outside paygate (by hand in its dashboard: recorded
with no refund row, domain.provider_refunds). The two were one number, so nothing could
check it: a refund settled twice read the same as a refund made at the provider.
``refunded_outside_minor`` keeps the second part, moved by the same writes that move
``refunded_minor`` from the provider's word, so that for every payment
``refunded_minor = (succeeded refund rows) + refunded_outside_minor`` holds and can be
checked (the chaos run's verdict does).

Existing payments get what their total holds beyond their succeeded refund rows (never
below 0): the only writes that raise the total without a row are the provider's.

What it cannot cover: a consumer of the previous release still running after the upgrade
(a rolling deploy) that records a refund made outside paygate then moves only the total;
stop the previous release's consumers before upgrading (docs/migrations.md).

Revision ID: 0027
Revises: 0024
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0027"
down_revision: str | None = "0024"
branch_labels: str | None = None
depends_on: str | None = None

# Only the columns this revision reads and writes.
_payments = sa.table(
    "payments",
    sa.column("id", sa.String()),
    sa.column("refunded_minor", sa.BigInteger()),
    sa.column("refunded_outside_minor", sa.BigInteger()),
)
_refunds = sa.table(
    "refunds",
    sa.column("payment_id", sa.String()),
    sa.column("status", sa.String()),
    sa.column("amount_minor", sa.BigInteger()),
)


def upgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.add_column(
            sa.Column("refunded_outside_minor", sa.BigInteger(), nullable=False, server_default="0")
        )
    by_rows = (
        sa.select(sa.func.coalesce(sa.func.sum(_refunds.c.amount_minor), 0))
        .where(_refunds.c.payment_id == _payments.c.id)
        .where(_refunds.c.status == "succeeded")
        .scalar_subquery()
    )
    beyond = _payments.c.refunded_minor - by_rows
    op.execute(
        _payments.update()
        .where(_payments.c.refunded_minor > 0)
        .values(refunded_outside_minor=sa.case((beyond > 0, beyond), else_=0))
    )


def downgrade() -> None:
    # The total still counts both parts; a release before 0027 reads only the total.
    if op.get_bind().dialect.name == "sqlite":
        # A batch drop recreates the table, and SQLite refuses to drop ``payments`` while
        # refunds refer to it; SQLite 3.35 and later drop a column in place.
        op.execute("ALTER TABLE payments DROP COLUMN refunded_outside_minor")
        return
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("refunded_outside_minor")
