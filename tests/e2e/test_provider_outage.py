"""An acquirer outage, end to end, through the real entry point (``python -m devtools.outage``).

A ``paygate consumer`` process with the settings as shipped charges the sandbox acquirer,
itself a process, while payments arrive on Kafka at a steady rate; the acquirer is
SIGKILLed for 8 s and brought back on the same port and ledger. With the default retry
budget (90 s) and circuit breaker, no payment may fail for the outage and none may be
charged twice. The assertions read the table the run prints, the same one people read;
the 20 s and 60 s runs in docs/reliability.md are the same command with ``--outage-s``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.child_env import child_environment

pytestmark = pytest.mark.e2e

# Not a timing assertion: a bound so that a hung run fails instead of hanging the suite.
HANG_GUARD_S = 600


def _figures(stdout: str) -> dict[str, str]:
    """The printed table as {figure: value}."""
    figures: dict[str, str] = {}
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 3 and cells[0] not in ("figure", "---"):
            figures[cells[0]] = cells[1]
    return figures


def test_payments_ride_out_an_acquirer_outage_without_failing_or_double_charging(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # The defaults are what is measured: no PAYGATE_* setting of the caller's leaks in.
    command = [
        sys.executable,
        "-m",
        "devtools.outage",
        "--outage-s",
        "8",
        "--rate",
        "10",
        "--before-s",
        "3",
        "--after-s",
        "4",
        "--work-dir",
        str(tmp_path),
    ]
    run = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=child_environment({"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}, inherit_paygate=False),
        timeout=HANG_GUARD_S,
        check=False,
    )
    report = f"stdout:\n{run.stdout}\nstderr (tail):\n{run.stderr[-6000:]}\nlogs: {tmp_path}"
    assert run.returncode == 0, report

    figures = _figures(run.stdout)
    assert figures["payments fed"] == "150", report
    assert figures["payments failed (retry budget ran out, or any other reason)"] == "0", report
    assert figures["double charges"] == "0", report
    assert figures["charges per payment in the acquirer's ledger (max)"] == "1", report
    assert figures["lost payments (fed, not in the store)"] == "0", report
    assert figures["payments not final"] == "0", report
    # Payments arrived while it was down, and the breaker stopped calling it.
    assert int(figures["payments not final when it came back"]) > 0, report
    assert int(figures["circuit opened"]) >= 1, report
    # A call in flight at the SIGKILL may be cut; the run checked that the acquirer holds
    # no charge for such a payment. Every other payment succeeded.
    cut = int(
        figures["payments failed because the SIGKILL cut their call (never received, not charged)"]
    )
    assert figures["payments succeeded"] == f"{150 - cut} / 150", report
