"""One database named by URLs written differently is one database to the vault; two
databases are two, whatever their URLs share (persistence.database_identity), on SQLite and
PostgreSQL.

It matters where a value sealed under a vault data key is written in a database of its own
writer queue (a webhook signing secret): its write can check, in its own transaction, that
the key is still live only where the keys' rows are (vault.rows.VaultRows.beside). Compared
by URL text, the same database under another spelling went unguarded: a secret whose write
was held past its key's rotation and retirement landed under the erased key, and its
endpoint never signed again. And a vault URL naming paygate's database in other words is
that database: the vault shares its engine and writer queue (paygate.vault_wiring).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from domain.accounts import Account, AccountType
from paygate.settings import Environment, Settings
from paygate.vault_wiring import open_vault
from persistence.database_identity import same_table
from persistence.engine import create_engine
from persistence.migrate import create_schema
from tests.integration.test_webhook_secret_retire_race import (
    an_endpoint_held_past_its_keys_retire_still_signs,
)
from tests.support.vault_keys import KEK_1

pytestmark = pytest.mark.integration


def written_otherwise(url: str) -> str:
    """``url`` as another operator might write it: the same server, database and user."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = Path(parsed.database or "")
        return str(parsed.set(database=f"{database.parent}/./{database.name}"))
    swapped = {"127.0.0.1": "localhost", "localhost": "127.0.0.1"}.get(parsed.host or "")
    if swapped is not None:
        return parsed.set(host=swapped).render_as_string(hide_password=False)
    # A dialect option that changes nothing of where the engine connects.
    return parsed.update_query_dict({"prepared_statement_cache_size": "99"}).render_as_string(
        hide_password=False
    )


@pytest.fixture
async def two_spellings(database_url: str) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    """Two engines on one (migrated) database, their URLs written differently."""
    first = create_engine(database_url)
    await create_schema(first)
    second = create_engine(written_otherwise(database_url))
    assert second.url != first.url
    yield first, second
    await first.dispose()
    await second.dispose()


async def test_one_database_under_two_spellings_is_one(
    two_spellings: tuple[AsyncEngine, AsyncEngine],
) -> None:
    first, second = two_spellings
    assert await same_table(first, second, "vault_keys")
    assert await same_table(second, first, "vault_keys")


async def test_another_database_of_the_same_server_is_another(
    fresh_postgres_database_url: str, postgres_database_url: str
) -> None:
    one, other = create_engine(fresh_postgres_database_url), create_engine(postgres_database_url)
    try:
        for engine in (one, other):
            await create_schema(engine)
        assert not await same_table(one, other, "vault_keys")
        assert not await same_table(other, one, "vault_keys")
    finally:
        await one.dispose()
        await other.dispose()


async def test_sqlite_files_by_link_and_copy(tmp_path: Path) -> None:
    main = tmp_path / "paygate.db"
    engine = create_engine(f"sqlite+aiosqlite:///{main}")
    await create_schema(engine)
    (tmp_path / "symbolic.db").symlink_to(main)
    os.link(main, tmp_path / "hard.db")
    engines = {
        name: create_async_engine(f"sqlite+aiosqlite:///{tmp_path / name}")
        for name in ("symbolic.db", "hard.db")
    }
    await engine.dispose()  # WAL checkpointed: the file copied whole
    (tmp_path / "copy.db").write_bytes(main.read_bytes())
    engines["copy.db"] = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'copy.db'}")
    memory = [create_async_engine("sqlite+aiosqlite://") for _ in range(2)]
    never = tmp_path / "never.db"
    missing = create_async_engine(f"sqlite+aiosqlite:///{never}")
    try:
        assert await same_table(engine, engines["symbolic.db"], "vault_keys")
        assert await same_table(engines["hard.db"], engine, "vault_keys")
        assert not await same_table(engine, engines["copy.db"], "vault_keys")
        assert not await same_table(memory[0], memory[1], "vault_keys")  # one URL, two
        assert not await same_table(missing, engine, "vault_keys")
        assert not never.exists()  # not created by asking
    finally:
        for each in [engine, *engines.values(), *memory, missing]:
            await each.dispose()


async def test_a_schema_first_on_one_sessions_search_path_is_another_table(
    fresh_postgres_database_url: str,
) -> None:
    engine = create_engine(fresh_postgres_database_url)
    await create_schema(engine)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE SCHEMA elsewhere"))
        await conn.execute(text("CREATE TABLE elsewhere.vault_keys (key_id text)"))
    shadowed = create_async_engine(
        fresh_postgres_database_url,
        connect_args={"server_settings": {"search_path": "elsewhere,public"}},
    )
    try:
        assert not await same_table(engine, shadowed, "vault_keys")
        assert await same_table(engine, shadowed, "payments")  # one database all the same
    finally:
        await shadowed.dispose()
        await engine.dispose()


async def test_a_secret_written_through_another_spelling_after_its_key_is_retired_still_signs(
    two_spellings: tuple[AsyncEngine, AsyncEngine],
) -> None:
    # The facade's webhook store on one spelling of the database, its vault on the other
    # (PAYGATE_VAULT_DATABASE_URL written otherwise): the secret's write is held until its
    # key has been rotated past and retired, then must be refused and sealed again.
    engine, vault_engine = two_spellings
    await an_endpoint_held_past_its_keys_retire_still_signs(engine, vault_engine)


async def test_a_vault_url_naming_paygates_database_otherwise_shares_its_engine(
    two_spellings: tuple[AsyncEngine, AsyncEngine], tmp_path: Path
) -> None:
    engine, otherwise = two_spellings
    url = otherwise.url.render_as_string(hide_password=False)
    settings = Settings(env=Environment.DEVELOPMENT, vault_database_url=url, vault_kek=KEK_1)
    opened = await open_vault(settings, engine)
    try:
        assert opened.own_engine is None
        assert await opened.vault.keys_beside(engine)
    finally:
        await opened.close()
    elsewhere = f"sqlite+aiosqlite:///{tmp_path / 'vault-only.db'}"
    separate = settings.model_copy(update={"vault_database_url": elsewhere})
    opened = await open_vault(separate, engine)
    try:
        assert opened.own_engine is not None
        assert not await opened.vault.keys_beside(engine)
    finally:
        await opened.close()


async def test_a_vault_url_naming_paygates_database_under_another_role_keeps_its_role(
    fresh_postgres_database_url: str,
) -> None:
    """One database, two roles: paygate's without the vault's tables, the vault's URL with
    them (the separation an operator makes for the vault's credentials). The vault keeps
    its own URL's engine: taken for paygate's database, its rows were written with
    paygate's role, and every tokenization was refused (permission denied)."""
    vault_url = fresh_postgres_database_url
    admin = create_engine(vault_url)
    await create_schema(admin)
    role = f"paygate_app_{os.urandom(4).hex()}"
    parsed = make_url(vault_url)
    try:
        async with admin.begin() as conn:
            await conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
            await conn.execute(text(f'GRANT CONNECT ON DATABASE "{parsed.database}" TO "{role}"'))
            await conn.execute(text(f'GRANT USAGE ON SCHEMA public TO "{role}"'))
            await conn.execute(text(f'GRANT SELECT ON webhook_endpoints TO "{role}"'))
        paygate_engine = create_engine(
            parsed.set(username=role).render_as_string(hide_password=False)
        )
        try:
            settings = Settings(
                env=Environment.DEVELOPMENT, vault_database_url=vault_url, vault_kek=KEK_1
            )
            opened = await open_vault(settings, paygate_engine)
            try:
                assert opened.own_engine is not None
                assert not await opened.vault.keys_beside(paygate_engine)
                card = Account(AccountType.CARD, "4242424242424242")
                vaulted = await opened.vault.tokenize(card, client_id=None)
                assert await opened.vault.reveal(vaulted, client_id=None) == card
            finally:
                await opened.close()
        finally:
            await paygate_engine.dispose()
    finally:
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP OWNED BY "{role}"'))
            await conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        await admin.dispose()
