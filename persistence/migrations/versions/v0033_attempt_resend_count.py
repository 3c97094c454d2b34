"""Provider attempts count how often their key was sent again.

An attempt in doubt is re-sent with its key while its provider has no record of it and
still honours the key (domain.resend_window). A provider that honours keys for good
(Alipay's ``out_trade_no``) and answers every re-send with the same answer of unknown
outcome (a sub code paygate cannot read, ``ACQ.SYSTEM_ERROR`` for ever) had it re-sent at
every reconciler pass, for ever. ``resend_count`` is raised with ``last_sent_at``, under the
claim, before each re-send goes out (persistence.payment_claims.stamp_sending); past
``PAYGATE_RESEND_LIMIT`` the key is withheld for an operator like one past its window
(docs/alipay.md, "Bounded re-sends").

Not null, server default 0: an attempt re-sent under the previous release starts counting
at the upgrade (it gets the full number of re-sends again, once). No index: read only with
the attempt, by key.

Revision ID: 0033
Revises: 0032
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0033"
down_revision: str | None = "0032"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("provider_attempts") as batch:
        batch.add_column(
            sa.Column("resend_count", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )


def downgrade() -> None:
    # A release before 0033 re-sends without a bound: nothing else depends on the column.
    with op.batch_alter_table("provider_attempts") as batch:
        batch.drop_column("resend_count")
