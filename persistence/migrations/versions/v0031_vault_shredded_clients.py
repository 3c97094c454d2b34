"""The clients whose saved cards were shredded, so none can be stored again.

``paygate keys shred-client`` deleted a client's tokens, but a token sealed before it and
inserted after it (a facade whose login cache still accepted the client's revoked key, a
consumer's command on its way), or an insert whose transaction committed after the shred's
DELETE began (PostgreSQL), outlived the shred. The shred now records the client here in
the transaction of its DELETE, and every insert of a token reads this table under the
client's vault lock (vault.rows): it commits before the shred (and is deleted by it) or is
refused after it.

A new table: an upgrade shreds no client (a shred run before it leaves no row: run it
again to close the client); a downgrade drops the records, and a release before 0031
stores tokens for any client again.

Revision ID: 0031
Revises: 0030
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0031"
down_revision: str | None = "0030"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "vault_shredded_clients",
        sa.Column("client_id", sa.String(64), primary_key=True),
        sa.Column("shredded_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    # Loses only the records: a release before 0031 does not read them.
    op.drop_table("vault_shredded_clients")
