"""Secrets as files: PAYGATE_SECRETS_DIR, as a Kubernetes Secret mounted as a volume."""

from __future__ import annotations

from pathlib import Path

import pytest

from paygate.settings import SECRETS_DIR_ENV, Settings

pytestmark = pytest.mark.unit


@pytest.fixture
def secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in (
        "PAYGATE_DATABASE_URL",
        "PAYGATE_ACCOUNT_FINGERPRINT_KEY",
        "KAFKA_BOOTSTRAP_SERVERS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(SECRETS_DIR_ENV, str(tmp_path))
    return tmp_path


def test_a_file_named_like_a_setting_holds_its_value(secrets: Path) -> None:
    (secrets / "PAYGATE_DATABASE_URL").write_text("postgresql+asyncpg://u:p@db/paygate\n")
    (secrets / "PAYGATE_ACCOUNT_FINGERPRINT_KEY").write_text("k" * 40)
    (secrets / "KAFKA_BOOTSTRAP_SERVERS").write_text("kafka-0:9092")
    settings = Settings()
    assert settings.database_url == "postgresql+asyncpg://u:p@db/paygate"
    assert settings.account_fingerprint_key.get_secret_value() == "k" * 40
    assert settings.kafka_bootstrap_servers == "kafka-0:9092"


def test_the_environment_wins_over_a_file(secrets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (secrets / "PAYGATE_DATABASE_URL").write_text("postgresql+asyncpg://from-file/x")
    monkeypatch.setenv("PAYGATE_DATABASE_URL", "postgresql+asyncpg://from-env/x")
    assert Settings().database_url == "postgresql+asyncpg://from-env/x"


def test_without_the_directory_nothing_is_read_from_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRETS_DIR_ENV, raising=False)
    monkeypatch.delenv("PAYGATE_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "PAYGATE_DATABASE_URL").write_text("postgresql+asyncpg://stray/x")
    assert Settings().database_url == Settings.model_fields["database_url"].default
