"""Provider attempts carry when their key was last sent.

An attempt in doubt may be sent again, with its key, long after it began (the reconciler
re-sends a key the provider has no record of while the provider honours it,
domain.resend_window). Rules that take the provider's silence about a key as final -- the
payment handler's abandon path above all -- must count from the key's last send, not from
the attempt's creation: a re-send two hours after the first call may land and show in a
lagging status search only hours later. ``last_sent_at`` is stamped under the claim before
each re-send goes out (persistence.payment_claims.stamp_sending).

Nullable, no default: adding it rewrites nothing, and null reads as "sent once, at
``created_at``". An attempt re-sent under the previous release keeps null, so its silence
counts from its creation as before (the flaw this fixes, for those rows only, until their
next re-send stamps them). No index: read only with the attempt, by key.

Revision ID: 0020
Revises: 0021
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision: str | None = "0021"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("provider_attempts") as batch:
        batch.add_column(sa.Column("last_sent_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    # A release before 0020 counts the abandon rule from the attempt's creation: nothing
    # else depends on the column.
    with op.batch_alter_table("provider_attempts") as batch:
        batch.drop_column("last_sent_at")
