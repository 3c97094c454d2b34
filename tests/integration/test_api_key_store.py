"""The API-key store and ``paygate apikey``, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from paygate.apikey_command import main as apikey_main
from paygate.apikey_dev import DEV_CLIENT_ID, ensure_dev_api_key
from paygate.settings import Environment, Settings
from persistence.api_key_store import ApiKeyStore
from persistence.api_key_tables import api_keys
from persistence.engine import create_engine

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class StepClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


async def test_an_issued_key_authenticates_as_its_client(engine: AsyncEngine) -> None:
    store = ApiKeyStore(engine)
    issued = await store.create("acme", "checkout backend")
    assert issued.api_key.startswith(f"pgk_{issued.key_id}_")
    assert issued.api_key not in repr(issued)
    assert await store.authenticate(issued.api_key) == "acme"


async def test_the_key_is_not_stored_in_clear(engine: AsyncEngine) -> None:
    issued = await ApiKeyStore(engine).create("acme")
    secret = issued.api_key.rsplit("_", 1)[1]
    async with engine.connect() as conn:
        row = (await conn.execute(select(api_keys))).one()
    assert secret not in json.dumps([str(value) for value in row])
    assert len(row.secret_sha256) == 64


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda key: key[:-1] + ("0" if key[-1] != "0" else "1"), id="wrong-secret"),
        pytest.param(lambda key: "pgk_ffffffffffffffff_" + key.rsplit("_", 1)[1], id="unknown-id"),
        pytest.param(lambda key: key.upper(), id="malformed"),
        pytest.param(lambda key: key + "0", id="too-long"),
        pytest.param(lambda key: "", id="empty"),
    ],
)
async def test_anything_but_the_exact_key_is_refused(engine: AsyncEngine, tamper) -> None:
    store = ApiKeyStore(engine)
    issued = await store.create("acme")
    assert await store.authenticate(tamper(issued.api_key)) is None


async def test_a_revoked_key_stops_working_and_stays_listed(engine: AsyncEngine) -> None:
    clock = StepClock()
    store = ApiKeyStore(engine, clock=clock)
    kept, revoked = await store.create("acme", "kept"), await store.create("acme", "revoked")
    revoked_at = await store.revoke(revoked.key_id)
    assert revoked_at == clock.now
    assert await store.revoke(revoked.key_id) == revoked_at  # again: no change
    assert await store.revoke("0000000000000000") is None

    assert await store.authenticate(revoked.api_key) is None
    assert await store.authenticate(kept.api_key) == "acme"
    listed = await store.list_keys()
    assert [(k.key_id, k.label, k.active) for k in listed] == [
        (kept.key_id, "kept", True),
        (revoked.key_id, "revoked", False),
    ]
    assert listed[1].revoked_at == revoked_at


async def test_list_filters_by_client(engine: AsyncEngine) -> None:
    store = ApiKeyStore(engine, clock=StepClock())
    await store.create("acme")
    other = await store.create("globex")
    assert [k.key_id for k in await store.list_keys("globex")] == [other.key_id]
    assert len(await store.list_keys()) == 2


@pytest.mark.parametrize(
    ("client_id", "label"),
    [("", None), ("has space", None), ("x" * 65, None), ("acme", "x" * 129), ("acme", "a\nb")],
)
async def test_bad_client_ids_and_labels_are_refused(
    engine: AsyncEngine, client_id: str, label: str | None
) -> None:
    with pytest.raises(ValueError, match=r"client id|label"):
        await ApiKeyStore(engine).create(client_id, label)


def test_the_cli_creates_lists_and_revokes(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PAYGATE_DATABASE_URL", database_url)
    assert apikey_main(["create", "--client", "acme", "--label", "ci"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["clientId"] == "acme"
    assert created["apiKey"].startswith(f"pgk_{created['keyId']}_")

    assert apikey_main(["list", "--client", "acme"]) == 0
    listed = capsys.readouterr().out
    assert created["apiKey"].rsplit("_", 1)[1] not in listed
    [entry] = [json.loads(line) for line in listed.splitlines()]
    assert (entry["keyId"], entry["label"], entry["active"]) == (created["keyId"], "ci", True)

    assert apikey_main(["revoke", created["keyId"]]) == 0
    assert json.loads(capsys.readouterr().out)["keyId"] == created["keyId"]
    assert apikey_main(["list"]) == 0
    assert json.loads(capsys.readouterr().out)["active"] is False
    assert apikey_main(["revoke", "0000000000000000"]) == 2


async def test_the_dev_key_is_made_once_and_replaced_when_it_stops_working(
    tmp_path: Path,
) -> None:
    settings = Settings(
        env=Environment.DEVELOPMENT, database_url=f"sqlite+aiosqlite:///{tmp_path / 'dev.db'}"
    )
    key_file = tmp_path / "cache" / "dev-api-key"
    first = await ensure_dev_api_key(settings, key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert await ensure_dev_api_key(settings, key_file) == first

    engine = create_engine(settings.database_url)
    try:
        store = ApiKeyStore(engine)
        assert await store.authenticate(first) == DEV_CLIENT_ID
        await store.revoke(first.split("_")[1])
        second = await ensure_dev_api_key(settings, key_file)
        assert second != first
        assert key_file.read_text().strip() == second
        assert await store.authenticate(second) == DEV_CLIENT_ID
    finally:
        await engine.dispose()


async def test_no_dev_key_is_made_in_production(tmp_path: Path) -> None:
    """A working credential left in a file is for a developer's machine only."""
    settings = Settings(
        env=Environment.PRODUCTION, database_url=f"sqlite+aiosqlite:///{tmp_path / 'dev.db'}"
    )
    key_file = tmp_path / "cache" / "dev-api-key"
    with pytest.raises(RuntimeError, match="PAYGATE_ENV=development"):
        await ensure_dev_api_key(settings, key_file)
    assert not key_file.exists()
    assert not (tmp_path / "dev.db").exists()
