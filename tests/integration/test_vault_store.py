"""The vault on SQLite and PostgreSQL: its rows hold no clear number, keys rotate through
``paygate keys``, and a separate vault database works."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.accounts import Account, AccountType
from domain.errors import ErrorCode, PaygateError
from paygate.keys_command import main as keys_main
from paygate.settings import Environment, Settings
from paygate.vault_wiring import open_vault
from persistence.engine import create_engine
from persistence.migrate import create_schema
from persistence.vault_tables import vault_entries
from tests.support.builders import PAYEE_IBAN, SUCCESS_CARD
from tests.support.clear_numbers import numbers_in, scan_sqlite
from tests.support.clock import Clock
from tests.support.vault_keys import FINGERPRINT_KEY, KEK_1, KEK_2, keys_made_earlier
from vault.kek import LocalKeyEncryptionKeys
from vault.rows import VaultRows
from vault.vault import Vault

pytestmark = pytest.mark.integration

CARD = Account(AccountType.CARD, SUCCESS_CARD)
IBAN = Account(AccountType.IBAN, PAYEE_IBAN)


def vault_on(engine: AsyncEngine, keks: str = KEK_1, clock: Clock | None = None) -> Vault:
    return Vault(
        VaultRows(engine),
        LocalKeyEncryptionKeys.from_text(keks),
        FINGERPRINT_KEY,
        clock=clock or Clock(),
        primary_refresh_s=0.0,
    )


async def raw_rows(engine: AsyncEngine) -> list[str]:
    """Every vault row as the database prints it (bytea as hex on PostgreSQL)."""
    lines: list[str] = []
    async with engine.connect() as conn:
        for table in ("vault_keys", "vault_entries"):
            cast = "t::text" if engine.dialect.name == "postgresql" else "*"
            for row in await conn.execute(text(f"SELECT {cast} FROM {table} AS t")):  # noqa: S608
                lines.append(" ".join(str(v) for v in row))
    return lines


async def test_round_trip_and_no_clear_number_in_the_rows(engine: AsyncEngine) -> None:
    vault = vault_on(engine)
    card = await vault.tokenize(CARD, client_id="acme")
    iban = await vault.tokenize(IBAN, client_id=None, saved=True)
    assert await vault.reveal(card, client_id="acme") == CARD
    assert await vault.reveal(iban, client_id=None) == IBAN
    rows = await raw_rows(engine)
    assert len(rows) == 3  # one data key, two values
    assert [n for row in rows for n in numbers_in(row)] == []
    assert (await vault.describe(iban.token, client_id=None)).masked == IBAN.masked


async def test_a_tampered_row_is_refused_on_the_database(engine: AsyncEngine) -> None:
    vault = vault_on(engine)
    card = await vault.tokenize(CARD, client_id="acme")
    iban = await vault.tokenize(IBAN, client_id="acme")
    async with engine.begin() as conn:
        stolen = (
            await conn.execute(vault_entries.select().where(vault_entries.c.token == card.token))
        ).one()
        await conn.execute(
            update(vault_entries)
            .where(vault_entries.c.token == iban.token)
            .values(ciphertext=stolen.ciphertext)
        )
    with pytest.raises(PaygateError) as caught:
        await vault.reveal(iban, client_id="acme")
    assert caught.value.code is ErrorCode.ACCOUNT_DATA_TAMPERED


async def test_rotation_on_the_database_and_retention(engine: AsyncEngine) -> None:
    clock = Clock()
    vault = vault_on(engine, clock=clock)
    old = await vault.tokenize(CARD, client_id="acme", expires_in=timedelta(days=1))
    clock.now += timedelta(seconds=1)
    await vault.rotate()
    [first, second] = await vault.keys()
    assert (first.values, second.values) == (1, 0)
    assert (await vault.rewrap()).values_moved == 1
    await vault.retire(first.key_id)
    assert await vault.reveal(old, client_id="acme") == CARD
    clock.now += timedelta(days=1)
    assert await vault.delete_expired() == 1
    assert [(k.key_id, k.values, k.active) for k in await vault.keys()] == [
        (first.key_id, 0, False),
        (second.key_id, 0, True),
    ]


async def test_the_expiry_sweep_deletes_in_passes_only_expired_tokens(
    engine: AsyncEngine,
) -> None:
    # The sweep's statement chooses its rows in a subquery (which skips rows another
    # transaction holds on PostgreSQL: tests/integration/test_vault_lock_order.py).
    clock = Clock()
    vault = vault_on(engine, clock=clock)
    expiring = [
        (await vault.tokenize(CARD, client_id=client, expires_in=timedelta(hours=1))).token
        for client in ("acme", "acme", None)
    ]
    kept = (await vault.tokenize(CARD, client_id="acme", expires_in=timedelta(days=2))).token
    clock.now += timedelta(days=1)
    assert await vault.delete_expired(batch=2) == 3
    assert await vault.delete_expired(batch=2) == 0
    async with engine.connect() as conn:
        left = set(await conn.scalars(select(vault_entries.c.token)))
    assert kept in left
    assert not left & set(expiring)


def test_paygate_keys_rotate_rewrap_retire(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PAYGATE_ENV", "development")
    monkeypatch.setenv("PAYGATE_DATABASE_URL", database_url)
    monkeypatch.setenv("PAYGATE_VAULT_KEK", KEK_1)

    async def tokenize() -> str:
        engine = create_engine(database_url)
        opened = await open_vault(Settings(), engine)
        try:
            return (await opened.vault.tokenize(CARD, client_id="acme")).token
        finally:
            await opened.close()
            await engine.dispose()

    assert keys_main(["rotate"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert (first["kekId"], first["active"], first["values"]) == ("kek-1", True, 0)
    token = asyncio.run(tokenize())
    assert keys_main(["rotate"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert keys_main(["retire", first["keyId"]]) == 1
    assert "rewrap" in capsys.readouterr().err
    # The key-encryption key rotates too: kek-2 first, kek-1 kept for unwrapping.
    monkeypatch.setenv("PAYGATE_VAULT_KEK", f"{KEK_2},{KEK_1}")
    assert keys_main(["rewrap"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "keysRewrapped": 2,
        "valuesMoved": 1,
        "valuesFailed": 0,
        "webhookSecretsSealed": 0,
        "webhookSecretsMoved": 0,
        "webhookSecretsFailed": 0,
    }
    # Retired only once no process can still encrypt under it (a minute after its successor).
    keys_made_earlier(database_url, timedelta(minutes=2))
    assert keys_main(["retire", first["keyId"]]) == 0
    assert json.loads(capsys.readouterr().out)["active"] is False
    assert keys_main(["retire", "dk_none"]) == 2
    capsys.readouterr()
    monkeypatch.setenv("PAYGATE_VAULT_KEK", KEK_2)
    assert keys_main(["list"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(k["keyId"], k["kekId"], k["values"]) for k in listed] == [
        (first["keyId"], "kek-2", 0),
        (second["keyId"], "kek-2", 1),
    ]

    async def reveal() -> Account:
        engine = create_engine(database_url)
        opened = await open_vault(Settings(), engine)
        try:
            described = await opened.vault.describe(token, client_id="acme")
            return await opened.vault.reveal(described, client_id="acme")
        finally:
            await opened.close()
            await engine.dispose()

    assert asyncio.run(reveal()) == CARD


def test_paygate_keys_refuses_the_development_key_in_production(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PAYGATE_ENV", "production")
    monkeypatch.delenv("PAYGATE_VAULT_KEK", raising=False)
    monkeypatch.setenv("PAYGATE_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    with pytest.raises(SystemExit) as caught:
        keys_main(["list"])
    assert "PAYGATE_VAULT_KEK" in str(caught.value.code)
    assert not (tmp_path / "p.db").exists()


async def test_a_separate_vault_database(tmp_path: Path) -> None:
    paygate_url = f"sqlite+aiosqlite:///{tmp_path / 'paygate.db'}"
    vault_url = f"sqlite+aiosqlite:///{tmp_path / 'vault.db'}"
    settings = Settings(
        env=Environment.DEVELOPMENT,
        database_url=paygate_url,
        vault_database_url=vault_url,
        vault_kek=KEK_1,
    )
    engine = create_engine(paygate_url)
    opened = await open_vault(settings, engine)
    try:
        vaulted = await opened.vault.tokenize(CARD, client_id=None)
        assert await opened.vault.reveal(vaulted, client_id=None) == CARD
    finally:
        await opened.close()
        await engine.dispose()
    assert not (tmp_path / "paygate.db").exists()
    scan = scan_sqlite(tmp_path / "vault.db")
    assert scan.rows > 0
    assert scan.findings == []


async def test_the_key_file_wins_over_the_setting(tmp_path: Path) -> None:
    key_file = tmp_path / "kek"
    key_file.write_text(f"{KEK_2}\n")
    settings = Settings(env=Environment.DEVELOPMENT, vault_kek=KEK_1, vault_kek_file=key_file)
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    await create_schema(engine)
    opened = await open_vault(settings, engine)
    try:
        await opened.vault.tokenize(CARD, client_id=None)
        [key] = await opened.vault.keys()
        assert key.kek_id == "kek-2"
    finally:
        await opened.close()
        await engine.dispose()


def test_paygate_keys_shreds_a_client_and_expired_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'p.db'}"
    monkeypatch.setenv("PAYGATE_ENV", "development")
    monkeypatch.setenv("PAYGATE_DATABASE_URL", url)
    monkeypatch.setenv("PAYGATE_VAULT_KEK", KEK_1)

    async def tokens() -> tuple[str, str, str]:
        engine = create_engine(url)
        await create_schema(engine)
        vault = vault_on(engine)
        try:
            leaving = await vault.tokenize(CARD, client_id="leaving", saved=True)
            # Expired already: its retention was negative.
            old = await vault.tokenize(CARD, client_id="staying", expires_in=timedelta(-1))
            kept = await vault.tokenize(IBAN, client_id="staying", saved=True)
        finally:
            await engine.dispose()
        return leaving.token, old.token, kept.token

    leaving, old, kept = asyncio.run(tokens())
    assert keys_main(["shred-client", "--client", "leaving"]) == 0
    assert json.loads(capsys.readouterr().out) == {"clientId": "leaving", "shredded": 1}
    assert keys_main(["expire"]) == 0
    assert json.loads(capsys.readouterr().out) == {"shredded": 1}
    connection = sqlite3.connect(tmp_path / "p.db")
    try:
        left = [t for (t,) in connection.execute("SELECT token FROM vault_entries")]
    finally:
        connection.close()
    assert left == [kept]
    assert leaving not in left
    assert old not in left

    async def tokenize_for_leaving() -> str:
        engine = create_engine(url)
        vault = vault_on(engine)
        try:
            return (await vault.tokenize(CARD, client_id="leaving", saved=True)).token
        except PaygateError as exc:
            return exc.code.value
        finally:
            await engine.dispose()

    # The client's vault is closed until an operator reopens it.
    assert asyncio.run(tokenize_for_leaving()) == "client_shredded"
    assert keys_main(["unshred-client", "--client", "leaving"]) == 0
    assert json.loads(capsys.readouterr().out) == {"clientId": "leaving", "unshredded": True}
    assert asyncio.run(tokenize_for_leaving()).startswith("pm_")
    assert keys_main(["unshred-client", "--client", "leaving"]) == 0
    assert json.loads(capsys.readouterr().out) == {"clientId": "leaving", "unshredded": False}
