"""Key-encryption keys for tests: fixed, so a test can build the same vault twice."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Final

from sqlalchemy import select, update

from persistence.engine import create_engine
from persistence.vault_tables import vault_keys

KEK_1: Final = "kek-1:" + "11" * 32
KEK_2: Final = "kek-2:" + "22" * 32
# Another key under kek-1's id: a swapped or mistyped key file.
KEK_1_WRONG: Final = "kek-1:" + "33" * 32
FINGERPRINT_KEY: Final = b"f" * 32


def keys_made_earlier(database_url: str, by: timedelta) -> None:
    """Move every data key's creation back by ``by``: the operator waited that long since
    rotating (``Vault.retire`` refuses a key whose successor is younger than twice the
    processes' refresh of the newest key)."""

    async def move() -> None:
        engine = create_engine(database_url)
        try:
            async with engine.begin() as conn:
                for key_id, created_at in (
                    await conn.execute(select(vault_keys.c.key_id, vault_keys.c.created_at))
                ).all():
                    await conn.execute(
                        update(vault_keys)
                        .where(vault_keys.c.key_id == key_id)
                        .values(created_at=created_at - by)
                    )
        finally:
            await engine.dispose()

    asyncio.run(move())
