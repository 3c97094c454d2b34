"""The bench's FULL-beside-NORMAL comparison: when it may run, and the line it prints."""

from __future__ import annotations

import pytest

from devtools.bench.options import parse_options
from devtools.bench.report import B_NORMAL, CaseResult, summary_lines

pytestmark = pytest.mark.unit


def test_the_comparison_is_off_unless_asked() -> None:
    assert parse_options([]).compare_sqlite_synchronous is False
    assert parse_options(["--compare-sqlite-synchronous"]).compare_sqlite_synchronous is True


@pytest.mark.parametrize(
    "argv",
    [
        ["--compare-sqlite-synchronous", "--cases", "a,c"],
        [
            "--compare-sqlite-synchronous",
            "--database-url",
            "postgresql+asyncpg://paygate@127.0.0.1/paygate",
        ],
    ],
    ids=["without-case-b", "on-postgresql"],
)
def test_the_comparison_needs_case_b_on_sqlite(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        parse_options(argv)
    assert refused.value.code == 2


def test_the_summary_prints_both_rates_and_their_ratio() -> None:
    results = {
        "b": CaseResult("b", "FULL", payments=900, elapsed_s=1.0),
        B_NORMAL: CaseResult(B_NORMAL, "NORMAL", payments=1000, elapsed_s=1.0),
    }
    lines = summary_lines(results, None)
    assert "rate b: 900.0 payments/s" in lines
    assert "rate b-normal: 1000.0 payments/s" in lines
    assert "ratio b/b-normal: 0.9000" in lines
    assert not any(
        line.startswith("ratio b/b-normal") for line in summary_lines({"b": results["b"]}, None)
    )


def test_tokens_are_compared_on_request_and_need_case_b() -> None:
    from devtools.bench.report import B_TOKENS

    assert parse_options([]).compare_tokens is False
    assert parse_options(["--compare-tokens"]).compare_tokens is True
    with pytest.raises(SystemExit):
        parse_options(["--compare-tokens", "--cases", "a,c"])
    lines = summary_lines(
        {
            "b": CaseResult("b", "clear", 1000, 2.0),
            B_TOKENS: CaseResult(B_TOKENS, "tokens", 1000, 2.5),
        },
        None,
    )
    assert "rate b-tokens: 400.0 payments/s" in lines
    assert "ratio b-tokens/b: 0.8000" in lines
