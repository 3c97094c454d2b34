"""``python -m devtools.bench refunds``: payments, then a refund of each, per checkout;
``python -m devtools.bench captures``: authorize-only payments, then captures of half of
them and cancels of the others, the same way.

Each tree (the ``--baseline`` checkout first, when given, then this one) runs
``refund_driver.py`` of THIS checkout as a child process with its own directory first on
``sys.path``: the same measurement, that tree's code (a baseline from before the bench
existed has no driver of its own). The children run one after the other on one broker
(``KAFKA_BOOTSTRAP_SERVERS``, or a local one started here), their output is printed as it
comes, and their figures are set side by side at the end: this run over the baseline.
A baseline without captures (older than them) is said to be so, and this checkout is
measured alone.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from devtools.bench.baseline import run_echoed
from devtools.bench.command import bench_exit_code, say
from devtools.bench.environment import (
    BenchError,
    broker,
    describe_machine,
    describe_revision,
    uptime,
)
from devtools.bench.refund_options import RefundOptions, parse_refund_options
from devtools.bench.refund_report import (
    TreeResult,
    comparison_lines,
    expected_states,
    parse_result,
    tree_lines,
)
from paygate.settings import Settings

# What each mode's provider does, for the report's head.
_PROVIDERS: Final = {
    "refunds": "the bench's, every charge and refund succeeds at once",
    "captures": "the bench's, every authorization, capture and void succeeds at once",
}
# refund_driver.NO_CAPTURES_EXIT (not imported: the driver's statement counters).
_NO_CAPTURES_EXIT: Final = 3
_HERE: Final = Path(__file__).resolve().parent
_DRIVER: Final = _HERE / "refund_driver.py"
_THIS_CHECKOUT: Final = _HERE.parents[1]
# Run the driver file as __main__ with the measured tree first on the import path (the
# interpreter would otherwise put the driver's own directory there).
_LAUNCH: Final = (
    "import runpy, sys; tree, driver = sys.argv[1:3]; sys.argv = sys.argv[2:]; "
    "sys.path.insert(0, tree); runpy.run_path(driver, run_name='__main__')"
)


def main(argv: Sequence[str], mode: str = "refunds") -> int:
    options = parse_refund_options(argv, mode)
    command = shlex.join(["python", "-m", "devtools.bench", mode, *argv])
    return bench_exit_code(run_refund_bench(options, command, mode))


async def run_refund_bench(options: RefundOptions, command: str, mode: str = "refunds") -> bool:
    """Print every tree's run and the comparison; False when a final state was wrong."""
    say(
        f"command: {command}",
        f"machine: {describe_machine()}",
        f"interpreter: {sys.executable}",
        f"revision: {describe_revision()}",
        "database: SQLite (aiosqlite, WAL, synchronous as configured), a new file per tree",
        f"provider: {_PROVIDERS[mode]}",
        f"uptime at start: {uptime()}",
    )
    trees: list[tuple[str, Path]] = []
    if options.baseline is not None:
        trees.append(("baseline", options.baseline))
    trees.append(("this checkout", _THIS_CHECKOUT))
    results: list[TreeResult] = []
    async with broker(Settings().kafka_bootstrap_servers) as kafka:
        say(f"broker: {kafka.description}")
        for label, tree in trees:
            lines = await _run_driver(label, tree, options, kafka.bootstrap_servers, mode)
            if lines is None:
                say(f"{label}: {tree} has no captures to measure; this checkout is measured alone")
                continue
            result = parse_result(label, lines)
            if Path(result.code) != tree:
                raise BenchError(f"{label}: ran the code in {result.code}, not {tree}")
            results.append(result)
    say("", f"uptime at end: {uptime()}", "")
    for result in results:
        say(*tree_lines(result))
    if len(results) == 2:
        say("", *comparison_lines(results[0], results[1]))
    problems = [problem for result in results for problem in expected_states(result)]
    verdict = [f"final states NOT as expected: {p}" for p in problems]
    say("", *(verdict or ["final states: as expected"]))
    return not problems


async def _run_driver(
    label: str, tree: Path, options: RefundOptions, bootstrap: str, mode: str
) -> list[str] | None:
    """Run the driver on ``tree``'s code; print and return its output (None: the tree has
    no captures, and ``mode`` measures them)."""
    say("", f"=== {label}: {tree}, uptime {uptime()} ===")
    driver = [str(tree), str(_DRIVER), str(options.count), str(options.stall_timeout_s), mode]
    lines, code = await run_echoed(["-c", _LAUNCH, *driver], tree, bootstrap)
    say(f"=== end of {label} (exit {code}) ===")
    if code == _NO_CAPTURES_EXIT and mode == "captures":
        return None
    if code != 0:
        raise BenchError(f"the {mode} driver on {tree} failed (exit {code})")
    return lines
