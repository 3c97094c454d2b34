"""The hops bench's table: per hop, n and p50/p90/p99/max in milliseconds.

A row keeps this exact shape (``tests/integration/test_bench_hops_smoke.py`` parses it)::

    | facade in | 500 | 3.1 | 4.0 | 9.8 | 12.5 | client send -> command record: ... |

Percentiles are nearest-rank (the smallest sample with at least p% of the samples at or
below it): always a measured value, so a p50 of the total is some request's total.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from devtools.bench.hop_timeline import HOPS, TOTAL

HEADER: Final = (
    "| hop | n | p50 ms | p90 ms | p99 ms | max ms | from -> to: what happens in it |",
    "| --- | --- | --- | --- | --- | --- | --- |",
)
_WHAT: Final = dict(HOPS) | {TOTAL: "client send -> client answer"}


def percentile(samples: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile (0 < p <= 100) of non-empty ``samples``."""
    if not samples:
        raise ValueError("no samples")
    if not 0 < p <= 100:
        raise ValueError(f"p must be in (0, 100], not {p!r}")
    ordered = sorted(samples)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


@dataclass(frozen=True, slots=True)
class HopRow:
    name: str
    n: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


def hop_row(name: str, samples_ms: Sequence[float]) -> HopRow:
    return HopRow(
        name,
        len(samples_ms),
        percentile(samples_ms, 50),
        percentile(samples_ms, 90),
        percentile(samples_ms, 99),
        max(samples_ms),
    )


def table_lines(samples_ms: dict[str, list[float]]) -> list[str]:
    """The header and a row per hop then the total; a hop without samples is a dash row."""
    lines = list(HEADER)
    for name, samples in samples_ms.items():
        if not samples:
            lines.append(f"| {name} | 0 | - | - | - | - | {_WHAT.get(name, '')} |")
            continue
        row = hop_row(name, samples)
        lines.append(
            f"| {name} | {row.n} | {row.p50_ms:.1f} | {row.p90_ms:.1f} | {row.p99_ms:.1f} | "
            f"{row.max_ms:.1f} | {_WHAT.get(name, '')} |"
        )
    return lines


def comparison_lines(
    baseline: dict[str, list[float]], current: dict[str, list[float]], label: str
) -> list[str]:
    """Each hop's p50 and p99 in both runs, and this run's over the baseline's."""
    lines = ["", f"{label} beside the baseline: p50 and p99 in ms (this / baseline)"]
    for name in current:
        before, after = baseline.get(name, []), current[name]
        if not before or not after:
            continue
        parts = []
        for p in (50, 99):
            b, a = percentile(before, p), percentile(after, p)
            ratio = f"{a / b:.2f}" if b > 0 else "n/a"
            parts.append(f"p{p} {b:.1f} -> {a:.1f} ({ratio})")
        lines.append(f"  {name}: " + ", ".join(parts))
    return lines
