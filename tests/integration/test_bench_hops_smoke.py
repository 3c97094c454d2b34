"""``python -m devtools.bench hops`` runs end to end at a tiny count and cuts every request.

The baseline is this checkout itself (an A/A run), so both stacks and the comparison are
exercised. Only structure and consistency are checked, never timing: each stack has a row
per hop and the total with n == count; every request's marks (``--marks``) are in order up
to the 1 ms a Kafka timestamp is truncated by, its hops add up to its total, and the printed
rows are the percentiles of those marks; the printed sum of the hops' medians lies between
what the hops' minimums and maximums allow.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.bench.hop_report import percentile
from devtools.bench.hop_timeline import CLOCK_GRANULARITY_S, HOPS, TOTAL, Timeline, hop_samples
from tests.support.child_env import child_environment

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 300
COUNT = 20
_N = r"([0-9.]+)"
ROW = re.compile(rf"^\| ([a-z ]+) \| (\d+) \| {_N} \| {_N} \| {_N} \| {_N} \| .+ \|$", re.M)
MEDIANS = re.compile(rf"^sum of the hops' p50: {_N} ms; p50 of the total: {_N} ms$", re.M)
# Float rounding of epoch seconds (about 1e-7 s at today's epoch) and of the printed .1f.
SLACK_MS = 0.05


def test_the_hops_bench_cuts_every_request_of_both_stacks_into_hops_that_add_up(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    marks_file = tmp_path / "marks.jsonl"
    args = ["--rate", "20", "--count", str(COUNT), "--warmup", "2", "--marks", str(marks_file)]
    args += ["--baseline", str(REPO_ROOT)]
    proc = subprocess.run(
        [sys.executable, "-m", "devtools.bench", "hops", *args],
        cwd=REPO_ROOT,
        env=child_environment({"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    output = proc.stdout
    assert proc.returncode == 0, f"bench failed:\n{output}\n{proc.stderr}"

    assert f"command: python -m devtools.bench hops {' '.join(args)}" in output
    for line in (
        "revision: ",
        "database: SQLite",
        "load: ",
        "uptime at start: ",
        "uptime at end: ",
    ):
        assert re.search(f"^{line}", output, re.M), f"no {line!r} line:\n{output}"
    baseline = re.search(r"^(baseline \S+): \d+ requests", output, re.M)
    assert baseline is not None, output
    stacks = [baseline.group(1), "this checkout"]

    records = [json.loads(line) for line in marks_file.read_text().splitlines()]
    assert len({r["order_id"] for r in records}) == len(records) == 2 * COUNT
    for stack, block in zip(stacks, _blocks(output, stacks), strict=True):
        header = f"{stack}: {COUNT} requests, {COUNT} answered 200, {COUNT} with every mark"
        assert header in block, output
        timelines = [
            Timeline(**{k: v for k, v in r.items() if k not in ("stack", "order_id")})
            for r in records
            if r["stack"] == stack
        ]
        _check_consistent(block, timelines)

    compared = re.findall(r"^  ([a-z ]+): p50 [0-9.]+ -> [0-9.]+ \(", output, re.M)
    assert compared == [name for name, _ in HOPS] + [TOTAL], output


def _blocks(output: str, stacks: list[str]) -> list[str]:
    """Each stack's part of the output: from its summary line to the next stack's."""
    starts = [output.index(f"\n{stack}: {COUNT} requests") for stack in stacks]
    return [output[a:b] for a, b in zip(starts, [*starts[1:], len(output)], strict=True)]


def _check_consistent(block: str, timelines: list[Timeline]) -> None:
    rows = {name: tuple(map(float, figures)) for name, *figures in ROW.findall(block)}
    assert list(rows) == [name for name, _ in HOPS] + [TOTAL], block
    assert all(row[0] == COUNT for row in rows.values()), block
    for name, (_, p50, p90, p99, max_ms) in rows.items():
        assert p50 <= p90 <= p99 <= max_ms, f"{name}: {rows[name]}"

    assert len(timelines) == COUNT
    for timeline in timelines:
        hops_s = timeline.hops_s()
        assert min(hops_s) >= -CLOCK_GRANULARITY_S - 1e-6, timeline
        assert sum(hops_s) == pytest.approx(timeline.total_s(), abs=1e-6)

    # The table is the marks' percentiles, as printed.
    samples = hop_samples(timelines)
    for name, (_, p50, _p90, p99, max_ms) in rows.items():
        assert percentile(samples[name], 50) == pytest.approx(p50, abs=SLACK_MS)
        assert percentile(samples[name], 99) == pytest.approx(p99, abs=SLACK_MS)
        assert max(samples[name]) == pytest.approx(max_ms, abs=SLACK_MS)

    medians = MEDIANS.search(block)
    assert medians is not None, block
    added, total_p50 = map(float, medians.groups())
    assert added == pytest.approx(sum(rows[name][1] for name, _ in HOPS), abs=0.5)
    lowest = sum(min(samples[name]) for name, _ in HOPS)
    highest = sum(max(samples[name]) for name, _ in HOPS)
    assert lowest - SLACK_MS <= added <= highest + SLACK_MS
    assert lowest - SLACK_MS <= total_p50 <= highest + SLACK_MS
