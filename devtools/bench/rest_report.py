"""The REST bench's lines: one table row per step, and which of the issue's goals were met.

A row keeps this exact shape (``tests/integration/test_bench_rest_smoke.py`` parses it)::

    | facade w1 | 500/s | 498.7/s | 12.1 | 30.5 | 88.0 | 140.2 | 0 | 0.84 |

stack label, offered rate, throughput, p50, p90, p99 and max in ms, failures (any answer
but 200, timeouts included), and the stack's CPU milliseconds per request ("-" unknown:
no /proc, or a step too short and light to use ten clock ticks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from devtools.bench.vegeta import StepReport

HEADER: Final = (
    "| stack | offered | throughput | p50 ms | p90 ms | p99 ms | max ms | failures | CPU ms/req |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
)

# The goals of issue 16, for the closing lines.
GOAL_RATE: Final = 500
GOAL_P99_MS: Final = 100.0
GOAL_SATURATION: Final = 1000
GOAL_CPU_MS: Final = 1.0


@dataclass(frozen=True, slots=True)
class Step:
    stack: str
    offered_per_s: int
    report: StepReport
    cpu_ms_per_request: float | None

    @property
    def saturated(self) -> bool:
        """Throughput fell short of the offer, or a request failed: past what it can do."""
        return self.report.failures > 0 or self.report.throughput_per_s < 0.95 * self.offered_per_s

    @property
    def collapsed(self) -> bool:
        """Most requests failed: the steps above it are not worth their time."""
        return self.report.failures * 2 > self.report.requests


def step_row(step: Step) -> str:
    r = step.report
    cpu = "-" if step.cpu_ms_per_request is None else f"{step.cpu_ms_per_request:.2f}"
    return (
        f"| {step.stack} | {step.offered_per_s}/s | {r.throughput_per_s:.1f}/s | "
        f"{r.p50_ms:.1f} | {r.p90_ms:.1f} | {r.p99_ms:.1f} | {r.max_ms:.1f} | "
        f"{r.failures} | {cpu} |"
    )


def failure_lines(step: Step) -> list[str]:
    """What the failures of a step were: status counts and a few distinct errors."""
    r = step.report
    if r.failures == 0:
        return []
    statuses = ", ".join(f"{code}: {n}" for code, n in sorted(r.status_codes.items()))
    lines = [f"  {step.stack} at {step.offered_per_s}/s: status {statuses}"]
    lines += [f"  error: {error}" for error in r.errors[:3]]
    return lines


def goal_lines(stack: str, steps: Sequence[Step]) -> list[str]:
    """Which goals one stack met in this run, from its steps."""
    mine = [s for s in steps if s.stack == stack]
    at_goal = [s for s in mine if s.offered_per_s == GOAL_RATE]
    lines = []
    if at_goal:
        p99 = at_goal[0].report.p99_ms
        met = p99 < GOAL_P99_MS and at_goal[0].report.failures == 0
        seen = f"p99 {p99:.1f} ms"
    else:
        met, seen = False, "step not run"
    lines.append(
        f"goal {stack}: p99 < {GOAL_P99_MS:.0f} ms at {GOAL_RATE}/s: "
        f"{'met' if met else 'NOT met'} ({seen})"
    )
    unsaturated = [s.offered_per_s for s in mine if not s.saturated]
    best = max(unsaturated, default=0)
    lines.append(
        f"goal {stack}: no saturation up to {GOAL_SATURATION}/s: "
        f"{'met' if best >= GOAL_SATURATION else 'NOT met'} (highest clean step {best}/s)"
    )
    # Only steps that were served count: in a collapsed step the CPU goes to accepting
    # connections whose requests then time out, and per request it looks cheap.
    cpu = [
        s.cpu_ms_per_request for s in mine if s.cpu_ms_per_request is not None and not s.saturated
    ]
    if cpu:
        lowest = min(cpu)
        lines.append(
            f"goal {stack}: CPU <= {GOAL_CPU_MS:g} ms/request: "
            f"{'met' if lowest <= GOAL_CPU_MS else 'NOT met'} "
            f"(lowest {lowest:.2f} ms, in unsaturated steps)"
        )
    return lines
