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

On PostgreSQL the two indexes of existing tables are built ``CONCURRENTLY``: a plain build
holds a lock that blocks every write to ``payments`` (or ``refunds``) for as long as it
reads the table, on a large database minutes of a stalled writer queue. A concurrent build
cannot run in a transaction, so it runs first, in Alembic's ``autocommit_block``, which
commits the revisions before this one (their schema and version): a build that fails or is
interrupted leaves the database at 0029, perhaps with an index built, which the next
upgrade keeps (``IF NOT EXISTS``), or an invalid one, which it drops and builds again. Then
the table, in a transaction as before. Run inside a transaction its caller holds (a
downgrade's way back, a test's step), the builds are plain, as on SQLite.

Revision ID: 0030
Revises: 0029
"""

from __future__ import annotations

from typing import Final

import sqlalchemy as sa
from alembic import op

from persistence.migrate import IN_CALLERS_TRANSACTION

revision = "0030"
down_revision: str | None = "0029"
branch_labels: str | None = None
depends_on: str | None = None


# (index, table): a reference to the provider's charge (refund) on each, for the notices.
_PROVIDER_REFERENCE_INDEXES: Final = (
    ("ix_payments_provider_reference", "payments"),
    ("ix_refunds_provider_reference", "refunds"),
)


def upgrade() -> None:
    _index_provider_references()
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


def _index_provider_references() -> None:
    context = op.get_context()
    config = context.config
    in_callers = config is None or bool(config.attributes.get(IN_CALLERS_TRANSACTION, True))
    if context.dialect.name != "postgresql" or in_callers:
        for name, table in _PROVIDER_REFERENCE_INDEXES:
            op.create_index(name, table, ["provider_reference"])
        return
    with context.autocommit_block():
        for name, table in _PROVIDER_REFERENCE_INDEXES:
            if _invalid(name):  # left by an interrupted concurrent build: unused, dropped
                op.drop_index(name, table_name=table, postgresql_concurrently=True)
            op.create_index(
                name,
                table,
                ["provider_reference"],
                postgresql_concurrently=True,
                if_not_exists=True,
            )


def _invalid(index: str) -> bool:
    return bool(
        op.get_bind().scalar(
            sa.text("SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"),
            {"name": index},
        )
    )


def downgrade() -> None:
    # A release before 0030 ignores such failures, as it did; what was taken back stays so.
    op.drop_index("ix_refunds_provider_reference", table_name="refunds")
    op.drop_index("ix_payments_provider_reference", table_name="payments")
    op.drop_index("ix_outside_refund_failures_payment_id", table_name="outside_refund_failures")
    op.drop_table("outside_refund_failures")
