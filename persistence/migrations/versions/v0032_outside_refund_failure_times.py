"""The provider's times of a failed outside refund and of the latest reading of the total.

A refund made outside paygate that the provider failed (0030) was taken net of every later
reading of the charge's refunded total, also of readings the provider made after the
failure, which already leave it out: paygate then counted less than was refunded outside.
Now each failure keeps when the provider made the refund and failed it
(``outside_refund_failures.made_unix`` and ``failed_unix``, Unix seconds), and a reading is
netted of it only when the provider made that reading in between
(domain.failed_refund_netting). ``payments.provider_refunded_minor`` and
``provider_refunded_unix`` keep the latest such reading of the charge, so a failure
recorded after a later reading (delivered out of order) is netted by it too.

All four columns are nullable and nothing is backfilled: a failure recorded before 0032 has
no times and stays netted from every reading, as it was; a payment has no reading kept
until the next ``charge.refunded`` event. Adding nullable columns without a default does
not rewrite either table on PostgreSQL.

Revision ID: 0032
Revises: 0031
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0032"
down_revision: str | None = "0031"
branch_labels: str | None = None
depends_on: str | None = None


_COLUMNS = {
    "outside_refund_failures": ("made_unix", "failed_unix"),
    "payments": ("provider_refunded_minor", "provider_refunded_unix"),
}


def upgrade() -> None:
    for table, columns in _COLUMNS.items():
        for column in columns:
            op.add_column(table, sa.Column(column, sa.BigInteger(), nullable=True))


def downgrade() -> None:
    # A release before 0032 nets every failure from every reading again, as it did.
    for table, columns in _COLUMNS.items():
        for column in columns:
            # SQLite 3.35 and later drop a column in place; a batch drop would recreate
            # ``payments``, which SQLite refuses while refunds refer to it.
            op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
