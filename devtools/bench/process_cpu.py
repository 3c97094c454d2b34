"""CPU seconds a process and its descendants have used, from ``/proc`` (Linux).

The REST bench divides a facade's CPU time during a step by the requests of the step, so
the figure includes the worker processes a ``--workers N`` facade forks. Elsewhere than
Linux there is no ``/proc``: the figure is then unknown (None), and the bench says so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

_PROC: Final = Path("/proc")
_TICKS_PER_S: Final = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# The kernel counts CPU time in clock ticks (10 ms at the usual 100 Hz): a figure made of
# fewer than this many is mostly rounding, and is not reported.
MIN_MEASURABLE_S: Final = 10 / _TICKS_PER_S


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    return text[text.rindex(")") + 2 :].split()


def tree_cpu_s(root: int) -> float | None:
    """utime + stime of ``root`` and every live descendant, in seconds."""
    if not _PROC.is_dir():
        return None
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None:
            continue
        # After the name: state, ppid, ... utime is field 14 and stime 15 of the full line.
        parents[int(entry.name)] = int(fields[1])
        ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    if root not in ticks:
        return None
    total, frontier = 0, [root]
    while frontier:
        pid = frontier.pop()
        total += ticks.get(pid, 0)
        frontier.extend(child for child, parent in parents.items() if parent == pid)
    return total / _TICKS_PER_S
