"""``--baseline DIR``: the same cases run first from another checkout's code, on this broker.

The other checkout (a ``git worktree`` or a ``git archive`` export of the commit before a
change) runs as a child ``python -m devtools.bench`` with the same options and its own
working directory first on the import path, so its code is what runs. Its output is printed
as it comes, between markers, and its summary's ``rate`` and ``cpu`` lines are set beside
this run's at the end: before and after in one run, one after the other on one broker.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from devtools.bench.environment import BenchError

# The summary lines both benches print, e.g. "rate b: 664.5 payments/s", "cpu b: 1436 us
# per payment".
_FIGURE: Final = re.compile(r"^(rate|cpu) ([a-z-]+): ([0-9.]+) (payments/s|us per payment)$")


_BASELINE_OPTIONS: Final = ("--baseline", "--baseline-event-loop")


def without_baseline(argv: Sequence[str]) -> list[str]:
    """``argv`` less its ``--baseline*`` options: the child runs the same cases, once."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _BASELINE_OPTIONS:
            skip = True
        elif not arg.startswith(tuple(f"{option}=" for option in _BASELINE_OPTIONS)):
            kept.append(arg)
    return kept


def figures(lines: Sequence[str]) -> dict[tuple[str, str], float]:
    """The ``rate``/``cpu`` figures of a summary, by (kind, case)."""
    found: dict[tuple[str, str], float] = {}
    for line in lines:
        match = _FIGURE.match(line.strip())
        if match is not None:
            found[(match.group(1), match.group(2))] = float(match.group(3))
    return found


async def run_baseline(
    directory: Path, argv: Sequence[str], bootstrap: str, extra: Sequence[str] = ()
) -> list[str]:
    """Run the bench from ``directory`` on ``bootstrap``, with ``extra`` after ``argv``'s
    options (the last of an option wins); print and return its output."""
    if not (directory / "devtools" / "bench").is_dir():
        raise BenchError(f"--baseline {directory}: no devtools/bench there (a paygate checkout?)")
    print(f"=== baseline: python -m devtools.bench from {directory} ===", flush=True)
    lines, code = await run_echoed(
        ["-m", "devtools.bench", *without_baseline(argv), *extra], directory, bootstrap
    )
    print(f"=== end of baseline (exit {code}) ===", "", sep="\n", flush=True)
    if code != 0:
        raise BenchError(f"the baseline bench in {directory} failed (exit {code})")
    return lines


async def run_echoed(args: Sequence[str], cwd: Path, bootstrap: str) -> tuple[list[str], int]:
    """Run ``python *args`` in ``cwd`` on the broker ``bootstrap``, printing its output (both
    streams) as it comes; return the lines and the exit code."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=cwd,
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert child.stdout is not None
    lines: list[str] = []
    async for raw in child.stdout:
        line = raw.decode(errors="replace").rstrip("\n")
        lines.append(line)
        print(line, flush=True)
    return lines, await child.wait()


def comparison_lines(
    baseline: dict[tuple[str, str], float], current: dict[tuple[str, str], float]
) -> list[str]:
    """Each figure both runs printed: baseline, this run, and this run over the baseline."""
    lines = ["", "baseline beside this run (this / baseline)"]
    for key in sorted(set(baseline) & set(current)):
        kind, case = key
        unit = "payments/s" if kind == "rate" else "us per payment"
        before, after = baseline[key], current[key]
        ratio = f"{after / before:.3f}" if before else "n/a"
        lines.append(f"  {kind} {case}: {before:g} -> {after:g} {unit} ({ratio})")
    return lines
