"""Open provider attempts from before ``last_sent_at`` get the upgrade's time as their last send.

0020 left the column null on existing attempts, read as "sent once, at ``created_at``". For
an attempt the previous release re-sent that is false: its key may have gone out hours
after its creation, and the abandon rule (and the operator settlement) would take the
provider's silence as final too early -- a payment failed while a late re-send's charge is
still hidden by a lagging status search. The previous release kept no trace of its
re-sends, so the only bound known for an open attempt is "no later than now": every
attempt still open (``finished_at`` null) without a stamp gets the upgrade's time, or its
creation if that is later (the upgrade runs on a host of its own, whose clock may be behind
the consumer's that made the attempt: a last send before the creation would let the
abandon rule count from earlier than 0020's reading). That can only make a rule wait
longer (each counts from the latest of its instants), never shorter; finished attempts are
never sent again and keep null.

What it cannot cover: a consumer of the previous release still running after the upgrade
(a rolling deploy) that re-sends a key then; stop the previous release's consumers before
upgrading, or upgrade ahead of the rollout with ``paygate db upgrade`` while they are
stopped (docs/migrations.md).

The downgrade changes nothing: a stamp reads as a later last send, which 0020's rules take
as it is, and which of them this revision wrote is not recorded.

Revision ID: 0024
Revises: 0020
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision: str | None = "0020"
branch_labels: str | None = None
depends_on: str | None = None

# Only the columns this revision reads and writes, as they are at 0020.
_attempts = sa.table(
    "provider_attempts",
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("finished_at", sa.DateTime(timezone=True)),
    sa.column("last_sent_at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    now = sa.bindparam("now", datetime.now(UTC), type_=sa.DateTime(timezone=True))
    op.execute(
        _attempts.update()
        .where(_attempts.c.finished_at.is_(None), _attempts.c.last_sent_at.is_(None))
        .values(
            last_sent_at=sa.case((_attempts.c.created_at > now, _attempts.c.created_at), else_=now)
        )
    )


def downgrade() -> None:
    return None
