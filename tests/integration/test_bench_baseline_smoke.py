"""``python -m devtools.bench --baseline DIR`` runs DIR's bench first on the same broker and
sets the two summaries side by side. Only that it completes and prints them is checked:
timing is never asserted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.child_env import child_environment

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 300

COMPARED = re.compile(r"^  (rate|cpu) b: [0-9.]+ -> [0-9.]+ (payments/s|us per payment) \(", re.M)


def test_a_baseline_runs_first_and_is_compared(kafka_bootstrap: str) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "devtools.bench",
            "--cases",
            "b",
            "--payments",
            "100",
            "--stall-timeout",
            "60",
            "--baseline",
            str(REPO_ROOT),
        ],
        cwd=REPO_ROOT,
        env=child_environment({"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    output = proc.stdout
    assert proc.returncode == 0, f"bench failed:\n{output}\n{proc.stderr}"
    baseline, _, current = output.partition("=== end of baseline (exit 0) ===")
    assert f"=== baseline: python -m devtools.bench from {REPO_ROOT} ===" in baseline
    # The child ran the same cases once, without --baseline.
    assert "command: python -m devtools.bench --cases b --payments 100 --stall-timeout 60\n" in (
        baseline
    )
    assert "rate b:" in baseline
    assert "rate b:" in current
    assert sorted(m.group(1) for m in COMPARED.finditer(current)) == ["cpu", "rate"], output
