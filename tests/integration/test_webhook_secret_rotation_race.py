"""A rotation run in one go (rotate, rewrap, retire) loses no webhook signing secret.

Every process re-reads the vault's newest data key only every ``primary_refresh_s`` (30 s
by default). A facade that read it just before ``paygate keys rotate`` would seal the
secret of an endpoint created after ``retire`` under the retired key, whose bytes are
erased: that endpoint could never be signed for, and rewrap could not move it. Sealing a
webhook secret reads the newest key afresh (endpoints are created rarely), so it cannot.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from persistence.database import Database
from persistence.webhook_secrets import StoredSecret
from persistence.webhook_tables import webhook_endpoints
from tests.support.vault_keys import FINGERPRINT_KEY, KEK_1
from tests.support.webhook_vault import vault_of, with_sealed_secrets
from vault.kek import LocalKeyEncryptionKeys
from vault.rows import VaultRows
from vault.vault import Vault

pytestmark = pytest.mark.integration


async def test_an_endpoint_created_by_a_process_with_a_stale_newest_key_still_signs(
    engine: AsyncEngine,
) -> None:
    db = Database(engine)
    # A facade's vault, as the services build it: the newest key cached for a while (an
    # hour here rather than 30 s, so that the whole test runs within it on any machine).
    facade_vault = Vault(
        VaultRows(db.engine, db.writes),
        LocalKeyEncryptionKeys.from_text(KEK_1),
        FINGERPRINT_KEY,
        primary_refresh_s=3600.0,
    )
    facade = db.webhooks.with_secrets(facade_vault)
    await facade.create_endpoint("acme", "https://hooks.example/a", ["*"], None)

    # The operator rotates in one go, well within the facade's refresh.
    operator = with_sealed_secrets(Database(engine))
    keys = vault_of(operator)
    old = await keys.newest_key_id()
    await keys.rotate()
    assert (await operator.webhooks.secrets.rewrap()).failed == 0
    assert await operator.webhooks.secrets.count_under(old) == 0
    await keys.retire(old)

    created = await facade.create_endpoint("acme", "https://hooks.example/b", ["*"], None)

    # Any process (a dispatcher started since, or the facade's own later) opens it.
    dispatcher = with_sealed_secrets(Database(engine)).webhooks.secrets
    [row] = [r for r in await stored_secrets(engine) if r[0] == created.endpoint.id]
    assert row[1] != old
    assert await dispatcher.open(created.endpoint.id, row[2]) == created.secret


async def stored_secrets(engine: AsyncEngine) -> list[tuple[str, str | None, StoredSecret]]:
    e = webhook_endpoints
    async with engine.connect() as conn:
        rows = await conn.execute(select(e.c.id, e.c.secret_key_id, e.c.secret_ciphertext))
        return [
            (r.id, r.secret_key_id, StoredSecret(r.secret_key_id, r.secret_ciphertext, None))
            for r in rows
        ]
