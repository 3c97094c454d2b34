"""``python -m devtools.bench refunds`` runs end to end with a tiny count, beside a baseline.

The baseline here is this checkout itself (an A/A run): what is checked is that both runs
complete, that each ran the code of the tree it was given, that every payment and refund
settled, and that ratios are printed. The figures of so small a run mean nothing, and
timing is never asserted.
"""

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
RATIO = re.compile(r"^  ratio (payments|refunds) (cpu_us|statements): ([0-9.]+) ", re.MULTILINE)


def test_the_refunds_bench_measures_both_phases_beside_a_baseline(kafka_bootstrap):
    args = ["--count", "10", "--baseline", str(REPO_ROOT), "--stall-timeout", "60"]
    proc = subprocess.run(
        [sys.executable, "-m", "devtools.bench", "refunds", *args],
        cwd=REPO_ROOT,
        env=child_environment({"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    output = proc.stdout
    assert proc.returncode == 0, f"bench failed:\n{output}\n{proc.stderr}"

    assert f"command: python -m devtools.bench refunds {' '.join(args)}" in output
    assert re.search(r"^uptime at start: .*load average", output, re.MULTILINE), output
    assert output.count(f"code: {REPO_ROOT}\n") == 2, output
    for label in ("baseline", "this checkout"):
        block = output.split(f"\n{label} ({REPO_ROOT}), 10 commands per phase\n", 1)[1]
        assert re.match(r"  phase payments: CPU us per command [0-9]+, statements", block)
        assert "  final refunds: succeeded 10\n" in block, block
    ratios = RATIO.findall(output)
    assert {(phase, figure) for phase, figure, _ in ratios} == {
        (phase, figure) for phase in ("payments", "refunds") for figure in ("cpu_us", "statements")
    }, output
    assert all(float(value) > 0 for _, _, value in ratios), ratios
    assert "final states: as expected" in output


CAPTURE_RATIO = re.compile(
    r"^  ratio (payments|captures|cancels) (cpu_us|statements): ([0-9.]+) ", re.MULTILINE
)


def test_the_captures_bench_measures_captures_and_cancels_beside_a_baseline(kafka_bootstrap):
    args = ["--count", "5", "--baseline", str(REPO_ROOT), "--stall-timeout", "60"]
    proc = subprocess.run(
        [sys.executable, "-m", "devtools.bench", "captures", *args],
        cwd=REPO_ROOT,
        env=child_environment({"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    output = proc.stdout
    assert proc.returncode == 0, f"bench failed:\n{output}\n{proc.stderr}"

    assert f"command: python -m devtools.bench captures {' '.join(args)}" in output
    assert output.count(f"code: {REPO_ROOT}\n") == 2, output
    for label in ("baseline", "this checkout"):
        block = output.split(f"\n{label} ({REPO_ROOT}), 5 commands per phase\n", 1)[1]
        assert re.match(r"  phase payments \(10 commands\): CPU us per command [0-9]+", block)
        assert re.search(r"^  captures beside payments: [0-9]+/s, CPU per command", block, re.M)
        assert "  final payments: canceled 5, succeeded 5\n" in block, block
    ratios = CAPTURE_RATIO.findall(output)
    assert {(phase, figure) for phase, figure, _ in ratios} == {
        (phase, figure)
        for phase in ("payments", "captures", "cancels")
        for figure in ("cpu_us", "statements")
    }, output
    assert all(float(value) > 0 for _, _, value in ratios), ratios
    assert "final states: as expected" in output
