"""``paygate reconcile settle`` run as its own process, on SQLite and PostgreSQL.

The provider is a plugin (a ``paygate.providers`` entry point in a site directory the child
process is given) that honours keys for 24 hours and whose status query finds nothing: the
payment the test begins two days ago is withheld. The command refuses what it must (a half
given pair of options, an unknown id) with a JSON error and exit 2, changing nothing, then
fails the payment with the operator's reason, and refuses a second settlement.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from consumer.outcome import Outcome
from consumer.payment_events import PaymentEvents
from consumer.payment_handler import PaymentCommandHandler
from domain.errors import ErrorCode
from domain.status import PaymentStatus
from persistence.payment_store import PaymentStore
from providers.registry import Providers
from providers.routing import Router
from schemas.payments import PaymentMessages
from telemetry.metrics import Metrics
from tests.support.builders import ACCOUNT_KEY, create_payment
from tests.support.child_env import child_environment
from tests.support.clock import Clock
from tests.support.plugin_provider import SilentWindowed

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROVIDER = "windowed"
REASON = "dashboard shows no charge under the key; ticket OPS-7"


def _plugin_site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    info = site / "windowed_paygate-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: windowed_paygate\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[paygate.providers]\n{PROVIDER} = tests.support.plugin_provider:build_silent_windowed\n"
    )
    return site


def _settle(database_url: str, site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "paygate.cli", "reconcile", "settle", *args],
        env=child_environment(
            {
                "PAYGATE_ENV": "development",
                "PAYGATE_DATABASE_URL": database_url,
                "PAYGATE_PROVIDER": PROVIDER,
                "PYTHONPATH": os.pathsep.join([str(ROOT), str(site)]),
            }
        ),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _error_code(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stderr
    return str(json.loads(done.stderr.strip().splitlines()[-1])["error"]["code"])


async def test_the_command_fails_a_withheld_payment_with_the_operators_reason(
    engine, database_url, tmp_path
):
    clock = Clock()
    clock.now -= timedelta(days=2)  # begun two days ago: past the provider's window
    store = PaymentStore(engine, clock)
    provider = SilentWindowed(PROVIDER)
    handler = PaymentCommandHandler(
        store=store,
        providers=Providers.of(provider),
        router=Router.catch_all(PROVIDER),
        events=PaymentEvents(PaymentMessages.bundled(), "payments.results"),
        account_key=ACCOUNT_KEY,
        metrics=Metrics(),
        clock=clock,
    )
    command = create_payment()
    pid = command.payment_request_id
    assert await handler.handle(command) is Outcome.PENDING
    site = _plugin_site(tmp_path)

    assert _error_code(_settle(database_url, site, pid, "--failed")) == "invalid_request"
    assert _error_code(_settle(database_url, site, "no-such-id")) == ErrorCode.NOT_FOUND.value
    untouched = await store.get_payment(pid)
    assert untouched is not None
    assert untouched.status is PaymentStatus.PENDING

    done = _settle(database_url, site, pid, "--failed", "--reason", REASON)

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "subject": "payment",
        "id": pid,
        "provider": PROVIDER,
        "action": "failed_by_operator",
        "outcome": "failed",
    }
    payment = await store.get_payment(pid)
    assert payment is not None
    assert payment.status is PaymentStatus.FAILED
    assert payment.error is not None
    assert payment.error.code is ErrorCode.SETTLED_BY_OPERATOR
    assert REASON in payment.error.message
    assert REASON in done.stderr  # the audit line (the JSON log goes to stderr)
    # ... and whose hand it was.
    audit = [
        json.loads(line)
        for line in done.stderr.splitlines()
        if line.startswith("{") and '"operator settlement:' in line
    ]
    assert [(a["action"], a["settle_id"]) for a in audit] == [("failed_by_operator", pid)]
    assert audit[0]["run_by"].endswith("@" + socket.gethostname())

    again = _settle(database_url, site, pid, "--failed", "--reason", REASON)
    assert _error_code(again) == ErrorCode.NOT_WITHHELD.value
