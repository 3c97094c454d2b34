"""Refunds made outside paygate that the provider reported failed, one row per provider refund.

A refund made in the provider's dashboard raises the payment's ``refunded_outside_minor``
(0027). When the provider fails it later (Stripe's ``refund.failed`` for a Refund without
paygate's metadata), the money is back in the merchant's balance: the part of it counted is
taken back, once, and the provider's later readings of the charge's refunded total are
taken net of it (a reading made before the failure still counts it). The row keyed by the
provider's refund id is what makes the take-back happen once, and what those readings are
net of. ``payments.provider_reference`` is indexed (the notice names the charge, not the
payment), and ``refunds.provider_reference`` (a refund id of paygate's own is not one made
outside), so neither read scans a table while the writer queue waits.

Nothing to backfill: before 0030 such a failure was acknowledged and ignored.

Revision ID: 0030
Revises: 0029
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0030"
down_revision: str | None = "0029"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "outside_refund_failures",
        sa.Column("provider", sa.String(32), primary_key=True),
        sa.Column("provider_reference", sa.String(255), primary_key=True),
        sa.Column("payment_id", sa.String(36), sa.ForeignKey("payments.id"), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("taken_back_minor", sa.BigInteger(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "amount_minor > 0 AND taken_back_minor >= 0 AND taken_back_minor <= amount_minor",
            name="ck_outside_refund_failures_amounts",
        ),
    )
    op.create_index(
        "ix_outside_refund_failures_payment_id", "outside_refund_failures", ["payment_id"]
    )
    # IF NOT EXISTS: on a large PostgreSQL database an operator may have built them ahead,
    # CONCURRENTLY, so that this transaction does not hold the tables' writers for the
    # builds (docs/migrations.md, 0030).
    op.create_index(
        "ix_payments_provider_reference", "payments", ["provider_reference"], if_not_exists=True
    )
    op.create_index(
        "ix_refunds_provider_reference", "refunds", ["provider_reference"], if_not_exists=True
    )


def downgrade() -> None:
    # A release before 0030 ignores such failures, as it did; what was taken back stays so.
    op.drop_index("ix_refunds_provider_reference", table_name="refunds")
    op.drop_index("ix_payments_provider_reference", table_name="payments")
    op.drop_index("ix_outside_refund_failures_payment_id", table_name="outside_refund_failures")
    op.drop_table("outside_refund_failures")
