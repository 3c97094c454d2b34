"""``paygate keys`` with the vault in a database of its own checks webhook secrets in
paygate's database, and refuses rather than check a database that is not paygate's.

Before revision 0017 the command needed only the vault's database
(``PAYGATE_VAULT_DATABASE_URL``); now ``rewrap`` and ``retire`` also read the webhook
endpoints' secrets in ``PAYGATE_DATABASE_URL``. Left unset, that is the default SQLite file
in the working directory: an empty database created on the spot, where no secret is under
any key, so ``retire`` would erase the data key every endpoint's secret is under.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from paygate.keys_command import main as keys_main
from persistence.database import Database
from persistence.engine import create_engine
from persistence.migrate import create_schema
from tests.support.vault_keys import FINGERPRINT_KEY, KEK_1
from vault.kek import LocalKeyEncryptionKeys
from vault.rows import VaultRows
from vault.vault import Vault

pytestmark = pytest.mark.integration


async def create_endpoint(paygate_url: str, vault_url: str) -> None:
    """An endpoint, its secret sealed by the vault in its own database (as the facade does)."""
    paygate, vault_engine = create_engine(paygate_url), create_engine(vault_url)
    try:
        db = await Database.open(paygate)
        await create_schema(vault_engine)
        vault = Vault(
            VaultRows(vault_engine), LocalKeyEncryptionKeys.from_text(KEK_1), FINGERPRINT_KEY
        )
        webhooks = db.webhooks.with_secrets(vault)
        await webhooks.create_endpoint("acme", "https://h.example/", ["*"], None)
    finally:
        await paygate.dispose()
        await vault_engine.dispose()


def test_keys_without_paygates_database_refuses_instead_of_retiring_a_key_in_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    vault_url = f"sqlite+aiosqlite:///{tmp_path / 'vault.db'}"
    paygate_url = f"sqlite+aiosqlite:///{tmp_path / 'paygate.db'}"
    monkeypatch.setenv("PAYGATE_ENV", "development")
    monkeypatch.setenv("PAYGATE_VAULT_KEK", KEK_1)
    monkeypatch.setenv("PAYGATE_VAULT_DATABASE_URL", vault_url)
    monkeypatch.setenv("PAYGATE_DATABASE_URL", paygate_url)
    asyncio.run(create_endpoint(paygate_url, vault_url))  # the first data key comes with it
    assert keys_main(["list"]) == 0
    [first] = [json.loads(line)["keyId"] for line in capsys.readouterr().out.splitlines()]
    assert keys_main(["rotate"]) == 0
    capsys.readouterr()

    # An operator's rotation job written for the vault alone: no PAYGATE_DATABASE_URL.
    monkeypatch.delenv("PAYGATE_DATABASE_URL")
    elsewhere = tmp_path / "job"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert keys_main(["rewrap"]) == 2
    assert "PAYGATE_DATABASE_URL" in capsys.readouterr().err
    assert keys_main(["retire", first]) == 2
    assert "PAYGATE_DATABASE_URL" in capsys.readouterr().err
    assert not (elsewhere / "paygate.db").exists()  # no database made up on the spot

    # With paygate's database named, retire sees the secret still under the key.
    monkeypatch.setenv("PAYGATE_DATABASE_URL", paygate_url)
    assert keys_main(["retire", first]) == 1
    assert "webhook signing secret(s) are still encrypted under" in capsys.readouterr().err
