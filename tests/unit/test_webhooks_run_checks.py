"""``paygate webhooks run`` in production: checked for the vault's key-encryption keys, the
only development secret it reads, and for nothing it does not read."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from paygate import webhooks_command
from paygate.production_checks import UnsafeSettingsError
from paygate.settings import DEV_VAULT_KEK, Settings

pytestmark = pytest.mark.unit


@pytest.fixture
def ran(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the command was started for, instead of starting it."""
    actions: list[str] = []

    async def run(_settings: Settings, args: argparse.Namespace) -> int:
        actions.append(args.action)
        return 0

    monkeypatch.setattr(webhooks_command, "run_webhooks_command", run)
    monkeypatch.setattr(webhooks_command, "configure_logging", lambda *_args: None)
    monkeypatch.setenv("PAYGATE_ENV", "production")
    return actions


def test_run_starts_with_a_real_kek_and_no_account_encryption_key(
    ran: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The dispatcher opens signing secrets with the data keys: the account encryption key
    # (an RSA private key) and the clear-number switch are none of its business, and a
    # deployment should not have to hand it that private key to start.
    kek = tmp_path / "kek"
    kek.write_text("kek-1:" + "ab" * 32)
    monkeypatch.setenv("PAYGATE_VAULT_KEK_FILE", str(kek))
    monkeypatch.delenv("PAYGATE_ACCOUNT_ENCRYPTION_KEY_FILES", raising=False)
    assert webhooks_command.main(["run"]) == 0
    assert ran == ["run"]


def test_run_refuses_the_development_kek(ran: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAYGATE_VAULT_KEK_FILE", raising=False)
    monkeypatch.setenv("PAYGATE_VAULT_KEK", DEV_VAULT_KEK)
    monkeypatch.setenv("PAYGATE_ACCOUNT_ENCRYPTION_KEY_FILES", '["/etc/paygate/account.pem"]')
    with pytest.raises(UnsafeSettingsError) as refused:
        webhooks_command.main(["run"])
    assert [item.setting for item in refused.value.unsafe] == ["PAYGATE_VAULT_KEK"]
    assert ran == []


def test_run_refuses_a_kek_file_holding_the_development_kek(
    ran: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    kek = tmp_path / "kek"
    kek.write_text(DEV_VAULT_KEK + "\n")
    monkeypatch.setenv("PAYGATE_VAULT_KEK_FILE", str(kek))
    monkeypatch.delenv("PAYGATE_VAULT_KEK", raising=False)
    with pytest.raises(UnsafeSettingsError) as refused:
        webhooks_command.main(["run"])
    assert [item.setting for item in refused.value.unsafe] == ["PAYGATE_VAULT_KEK_FILE"]
    assert "write a key of your own into it" in str(refused.value.code)
    assert ran == []
