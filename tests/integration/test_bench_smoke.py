"""``python -m devtools.bench`` runs end to end with tiny numbers and reports its figures.

Only that it completes and prints positive rates and ratios is checked: the figures of
so small a run mean nothing, and timing is never asserted.
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

RATE = re.compile(r"^rate ([abc]|b-normal|b-tokens): ([0-9.]+) payments/s$", re.MULTILINE)
RATIO = re.compile(r"^ratio (b/a|c/bound|b/b-normal|b-tokens/b): ([0-9.]+)$", re.MULTILINE)


def test_the_bench_measures_all_cases_and_prints_rates_and_ratios(kafka_bootstrap):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "devtools.bench",
            "--payments",
            "200",
            "--slow-payments",
            "50",
            "--stall-timeout",
            "60",
            "--compare-sqlite-synchronous",
            "--compare-tokens",
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

    rates = dict(RATE.findall(output))
    assert set(rates) == {"a", "b", "b-normal", "b-tokens", "c"}, output
    assert all(float(rate) > 0 for rate in rates.values()), rates

    ratios = dict(RATIO.findall(output))
    assert set(ratios) == {"b/a", "c/bound", "b/b-normal", "b-tokens/b"}, output
    assert all(float(ratio) > 0 for ratio in ratios.values()), ratios

    assert "command: python -m devtools.bench --payments 200 --slow-payments 50" in output
    assert re.search(r"^machine: \d+ cores", output, re.MULTILINE), output
    assert re.search(r"^load average at start: [0-9.]+, ", output, re.MULTILINE), output
    assert re.search(r"^load average at end: [0-9.]+, ", output, re.MULTILINE), output
    # The comparison: case b on the durable default, then the same on the opt-in.
    assert re.search(r"^case b: .*, SQLite synchronous=FULL$", output, re.MULTILINE), output
    assert re.search(r"^case b-normal: .*, SQLite synchronous=NORMAL$", output, re.MULTILINE)
    # And by vault token instead of by clear number.
    assert re.search(r"^case b-tokens: .*, accounts by vault token, ", output, re.MULTILINE)
    assert re.search(r"b/a >= 0\.5: (met|NOT met)", output), output
    assert re.search(r"c >= 2000 payments/s: (met|NOT met)", output), output


SCALE = re.compile(r"^scale ([0-9]+): ([0-9.]+) payments/s, ", re.MULTILINE)


def test_the_bench_scales_out_over_consumer_processes_on_postgresql(
    kafka_bootstrap, fresh_postgres_database_url
):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "devtools.bench",
            "--cases",
            "a",
            "--payments",
            "100",
            "--scale-out",
            "1,2",
            "--database-url",
            fresh_postgres_database_url,
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
    rates = dict(SCALE.findall(output))
    assert set(rates) == {"1", "2"}, output
    assert all(float(rate) > 0 for rate in rates.values()), rates
    # Both processes of the second step took part: each made provider calls.
    calls = re.findall(r"^  provider calls per process \[([0-9, ]+)\]$", output, re.MULTILINE)
    assert [sum(int(n) for n in c.split(",")) for c in calls] == [100, 100], output
    assert all(int(n) > 0 for n in calls[1].split(",")), output
    assert re.search(r"^scale-out on \d+ cores", output, re.MULTILINE), output


def test_scale_out_refuses_sqlite() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "devtools.bench", "--scale-out", "1,2"],
        cwd=REPO_ROOT,
        env=child_environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "--scale-out needs a PostgreSQL --database-url" in proc.stderr
