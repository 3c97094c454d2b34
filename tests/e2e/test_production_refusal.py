"""``paygate <process>`` in production with development settings: refused before it starts.

The refusal is the whole output: one message naming every setting to change, on stderr,
no traceback, exit status 1, nothing started (no broker or database is even configured).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from paygate.settings import DEV_FINGERPRINT_KEY
from tests.support.child_env import child_environment

pytestmark = pytest.mark.e2e

TIMEOUT_S = 60
# The card vault's development keys, refused by every process that opens the vault.
_VAULT_KEYS = ["PAYGATE_ACCOUNT_ENCRYPTION_KEY_FILES", "PAYGATE_VAULT_KEK"]


def _run(command: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "paygate.cli", command],
        env=child_environment(env, inherit_paygate=False),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


@pytest.mark.parametrize(
    ("command", "settings"),
    [
        (
            "consumer",
            [
                "PAYGATE_ACCOUNT_FINGERPRINT_KEY",
                "PAYGATE_PROVIDER",
                *_VAULT_KEYS,
                "PAYGATE_KAFKA_SECURITY_PROTOCOL",
            ],
        ),
        (
            "facade",
            [
                "PAYGATE_ACCOUNT_FINGERPRINT_KEY",
                "PAYGATE_TLS_CERT_FILE",
                *_VAULT_KEYS,
                "PAYGATE_KAFKA_SECURITY_PROTOCOL",
            ],
        ),
        ("reconcile", ["PAYGATE_PROVIDER", *_VAULT_KEYS]),
        ("acquirer", ["PAYGATE_ENV"]),
    ],
)
def test_the_defaults_are_refused_with_one_clean_message(
    tmp_path: Path, command: str, settings: list[str]
) -> None:
    done = _run(command, tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert lines[0].startswith(f"paygate {command} refuses to start: PAYGATE_ENV is production")
    assert [line.split()[1] for line in lines[1:-1]] == settings
    assert lines[-1] == (
        "To try paygate out locally, run `paygate dev` or set PAYGATE_ENV=development."
    )
    assert list(tmp_path.iterdir()) == [], "nothing may be created before the refusal"


def test_the_compose_files_old_placeholder_is_refused(tmp_path: Path) -> None:
    done = _run(
        "consumer",
        tmp_path,
        PAYGATE_ACCOUNT_FINGERPRINT_KEY="change-me-in-production",
        PAYGATE_PROVIDER="stripe",
        PAYGATE_STRIPE_API_KEY="sk_live_123",
        PAYGATE_ABANDON_AFTER_S="21600",
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "  - PAYGATE_ACCOUNT_FINGERPRINT_KEY is a placeholder; set it to a random secret" in (
        done.stderr
    )


def test_the_development_key_is_refused_even_when_set_explicitly(tmp_path: Path) -> None:
    done = _run(
        "facade",
        tmp_path,
        PAYGATE_ENV="production",
        PAYGATE_ACCOUNT_FINGERPRINT_KEY=DEV_FINGERPRINT_KEY,
        PAYGATE_TLS_CERT_FILE=str(tmp_path / "tls.crt"),
        PAYGATE_TLS_KEY_FILE=str(tmp_path / "tls.key"),
    )
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.splitlines()[1] == (
        "  - PAYGATE_ACCOUNT_FINGERPRINT_KEY is the development default; set it to a random "
        "secret of at least 32 bytes (e.g. `openssl rand -hex 32`)"
    )


@pytest.mark.parametrize("command", ["consumer", "facade", "reconcile"])
def test_generated_alipay_test_keys_are_refused(tmp_path: Path, command: str) -> None:
    # What docker-compose.yml and the Helm chart's dev values set for the Alipay simulator:
    # whoever reads that directory can sign "Alipay's" notifications.
    done = _run(
        command,
        tmp_path,
        PAYGATE_ALIPAY_DEV_KEYS_DIR=str(tmp_path / "alipay-dev"),
        PAYGATE_ALIPAY_APP_ID="paygate-development-app",
        PAYGATE_ROUTES='{"alipay": ["alipay"]}',
        PAYGATE_ALIPAY_GATEWAY_URL="http://acquirer:8081/gateway.do",
    )
    assert (done.returncode, done.stdout) == (1, "")
    assert "Traceback" not in done.stderr
    named = [line.split()[1] for line in done.stderr.splitlines()[1:-1]]
    assert {"PAYGATE_ALIPAY_DEV_KEYS_DIR", "PAYGATE_ALIPAY_APP_ID"} <= set(named)
    # The facade calls no provider: the gateway is the consumer's and reconcile's concern.
    assert ("PAYGATE_ALIPAY_GATEWAY_URL" in named) == (command != "facade")
    assert not (tmp_path / "alipay-dev").exists(), "no key may be generated before the refusal"
