"""``python -m devtools.bench rest`` runs end to end at a tiny rate and prints its table.

Only the plumbing is checked: that every stack (the ceiling and paygate's facade) printed a
row per step in the documented shape, with every request answered 200. The figures of so
small a run mean nothing, and timing is never asserted.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.bench.environment import BenchError
from devtools.bench.vegeta import vegeta_binary
from tests.support.child_env import child_environment
from tests.support.services import service_missing

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 600

_NUMBER = r"([0-9.]+)"
ROW = re.compile(
    r"^\| (ceiling|facade w1) \| (\d+)/s \| "
    + r" \| ".join([_NUMBER + "/s"] + [_NUMBER] * 4)
    + r" \| (\d+) \| ([0-9.]+|-) \|$",
    re.MULTILINE,
)


def test_the_rest_bench_drives_the_ceiling_and_the_facade_and_prints_a_row_per_step(
    kafka_bootstrap: str,
) -> None:
    try:
        vegeta_binary()
    except BenchError as exc:
        service_missing(str(exc))
    args = ["--rates", "5,10", "--duration", "2", "--warmup", "1", "--pause", "0"]
    proc = subprocess.run(
        [sys.executable, "-m", "devtools.bench", "rest", *args],
        cwd=REPO_ROOT,
        env=child_environment({"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    output = proc.stdout
    assert proc.returncode == 0, f"bench failed:\n{output}\n{proc.stderr}"

    assert f"command: python -m devtools.bench rest {' '.join(args)}" in output
    assert re.search(r"^machine: \d+ cores", output, re.MULTILINE), output
    assert re.search(r"^uptime at start: .*load average", output, re.MULTILINE), output
    # Each row is printed twice: as it is measured, and in the closing table.
    rows = ROW.findall(output)
    steps = sorted({(stack, int(offered)) for stack, offered, *_ in rows})
    assert steps == [("ceiling", 5), ("ceiling", 10), ("facade w1", 5), ("facade w1", 10)]
    for stack, offered, throughput, p50, p90, p99, max_ms, failures, cpu in rows:
        assert failures == "0", f"{stack} at {offered}/s had failures:\n{output}"
        assert float(throughput) > 0
        assert float(p50) <= float(p90) <= float(p99) <= float(max_ms)
        assert cpu == "-" or float(cpu) > 0
    assert re.search(r"^goal facade w1: no saturation up to 1000/s: (met|NOT met)", output, re.M)
