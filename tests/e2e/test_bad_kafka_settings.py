"""Kafka and Schema Registry settings that cannot work, given to real ``paygate`` processes:
each ends the process with exit status 1 and a message naming the setting, never a stack
trace, never a secret's value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.child_env import child_environment

pytestmark = pytest.mark.e2e

TIMEOUT_S = 120
# Nothing listens on port 1 of the loopback: a broker and a registry that are down.
NOWHERE = "127.0.0.1:1"


def _run(cwd: Path, *command: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "paygate.cli", *command],
        env=child_environment(
            {"PAYGATE_ENV": "development", "KAFKA_BOOTSTRAP_SERVERS": NOWHERE},
            env,
            inherit_paygate=False,
        ),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def _refused(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    for text in expected:
        assert text in done.stderr


def test_a_missing_ca_file_is_named(tmp_path: Path) -> None:
    done = _run(
        tmp_path,
        "consumer",
        PAYGATE_KAFKA_SECURITY_PROTOCOL="SSL",
        PAYGATE_KAFKA_SSL_CA_FILE="/nonexistent/kafka-ca.pem",
    )
    _refused(done, "PAYGATE_KAFKA_SSL_CA_FILE=/nonexistent/kafka-ca.pem: no such file")


@pytest.mark.parametrize("command", ["consumer", "facade", "topics"])
def test_an_unknown_sasl_mechanism_is_named_with_the_ones_allowed(
    tmp_path: Path, command: str
) -> None:
    done = _run(
        tmp_path,
        command,
        PAYGATE_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        PAYGATE_KAFKA_SASL_MECHANISM="GSSAPI",
        PAYGATE_KAFKA_SASL_USERNAME="paygate",
        PAYGATE_KAFKA_SASL_PASSWORD="hunter2-secret",
    )
    _refused(
        done,
        f"paygate {command} cannot start: these settings are not valid:",
        "PAYGATE_KAFKA_SASL_MECHANISM=GSSAPI: ",
        "'PLAIN', 'SCRAM-SHA-256' or 'SCRAM-SHA-512'",
    )
    assert "hunter2" not in done.stderr + done.stdout
    assert list(tmp_path.iterdir()) == [], "nothing may be created before the refusal"


@pytest.mark.parametrize("command", [("consumer",), ("schemas", "register")])
def test_a_registry_down_at_start_is_named(tmp_path: Path, command: tuple[str, ...]) -> None:
    done = _run(
        tmp_path,
        *command,
        PAYGATE_SCHEMA_REGISTRY_URL=f"http://{NOWHERE}",
        PAYGATE_SCHEMA_REGISTRY_TIMEOUT_S="2",
    )
    _refused(done, f"the Schema Registry at PAYGATE_SCHEMA_REGISTRY_URL=http://{NOWHERE}")
