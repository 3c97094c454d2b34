"""The figures of ``python -m devtools.bench refunds`` (and ``captures``): read from a
driver's output, and set side by side (this checkout over the baseline) once every tree has
run."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from devtools.bench.environment import BenchError

# Must match refund_driver.RESULT_PREFIX; not imported from there, because importing the
# driver would register its statement counters in this process.
RESULT_PREFIX: Final = "refund-bench-result: "
PHASE_TITLES: Final = ("payments", "refunds")
# (key in a phase's figures, label, format)
_FIGURES: Final = (
    ("cpu_us", "CPU us per command", "{:.0f}"),
    ("statements", "statements per command", "{:.2f}"),
    ("commits", "commits per command", "{:.2f}"),
    ("rollbacks", "rollbacks per command", "{:.2f}"),
)


@dataclass(frozen=True, slots=True)
class TreeResult:
    """One checkout's run: its figures per phase title, and its final states per table.

    ``order``: the phases' titles in the order they ran. ``expected``: the final states
    the run must end in, exactly; None for the refunds' rule (:func:`expected_states`)."""

    label: str
    code: str
    count: int
    phases: dict[str, dict[str, float]]
    states: dict[str, dict[str, int]]
    order: tuple[str, ...] = PHASE_TITLES
    expected: dict[str, dict[str, int]] | None = field(default=None)


def parse_result(label: str, lines: Sequence[str]) -> TreeResult:
    """The driver's last ``RESULT_PREFIX`` line; ``BenchError`` without one."""
    for line in reversed(lines):
        if line.startswith(RESULT_PREFIX):
            data = json.loads(line[len(RESULT_PREFIX) :])
            return TreeResult(
                label=label,
                code=str(data["code"]),
                count=int(data["count"]),
                phases={
                    title: {k: float(v) for k, v in figures.items()}
                    for title, figures in data["phases"].items()
                },
                states=_counts(data["states"]),
                order=tuple(data.get("order", PHASE_TITLES)),
                expected=None if data.get("expected") is None else _counts(data["expected"]),
            )
    raise BenchError(f"{label}: the driver printed no result line")


def _counts(data: dict[str, dict[str, object]]) -> dict[str, dict[str, int]]:
    return {
        table: {str(k): int(str(v)) for k, v in counts.items()} for table, counts in data.items()
    }


def _states(counts: dict[str, int]) -> str:
    return ", ".join(f"{status} {n}" for status, n in sorted(counts.items())) or "none"


def tree_lines(result: TreeResult) -> list[str]:
    """One checkout's figures, phase by phase, then its final states."""
    lines = [f"{result.label} ({result.code}), {result.count} commands per phase"]
    for title in result.order:
        figures = result.phases[title]
        shown = ", ".join(f"{label} {fmt.format(figures[key])}" for key, label, fmt in _FIGURES)
        # A phase of another count than the run's (the authorize-only payments that
        # captures and cancels then follow) says how many commands it had.
        commands = int(figures.get("commands", result.count))
        of = "" if commands == result.count else f" ({commands} commands)"
        lines.append(f"  phase {title}{of}: {shown}")
    lines += _beside_payments(result)
    for table, counts in sorted(result.states.items()):
        lines.append(f"  final {table}: {_states(counts)}")
    return lines


def _beside_payments(result: TreeResult) -> list[str]:
    """Each follow-up phase's rate, and its CPU and statements per command over the
    payments phase's of the same run (the cost of a follow-up in payments)."""
    payments = result.phases.get(PHASE_TITLES[0])
    lines = []
    for title in result.order[1:]:
        figures = result.phases[title]
        elapsed = figures.get("elapsed_s", 0.0)
        rate = f"{figures.get('commands', result.count) / elapsed:.0f}/s" if elapsed else "n/a"
        if payments is None:
            continue
        lines.append(
            f"  {title} beside payments: {rate}, CPU per command "
            f"{_ratio(figures['cpu_us'], payments['cpu_us'])} x a payment's, statements "
            f"{_ratio(figures['statements'], payments['statements'])} x"
        )
    return lines


def _ratio(after: float, before: float) -> str:
    return f"{after / before:.3f}" if before else "n/a"


def comparison_lines(baseline: TreeResult, current: TreeResult) -> list[str]:
    """Per phase and figure: baseline, this run, and this run over the baseline."""
    lines = [f"{current.label} / {baseline.label}"]
    for title in current.order:
        for key, label, fmt in _FIGURES:
            before = baseline.phases[title][key]
            after = current.phases[title][key]
            lines.append(
                f"  ratio {title} {key}: {_ratio(after, before)} "
                f"({fmt.format(before)} -> {fmt.format(after)} {label})"
            )
    return lines


def expected_states(result: TreeResult) -> list[str]:
    """What is wrong with the final states: every payment and refund must have settled.

    The bench's provider answers every charge and refund with success, so anything but
    ``count`` succeeded payments and ``count`` succeeded refunds is a lost or stuck command.
    Empty when the states are as expected. The status names are read, not assumed, beyond
    one status per table holding every row.
    """
    if result.expected is not None:
        return [
            f"{result.label}: {table} {_states(result.states.get(table, {}))}, "
            f"not {_states(counts)}"
            for table, counts in sorted(result.expected.items())
            if result.states.get(table, {}) != counts
        ]
    problems = []
    for table in ("payments", "refunds"):
        counts = result.states.get(table, {})
        if sum(counts.values()) != result.count or len(counts) != 1:
            problems.append(f"{result.label}: {table} {_states(counts)}, not {result.count} alike")
    return problems
