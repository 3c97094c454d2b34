"""``python -m devtools.bench refunds`` (and ``captures``): its options, how it reads a
driver's result line, and how it sets two checkouts' figures side by side."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from devtools.bench.environment import BenchError
from devtools.bench.refund_options import parse_refund_options
from devtools.bench.refund_report import (
    RESULT_PREFIX,
    TreeResult,
    comparison_lines,
    expected_states,
    parse_result,
    tree_lines,
)

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
# Read, never imported: importing it would hook statement counters onto every engine here.
DRIVER = REPO_ROOT / "devtools" / "bench" / "refund_driver.py"


def _phase(cpu_us: float, statements: float) -> dict[str, float]:
    return {"cpu_us": cpu_us, "statements": statements, "commits": 0.5, "rollbacks": 0.0}


def _result(label: str, refund_cpu: float, refund_statements: float) -> TreeResult:
    return TreeResult(
        label=label,
        code=f"/src/{label}",
        count=4,
        phases={
            "payments": _phase(1600.0, 11.65),
            "refunds": _phase(refund_cpu, refund_statements),
        },
        states={"payments": {"partially_refunded": 4}, "refunds": {"succeeded": 4}},
    )


def test_defaults_and_a_count() -> None:
    options = parse_refund_options([])
    assert (options.count, options.baseline, options.stall_timeout_s) == (1000, None, 60.0)
    options = parse_refund_options(["--count", "20", "--stall-timeout", "5"])
    assert (options.count, options.stall_timeout_s) == (20, 5.0)


def test_a_baseline_must_be_a_checkout_and_is_resolved() -> None:
    assert parse_refund_options(["--baseline", str(REPO_ROOT)]).baseline == REPO_ROOT
    with pytest.raises(SystemExit):
        parse_refund_options(["--baseline", str(REPO_ROOT / "docs")])


@pytest.mark.parametrize("argv", [["--count", "0"], ["--count", "x"], ["--stall-timeout", "0"]])
def test_bad_numbers_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_refund_options(argv)


def test_the_last_result_line_is_read() -> None:
    expected = _result("baseline", 5400.0, 13.85)
    data = {
        "code": expected.code,
        "count": expected.count,
        "phases": expected.phases,
        "states": expected.states,
    }
    lines = ["code: /src/baseline", "phase payments: ...", RESULT_PREFIX + json.dumps(data)]
    assert parse_result("baseline", lines) == expected
    with pytest.raises(BenchError, match="no result line"):
        parse_result("baseline", lines[:2])


def test_each_tree_is_printed_phase_by_phase_with_its_final_states() -> None:
    assert tree_lines(_result("baseline", 5396.0, 13.85)) == [
        "baseline (/src/baseline), 4 commands per phase",
        "  phase payments: CPU us per command 1600, statements per command 11.65, "
        "commits per command 0.50, rollbacks per command 0.00",
        "  phase refunds: CPU us per command 5396, statements per command 13.85, "
        "commits per command 0.50, rollbacks per command 0.00",
        "  refunds beside payments: n/a, CPU per command 3.373 x a payment's, statements 1.189 x",
        "  final payments: partially_refunded 4",
        "  final refunds: succeeded 4",
    ]


def test_the_comparison_is_this_run_over_the_baseline() -> None:
    lines = comparison_lines(_result("baseline", 5000.0, 14.0), _result("new", 4000.0, 12.0))
    assert lines[0] == "new / baseline"
    assert "  ratio refunds cpu_us: 0.800 (5000 -> 4000 CPU us per command)" in lines
    assert "  ratio refunds statements: 0.857 (14.00 -> 12.00 statements per command)" in lines
    assert "  ratio payments rollbacks: n/a (0.00 -> 0.00 rollbacks per command)" in lines
    assert len(lines) == 1 + 2 * 4


def test_a_lost_or_stuck_command_is_reported() -> None:
    good = _result("new", 4000.0, 12.0)
    assert expected_states(good) == []
    stuck = TreeResult(
        good.label,
        good.code,
        good.count,
        good.phases,
        {"payments": {"partially_refunded": 4}, "refunds": {"succeeded": 3, "pending": 1}},
    )
    assert expected_states(stuck) == ["new: refunds pending 1, succeeded 3, not 4 alike"]


def test_the_driver_imports_nothing_a_baseline_checkout_lacks() -> None:
    """It runs on the baseline's code: no import of the refunds bench's own modules, and
    its result prefix is the one the report reads."""
    tree = ast.parse(DRIVER.read_text())
    imported = [
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    ]
    assert "devtools.bench.pipeline" in imported
    assert not [name for name in imported if name and name.startswith("devtools.bench.refund")]
    prefixes = [
        node.value.value
        for node in ast.walk(tree)
        if isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Name)
        and node.target.id == "RESULT_PREFIX"
        and isinstance(node.value, ast.Constant)
    ]
    assert prefixes == [RESULT_PREFIX]


def _captures_result(label: str, states: dict[str, dict[str, int]]) -> TreeResult:
    phase = _phase(2000.0, 12.0)
    return TreeResult(
        label=label,
        code=f"/src/{label}",
        count=4,
        phases={
            "payments": {**phase, "commands": 8.0, "elapsed_s": 2.0},
            "captures": {**_phase(3000.0, 18.0), "commands": 4.0, "elapsed_s": 0.5},
            "cancels": {**_phase(1000.0, 6.0), "commands": 4.0, "elapsed_s": 0.25},
        },
        states=states,
        order=("payments", "captures", "cancels"),
        expected={"payments": {"succeeded": 4, "canceled": 4}, "refunds": {}},
    )


def test_a_captures_run_is_read_in_its_phase_order_with_its_expected_states() -> None:
    expected = _captures_result("new", {"payments": {"succeeded": 4, "canceled": 4}})
    data = {
        "code": expected.code,
        "count": 4,
        "order": list(expected.order),
        "phases": expected.phases,
        "states": expected.states,
        "expected": expected.expected,
    }
    assert parse_result("new", [RESULT_PREFIX + json.dumps(data, sort_keys=True)]) == expected
    lines = tree_lines(expected)
    assert [line.split(":")[0] for line in lines[1:4]] == [
        "  phase payments (8 commands)",
        "  phase captures",
        "  phase cancels",
    ]
    assert (
        "  captures beside payments: 8/s, CPU per command 1.500 x a payment's, "
        "statements 1.500 x" in lines
    )
    assert lines[5].startswith(
        "  cancels beside payments: 16/s, CPU per command 0.500 x a payment's"
    )
    compared = comparison_lines(expected, expected)
    assert compared[1].startswith("  ratio payments cpu_us: 1.000")
    assert any(line.startswith("  ratio cancels statements: 1.000") for line in compared)


def test_a_captures_run_must_end_exactly_as_expected() -> None:
    assert (
        expected_states(_captures_result("new", {"payments": {"succeeded": 4, "canceled": 4}}))
        == []
    )
    stuck = _captures_result("new", {"payments": {"succeeded": 4, "canceled": 3, "canceling": 1}})
    assert expected_states(stuck) == [
        "new: payments canceled 3, canceling 1, succeeded 4, not canceled 4, succeeded 4"
    ]


def test_a_captures_bench_has_its_own_command_line() -> None:
    options = parse_refund_options(["--count", "7"], "captures")
    assert options.count == 7
    with pytest.raises(SystemExit):
        parse_refund_options(["--count", "0"], "captures")
