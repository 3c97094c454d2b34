"""Webhook signing secrets are stored encrypted under the vault's data keys.

The columns for the sealed secret are added and the clear one becomes nullable. The
secrets themselves are sealed by the first process that opens the vault after this
revision (persistence.webhook_secrets.WebhookSecrets.seal_clear, at the start of the
facade, the consumer and ``paygate webhooks run``, and in ``paygate keys rewrap``): a
revision runs without the key-encryption keys, which may be in a KMS reached only
asynchronously, and the data keys may be in another database (the vault's own).

The downgrade refuses while any endpoint's secret is only sealed: a release before 0017
signs with the clear column and would have nothing to sign with. ``paygate keys
unseal-webhook-secrets`` writes them back in clear first (docs/webhooks.md). A deleted
endpoint holds no secret (it is erased on deletion): for the column a release before 0017
requires, the downgrade gives it a fresh random one, which nobody knows and nothing signs
with (a deleted endpoint gets no deliveries).

Revision ID: 0017
Revises: 0014
"""

from __future__ import annotations

import base64
import secrets

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision: str | None = "0014"
branch_labels: str | None = None
depends_on: str | None = None


class SealedSecretsError(RuntimeError):
    """A downgrade would lose webhook signing secrets."""


def upgrade() -> None:
    with op.batch_alter_table("webhook_endpoints") as batch:
        batch.add_column(sa.Column("secret_key_id", sa.String(32)))
        batch.add_column(sa.Column("secret_ciphertext", sa.LargeBinary()))
        batch.alter_column("secret", existing_type=sa.String(128), nullable=True)


def downgrade() -> None:
    _fill_erased_secrets()
    sealed = op.get_bind().scalar(
        sa.text("SELECT count(*) FROM webhook_endpoints WHERE secret IS NULL")
    )
    if sealed:
        raise SealedSecretsError(
            f"{sealed} webhook endpoint(s) hold their signing secret only encrypted; a "
            "release before revision 0017 cannot sign with it. Stop paygate, run `paygate "
            "keys unseal-webhook-secrets`, then downgrade (docs/webhooks.md)"
        )
    with op.batch_alter_table("webhook_endpoints") as batch:
        batch.drop_column("secret_ciphertext")
        batch.drop_column("secret_key_id")
        batch.alter_column("secret", existing_type=sa.String(128), nullable=False)


def _fill_erased_secrets() -> None:
    bind = op.get_bind()
    erased = bind.execute(
        sa.text(
            "SELECT id FROM webhook_endpoints WHERE deleted_at IS NOT NULL "
            "AND secret IS NULL AND secret_key_id IS NULL"
        )
    ).scalars()
    for endpoint_id in list(erased):
        unknown = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        bind.execute(
            sa.text("UPDATE webhook_endpoints SET secret = :secret WHERE id = :id"),
            {"secret": unknown, "id": endpoint_id},
        )
